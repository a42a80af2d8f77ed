"""RL²: a recurrent policy trained with PPO over trials of several episodes per task.

Duan et al., "RL²: Fast Reinforcement Learning via Slow Reinforcement Learning" (2016):
a GRU policy receives, at every step, the observation together with the previous action,
reward and episode-end flag; its hidden state is carried across the episodes of one task
(a *trial*) and reset only when a new task starts. The trial is one long episode for the
optimiser (PPO here, as in the garage and ProMP implementations; the paper used TRPO), so
exploring in the first episode pays off through the returns of the later ones, and
"adaptation" is nothing but the hidden state.

Per step the network computes (:class:`RL2Net`)::

    x_t = [norm(obs_t), prev_action, rew_norm(prev_reward), prev_done]
    h_t = GRU(tanh-MLP(x_t), h_{t-1});  action ~ N(W_mu h_t + b_mu, exp(log_std))

and a critic of the same shape with its own weights gives the value (training only).

``prev_action`` is the action the env executed (clipped to [-1, 1]), ``prev_reward`` its
reward, ``prev_done`` is 1 on the first step of every episode after the first of a trial
(the episode boundary); all three are 0 at the start of a trial.

Export-facing module: ``RL2.step`` (the :class:`RL2Net`), a plain ``nn.Module``::

    step(obs (B, obs_dim), prev_action (B, act_dim), prev_reward (B, 1),
         prev_done (B, 1), hidden (B, H)) -> (action_mean (B, act_dim), new_hidden (B, H))

with raw (unnormalised) inputs: the observation and reward normalisers are its buffers.
A new task starts from ``hidden = 0`` and zero previous action, reward and done.

Meta-test (:mod:`metagrasp.policies.evaluate`): the state is the hidden state plus the
previous action/reward/done per member; :meth:`RL2.observe` commits the hidden state after
each valid env step (members whose episode already ended are left untouched) and
:meth:`RL2.adapt` only marks the episode boundary.

Seams, per iteration: :meth:`RL2.collect` (one trial of ``trial_episodes`` episodes per
member on tasks drawn from the train split) -> adaptation happens inside the trial (the
hidden state) -> :meth:`RL2.update` (PPO epochs over whole trials, back-propagating
through the GRU over each trial).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from metagrasp.errors import ConfigError
from metagrasp.policies.base import EnvSpec
from metagrasp.policies.collect import Episodes, episode_metrics
from metagrasp.policies.device import on, to_numpy
from metagrasp.policies.networks import RunningNorm, gae
from metagrasp.policies.sampler import BoundPolicy, Rollout, as_sampler

_LOG_2PI = float(np.log(2 * np.pi))


@dataclass
class RL2Config:
    """RL² hyper-parameters."""

    hidden: tuple[int, ...] = (128,)
    """Widths of the tanh layers between the step inputs and the GRU."""
    gru_size: int = 128
    """GRU hidden state size."""
    trial_episodes: int = 4
    """Episodes per trial (one task, hidden state carried); meta-test K + 1 fits in it."""
    lr: float = 3e-4
    """Adam learning rate."""
    gamma: float = 0.99
    """Discount factor (over the whole trial, across episode boundaries)."""
    gae_lambda: float = 0.95
    """GAE lambda."""
    clip: float = 0.2
    """PPO clipping range."""
    epochs: int = 5
    """Optimisation epochs per iteration."""
    minibatches: int = 4
    """Minibatches (of trials) per epoch."""
    ent_coef: float = 0.0
    """Entropy bonus weight."""
    vf_coef: float = 0.5
    """Value loss weight (the critic has its own GRU: it matters through the joint
    gradient-norm clip)."""
    max_grad_norm: float = 0.5
    """Gradient clipping norm."""
    log_std_init: float = -0.5
    """Initial log std of the Gaussian policy."""
    target_kl: float = 0.05
    """Stop the epochs early when the approximate KL exceeds this (0 = never)."""

    def __post_init__(self) -> None:
        if not self.hidden or min(self.hidden) < 1:
            raise ConfigError(f"algo.hidden={self.hidden} needs positive widths")
        for name in ("gru_size", "trial_episodes", "epochs", "minibatches"):
            if getattr(self, name) < 1:
                raise ConfigError(f"algo.{name}={getattr(self, name)} must be >= 1")
        for name in ("lr", "clip", "max_grad_norm"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"algo.{name}={getattr(self, name)} must be > 0")
        for name in ("gamma", "gae_lambda"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"algo.{name}={getattr(self, name)} must be in [0, 1]")


def _trunk(in_dim: int, hidden: tuple[int, ...], gru_size: int) -> tuple[nn.Module, nn.GRU]:
    """Tanh MLP (orthogonal init) feeding a GRU."""
    layers: list[nn.Module] = []
    sizes = (in_dim, *hidden)
    for i in range(len(hidden)):
        lin = nn.Linear(sizes[i], sizes[i + 1])
        nn.init.orthogonal_(lin.weight, np.sqrt(2))
        nn.init.zeros_(lin.bias)
        layers += [lin, nn.Tanh()]
    return nn.Sequential(*layers), nn.GRU(sizes[-1], gru_size, batch_first=True)


class RL2Net(nn.Module):
    """The recurrent policy (``forward`` is the exported step, see the module docstring)
    and its recurrent critic.

    The critic has its own GRU (same inputs, no shared weights): with one shared trunk
    the value loss over 80-400-step trials dominated its gradient and training on
    point-nav collapsed late. The critic is only ever run over whole trials from their
    start (:meth:`values`), so acting carries the policy's hidden state only.
    """

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        hidden: tuple[int, ...],
        gru_size: int,
        log_std_init: float,
    ) -> None:
        super().__init__()
        self.norm = RunningNorm(obs_dim)
        self.rew_norm = RunningNorm(1)
        in_dim = obs_dim + act_dim + 2
        self.embed, self.gru = _trunk(in_dim, hidden, gru_size)
        self.critic_embed, self.critic_gru = _trunk(in_dim, hidden, gru_size)
        self.mu = nn.Linear(gru_size, act_dim)
        self.v = nn.Linear(gru_size, 1)
        self.log_std = nn.Parameter(torch.full((act_dim,), float(log_std_init)))
        for lin, gain in ((self.mu, 0.01), (self.v, 1.0)):
            nn.init.orthogonal_(lin.weight, gain)
            nn.init.zeros_(lin.bias)
        self.gru_size = gru_size

    def _features(
        self,
        obs: torch.Tensor,
        prev_action: torch.Tensor,
        prev_reward: torch.Tensor,
        prev_done: torch.Tensor,
    ) -> torch.Tensor:
        return torch.cat(
            [
                self.norm(obs.float()).float(),
                prev_action.float(),
                self.rew_norm(prev_reward.float()).float(),
                prev_done.float(),
            ],
            -1,
        )

    def sequence(
        self,
        obs: torch.Tensor,
        prev_action: torch.Tensor,
        prev_reward: torch.Tensor,
        prev_done: torch.Tensor,
        hidden: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Action means (B, T, A) and the last hidden state (B, H) over sequences.

        Inputs are (B, T, ...), ``prev_reward`` and ``prev_done`` (B, T, 1); ``hidden``
        (B, H) is the state before the first step.
        """
        x = self.embed(self._features(obs, prev_action, prev_reward, prev_done))
        out, h = self.gru(x, hidden[None])
        return self.mu(out), h[0]

    def values(
        self,
        obs: torch.Tensor,
        prev_action: torch.Tensor,
        prev_reward: torch.Tensor,
        prev_done: torch.Tensor,
    ) -> torch.Tensor:
        """Critic values (B, T) over whole trials (inputs as :meth:`sequence`)."""
        x = self.critic_embed(self._features(obs, prev_action, prev_reward, prev_done))
        out, _ = self.critic_gru(x)
        return self.v(out).squeeze(-1)

    def forward(
        self,
        obs: torch.Tensor,
        prev_action: torch.Tensor,
        prev_reward: torch.Tensor,
        prev_done: torch.Tensor,
        hidden: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One step: ``(action_mean (B, A), new_hidden (B, H))``; see the module docstring."""
        mu, h = self.sequence(
            obs[:, None], prev_action[:, None], prev_reward[:, None], prev_done[:, None], hidden
        )
        return mu[:, 0], h

    def log_prob(self, mu: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Log-density of actions under N(mu, exp(log_std)), summed over action dims."""
        z = (actions - mu) / self.log_std.exp()
        return (-0.5 * z**2 - self.log_std - 0.5 * _LOG_2PI).sum(-1)


class RL2:
    """RL² with a PPO optimiser; see the module docstring."""

    name: ClassVar[str] = "rl2"
    Config: ClassVar[type] = RL2Config
    LEARNER_ONLY: ClassVar[tuple[str, ...]] = ("opt",)
    """Attributes rollout workers do not need (see :class:`~metagrasp.policies.sampler.Rollout`)."""
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        # Grasp: a trial of 4 episodes is 400 steps; 32 trials = 12,800 steps/iteration.
        "grasp:quick": {"run": {"total_env_steps": 120_000, "num_envs": 32}, "algo": {}},
        "grasp:default": {"run": {"total_env_steps": 4_000_000, "num_envs": 32}, "algo": {}},
        "point:quick": {
            "run": {"total_env_steps": 400_000, "num_envs": 100},
            "algo": {"hidden": [64], "gru_size": 64, "lr": 1e-3},
        },
        "point:default": {
            "run": {"total_env_steps": 3_000_000, "num_envs": 100},
            "algo": {"hidden": [64], "gru_size": 64, "lr": 1e-3},
        },
    }

    def __init__(self, config: RL2Config, spec: EnvSpec, seed: int = 0) -> None:
        self.config, self.spec = config, spec
        torch.manual_seed(seed)
        self.net = RL2Net(
            spec.obs_dim, spec.act_dim, config.hidden, config.gru_size, config.log_std_init
        )
        self.step = self.net  # the export-facing step module
        self.opt = torch.optim.Adam(self.net.parameters(), lr=config.lr, eps=1e-5)
        self.gen = torch.Generator().manual_seed(seed + 7)
        self.task_rng = np.random.default_rng(seed + 11)
        self.iteration = 0

    # --- acting: hidden state + previous action/reward/done -----------------------------

    @property
    def device(self) -> torch.device:
        """Where the learner runs (:meth:`to_device`); acting takes numpy either way."""
        return self.net.log_std.device

    def to_device(self, device: torch.device) -> None:
        """Move the recurrent actor-critic and its normalisers to ``device``
        (``run.device``); the parameters move in place, so the optimiser keeps them. Call
        it before loading a checkpoint."""
        self.net.to(device)

    def init_state(self, n: int) -> dict[str, torch.Tensor]:
        """The start of a trial: zero hidden state, no previous step."""
        dev = self.device
        return {
            "h": torch.zeros(n, self.config.gru_size, device=dev),
            "prev_action": torch.zeros(n, self.spec.act_dim, device=dev),
            "prev_reward": torch.zeros(n, 1, device=dev),
            "prev_done": torch.zeros(n, 1, device=dev),
        }

    @torch.no_grad()
    def _policy_step(
        self, obs: np.ndarray, state: dict, deterministic: bool
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict]:
        """Action, its log-prob, the mean and the state with the candidate hidden."""
        o = on(obs, self.device)[:, None]
        mu, h = self.net.sequence(
            o,
            state["prev_action"][:, None],
            state["prev_reward"][:, None],
            state["prev_done"][:, None],
            state["h"],
        )
        mu = mu[:, 0]
        if deterministic:
            a = mu
        else:
            # Noise from the (CPU) generator, then moved: a GPU learner draws the CPU's stream.
            noise = torch.randn(mu.shape, generator=self.gen).to(mu.device)
            a = mu + self.net.log_std.exp() * noise
        return a, self.net.log_prob(mu, a), mu, {**state, "h_next": h}

    def act(
        self, obs: np.ndarray, task: np.ndarray, state: dict, deterministic: bool = False
    ) -> tuple[np.ndarray, dict]:
        a, _, _, state = self._policy_step(obs, state, deterministic)
        return to_numpy(a), state

    def observe(self, state: dict, step: dict[str, np.ndarray]) -> dict:
        """Commit the step for members whose episode is still running (mask 1)."""
        dev = state["h"].device
        m = torch.as_tensor(step["mask"] > 0).to(dev)[:, None]
        return {
            "h": torch.where(m, state["h_next"], state["h"]),
            "prev_action": torch.where(
                m, on(np.clip(step["actions"], -1.0, 1.0), dev, None), state["prev_action"]
            ),
            "prev_reward": torch.where(m, on(step["rewards"], dev)[:, None], state["prev_reward"]),
            "prev_done": torch.where(m, torch.zeros_like(state["prev_done"]), state["prev_done"]),
        }

    def adapt(self, state: dict, episodes: list[Episodes]) -> dict:
        """Mark the episode boundary; the hidden state carries over to the next episode."""
        out = {k: v for k, v in state.items() if k != "h_next"}
        out["prev_done"] = torch.ones_like(state["prev_done"])
        return out

    def export_modules(self) -> Any:
        """Deployable graphs (:mod:`metagrasp.export.plan`): the single GRU step with the
        hidden state and the previous action/reward/done as state entries (see
        :mod:`metagrasp.export.context_modules`); no adapt graph."""
        from metagrasp.export.context_modules import rl2_graphs
        from metagrasp.export.plan import ExportPlan

        init = self.init_state(1)
        return ExportPlan(
            self.name,
            rl2_graphs(self),
            init_state={"hidden": init.pop("h"), **init},
            adaptation={
                "kind": "recurrent",
                "reward_free": False,
                "restart": False,
                "episode_fields": [],
                "settings": {
                    "gru_size": self.config.gru_size,
                    "trial_episodes": self.config.trial_episodes,
                    "observe": "after every step: observe(state, reward, done) with done = 1 "
                    "on the last step of every episode (terminated or timed out)",
                },
            },
        )

    # --- training: collect trials -> update ---------------------------------------------

    def collect(self, env: Any) -> list[Episodes]:
        """One trial per member: ``trial_episodes`` episodes of one train task in a row."""
        from metagrasp.sim.registry import family_sample_task

        sampler = as_sampler(env)
        n = sampler.num_envs
        sampler.set_tasks([family_sample_task(self.spec.family, self.task_rng) for _ in range(n)])
        return sampler.sample(
            Rollout(_trial_policy, self), self.spec.max_steps, self.config.trial_episodes
        )

    @staticmethod
    def trials(blocks: list[Episodes]) -> dict[str, torch.Tensor]:
        """Each member's valid steps of the trial, in order, left-aligned: (n, L, ...).

        The trial ends (``done`` = 1, no bootstrap) at its last valid step; episode ends
        inside it are not terminal (the return runs on into the next episode).
        """
        mask = np.concatenate([b.mask for b in blocks], 1)
        order = np.argsort(1.0 - mask, axis=1, kind="stable")  # valid steps first, in order
        keep = np.take_along_axis(mask, order, 1)

        def cat(arrays: list[np.ndarray]) -> torch.Tensor:
            a = np.concatenate(arrays, 1)
            idx = order.reshape(order.shape + (1,) * (a.ndim - 2))
            pad = keep.reshape(keep.shape + (1,) * (a.ndim - 2))
            return torch.as_tensor(np.take_along_axis(a, idx, 1) * pad)  # zero padding

        out = {
            "obs": cat([b.obs for b in blocks]),
            "actions": cat([b.actions for b in blocks]),
            "rewards": cat([b.rewards for b in blocks]),
            "mask": cat([b.mask for b in blocks]),
        }
        for k in blocks[0].extras:  # logp, mean, prev_action, prev_reward, prev_done
            out[k] = cat([b.extras[k] for b in blocks])
        lengths = out["mask"].sum(1).long()
        done = torch.zeros_like(out["rewards"])
        done[torch.arange(len(lengths)), (lengths - 1).clamp(min=0)] = 1.0
        out["done"] = done * out["mask"]
        return out

    def update(self, data: dict[str, torch.Tensor]) -> dict[str, float]:
        """PPO epochs over whole trials (minibatches of members)."""
        cfg, net = self.config, self.net
        mask = data["mask"]
        inputs = (
            data["obs"],
            data["prev_action"],
            data["prev_reward"][..., None],
            data["prev_done"][..., None],
        )
        with torch.no_grad():
            values = net.values(*inputs)
        next_values = torch.cat([values[:, 1:], torch.zeros_like(values[:, :1])], 1)
        adv, ret = gae(
            data["rewards"], values, next_values, data["done"], mask, cfg.gamma, cfg.gae_lambda
        )
        n = mask.shape[0]
        mb = max(1, n // cfg.minibatches)
        h0 = torch.zeros(n, cfg.gru_size, device=mask.device)
        stats: dict[str, list[float]] = {"pg_loss": [], "v_loss": [], "entropy": [], "kl": []}
        for _ in range(cfg.epochs):
            perm = torch.randperm(n, generator=self.gen).to(mask.device)
            kl_epoch = []
            for i in range(0, n - mb + 1, mb):
                idx = perm[i : i + mb]
                m = mask[idx]
                count = m.sum().clamp(min=1.0)
                mb_inputs = tuple(x[idx] for x in inputs)
                mu, _ = net.sequence(*mb_inputs, h0[idx])
                v = net.values(*mb_inputs)
                a_adv = adv[idx]
                a_mean = (a_adv * m).sum() / count
                a_std = torch.sqrt((((a_adv - a_mean) * m) ** 2).sum() / count + 1e-8)
                a_adv = (a_adv - a_mean) / a_std
                logp = net.log_prob(mu, data["actions"][idx])
                log_ratio = logp - data["logp"][idx]
                ratio = torch.exp(log_ratio)
                surr = torch.min(
                    ratio * a_adv, torch.clamp(ratio, 1 - cfg.clip, 1 + cfg.clip) * a_adv
                )
                pg = -(surr * m).sum() / count
                v_loss = 0.5 * (((v - ret[idx]) ** 2) * m).sum() / count
                entropy = net.log_std.sum() + 0.5 * self.spec.act_dim * (1.0 + _LOG_2PI)
                loss = pg + cfg.vf_coef * v_loss - cfg.ent_coef * entropy
                self.opt.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(net.parameters(), cfg.max_grad_norm)
                self.opt.step()
                with torch.no_grad():
                    kl = ((((ratio - 1) - log_ratio) * m).sum() / count).item()
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
        data = {k: v.to(self.device) for k, v in self.trials(blocks).items()}
        metrics = self.update(data)
        # Normalisers change after the update, so the log-probs of the collected actions
        # were computed with the very statistics the update used (ratios start at 1).
        valid = data["mask"] > 0
        self.net.norm.update(data["obs"][valid])
        self.net.rew_norm.update(data["rewards"][valid][:, None])
        self.iteration += 1
        first, last = episode_metrics(blocks[:1]), episode_metrics(blocks[-1:])
        metrics.update({k: v for k, v in last.items() if k != "env_steps"})
        metrics.update({f"{k}_first": v for k, v in first.items() if k != "env_steps"})
        metrics["env_steps"] = float(sum(b.env_steps for b in blocks))
        metrics["action_std"] = float(self.net.log_std.detach().exp().mean())
        return metrics

    # --- checkpoints -----------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {
            "net": self.net.state_dict(),
            "opt": self.opt.state_dict(),
            "gen": self.gen.get_state(),
            "task_rng": self.task_rng.bit_generator.state,
            "iteration": self.iteration,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.net.load_state_dict(state["net"])
        self.opt.load_state_dict(state["opt"])
        self.gen.set_state(state["gen"])
        self.task_rng.bit_generator.state = state["task_rng"]
        self.iteration = int(state["iteration"])


def _trial_policy(algo: RL2, per_member: dict[str, Any], n: int) -> BoundPolicy:
    """The recurrent policy of ``n`` members, its hidden state carried across the
    trial's episodes (``next_episode`` marks each boundary)."""
    state = [algo.init_state(n)]

    def policy(obs: np.ndarray, task: np.ndarray) -> tuple[np.ndarray, dict]:
        s = state[0]
        a, logp, mu, state[0] = algo._policy_step(obs, s, False)
        extras = {
            "logp": to_numpy(logp),
            "mean": to_numpy(mu),
            "prev_action": to_numpy(s["prev_action"]),
            "prev_reward": to_numpy(s["prev_reward"][:, 0]),
            "prev_done": to_numpy(s["prev_done"][:, 0]),
        }
        return to_numpy(a), extras

    def on_step(step: dict[str, np.ndarray]) -> None:
        state[0] = algo.observe(state[0], step)

    def next_episode(blocks: list[Episodes]) -> None:
        state[0] = algo.adapt(state[0], blocks)

    return BoundPolicy(policy, on_step, next_episode)
