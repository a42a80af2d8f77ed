"""CAVIA: gradient-based meta-RL that adapts only a context vector, with a PPO outer loop.

Zintgraf et al., "Fast Context Adaptation via Meta-Learning" (ICML 2019): the policy
takes a context vector ``phi`` as an extra input; for a new task, ``phi`` starts at zero
and takes a few policy-gradient steps on that task's episodes, while the network weights
``theta`` stay fixed. Meta-training learns ``theta`` (and per-dimension inner step sizes,
as in Meta-SGD) so that those few steps on ``phi`` give a good policy for the task. The
outer loop is PPO's clipped surrogate on post-adaptation episodes, differentiated
through the inner update (second order, as ProMP does with its own surrogate).

The inner update is the plain function
:func:`metagrasp.policies.functional.inner_update` of (parameters, batch of
transitions), so the exporter can turn it into an ONNX graph for on-device adaptation.

Seams, per iteration: :meth:`CAVIA.collect` (one pre-adaptation episode per member
with ``phi = 0``, on tasks sampled once for both episodes) -> :meth:`CAVIA.adapt`
(inner step on those episodes) -> collect post-adaptation episodes ->
:meth:`CAVIA.update` (PPO epochs over members, re-running the differentiable inner
step in every minibatch).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from metagrasp.errors import ConfigError
from metagrasp.policies import functional as fn
from metagrasp.policies.base import EnvSpec
from metagrasp.policies.collect import Episodes, episode_metrics
from metagrasp.policies.networks import ActorCritic, critic_gae
from metagrasp.policies.sampler import BoundPolicy, Rollout, Sampler, as_sampler


@dataclass
class CAVIAConfig:
    """CAVIA hyper-parameters."""

    hidden: tuple[int, ...] = (128, 128)
    """Hidden layer widths of actor and critic."""
    ctx_dim: int = 8
    """Size of the adapted context vector."""
    inner_lr: float = 1.0
    """Initial inner-loop step size on the context (per dimension, learned if enabled)."""
    learn_inner_lr: bool = True
    """Meta-learn the per-dimension inner step sizes (Meta-SGD style)."""
    inner_steps: int = 1
    """Gradient steps of the inner loop (training and meta-test alike)."""
    lr: float = 3e-4
    """Adam learning rate of the outer loop."""
    gamma: float = 0.99
    """Discount factor."""
    gae_lambda: float = 0.95
    """GAE lambda (outer and inner advantages)."""
    clip: float = 0.2
    """PPO clipping range of the outer surrogate."""
    epochs: int = 5
    """Outer optimisation epochs per iteration."""
    minibatches: int = 4
    """Minibatches (of members) per epoch."""
    pre_loss_coef: float = 0.5
    """Weight of a PPO loss on the pre-adaptation episodes: keeps the unadapted policy
    (k = 0, and the source of adaptation data) good, not only its adapted version."""
    vf_coef: float = 0.5
    """Value loss weight."""
    max_grad_norm: float = 0.5
    """Gradient clipping norm."""
    log_std_init: float = -0.5
    """Initial log std of the Gaussian policy."""
    demo_tasks: int = 0
    """Guided meta-policy search (Mendonca et al. 2019, GMPS): this many ``train``
    tasks, each with one scripted grasp at the grip its hidden parameters call for
    (training only; grasp families). Every iteration draws its members' tasks from them,
    and the outer loss adds ``bc_coef`` times the negative log-likelihood of each task's
    demonstration under the *adapted* context (and ``pre_loss_coef`` times that under
    the zero context). The meta-gradient through the inner step then teaches the inner
    loop to move the context to where that object's expert acts, and the network the
    motion. 0 = plain CAVIA (the presets): on grasp-lift ``val`` 1000 tasks gained +0.02
    at k = 3 (+0.03 with ``inner_lr=10``), under the 0.05 asked for, and every fragile
    object was still crushed (docs/BENCHMARKS.md, issue #3, 2026-12-07 10:10 UTC)."""
    bc_coef: float = 0.1
    """Weight of the demonstrations' negative log-likelihood (per step, summed over the
    action's dimensions) in the outer loss; only with ``demo_tasks`` > 0."""

    def __post_init__(self) -> None:
        if self.demo_tasks < 0:
            raise ConfigError(f"algo.demo_tasks={self.demo_tasks} must be >= 0")
        if self.bc_coef < 0:
            raise ConfigError(f"algo.bc_coef={self.bc_coef} must be >= 0")
        if self.ctx_dim < 1:
            raise ConfigError(f"algo.ctx_dim={self.ctx_dim} must be >= 1")
        if self.inner_steps < 1:
            raise ConfigError(f"algo.inner_steps={self.inner_steps} must be >= 1")
        for name in ("lr", "inner_lr", "clip", "max_grad_norm"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"algo.{name}={getattr(self, name)} must be > 0")
        for name in ("epochs", "minibatches"):
            if getattr(self, name) < 1:
                raise ConfigError(f"algo.{name}={getattr(self, name)} must be >= 1")


class CAVIA:
    """CAVIA with a PPO outer loop; see the module docstring."""

    name: ClassVar[str] = "cavia"
    Config: ClassVar[type] = CAVIAConfig
    LEARNER_ONLY: ClassVar[tuple[str, ...]] = ("opt", "demos")
    """Attributes rollout workers do not need (see :class:`~metagrasp.policies.sampler.Rollout`)."""
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "grasp:quick": {"run": {"total_env_steps": 120_000, "num_envs": 32}, "algo": {}},
        "grasp:default": {"run": {"total_env_steps": 4_000_000, "num_envs": 32}, "algo": {}},
        "point:quick": {
            "run": {"total_env_steps": 200_000, "num_envs": 100},
            "algo": {"hidden": [64, 64], "lr": 3e-4, "inner_lr": 10.0},
        },
        # Three inner steps, chosen on `val` (k = 3 return -8.76 against -10.54 with one;
        # docs/BENCHMARKS.md, point-nav section). `quick` keeps one, as CI smoke-tests it.
        "point:default": {
            "run": {"total_env_steps": 1_000_000, "num_envs": 100},
            "algo": {"hidden": [64, 64], "lr": 3e-4, "inner_lr": 10.0, "inner_steps": 3},
        },
    }

    def __init__(self, config: CAVIAConfig, spec: EnvSpec, seed: int = 0) -> None:
        self.config, self.spec = config, spec
        c = config
        self.net = ActorCritic(
            spec.obs_dim, spec.act_dim, c.hidden, c.ctx_dim, c.log_std_init, seed
        )
        self.inner_lr = nn.Parameter(torch.full((c.ctx_dim,), float(c.inner_lr)))
        params = list(self.net.parameters())
        if c.learn_inner_lr:
            params.append(self.inner_lr)
        self.opt = torch.optim.Adam(params, lr=c.lr, eps=1e-5)
        self.gen = torch.Generator().manual_seed(seed + 7)
        self.task_rng = np.random.default_rng(seed + 11)
        self.iteration = 0
        self.seed = seed
        self.demos: dict[str, Any] | None = None  # recorded at the first iteration

    # --- the inner loop ----------------------------------------------------------------

    def to_device(self, device: torch.device) -> None:
        """Move the actor-critic, its normaliser and the inner step size to ``device``
        (``run.device``); the parameters move in place, so the optimiser keeps them. Call
        it before loading a checkpoint."""
        self.net.to(device)
        with torch.no_grad():
            self.inner_lr.data = self.inner_lr.data.to(device)

    def _ctx0(self, n: int) -> torch.Tensor:
        return torch.zeros(n, self.config.ctx_dim, device=self.net.device)

    def inner_batch(self, episodes: list[Episodes]) -> dict[str, torch.Tensor]:
        """Transitions of each member's episodes with advantages, ready for the inner loss.

        Advantages are GAE under the critic at the unadapted context, normalised per
        member over its valid steps (so the step size does not depend on reward scale).
        """
        cfg, net, dev = self.config, self.net, self.net.device
        parts: dict[str, list[torch.Tensor]] = {"obs": [], "actions": [], "adv": [], "mask": []}
        for ep in episodes:
            ctx0 = self._ctx0(ep.obs.shape[0])
            adv, _ = critic_gae(net, ep.obs, ep.next_obs, ep, cfg.gamma, cfg.gae_lambda, ctx0)
            parts["obs"].append(net.norm(torch.as_tensor(ep.obs).to(dev)))
            parts["actions"].append(torch.as_tensor(ep.actions).to(dev))
            parts["adv"].append(adv)
            parts["mask"].append(torch.as_tensor(ep.mask).to(dev))
        batch = {k: torch.cat(v, dim=1) for k, v in parts.items()}
        m = batch["mask"]
        count = m.sum(1, keepdim=True).clamp(min=1.0)
        mean = (batch["adv"] * m).sum(1, keepdim=True) / count
        var = (((batch["adv"] - mean) * m) ** 2).sum(1, keepdim=True) / count
        batch["advantages"] = (batch.pop("adv") - mean) / torch.sqrt(var + 1e-8) * m
        return batch

    def adapted_context(self, batch: dict[str, torch.Tensor], create_graph: bool) -> torch.Tensor:
        """The inner loop: ``inner_steps`` gradient steps on the context from zero."""
        n = batch["obs"].shape[0]
        with torch.enable_grad():
            ctx, _ = fn.inner_update(
                self.net.params,
                batch,
                context=self._ctx0(n).requires_grad_(True),
                lr=self.inner_lr.clamp(min=1e-3),
                steps=self.config.inner_steps,
                create_graph=create_graph,
            )
        return ctx

    # --- meta-test side ------------------------------------------------------------------

    def init_state(self, n: int) -> torch.Tensor:
        return self._ctx0(n)

    def act(
        self, obs: np.ndarray, task: np.ndarray, state: torch.Tensor, deterministic: bool = False
    ) -> tuple[np.ndarray, torch.Tensor]:
        a, _, _ = self.net.sample(obs, state.to(self.net.device), deterministic, self.gen)
        return a, state

    def observe(self, state: torch.Tensor, step: dict[str, np.ndarray]) -> torch.Tensor:
        return state

    def adapt(self, state: torch.Tensor, episodes: list[Episodes]) -> torch.Tensor:
        """Context after the inner loop on every episode so far (from zero, not chained)."""
        return self.adapted_context(self.inner_batch(episodes), create_graph=False).detach()

    def export_modules(self) -> Any:
        """Deployable graphs (the seam of :mod:`metagrasp.export.plan`): the
        context-conditioned policy, the critic for on-device GAE and the inner loop."""
        from metagrasp.export import modules as em
        from metagrasp.export.plan import ExportPlan

        c, s = self.config, self.spec
        lr = self.inner_lr.detach().clamp(min=1e-3)  # as adapted_context() uses it
        adapt = em.context_adapt_graph(
            self.net, lr, c.inner_steps, s.obs_dim, s.act_dim, s.max_steps
        )
        return ExportPlan(
            self.name,
            [
                em.gaussian_policy_graph(self.net, s.obs_dim, 0, c.ctx_dim),
                em.critic_graph(self.net, s.obs_dim, c.ctx_dim, s.max_steps),
                adapt,
            ],
            init_state={"context": self._ctx0(1)},
            adaptation={
                "kind": "gradient",
                "reward_free": False,
                "restart": True,  # adapt() restarts from zero on every episode so far
                "episode_fields": ["obs", "actions", "rewards", "next_obs", "dones"],
                "advantages": {"gamma": c.gamma, "lambda": c.gae_lambda, "normalize": "member"},
                "settings": {
                    "adapted": ["context"],
                    "inner_lr": lr.tolist(),
                    "inner_steps": c.inner_steps,
                    "episode_length": s.max_steps,
                },
            },
            exploration="gaussian",
        )

    # --- training: collect -> adapt -> update -----------------------------------------

    def collect(self, env: Any, context: torch.Tensor) -> Episodes:
        """One episode per member with the given per-member context."""
        rollout = Rollout(_context_policy, self, {"context": context})
        return as_sampler(env).sample(rollout, self.spec.max_steps)[0]

    def _ppo_terms(
        self, ep: Episodes, members: torch.Tensor, ctx: torch.Tensor, adv: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Clipped surrogate and value loss of some members' episodes under ``ctx``."""
        net, clip, dev = self.net, self.config.clip, self.net.device
        idx = members.numpy()  # members: CPU indices (the generator's permutation)
        members = members.to(dev)
        x = net.norm(torch.as_tensor(ep.obs[idx]).to(dev))
        mask = torch.as_tensor(ep.mask[idx]).to(dev)
        logp = net.log_prob(x, torch.as_tensor(ep.actions[idx]).to(dev), ctx)
        ratio = torch.exp(logp - torch.as_tensor(ep.extras["logp"][idx]).to(dev))
        a = adv[members]
        surr = torch.min(ratio * a, torch.clamp(ratio, 1 - clip, 1 + clip) * a)
        pg = -(surr * mask).sum() / mask.sum().clamp(min=1)
        ret = self._returns[id(ep)][members]
        v = net.value(x, ctx.detach())
        v_loss = 0.5 * (((v - ret) ** 2) * mask).sum() / mask.sum().clamp(min=1)
        return pg, v_loss

    def _advantages(self, ep: Episodes, ctx: torch.Tensor) -> torch.Tensor:
        """Outer advantages (normalised over the batch) and value targets of an episode."""
        cfg = self.config
        adv, ret = critic_gae(self.net, ep.obs, ep.next_obs, ep, cfg.gamma, cfg.gae_lambda, ctx)
        mask = torch.as_tensor(ep.mask).to(adv.device)
        self._returns[id(ep)] = ret
        valid = adv[mask.bool()]
        return (adv - valid.mean()) / (valid.std() + 1e-8) * mask

    def _record_demos(self) -> dict[str, Any]:
        """The demonstration tasks (see ``demo_tasks``), one padded episode each: a pure
        function of the seed, so it is recorded again on resume, not checkpointed."""
        from metagrasp.sim.registry import family_sample_task
        from metagrasp.sim.scripted import expert_episodes

        n, fam, horizon = self.config.demo_tasks, self.spec.family, self.spec.max_steps
        rng = np.random.default_rng(2_000_000 + self.seed)
        tasks = [family_sample_task(fam, rng) for _ in range(n)]
        d = expert_episodes(fam, n, 1_000_000 + self.seed, privileged=True, tasks=tasks)
        obs = np.zeros((n, horizon, self.spec.obs_dim), np.float32)
        actions = np.zeros((n, horizon, self.spec.act_dim), np.float32)
        mask = np.zeros((n, horizon), np.float32)
        start = np.concatenate([[0], np.cumsum(d["length"])])
        for i, (a, b) in enumerate(zip(start[:-1], start[1:], strict=True)):
            obs[i, : b - a], actions[i, : b - a] = d["obs"][a:b], d["actions"][a:b]
            mask[i, : b - a] = 1.0
        if self.iteration == 0:  # a fresh run's normaliser starts from the demos too
            self.net.norm.update(torch.as_tensor(d["obs"]))
        dev = self.net.device
        return {
            "tasks": tasks,
            "obs": torch.as_tensor(obs).to(dev),
            "actions": torch.as_tensor(actions).to(dev),
            "mask": torch.as_tensor(mask).to(dev),
            "success": float(np.mean(d["success"])),
        }

    def _bc_term(self, rows: np.ndarray, ctx: torch.Tensor) -> torch.Tensor:
        """Mean negative log-likelihood of demonstrations ``rows`` under contexts ``ctx``."""
        d = self.demos
        assert d is not None
        mask = d["mask"][rows]
        logp = self.net.log_prob(self.net.norm(d["obs"][rows]), d["actions"][rows], ctx)
        return -(logp * mask).sum() / mask.sum().clamp(min=1)

    def update(
        self, pre: Episodes, post: Episodes, demo_rows: np.ndarray | None = None
    ) -> dict[str, float]:
        """PPO epochs over members; the post-adaptation loss flows through the inner step.

        ``demo_rows``: each member's demonstration (``demo_tasks``), cloned under the
        adapted context as part of the outer loss."""
        cfg, net = self.config, self.net
        n = pre.obs.shape[0]
        net.norm.update(torch.as_tensor(pre.obs[pre.mask > 0]))
        net.norm.update(torch.as_tensor(post.obs[post.mask > 0]))
        self._returns: dict[int, torch.Tensor] = {}
        ctx0 = self._ctx0(n)
        with torch.no_grad():
            ctx1 = self.adapted_context(self.inner_batch([pre]), create_graph=False)
        adv_pre = self._advantages(pre, ctx0)
        adv_post = self._advantages(post, ctx1)
        stats: dict[str, list[float]] = {"pg_post": [], "pg_pre": [], "v_loss": []}
        if demo_rows is not None:
            stats.update(bc_post=[], bc_pre=[])
        mb = max(1, n // cfg.minibatches)
        for _ in range(cfg.epochs):
            perm = torch.randperm(n, generator=self.gen)
            for i in range(0, n - mb + 1, mb):
                members = perm[i : i + mb]  # on the CPU; _ppo_terms moves them
                on_dev = members.to(net.device)
                inner = {k: v[on_dev] for k, v in self.inner_batch([pre]).items()}
                ctx = self.adapted_context(inner, create_graph=True)
                pg_post, v_post = self._ppo_terms(post, members, ctx, adv_post)
                pg_pre, v_pre = self._ppo_terms(pre, members, ctx0[on_dev], adv_pre)
                loss = pg_post + cfg.pre_loss_coef * pg_pre + cfg.vf_coef * (v_post + v_pre)
                if demo_rows is not None:
                    rows = demo_rows[members.numpy()]
                    bc_post = self._bc_term(rows, ctx)
                    bc_pre = self._bc_term(rows, ctx0[on_dev])
                    loss = loss + cfg.bc_coef * (bc_post + cfg.pre_loss_coef * bc_pre)
                    stats["bc_post"].append(bc_post.item())
                    stats["bc_pre"].append(bc_pre.item())
                self.opt.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(
                    [*net.parameters(), self.inner_lr], cfg.max_grad_norm
                )
                self.opt.step()
                stats["pg_post"].append(pg_post.item())
                stats["pg_pre"].append(pg_pre.item())
                stats["v_loss"].append((v_post + v_pre).item())
        self._returns = {}
        return {k: float(np.mean(v)) for k, v in stats.items()}

    def train_iteration(self, env: Any) -> dict[str, float]:
        from metagrasp.sim.registry import family_sample_task

        sampler: Sampler = as_sampler(env)
        n = sampler.num_envs
        if self.config.demo_tasks and self.demos is None:
            self.demos = self._record_demos()
        if self.demos is None:
            rows = None
            tasks = [family_sample_task(self.spec.family, self.task_rng) for _ in range(n)]
        else:
            rows = self.task_rng.integers(len(self.demos["tasks"]), size=n)
            tasks = [self.demos["tasks"][i] for i in rows]
        sampler.set_tasks(tasks)
        pre = self.collect(sampler, self._ctx0(n))
        ctx1 = self.adapt(self._ctx0(n), [pre])
        post = self.collect(sampler, ctx1)
        metrics = self.update(pre, post, rows)
        self.iteration += 1
        before, after = episode_metrics([pre]), episode_metrics([post])
        metrics.update({f"{k}_pre": v for k, v in before.items() if k != "env_steps"})
        metrics.update({k: v for k, v in after.items() if k != "env_steps"})
        metrics["env_steps"] = before["env_steps"] + after["env_steps"]
        metrics["inner_lr"] = float(self.inner_lr.detach().mean())
        metrics["ctx_norm"] = float(ctx1.norm(dim=1).mean())
        if self.demos is not None:
            metrics["demo_success"] = self.demos["success"]
        return metrics

    # --- checkpoints -----------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {
            "net": self.net.state_dict(),
            "inner_lr": self.inner_lr.detach().clone(),
            "opt": self.opt.state_dict(),
            "gen": self.gen.get_state(),
            "task_rng": self.task_rng.bit_generator.state,
            "iteration": self.iteration,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.net.load_state_dict(state["net"])
        with torch.no_grad():
            self.inner_lr.copy_(state["inner_lr"])
        self.opt.load_state_dict(state["opt"])
        self.gen.set_state(state["gen"])
        self.task_rng.bit_generator.state = state["task_rng"]
        self.iteration = int(state["iteration"])


def _context_policy(algo: CAVIA, per_member: dict[str, Any], n: int) -> BoundPolicy:
    """The policy under each member's context (zero before adaptation)."""
    context = per_member["context"]

    def policy(obs: np.ndarray, task: np.ndarray) -> tuple[np.ndarray, dict]:
        a, logp, v = algo.net.sample(obs, context, False, algo.gen)
        return a, {"logp": logp, "value": v}

    return BoundPolicy(policy)
