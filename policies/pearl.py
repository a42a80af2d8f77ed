"""PEARL: off-policy meta-RL with a probabilistic context encoder over a SAC agent.

Rakelly et al., "Efficient Off-Policy Meta-Reinforcement Learning via Probabilistic
Context Variables" (ICML 2019), following the authors' code (``katerakelly/oyster``):

* an encoder maps every context transition ``(s, a, r, s')`` to a Gaussian factor
  ``N(mu_i, var_i)`` over a latent ``z``; the posterior ``q(z | c)`` is their product
  (:func:`product_of_gaussians`, permutation invariant, sharper with more data), and a KL
  term to the prior ``N(0, I)`` (:func:`kl_to_prior`) is the information bottleneck;
* SAC (twin critics, target critics, automatic temperature as in
  :mod:`metagrasp.policies.sac`) on ``(s, z)``: the critics' Bellman loss trains the
  encoder through ``z``; the actor sees ``z`` detached (oyster's split of gradients);
* the paper's separation of the context batch from the RL batch: each training task has
  an RL replay buffer (everything ever collected on it) and a context buffer that is
  cleared before each new round of collection on that task (recent data only, the data
  the encoder will see at meta-test); the encoder's context is sampled from the latter,
  the critics' and actor's batch from the former;
* meta-training tasks are a fixed pool of ``num_train_tasks`` tasks drawn once from the
  train split (oyster's ``n_train_tasks``), so per-task buffers can accumulate data;
* exploration by posterior sampling: a round on a task starts with ``z`` from the prior,
  and each later episode samples ``z`` from the posterior of everything gathered so far.

Meta-test (:mod:`metagrasp.policies.evaluate`) does the same: the state is
``{"mean", "var", "z"}``; at k = 0 the prior, and after each finished episode the
posterior of all transitions of the task's episodes so far. Acting samples ``z`` once
per episode (posterior sampling) and samples actions; ``deterministic`` acts with the
posterior mean and the mean action.

Export-facing modules (plain ``nn.Module``; both normalise raw inputs themselves with the
shared observation normaliser ``PEARL.norm``, a :class:`~metagrasp.policies.networks.RunningNorm`):

* ``PEARL.encoder`` (:class:`ContextEncoder`)::

      encoder(obs (B, T, obs_dim), actions (B, T, act_dim), rewards (B, T),
              next_obs (B, T, obs_dim), mask (B, T)) -> (mean (B, L), var (B, L))

  the posterior over ``T`` transitions (mask 0 = padding; a row without any valid
  transition gives the prior); ``encoder.factors(obs, actions, rewards, next_obs)`` gives
  the per-transition factors ``(mu, var)`` of shape ``(..., L)``.
* ``PEARL.policy`` (:class:`LatentPolicy`)::

      policy(obs (B, obs_dim), z (B, L)) -> action mean (B, act_dim) in [-1, 1]

Seams, per iteration: :meth:`PEARL.collect` (a round of episodes on pool tasks: prior,
then posterior sampling) -> adaptation is the encoder's posterior inside the round ->
:meth:`PEARL.update` (gradient steps on meta-batches of tasks).
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from metagrasp.errors import ConfigError
from metagrasp.policies.base import EnvSpec
from metagrasp.policies.collect import Episodes, episode_metrics
from metagrasp.policies.device import batch_to, on, to_numpy
from metagrasp.policies.networks import RunningNorm
from metagrasp.policies.sac import LOG_STD_MAX, LOG_STD_MIN, SAC, actor_and_temperature_step
from metagrasp.policies.sampler import BoundPolicy, Rollout, as_sampler
from metagrasp.policies.task_replay import TaskReplay

MIN_VAR = 1e-7
"""Floor of a factor's variance (oyster's clamp), so precisions stay finite."""
_LOG_2PI = float(np.log(2 * np.pi))
_LOG_2 = float(np.log(2))


def relu_mlp(sizes: tuple[int, ...], out_gain: float = 1.0) -> nn.Sequential:
    """ReLU MLP (oyster's networks; several times cheaper than tanh on CPU), orthogonal init."""
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        lin = nn.Linear(sizes[i], sizes[i + 1])
        last = i == len(sizes) - 2
        nn.init.orthogonal_(lin.weight, out_gain if last else np.sqrt(2))
        nn.init.zeros_(lin.bias)
        layers.append(lin)
        if not last:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


@dataclass
class PEARLConfig:
    """PEARL hyper-parameters."""

    hidden: tuple[int, ...] = (256, 256)
    """Hidden layer widths of the actor and the critics."""
    encoder_hidden: tuple[int, ...] = (200, 200, 200)
    """Hidden layer widths of the context encoder (oyster: three layers of 200)."""
    latent_dim: int = 5
    """Size of the latent task variable z."""
    lr: float = 3e-4
    """Adam learning rate of actor, critics and temperature."""
    encoder_lr: float = 3e-4
    """Adam learning rate of the context encoder."""
    gamma: float = 0.99
    """Discount factor."""
    tau: float = 0.005
    """Polyak averaging rate of the target critics."""
    init_alpha: float = 0.1
    """Initial entropy temperature (tuned automatically towards ``target_entropy``)."""
    target_entropy: float | None = None
    """Policy entropy (nats) the temperature is tuned towards; ``None`` = -act_dim."""
    reward_scale: float = 1.0
    """Multiplier of rewards in the Bellman target (oyster's ``reward_scale``)."""
    kl_weight: float = 0.1
    """Weight of KL(q(z|c) || N(0, I)) (summed over z, averaged over tasks) in the
    encoder loss (oyster's ``kl_lambda``)."""
    num_train_tasks: int = 100
    """Size of the fixed pool of meta-training tasks drawn from the train split."""
    task_buffer_size: int = 2000
    """RL replay capacity per training task (transitions)."""
    prior_episodes: int = 1
    """Episodes per round with z drawn from the prior (stored for context and RL)."""
    posterior_episodes: int = 3
    """Episodes per round with z sampled from the posterior of the round so far."""
    posterior_in_context: bool = True
    """Also store the posterior episodes in the context buffer (then the encoder trains
    on contexts like the meta-test ones, which include posterior-sampled episodes)."""
    meta_batch: int = 16
    """Tasks per gradient step."""
    batch_size: int = 128
    """RL transitions per task per gradient step."""
    context_batch: int = 60
    """Most context transitions per task per gradient step (sampled from the context
    buffer); each task keeps a uniformly drawn number in [context_min, context_batch]
    of them, so the encoder learns posteriors from little and from much data."""
    context_min: int = 1
    """Fewest context transitions kept per task per gradient step."""
    context_next_obs: bool = True
    """Feed s' to the encoder as well (tells dynamics parameters apart)."""
    updates_per_step: float = 0.25
    """Gradient steps per collected env step (all members counted)."""
    warmup_steps: int = 2000
    """Env steps collected (with the initial policy) before learning starts."""

    def __post_init__(self) -> None:
        for name in ("hidden", "encoder_hidden"):
            if not getattr(self, name) or min(getattr(self, name)) < 1:
                raise ConfigError(f"algo.{name}={getattr(self, name)} needs positive widths")
        for name in ("lr", "encoder_lr", "tau", "init_alpha", "reward_scale", "updates_per_step"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"algo.{name}={getattr(self, name)} must be > 0")
        if self.kl_weight < 0:
            raise ConfigError(f"algo.kl_weight={self.kl_weight} must be >= 0")
        if not 0.0 <= self.gamma <= 1.0:
            raise ConfigError(f"algo.gamma={self.gamma} must be in [0, 1]")
        positive = ("latent_dim", "num_train_tasks", "task_buffer_size", "prior_episodes")
        for name in (*positive, "meta_batch", "batch_size", "context_min"):
            if getattr(self, name) < 1:
                raise ConfigError(f"algo.{name}={getattr(self, name)} must be >= 1")
        if self.posterior_episodes < 0:
            raise ConfigError(f"algo.posterior_episodes={self.posterior_episodes} must be >= 0")
        if self.context_batch < self.context_min:
            raise ConfigError(
                f"algo.context_batch={self.context_batch} must be >= "
                f"algo.context_min={self.context_min}"
            )


# --- the posterior over z ---------------------------------------------------------------


def product_of_gaussians(
    mu: torch.Tensor, var: torch.Tensor, mask: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Product of independent Gaussian factors over the transition axis.

    ``var = 1 / sum_i (1 / var_i)`` and ``mean = var * sum_i (mu_i / var_i)``, over the
    valid factors only; a row with no valid factor gets the prior ``N(0, I)``.

    Args:
        mu: factor means (..., T, L).
        var: factor variances (..., T, L), floored at :data:`MIN_VAR`.
        mask: (..., T), 1 for valid factors (default: all valid).

    Returns:
        (mean, var), each (..., L).
    """
    prec = 1.0 / var.clamp(min=MIN_VAR)
    if mask is not None:
        prec = prec * mask.unsqueeze(-1).to(prec.dtype)
    total = prec.sum(-2)
    empty = total <= 0
    post_var = 1.0 / torch.where(empty, torch.ones_like(total), total)
    post_mean = post_var * (prec * mu).sum(-2)
    # A row without data is the prior: mean 0 (already), variance 1 (also already: 1/1).
    return torch.where(empty, torch.zeros_like(post_mean), post_mean), post_var


def kl_to_prior(mean: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, diag var) || N(0, I)), summed over the last axis."""
    return 0.5 * (var + mean**2 - 1.0 - torch.log(var)).sum(-1)


class ContextEncoder(nn.Module):
    """Transitions -> Gaussian factors over z -> their product (see the module docstring).

    Args:
        norm: the shared observation normaliser (raw observations in).
        rew_norm: normaliser of rewards (1-D).
        obs_dim: observation size.
        act_dim: action size.
        latent_dim: size of z.
        hidden: hidden layer widths.
        next_obs: whether s' is part of a transition's input.
    """

    def __init__(
        self,
        norm: RunningNorm,
        rew_norm: RunningNorm,
        obs_dim: int,
        act_dim: int,
        latent_dim: int,
        hidden: tuple[int, ...],
        next_obs: bool,
    ) -> None:
        super().__init__()
        self.norm, self.rew_norm, self.use_next_obs = norm, rew_norm, next_obs
        in_dim = obs_dim * (2 if next_obs else 1) + act_dim + 1
        self.net = relu_mlp((in_dim, *hidden, 2 * latent_dim))
        self.latent_dim = latent_dim

    def factors(
        self,
        obs: torch.Tensor,
        actions: torch.Tensor,
        rewards: torch.Tensor,
        next_obs: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-transition factors ``(mu, var)``, each (..., L), of raw transitions."""
        parts = [self.norm(obs), actions, self.rew_norm(rewards.unsqueeze(-1))]
        if self.use_next_obs:
            parts.append(self.norm(next_obs))
        out = self.net(torch.cat([p.float() for p in parts], -1))
        mu, raw = out.split(self.latent_dim, -1)
        return mu, nn.functional.softplus(raw).clamp(min=MIN_VAR)

    def forward(
        self,
        obs: torch.Tensor,
        actions: torch.Tensor,
        rewards: torch.Tensor,
        next_obs: torch.Tensor,
        mask: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior ``(mean, var)`` (B, L) of transitions (B, T, ...) with a mask (B, T)."""
        mu, var = self.factors(obs, actions, rewards, next_obs)
        return product_of_gaussians(mu, var, mask)


class LatentPolicy(nn.Module):
    """The tanh-squashed Gaussian actor of SAC on (normalised observation, z).

    Args:
        norm: the shared observation normaliser (raw observations in ``forward``).
        obs_dim: observation size.
        act_dim: action size.
        latent_dim: size of z.
        hidden: hidden layer widths.
    """

    def __init__(
        self,
        norm: RunningNorm,
        obs_dim: int,
        act_dim: int,
        latent_dim: int,
        hidden: tuple[int, ...],
    ) -> None:
        super().__init__()
        self.norm = norm
        self.body = relu_mlp((obs_dim + latent_dim, *hidden, 2 * act_dim), out_gain=0.01)

    def sample(
        self,
        x: torch.Tensor,
        z: torch.Tensor,
        deterministic: bool = False,
        gen: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Actions and log-probs for *normalised* observations ``x`` and latents ``z``."""
        mu, log_std = self.body(torch.cat([x, z], -1)).chunk(2, -1)
        log_std = torch.clamp(log_std, LOG_STD_MIN, LOG_STD_MAX)
        std = log_std.exp()
        # Noise from the (CPU) generator, then moved: a GPU learner draws the CPU's stream.
        u = mu if deterministic else mu + std * torch.randn(mu.shape, generator=gen).to(mu.device)
        logp = (-0.5 * ((u - mu) / std) ** 2 - log_std - 0.5 * _LOG_2PI).sum(-1)
        # tanh change of variables, in the numerically stable form of sac.Actor
        logp = logp - (2 * (_LOG_2 - u - nn.functional.softplus(-2 * u))).sum(-1)
        return torch.tanh(u), logp

    def forward(self, obs: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Mean action in [-1, 1] for raw observations (B, obs_dim) and z (B, L)."""
        return self.sample(self.norm(obs.float()), z, deterministic=True)[0]


# --- the algorithm ----------------------------------------------------------------------

_GRASP: dict[str, Any] = {
    "hidden": [128, 128],
    "encoder_hidden": [128, 128],
    "batch_size": 64,
    "updates_per_step": 0.05,
    "context_batch": 300,
    "context_min": 50,
}
_POINT: dict[str, Any] = {
    "hidden": [64, 64],
    "encoder_hidden": [64, 64],
    "batch_size": 64,
    "updates_per_step": 0.5,
}


class PEARL:
    """PEARL; see the module docstring."""

    name: ClassVar[str] = "pearl"
    Config: ClassVar[type] = PEARLConfig
    # SAC's learner-only parts, plus the context buffer, encoder optimiser and task pool.
    LEARNER_ONLY: ClassVar[tuple[str, ...]] = (
        *SAC.LEARNER_ONLY,
        "context",
        "opt_encoder",
        "tasks",
    )
    """Attributes rollout workers do not need (see :class:`~metagrasp.policies.sampler.Rollout`)."""
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        # Grasp: 100-step episodes, so the meta-test context after k = 3 is 300 transitions.
        # Encoding 16 such contexts per gradient step dominates the cost on 2 CPU cores
        # (about 65 ms per step with these widths), hence narrower networks than SAC's and
        # 0.05 gradient steps per env step: 1 M env steps = 50 k gradient steps, ~1 h.
        "grasp:quick": {
            "run": {"total_env_steps": 20_000, "num_envs": 16},
            "algo": {**_GRASP, "warmup_steps": 6_400},
        },
        "grasp:default": {
            "run": {"total_env_steps": 1_000_000, "num_envs": 16},
            "algo": {**_GRASP, "warmup_steps": 12_800},
        },
        # Point: 20 tasks x 4 episodes x 20 steps = 1,600 env steps and 800 gradient steps
        # per round.
        "point:quick": {
            "run": {"total_env_steps": 30_000, "num_envs": 20},
            "algo": {**_POINT, "warmup_steps": 3_200},
        },
        "point:default": {
            "run": {"total_env_steps": 100_000, "num_envs": 20},
            "algo": {**_POINT, "warmup_steps": 1_600},
        },
    }

    def __init__(self, config: PEARLConfig, spec: EnvSpec, seed: int = 0) -> None:
        from metagrasp.sim.registry import family_sample_task

        self.config, self.spec = config, spec
        c, o, a, L = config, spec.obs_dim, spec.act_dim, config.latent_dim
        torch.manual_seed(seed)
        self.norm = RunningNorm(o)
        self.rew_norm = RunningNorm(1)
        self.encoder = ContextEncoder(
            self.norm, self.rew_norm, o, a, L, c.encoder_hidden, c.context_next_obs
        )
        self.policy = LatentPolicy(self.norm, o, a, L, c.hidden)
        self.q1 = relu_mlp((o + a + L, *c.hidden, 1))
        self.q2 = relu_mlp((o + a + L, *c.hidden, 1))
        self.q1_t, self.q2_t = copy.deepcopy(self.q1), copy.deepcopy(self.q2)
        self.log_alpha = nn.Parameter(torch.tensor(float(np.log(c.init_alpha))))
        self.opt_actor = torch.optim.Adam(self.policy.body.parameters(), lr=c.lr)
        self.opt_q = torch.optim.Adam([*self.q1.parameters(), *self.q2.parameters()], lr=c.lr)
        self.opt_alpha = torch.optim.Adam([self.log_alpha], lr=c.lr)
        self.opt_encoder = torch.optim.Adam(self.encoder.net.parameters(), lr=c.encoder_lr)
        # The fixed pool of meta-training tasks, as plain dicts (checkpoint-safe).
        task_rng = np.random.default_rng(seed + 11)
        self.tasks = [
            json.loads(json.dumps(family_sample_task(spec.family, task_rng).to_dict()))
            for _ in range(c.num_train_tasks)
        ]
        self.replay = TaskReplay(c.num_train_tasks, c.task_buffer_size, o, a)
        round_steps = (c.prior_episodes + c.posterior_episodes) * spec.max_steps
        self.context = TaskReplay(c.num_train_tasks, round_steps, o, a)
        self.gen = torch.Generator().manual_seed(seed + 7)
        self.rng = np.random.default_rng(seed + 13)
        self.env_steps = 0
        self.iteration = 0
        self.device = torch.device("cpu")
        """Where the learner runs (:meth:`to_device`); acting takes numpy either way."""

    # --- inference and acting ----------------------------------------------------------

    def _sample_z(self, mean: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
        return mean + var.sqrt() * torch.randn(mean.shape, generator=self.gen).to(mean.device)

    def to_device(self, device: torch.device) -> None:
        """Move the encoder, policy, critics, normalisers and temperature to ``device``
        (``run.device``); the parameters move in place, so the optimisers keep them. Call
        it before loading a checkpoint. The per-task buffers stay in host memory and each
        batch is moved."""
        for name in self._NETS:
            getattr(self, name).to(device)
        with torch.no_grad():
            self.log_alpha.data = self.log_alpha.data.to(device)
        self.device = device

    def init_state(self, n: int) -> dict[str, torch.Tensor]:
        """The prior N(0, I) and a z drawn from it, per member."""
        shape = (n, self.config.latent_dim)
        mean = torch.zeros(shape, device=self.device)
        var = torch.ones(shape, device=self.device)
        return {"mean": mean, "var": var, "z": self._sample_z(mean, var)}

    @torch.no_grad()
    def posterior(self, episodes: list[Episodes]) -> tuple[torch.Tensor, torch.Tensor]:
        """q(z | c) of every valid transition of each member's episodes (n, L) each."""

        def cat(name: str) -> torch.Tensor:
            joined = np.concatenate([getattr(e, name) for e in episodes], 1)
            return torch.as_tensor(joined).to(self.device)

        return self.encoder(
            cat("obs"),
            cat("actions").clamp(-1.0, 1.0),
            cat("rewards"),
            cat("next_obs"),
            cat("mask"),
        )

    @torch.no_grad()
    def act(
        self, obs: np.ndarray, task: np.ndarray, state: dict, deterministic: bool = False
    ) -> tuple[np.ndarray, dict]:
        z = state["mean"] if deterministic else state["z"]
        x = self.norm(on(obs, self.device))
        a, _ = self.policy.sample(x, z.to(self.device), deterministic, self.gen)
        return to_numpy(a), state

    def observe(self, state: dict, step: dict[str, np.ndarray]) -> dict:
        return state  # the posterior is updated per episode, as in the paper

    def adapt(self, state: dict, episodes: list[Episodes]) -> dict:
        """Posterior of all transitions so far, and a fresh z sampled from it."""
        mean, var = self.posterior(episodes)
        return {"mean": mean, "var": var, "z": self._sample_z(mean, var)}

    def export_modules(self) -> Any:
        """Deployable graphs (:mod:`metagrasp.export.plan`): the latent-conditioned policy
        acting with the posterior mean ``z`` and the context encoder as the adapt graph
        (see :mod:`metagrasp.export.context_modules`)."""
        from metagrasp.export.context_modules import pearl_graphs
        from metagrasp.export.plan import ExportPlan

        lat = self.config.latent_dim
        return ExportPlan(
            self.name,
            pearl_graphs(self),
            init_state={"z": torch.zeros(1, lat), "z_var": torch.ones(1, lat)},
            adaptation={
                "kind": "latent",
                "reward_free": False,
                "restart": True,
                "episode_fields": ["obs", "actions", "rewards"]
                + (["next_obs"] if self.config.context_next_obs else []),
                "settings": {
                    "latent_dim": lat,
                    "acts_with": "posterior mean z (prior mean 0 before any episode)",
                    "posterior_sampling": "optional, on the device: z + sqrt(z_var) * N(0, I) "
                    "once per episode, passed as the state's z",
                },
            },
        )

    # --- training: collect -> adapt (posterior) -> update -----------------------------

    def collect(self, env: Any) -> list[Episodes]:
        """One round: pool tasks on the members, prior episodes, then posterior sampling."""
        c = self.config
        sampler = as_sampler(env)
        n = sampler.num_envs
        tasks = self.rng.choice(c.num_train_tasks, n, replace=n > c.num_train_tasks)
        sampler.set_tasks([self.tasks[i] for i in tasks])
        self.context.clear(tasks)  # the context buffer holds the current round only
        episodes: list[Episodes] = []
        for e in range(c.prior_episodes + c.posterior_episodes):
            state = self.init_state(n) if e < c.prior_episodes else self.adapt(None, episodes)
            rollout = Rollout(_latent_policy, self, {"state": state})
            ep = sampler.sample(rollout, self.spec.max_steps)[0]
            valid = ep.mask > 0
            self.norm.update(ep.obs[valid])
            self.rew_norm.update(ep.rewards[valid][:, None])
            self.replay.add(tasks, ep)
            if e < c.prior_episodes or c.posterior_in_context:
                self.context.add(tasks, ep)
            self.env_steps += ep.env_steps
            episodes.append(ep)
        return episodes

    def update(self, n_updates: int) -> dict[str, float]:
        """Gradient steps: encoder + critics (Bellman + KL), actor, temperature."""
        c = self.config
        stats: dict[str, list[float]] = {k: [] for k in ("q_loss", "pi_loss", "alpha", "kl")}
        ready = np.flatnonzero((self.replay.size > 0) & (self.context.size > 0))
        if ready.size == 0:
            return {}
        for _ in range(n_updates):
            tasks = self.rng.choice(ready, c.meta_batch, replace=ready.size < c.meta_batch)
            ctx = batch_to(self.context.sample(tasks, c.context_batch, self.rng), self.device)
            keep = self.rng.integers(c.context_min, c.context_batch + 1, len(tasks))
            mask = torch.as_tensor(np.arange(c.context_batch)[None] < keep[:, None])
            mask = mask.to(self.device)
            mean, var = self.encoder(
                ctx["obs"], ctx["actions"], ctx["rewards"], ctx["next_obs"], mask
            )
            z = self._sample_z(mean, var)  # reparameterised: the critics train the encoder
            kl = kl_to_prior(mean, var).mean()
            b = batch_to(self.replay.sample(tasks, c.batch_size, self.rng), self.device)
            m, bs = len(tasks), c.batch_size
            zb = z[:, None].expand(m, bs, z.shape[-1]).reshape(m * bs, -1)
            x = self.norm(b["obs"].reshape(m * bs, -1)).float()
            nx = self.norm(b["next_obs"].reshape(m * bs, -1)).float()
            act = b["actions"].reshape(m * bs, -1)
            rew, done = b["rewards"].reshape(-1), b["dones"].reshape(-1)
            alpha = self.log_alpha.exp().detach()
            with torch.no_grad():
                na, nlogp = self.policy.sample(nx, zb, gen=self.gen)
                nxa = torch.cat([nx, na, zb], -1)
                q_next = torch.min(self.q1_t(nxa), self.q2_t(nxa)).squeeze(-1) - alpha * nlogp
                target = c.reward_scale * rew + c.gamma * (1 - done) * q_next
            xa = torch.cat([x, act, zb], -1)
            q_loss = ((self.q1(xa).squeeze(-1) - target) ** 2).mean() + (
                (self.q2(xa).squeeze(-1) - target) ** 2
            ).mean()
            self.opt_q.zero_grad()
            self.opt_encoder.zero_grad()
            (q_loss + c.kl_weight * kl).backward()
            self.opt_q.step()
            self.opt_encoder.step()
            # The actor sees z detached: the encoder learns from the critics only.
            zd = zb.detach()
            a_new, logp = self.policy.sample(x, zd, gen=self.gen)
            xa = torch.cat([x, a_new, zd], -1)
            pi_loss = actor_and_temperature_step(self, xa, logp, alpha)
            stats["q_loss"].append(q_loss.item())
            stats["pi_loss"].append(pi_loss.item())
            stats["alpha"].append(float(alpha))
            stats["kl"].append(kl.item())
        return {k: float(np.mean(v)) for k, v in stats.items() if v}

    def train_iteration(self, env: Any) -> dict[str, float]:
        c = self.config
        episodes = self.collect(env)
        steps = sum(e.env_steps for e in episodes)
        n_updates = 0
        if self.env_steps >= c.warmup_steps:
            n_updates = int(round(steps * c.updates_per_step))
        metrics = self.update(n_updates)
        self.iteration += 1
        first, last = episode_metrics(episodes[:1]), episode_metrics(episodes[-1:])
        metrics.update({k: v for k, v in last.items() if k != "env_steps"})
        metrics.update({f"{k}_prior": v for k, v in first.items() if k != "env_steps"})
        metrics["env_steps"] = float(steps)
        metrics["updates"] = float(n_updates)
        _, var = self.posterior(episodes)
        metrics["z_var"] = float(var.mean())
        return metrics

    # --- checkpoints -----------------------------------------------------------------

    _NETS = ("norm", "rew_norm", "encoder", "policy", "q1", "q2", "q1_t", "q2_t")
    _OPTS = ("opt_actor", "opt_q", "opt_alpha", "opt_encoder")

    def state_dict(self) -> dict[str, Any]:
        return {
            # The encoder and the policy hold the shared normalisers too; saving them
            # under each name is harmless (same values) and keeps the modules whole.
            "nets": {k: getattr(self, k).state_dict() for k in self._NETS},
            "log_alpha": self.log_alpha.detach().clone(),
            "opts": {k: getattr(self, k).state_dict() for k in self._OPTS},
            "replay": {"rl": self.replay.state_dict(), "context": self.context.state_dict()},
            "tasks": copy.deepcopy(self.tasks),
            "gen": self.gen.get_state(),
            "rng": self.rng.bit_generator.state,
            "env_steps": self.env_steps,
            "iteration": self.iteration,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for k, v in state["nets"].items():
            getattr(self, k).load_state_dict(v)
        with torch.no_grad():
            self.log_alpha.copy_(state["log_alpha"])
        for k, v in state["opts"].items():
            getattr(self, k).load_state_dict(v)
        self.replay.load_state_dict(state["replay"]["rl"])
        self.context.load_state_dict(state["replay"]["context"])
        self.tasks = copy.deepcopy(state["tasks"])
        self.gen.set_state(state["gen"])
        self.rng.bit_generator.state = state["rng"]
        self.env_steps = int(state["env_steps"])
        self.iteration = int(state["iteration"])


def _latent_policy(algo: PEARL, per_member: dict[str, Any], n: int) -> BoundPolicy:
    """The policy under each member's latent (prior or posterior sample) for one episode."""
    state = per_member["state"]

    def policy(obs: np.ndarray, task: np.ndarray) -> tuple[np.ndarray, dict]:
        return algo.act(obs, task, state)[0], {}

    return BoundPolicy(policy)
