"""PPO with domain randomisation (the DR baseline) and its oracle variant.

PPO-DR trains one policy on episodes whose tasks are drawn afresh from the train
distribution at every reset, and never adapts: at meta-test its state is empty and
``adapt`` does nothing. The oracle is the same algorithm with the privileged task vector
concatenated to the observation, an upper reference line for what adaptation can reach.

Seams: :meth:`PPO.collect` (episode blocks on random tasks) -> no adaptation ->
:meth:`PPO.update` (clipped surrogate, value loss, entropy; minibatch epochs), as in
CleanRL's ``ppo_continuous_action.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from metagrasp.errors import ConfigError
from metagrasp.policies.base import EnvSpec
from metagrasp.policies.collect import Episodes, episode_metrics, tile_task
from metagrasp.policies.networks import ActorCritic, critic_gae
from metagrasp.policies.sampler import BoundPolicy, Rollout, as_sampler


@dataclass
class PPOConfig:
    """PPO hyper-parameters."""

    hidden: tuple[int, ...] = (128, 128)
    """Hidden layer widths of actor and critic."""
    lr: float = 3e-4
    """Adam learning rate."""
    gamma: float = 0.99
    """Discount factor."""
    gae_lambda: float = 0.95
    """GAE lambda."""
    clip: float = 0.2
    """Surrogate clipping range."""
    epochs: int = 5
    """Optimisation epochs per iteration."""
    minibatches: int = 4
    """Minibatches per epoch."""
    ent_coef: float = 0.0
    """Entropy bonus weight."""
    vf_coef: float = 0.5
    """Value loss weight."""
    max_grad_norm: float = 0.5
    """Gradient clipping norm."""
    log_std_init: float = -0.5
    """Initial log std of the Gaussian policy."""
    blocks_per_iter: int = 1
    """Episode blocks (one episode per env member) collected per iteration."""
    target_kl: float = 0.05
    """Stop the epochs early when the approximate KL exceeds this (0 = never)."""
    bound_coef: float = 0.0
    """Weight of a penalty on mean actions beyond +-1.1 (rl_games' bounds loss): the env
    clips actions to [-1, 1], so a mean far outside gets no gradient from exploration."""

    def __post_init__(self) -> None:
        if not self.hidden or min(self.hidden) < 1:
            raise ConfigError(f"algo.hidden={self.hidden} needs positive widths")
        for name in ("lr", "clip", "max_grad_norm"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"algo.{name}={getattr(self, name)} must be > 0")
        for name in ("gamma", "gae_lambda"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"algo.{name}={getattr(self, name)} must be in [0, 1]")
        for name in ("epochs", "minibatches", "blocks_per_iter"):
            if getattr(self, name) < 1:
                raise ConfigError(f"algo.{name}={getattr(self, name)} must be >= 1")


def _presets(budget_quick: int, budget_default: int, envs: int) -> dict[str, dict[str, Any]]:
    return {
        "grasp:quick": {
            "run": {"total_env_steps": budget_quick, "num_envs": envs},
            "algo": {"bound_coef": 0.01},
        },
        "grasp:default": {
            "run": {"total_env_steps": budget_default, "num_envs": envs},
            "algo": {"bound_coef": 0.01},
        },
        "point:quick": {
            "run": {"total_env_steps": 200_000, "num_envs": 100},
            "algo": {"hidden": [64, 64], "lr": 3e-4},
        },
        "point:default": {
            "run": {"total_env_steps": 1_000_000, "num_envs": 100},
            "algo": {"hidden": [64, 64], "lr": 3e-4},
        },
    }


class PPO:
    """PPO on randomised tasks, no adaptation (the domain-randomisation baseline)."""

    name: ClassVar[str] = "ppo"
    Config: ClassVar[type] = PPOConfig
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = _presets(120_000, 6_000_000, 32)
    privileged: ClassVar[bool] = False
    """Whether the policy sees the privileged task vector (oracle)."""
    LEARNER_ONLY: ClassVar[tuple[str, ...]] = ("opt",)
    """Attributes rollout workers do not need (see :class:`~metagrasp.policies.sampler.Rollout`)."""

    def __init__(self, config: PPOConfig, spec: EnvSpec, seed: int = 0) -> None:
        self.config, self.spec = config, spec
        self.net = self.make_net(config, spec, seed)
        self.opt = torch.optim.Adam(self.net.parameters(), lr=config.lr, eps=1e-5)
        self.gen = torch.Generator().manual_seed(seed + 7)
        self.iteration = 0

    def to_device(self, device: torch.device) -> None:
        """Move the actor-critic and its normaliser to ``device`` (``run.device``); the
        parameters move in place, so the optimiser keeps them. Call it before loading a
        checkpoint, whose optimiser state then follows its parameters."""
        self.net.to(device)

    def make_net(self, config: PPOConfig, spec: EnvSpec, seed: int) -> ActorCritic:
        """The actor-critic; its input is the observation (and the task vector if privileged)."""
        in_dim = spec.obs_dim + (spec.task_dim if self.privileged else 0)
        return ActorCritic(in_dim, spec.act_dim, config.hidden, 0, config.log_std_init, seed)

    # --- acting ----------------------------------------------------------------------

    def _inputs(self, obs: np.ndarray, task: np.ndarray) -> np.ndarray:
        return np.concatenate([obs, task], -1) if self.privileged else obs

    def init_state(self, n: int) -> None:
        return None

    def act(
        self, obs: np.ndarray, task: np.ndarray, state: Any, deterministic: bool = False
    ) -> tuple[np.ndarray, Any]:
        a, _, _ = self.net.sample(self._inputs(obs, task), None, deterministic, self.gen)
        return a, state

    def observe(self, state: Any, step: dict[str, np.ndarray]) -> Any:
        return state

    def adapt(self, state: Any, episodes: list[Episodes]) -> Any:
        return state  # the DR baseline and the oracle do not adapt

    def export_modules(self) -> Any:
        """Deployable graphs (the seam of :mod:`metagrasp.export.plan`): a policy only."""
        from metagrasp.export.modules import gaussian_policy_graph
        from metagrasp.export.plan import ExportPlan

        task_dim = self.spec.task_dim if self.privileged else 0
        graph = gaussian_policy_graph(self.net, self.spec.obs_dim, task_dim)
        return ExportPlan(self.name, [graph], exploration="gaussian", uses_task=self.privileged)

    # --- training: collect -> (no adapt) -> update ------------------------------------

    def collect(self, env: Any) -> list[Episodes]:
        """Episode blocks on tasks drawn from the train split at every reset (``env``: a
        :class:`~metagrasp.policies.sampler.Sampler` or a batched env)."""
        return as_sampler(env).sample(
            Rollout(_exploring_policy, self), self.spec.max_steps, self.config.blocks_per_iter
        )

    def update(self, blocks: list[Episodes]) -> dict[str, float]:
        """PPO epochs over the collected episodes."""
        cfg, net, dev = self.config, self.net, self.net.device
        flat: dict[str, list[torch.Tensor]] = {k: [] for k in ("x", "a", "logp", "adv", "ret")}
        for ep in blocks:
            obs_in = self._inputs(ep.obs, tile_task(ep.task, ep.obs))
            next_in = self._inputs(ep.next_obs, tile_task(ep.task, ep.obs))
            x = torch.as_tensor(obs_in).to(dev)
            mask = torch.as_tensor(ep.mask).to(dev)
            net.norm.update(x[mask.bool()])
            adv, ret = critic_gae(net, obs_in, next_in, ep, cfg.gamma, cfg.gae_lambda)
            valid = mask.bool()
            flat["x"].append(x[valid])
            flat["a"].append(torch.as_tensor(ep.actions).to(dev)[valid])
            flat["logp"].append(torch.as_tensor(ep.extras["logp"]).to(dev)[valid])
            flat["adv"].append(adv[valid])
            flat["ret"].append(ret[valid])
        data = {k: torch.cat(v) for k, v in flat.items()}
        # Normalise inputs once with the updated statistics (fixed during the epochs).
        data["x"] = net.norm(data["x"]).float()
        n = data["x"].shape[0]
        mb = max(1, n // cfg.minibatches)
        stats: dict[str, list[float]] = {"pg_loss": [], "v_loss": [], "entropy": [], "kl": []}
        for _ in range(cfg.epochs):
            perm = torch.randperm(n, generator=self.gen).to(dev)
            kl_epoch = []
            for i in range(0, n - mb + 1, mb):
                idx = perm[i : i + mb]
                x, a, old_logp = data["x"][idx], data["a"][idx], data["logp"][idx]
                adv = data["adv"][idx]
                adv = (adv - adv.mean()) / (adv.std() + 1e-8)
                logp = net.log_prob(x, a)
                ratio = torch.exp(logp - old_logp)
                pg = -torch.min(
                    ratio * adv, torch.clamp(ratio, 1 - cfg.clip, 1 + cfg.clip) * adv
                ).mean()
                v_loss = 0.5 * ((net.value(x) - data["ret"][idx]) ** 2).mean()
                entropy = net.actor["log_std"].sum() + 0.5 * self.spec.act_dim * (
                    1.0 + np.log(2 * np.pi)
                )
                loss = pg + cfg.vf_coef * v_loss - cfg.ent_coef * entropy
                if cfg.bound_coef > 0:
                    excess = torch.relu(net.mean(x).abs() - 1.1)
                    loss = loss + cfg.bound_coef * (excess**2).sum(-1).mean()
                self.opt.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.max_grad_norm)
                self.opt.step()
                with torch.no_grad():
                    kl = ((ratio - 1) - torch.log(ratio)).mean().item()
                kl_epoch.append(kl)
                stats["pg_loss"].append(pg.item())
                stats["v_loss"].append(v_loss.item())
                stats["entropy"].append(entropy.item())
                stats["kl"].append(kl)
            if cfg.target_kl > 0 and np.mean(kl_epoch) > cfg.target_kl:
                break
        return {k: float(np.mean(v)) for k, v in stats.items()}

    def train_iteration(self, env: Any) -> dict[str, float]:
        blocks = self.collect(env)
        metrics = self.update(blocks)
        self.iteration += 1
        metrics.update(episode_metrics(blocks))
        metrics["action_std"] = float(torch.exp(self.net.actor["log_std"].detach()).mean())
        return metrics

    # --- checkpoints -----------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {
            "net": self.net.state_dict(),
            "opt": self.opt.state_dict(),
            "gen": self.gen.get_state(),
            "iteration": self.iteration,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.net.load_state_dict(state["net"])
        self.opt.load_state_dict(state["opt"])
        self.gen.set_state(state["gen"])
        self.iteration = int(state["iteration"])


class PPOOracle(PPO):
    """PPO whose policy and critic also see the privileged task vector (reference line)."""

    name: ClassVar[str] = "ppo-oracle"
    privileged: ClassVar[bool] = True


def _exploring_policy(algo: PPO, per_member: dict[str, Any], n: int) -> BoundPolicy:
    """The Gaussian policy with its log-probs and values (the rollout of PPO and RMA's
    teacher phase)."""

    def policy(obs: np.ndarray, task: np.ndarray) -> tuple[np.ndarray, dict]:
        a, logp, v = algo.net.sample(algo._inputs(obs, task), None, False, algo.gen)
        return a, {"logp": logp, "value": v}

    return BoundPolicy(policy)
