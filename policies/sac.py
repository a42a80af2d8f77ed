"""SAC with domain randomisation (an off-policy DR baseline) and its oracle variant.

Soft actor-critic (Haarnoja et al. 2018) with twin Q networks, target networks,
automatic entropy tuning and a tanh-squashed Gaussian actor, trained from a replay
buffer of episodes on tasks drawn afresh at every reset. Like PPO-DR it never adapts;
the oracle sees the privileged task vector.

Seams: :meth:`SAC.collect` (episode blocks into the replay buffer) -> no adaptation ->
:meth:`SAC.update` (``updates_per_step`` gradient steps per collected env step). Two
optional starts, both applied at the first training iteration: scripted demonstrations
in a buffer of their own that fills part of every batch (``demo_episodes``, optionally
cloned by the actor: ``bc_weight``), and, for the oracle, the weights of a trained DR run
(``init_from``). ``sac-grip`` (:mod:`metagrasp.policies.grip_search`) builds on this file.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from metagrasp.errors import ConfigError
from metagrasp.policies.base import EnvSpec
from metagrasp.policies.collect import Episodes, episode_metrics
from metagrasp.policies.device import batch_to, on, to_numpy
from metagrasp.policies.networks import RunningNorm, load_widened, mlp
from metagrasp.policies.sampler import BoundPolicy, Rollout, as_sampler

LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0


@dataclass
class SACConfig:
    """SAC hyper-parameters."""

    hidden: tuple[int, ...] = (256, 256)
    """Hidden layer widths of actor and critics."""
    lr: float = 3e-4
    """Adam learning rate (actor, critics, temperature)."""
    gamma: float = 0.99
    """Discount factor."""
    tau: float = 0.005
    """Polyak averaging rate of the target critics."""
    batch_size: int = 256
    """Transitions per gradient step."""
    buffer_size: int = 300_000
    """Replay buffer capacity (transitions)."""
    updates_per_step: float = 0.25
    """Gradient steps per collected env step (all members counted)."""
    warmup_steps: int = 5_000
    """Env steps of uniform random actions before learning starts."""
    init_alpha: float = 0.1
    """Initial entropy temperature (tuned automatically towards ``target_entropy``)."""
    target_entropy: float | None = None
    """Policy entropy (nats) the temperature is tuned towards; ``None`` = -act_dim, the
    usual choice. Higher keeps exploring longer: on grasp-lift, -3 made SAC-DR lift
    earlier, but not the oracle. Lower (-12) raised sac-grip's oracle line by 2-5 points
    with sampled actions, but not its gap closure, on two seeds (docs/BENCHMARKS.md)."""
    init_from: str = ""
    """Oracle only: the directory of a trained SAC-DR run to start from (policy
    expansion). Its actor, critics, temperature and normaliser are copied, and the
    privileged inputs enter through new zero weights, so training starts from the DR
    policy's behaviour and only has to learn what the task parameters add. The source's
    training time counts towards the oracle's. Empty = from scratch. On grasp-lift, from
    scratch never learned to lift (3 runs out of 3). Warm-started, it learned to avoid
    fragile objects but was not above SAC-DR (docs/BENCHMARKS.md)."""
    demo_episodes: int = 0
    """Scripted grasps recorded on ``train`` tasks into a separate demonstration buffer
    before learning (grasp families only; :func:`metagrasp.sim.scripted.expert_episodes`):
    the oracle's expert picks the grip from the hidden parameters, the DR line's uses the
    best single grip. 0 = none. They show the grasps that exploration does not find. On
    grasp-lift, 1,000 of them doubled SAC-DR's `test` success (0.08 -> 0.18) and made the
    oracle the first learned line above DR (docs/BENCHMARKS.md)."""
    demo_fraction: float = 0.5
    """Share of every update batch drawn from the demonstrations (RLPD's symmetric
    sampling is 0.5); only with ``demo_episodes`` > 0."""
    bc_weight: float = 0.0
    """Weight of a behaviour-cloning term in the actor loss on the demonstration rows of
    every batch (Nair et al. 2018; TD3+BC): the squared error between the actor's mean
    action and the expert's, times the batch's mean ``|Q|`` so that the weight does not
    depend on the reward scale (TD3+BC's alpha = 2.5 is 0.4 here). 0 = off; needs
    ``demo_episodes`` > 0. It makes the actor copy the expert's grip, which the
    critic alone did not teach the oracle (docs/BENCHMARKS.md)."""
    bc_q_filter: bool = True
    """Clone an expert action only where both critics rate it above the actor's own
    (Nair et al.'s Q-filter), so the actor may still improve on the expert."""
    smooth_weight: float = 0.0
    """Weight of CAPS's smoothness terms in the actor loss (Mysore et al. 2021): the
    distance between the mean actions of consecutive states (temporal) and between the
    mean actions of a state and of a copy perturbed by ``smooth_sigma`` (spatial), times
    the batch's mean ``|Q|`` as for ``bc_weight``. 0 = off. With mean actions, the grip
    lines' objects that slip out of the fingers after the lift were carried with an arm
    action changing 4x as much per step as the objects held to the end (0.20 against
    0.05 mean absolute change). The grip lines' ``default`` preset sets 0.02: on three
    seeds, by the meta-test protocol, their oracle line rose from 0.797 to 0.869 on
    ``test`` (0.763 -> 0.835 on ``hard``), the DR line from 0.496 to 0.614, the search at
    k = 3 from 0.729 to 0.812; gap closure 0.78 on ``test`` either way, 0.75 -> 0.81 on
    ``hard`` (docs/BENCHMARKS.md, issue #3, 2026-12-03)."""
    smooth_sigma: float = 0.05
    """Standard deviation of the spatial term's perturbation, in normalised input units
    (CAPS's sigma)."""

    def __post_init__(self) -> None:
        for name in ("lr", "tau", "updates_per_step", "init_alpha"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"algo.{name}={getattr(self, name)} must be > 0")
        if not 0.0 <= self.gamma <= 1.0:
            raise ConfigError(f"algo.gamma={self.gamma} must be in [0, 1]")
        if self.batch_size < 1 or self.buffer_size < self.batch_size:
            raise ConfigError("algo.batch_size must be >= 1 and <= algo.buffer_size")
        if self.demo_episodes < 0:
            raise ConfigError(f"algo.demo_episodes={self.demo_episodes} must be >= 0")
        if not 0.0 < self.demo_fraction < 1.0:
            raise ConfigError(f"algo.demo_fraction={self.demo_fraction} must be in (0, 1)")
        if self.bc_weight < 0:
            raise ConfigError(f"algo.bc_weight={self.bc_weight} must be >= 0")
        if self.smooth_weight < 0 or self.smooth_sigma <= 0:
            raise ConfigError(
                f"algo.smooth_weight={self.smooth_weight} must be >= 0 and "
                f"algo.smooth_sigma={self.smooth_sigma} > 0"
            )
        if self.bc_weight > 0 and self.demo_episodes == 0:
            raise ConfigError(
                f"algo.bc_weight={self.bc_weight} clones demonstrations, but "
                "algo.demo_episodes is 0; set algo.demo_episodes (e.g. 1000) or bc_weight=0"
            )


class Replay:
    """A ring buffer of transitions (numpy; saved in checkpoints as tensors)."""

    KEYS = ("obs", "actions", "rewards", "next_obs", "dones")

    def __init__(self, capacity: int, obs_dim: int, act_dim: int) -> None:
        self.capacity, self.size, self.ptr = capacity, 0, 0
        self.data = {
            "obs": np.zeros((capacity, obs_dim), np.float32),
            "actions": np.zeros((capacity, act_dim), np.float32),
            "rewards": np.zeros(capacity, np.float32),
            "next_obs": np.zeros((capacity, obs_dim), np.float32),
            "dones": np.zeros(capacity, np.float32),
        }

    def add(self, batch: dict[str, np.ndarray]) -> None:
        n = len(batch["rewards"])
        idx = (self.ptr + np.arange(n)) % self.capacity
        for k in self.KEYS:
            self.data[k][idx] = batch[k]
        self.ptr = int((self.ptr + n) % self.capacity)
        self.size = min(self.size + n, self.capacity)

    def sample(self, n: int, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        idx = rng.integers(0, self.size, n)
        return {k: torch.as_tensor(v[idx]) for k, v in self.data.items()}

    def state_dict(self) -> dict[str, Any]:
        return {
            "size": self.size,
            "ptr": self.ptr,
            **{k: torch.as_tensor(v[: self.size]) for k, v in self.data.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.size, self.ptr = int(state["size"]), int(state["ptr"])
        for k in self.KEYS:
            self.data[k][: self.size] = state[k].numpy()


class Actor(nn.Module):
    """Tanh-squashed Gaussian policy."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: tuple[int, ...]) -> None:
        super().__init__()
        self.body = mlp((obs_dim, *hidden, 2 * act_dim), out_gain=0.01)

    def forward(
        self, x: torch.Tensor, deterministic: bool = False, gen: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        mu, log_std = self.body(x).chunk(2, -1)
        log_std = torch.clamp(log_std, LOG_STD_MIN, LOG_STD_MAX)
        std = log_std.exp()
        # Noise from the (CPU) generator, then moved: a GPU learner draws the CPU's stream.
        u = mu if deterministic else mu + std * torch.randn(mu.shape, generator=gen).to(mu.device)
        a = torch.tanh(u)
        logp = (-0.5 * ((u - mu) / std) ** 2 - log_std - 0.5 * np.log(2 * np.pi)).sum(-1)
        logp = logp - (2 * (np.log(2) - u - nn.functional.softplus(-2 * u))).sum(-1)
        return a, logp


class SAC:
    """SAC on randomised tasks, no adaptation (off-policy domain-randomisation baseline)."""

    name: ClassVar[str] = "sac"
    Config: ClassVar[type] = SACConfig
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "grasp:quick": {"run": {"total_env_steps": 30_000, "num_envs": 16}, "algo": {}},
        "grasp:default": {"run": {"total_env_steps": 1_000_000, "num_envs": 16}, "algo": {}},
        "point:quick": {
            "run": {"total_env_steps": 20_000, "num_envs": 20},
            "algo": {"hidden": [64, 64], "warmup_steps": 1000, "updates_per_step": 0.5},
        },
        "point:default": {
            "run": {"total_env_steps": 60_000, "num_envs": 20},
            "algo": {"hidden": [64, 64], "warmup_steps": 1000, "updates_per_step": 0.5},
        },
    }
    privileged: ClassVar[bool] = False
    LEARNER_ONLY: ClassVar[tuple[str, ...]] = (
        "replay",
        "q1",
        "q2",
        "q1_t",
        "q2_t",
        "opt_actor",
        "opt_q",
        "opt_alpha",
        "demos",
    )
    """Attributes rollout workers do not need (see :class:`~metagrasp.policies.sampler.Rollout`)."""

    def __init__(self, config: SACConfig, spec: EnvSpec, seed: int = 0) -> None:
        self.config, self.spec = config, spec
        in_dim = spec.obs_dim + self._extra_inputs(spec)
        torch.manual_seed(seed)
        self.actor = Actor(in_dim, spec.act_dim, config.hidden)
        self.q1 = mlp((in_dim + spec.act_dim, *config.hidden, 1))
        self.q2 = mlp((in_dim + spec.act_dim, *config.hidden, 1))
        self.q1_t, self.q2_t = copy.deepcopy(self.q1), copy.deepcopy(self.q2)
        self.norm = RunningNorm(in_dim)
        self.log_alpha = nn.Parameter(torch.tensor(float(np.log(config.init_alpha))))
        self.opt_actor = torch.optim.Adam(self.actor.parameters(), lr=config.lr)
        q_params = [*self.q1.parameters(), *self.q2.parameters()]
        self.opt_q = torch.optim.Adam(q_params, lr=config.lr)
        self.opt_alpha = torch.optim.Adam([self.log_alpha], lr=config.lr)
        self.replay = Replay(config.buffer_size, in_dim, spec.act_dim)
        self.gen = torch.Generator().manual_seed(seed + 7)
        self.rng = np.random.default_rng(seed + 13)
        self.env_steps = 0
        self.iteration = 0
        self.seed = seed
        self.demos: Replay | None = None
        self.device = torch.device("cpu")
        """Where the learner runs (:meth:`to_device`); acting takes numpy either way."""
        if config.init_from and not self.privileged:
            raise ConfigError(
                f"algo.init_from={config.init_from!r} is for the oracle (sac-oracle), which "
                f"starts from a trained {self.name} run; remove it for {self.name}"
            )

    def _warm_start(self, run_dir: str) -> None:
        """Copy a trained non-privileged SAC run into this oracle (see ``init_from``).

        The privileged inputs get zero weights, so the oracle acts and values exactly as
        the source does until training teaches it to use them.

        Raises:
            ConfigError: the source is not a SAC run of the same family and widths.
            CheckpointError: the source is not a readable training run.
        """
        from metagrasp.policies.runner import load_trained

        src, resolved, spec = load_trained(run_dir)
        mismatch = [
            f"{name} {theirs!r} != {ours!r}"
            for name, theirs, ours in (
                ("algorithm", resolved["run"]["algo"], "sac"),
                ("task family", spec.family, self.spec.family),
                ("obs_dim", spec.obs_dim, self.spec.obs_dim),
                ("act_dim", spec.act_dim, self.spec.act_dim),
                ("hidden", tuple(resolved["algo"]["hidden"]), tuple(self.config.hidden)),
            )
            if theirs != ours
        ]
        if mismatch:
            raise ConfigError(
                f"algo.init_from={run_dir!r} cannot seed this {self.name} run: "
                f"{'; '.join(mismatch)}; give a sac run of the same task and algo.hidden"
            )
        o, k = self.spec.obs_dim, self.spec.task_dim
        with torch.no_grad():
            load_widened(self.actor.body, src.actor.body, at=o, extra=k)
            for name in ("q1", "q2", "q1_t", "q2_t"):
                load_widened(getattr(self, name), getattr(src, name), at=o, extra=k)
            # The privileged vector is already scaled to about [-1, 1]: unit statistics
            # for it, the source's for the observation (and its count, so the
            # observation statistics do not jump).
            self.norm.mean[:o], self.norm.var[:o] = src.norm.mean, src.norm.var
            self.norm.mean[o:], self.norm.var[o:] = 0.0, 1.0
            self.norm.count.copy_(src.norm.count)
            self.log_alpha.copy_(src.log_alpha)

    def to_device(self, device: torch.device) -> None:
        """Move the networks, normaliser and temperature to ``device`` (``run.device``).

        The parameters move in place, so the optimisers keep them; call it before
        loading a checkpoint, whose optimiser state then follows its parameters. The
        replay stays in host memory and each batch is moved.
        """
        for name in ("actor", "q1", "q2", "q1_t", "q2_t", "norm"):
            getattr(self, name).to(device)
        with torch.no_grad():
            self.log_alpha.data = self.log_alpha.data.to(device)
        self.device = device

    def _record_demos(self) -> Replay:
        """The demonstration buffer (see ``demo_episodes``): a pure function of the seed,
        so it is recorded again on resume instead of stored in every checkpoint."""
        from metagrasp.sim.scripted import expert_episodes

        d = expert_episodes(
            self.spec.family, self.config.demo_episodes, 1_000_000 + self.seed, self.privileged
        )
        inputs = self._inputs(d["obs"], d["task"])
        demos = Replay(len(d["rewards"]), inputs.shape[-1], self.spec.act_dim)
        demos.add(
            {
                "obs": inputs,
                "actions": d["actions"],
                "rewards": d["rewards"],
                "next_obs": self._inputs(d["next_obs"], d["task"]),
                "dones": d["dones"],
            }
        )
        if self.env_steps == 0 and not self.config.init_from:
            # A fresh run: the normaliser starts from the demos too (a warm-started one
            # keeps its source's, so it still acts as the source does).
            self.norm.update(inputs)
        return demos

    def _n_demo(self, n: int) -> int:
        """How many of a batch of ``n`` come from the demonstrations (the last rows)."""
        return 0 if self.demos is None else int(round(n * self.config.demo_fraction))

    def _batch(self, n: int) -> dict[str, torch.Tensor]:
        """Replay transitions, with ``demo_fraction`` of them from the demonstrations."""
        if self.demos is None:
            batch = self.replay.sample(n, self.rng)
        else:
            n_demo = self._n_demo(n)
            online = self.replay.sample(n - n_demo, self.rng)
            demo = self.demos.sample(n_demo, self.rng)
            batch = {k: torch.cat([online[k], demo[k]]) for k in online}
        return batch_to(batch, self.device)

    # --- acting ----------------------------------------------------------------------

    def _extra_inputs(self, spec: EnvSpec) -> int:
        """Inputs beside the observation: the privileged vector for the oracle."""
        return spec.task_dim if self.privileged else 0

    def _inputs(self, obs: np.ndarray, task: np.ndarray) -> np.ndarray:
        return np.concatenate([obs, task], -1) if self.privileged else obs

    def init_state(self, n: int) -> None:
        return None

    @torch.no_grad()
    def act(
        self, obs: np.ndarray, task: np.ndarray, state: Any, deterministic: bool = False
    ) -> tuple[np.ndarray, Any]:
        x = self.norm(on(self._inputs(obs, task), self.device))
        a, _ = self.actor(x, deterministic, self.gen)
        return to_numpy(a), state

    def observe(self, state: Any, step: dict[str, np.ndarray]) -> Any:
        return state

    def adapt(self, state: Any, episodes: list[Episodes]) -> Any:
        return state

    def export_modules(self) -> Any:
        """Deployable graphs (the seam of :mod:`metagrasp.export.plan`): a policy only."""
        from metagrasp.export.modules import squashed_policy_graph
        from metagrasp.export.plan import ExportPlan

        task_dim = self.spec.task_dim if self.privileged else 0
        graph = squashed_policy_graph(self.actor, self.norm, self.spec.obs_dim, task_dim)
        return ExportPlan(self.name, [graph], uses_task=self.privileged)

    # --- training: collect -> (no adapt) -> update ------------------------------------

    def collect(self, env: Any) -> Episodes:
        """One episode block into the replay buffer (uniform actions during warm-up)."""
        ep = as_sampler(env).sample(Rollout(_behaviour_policy, self), self.spec.max_steps)[0]
        return self._store(ep)

    def _store(self, ep: Episodes, task: np.ndarray | None = None) -> Episodes:
        """A collected block's valid steps into the replay and the normaliser; ``task``
        (members, T, k) is what :meth:`_inputs` reads beside each step (default: each
        member's task vector at every step)."""
        valid = ep.mask > 0
        if task is None:
            task = np.broadcast_to(ep.task[:, None], (*ep.mask.shape, ep.task.shape[-1]))
        self.replay.add(
            {
                "obs": self._inputs(ep.obs, task)[valid],
                "actions": ep.actions[valid],
                "rewards": ep.rewards[valid],
                "next_obs": self._inputs(ep.next_obs, task)[valid],
                "dones": ep.dones[valid],
            }
        )
        self.norm.update(self._inputs(ep.obs, task)[valid])
        self.env_steps += ep.env_steps
        return ep

    def update(self, n_updates: int) -> dict[str, float]:
        """Gradient steps on critics, actor and temperature."""
        cfg = self.config
        stats: dict[str, list[float]] = {
            k: [] for k in ("q_loss", "pi_loss", "alpha", "bc_loss", "bc_kept", "smooth_loss")
        }
        for _ in range(n_updates):
            b = self._batch(cfg.batch_size)
            x, nx = self.norm(b["obs"]).float(), self.norm(b["next_obs"]).float()
            alpha = self.log_alpha.exp().detach()
            with torch.no_grad():
                na, nlogp = self.actor(nx, gen=self.gen)
                xa = torch.cat([nx, na], -1)
                q_next = torch.min(self.q1_t(xa), self.q2_t(xa)).squeeze(-1) - alpha * nlogp
                target = b["rewards"] + cfg.gamma * (1 - b["dones"]) * q_next
            xa = torch.cat([x, b["actions"]], -1)
            q_loss = ((self.q1(xa).squeeze(-1) - target) ** 2).mean() + (
                (self.q2(xa).squeeze(-1) - target) ** 2
            ).mean()
            self.opt_q.zero_grad()
            q_loss.backward()
            self.opt_q.step()
            a, logp = self.actor(x, gen=self.gen)
            xa = torch.cat([x, a], -1)
            extra = None  # the actor's losses beside SAC's own
            if cfg.bc_weight > 0:
                n_demo = self._n_demo(cfg.batch_size)
                extra, kept = self._bc_loss(x[-n_demo:], b["actions"][-n_demo:], a[-n_demo:])
                stats["bc_loss"].append(extra.item())
                stats["bc_kept"].append(kept)
            if cfg.smooth_weight > 0:
                smooth = self._smooth_loss(x, nx, xa)
                stats["smooth_loss"].append(smooth.item())
                extra = smooth if extra is None else extra + smooth
            pi_loss = actor_and_temperature_step(self, xa, logp, alpha, extra=extra)
            stats["q_loss"].append(q_loss.item())
            stats["pi_loss"].append(pi_loss.item())
            stats["alpha"].append(float(alpha))
        return {k: float(np.mean(v)) for k, v in stats.items() if v}

    def _bc_loss(
        self, x: torch.Tensor, expert: torch.Tensor, sampled: torch.Tensor
    ) -> tuple[torch.Tensor, float]:
        """The behaviour-cloning term (see ``bc_weight``) on demonstration rows ``x``.

        Returns the weighted loss (gradient to the actor only) and the share of rows the
        Q-filter kept.
        """
        mean_action, _ = self.actor(x, deterministic=True)
        err = ((mean_action - expert) ** 2).sum(-1)
        with torch.no_grad():
            q_expert = _min_q(self, torch.cat([x, expert], -1))
            q_actor = _min_q(self, torch.cat([x, sampled.detach()], -1))
            keep = (q_expert > q_actor).float() if self.config.bc_q_filter else torch.ones_like(err)
            scale = q_actor.abs().mean()
        return self.config.bc_weight * scale * (err * keep).mean(), float(keep.mean())

    def _smooth_loss(self, x: torch.Tensor, nx: torch.Tensor, xa: torch.Tensor) -> torch.Tensor:
        """CAPS's temporal and spatial smoothness terms (see ``smooth_weight``) on the
        normalised inputs ``x`` and their successors ``nx``; ``xa`` scales them by the
        critics' ``|Q|``. Gradient to the actor only."""
        mu, _ = self.actor(x, deterministic=True)
        mu_next, _ = self.actor(nx, deterministic=True)
        # Drawn from the (CPU) generator, as the actor's noise, then moved.
        eps = torch.randn(x.shape, generator=self.gen).to(x.device)
        mu_near, _ = self.actor(x + self.config.smooth_sigma * eps, deterministic=True)

        def dist(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            # Euclidean, as CAPS; the epsilon keeps the gradient finite where a == b.
            return torch.sqrt(((a - b) ** 2).sum(-1) + 1e-8).mean()

        with torch.no_grad():
            scale = _min_q(self, xa).abs().mean()
        return self.config.smooth_weight * scale * (dist(mu, mu_next) + dist(mu, mu_near))

    def train_iteration(self, env: Any) -> dict[str, float]:
        if self.config.init_from and self.env_steps == 0:
            # Here, not in __init__: evaluating or resuming the run must not need the source.
            self._warm_start(self.config.init_from)
        if self.config.demo_episodes and self.demos is None:
            self.demos = self._record_demos()
        ep = self.collect(env)
        n_updates = 0
        if self.env_steps >= self.config.warmup_steps:
            n_updates = int(round(ep.env_steps * self.config.updates_per_step))
        metrics = self.update(n_updates)
        self.iteration += 1
        metrics.update(episode_metrics([ep]))
        metrics["updates"] = float(n_updates)
        return metrics

    # --- checkpoints -----------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {
            "nets": {
                k: getattr(self, k).state_dict()
                for k in ("actor", "q1", "q2", "q1_t", "q2_t", "norm")
            },
            "log_alpha": self.log_alpha.detach().clone(),
            "opts": {k: getattr(self, k).state_dict() for k in ("opt_actor", "opt_q", "opt_alpha")},
            "replay": self.replay.state_dict(),
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
        self.replay.load_state_dict(state["replay"])
        self.gen.set_state(state["gen"])
        self.rng.bit_generator.state = state["rng"]
        self.env_steps = int(state["env_steps"])
        self.iteration = int(state["iteration"])


class SACOracle(SAC):
    """SAC whose actor and critics also see the privileged task vector (reference line)."""

    name: ClassVar[str] = "sac-oracle"
    privileged: ClassVar[bool] = True


def _min_q(sac: Any, xa: torch.Tensor) -> torch.Tensor:
    return torch.min(sac.q1(xa), sac.q2(xa)).squeeze(-1)


def actor_and_temperature_step(
    sac: Any,
    xa: torch.Tensor,
    logp: torch.Tensor,
    alpha: torch.Tensor,
    extra: torch.Tensor | None = None,
) -> torch.Tensor:
    """SAC's actor step, temperature step and soft target update; returns the actor loss.

    Shared by :class:`SAC` and PEARL. ``sac`` holds ``q1, q2, q1_t, q2_t, log_alpha``,
    ``opt_actor``, ``opt_alpha``, ``spec`` and ``config.tau``; ``xa`` is the critics'
    input for freshly sampled actions (their log-probs ``logp``), with the gradient path
    to the actor. ``extra`` (a scalar loss on the actor, e.g. behaviour cloning) is added
    to the actor's loss.
    """
    pi_loss = (alpha * logp - _min_q(sac, xa)).mean()
    if extra is not None:
        pi_loss = pi_loss + extra
    sac.opt_actor.zero_grad()
    pi_loss.backward()
    sac.opt_actor.step()
    target = sac.config.target_entropy
    target = -float(sac.spec.act_dim) if target is None else float(target)
    alpha_loss = -(sac.log_alpha * (logp.detach() + target)).mean()
    sac.opt_alpha.zero_grad()
    alpha_loss.backward()
    sac.opt_alpha.step()
    with torch.no_grad():
        for net, tgt in ((sac.q1, sac.q1_t), (sac.q2, sac.q2_t)):
            for p, pt in zip(net.parameters(), tgt.parameters(), strict=True):
                pt.lerp_(p, sac.config.tau)
    return pi_loss


def _behaviour_policy(algo: SAC, per_member: dict[str, Any], n: int) -> BoundPolicy:
    """Uniform actions during warm-up, then the stochastic actor (from the start when
    warm-started from a trained run: its policy is better than uniform noise)."""
    warm = algo.env_steps < algo.config.warmup_steps and not algo.config.init_from

    def policy(obs: np.ndarray, task: np.ndarray) -> tuple[np.ndarray, dict]:
        if warm:
            return algo.rng.uniform(-1, 1, (len(obs), algo.spec.act_dim)), {}
        return algo.act(obs, task, None)[0], {}

    return BoundPolicy(policy)
