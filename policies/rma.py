"""RMA: teacher-student adaptation that infers the task from recent history, without reward.

Kumar et al., "RMA: Rapid Motor Adaptation for Legged Robots" (RSS 2021), applied to
grasping. Two phases in one run:

1. **Teacher** (the first ``teacher_steps`` env steps): PPO on a policy
   ``pi(obs, z)`` whose latent ``z = mu(e)`` is the privileged task vector ``e`` (mass,
   friction, centre-of-mass offset, crush limit, actuator gain, latency, ...) compressed
   by an encoder ``mu`` to ``latent_dim`` numbers; ``mu`` and ``pi`` train end to end.
2. **Student** (the remaining steps): ``mu`` and ``pi`` are frozen and an adaptation
   module ``phi`` learns to predict ``z`` from the last ``history`` observations alone
   (each observation already carries the previous action). It is trained by regression
   on the student's *own* rollouts, acting with ``pi(obs, phi(history))``, as in the
   paper, so it learns on the states its own estimates lead to.

Meta-test and deployment use only ``phi`` and ``pi``: no privileged vector and no reward.
Within an episode the latent is re-estimated at every step from the running window
(continuous adaptation from the first episode, k = 0). After k calibration episodes,
:meth:`RMA.adapt` averages ``phi``'s estimates over the second half of each episode so
far (where the grasp, if any, happened) and, with ``calibration = "freeze"``, the policy
acts with that frozen latent from then on; with ``"continuous"`` it keeps re-estimating.

Seams: :meth:`RMA.train_iteration` runs PPO's collect -> update in phase 1 (the teacher
is PPO with the :class:`TeacherNet` below) and :meth:`collect_student` ->
:meth:`update_student` in phase 2. Export seam: :attr:`RMA.adapter` maps a window
``(n, history, obs_dim + 1)`` of normalised observations with a validity flag to a latent
``(n, latent_dim)``; the latent-conditioned policy is ``net.ac`` (an
:class:`~metagrasp.policies.networks.ActorCritic` whose context is the latent, with its
observation normalizer).
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
from metagrasp.policies.device import on
from metagrasp.policies.networks import ActorCritic, RunningNorm, mlp
from metagrasp.policies.ppo import PPO, PPOConfig
from metagrasp.policies.sampler import BoundPolicy, Rollout, as_sampler


@dataclass
class RMAConfig(PPOConfig):
    """RMA hyper-parameters (the PPO fields drive the teacher phase)."""

    latent_dim: int = 8
    """Size of the task latent ``z`` the policy is conditioned on."""
    encoder_hidden: tuple[int, ...] = (64,)
    """Hidden widths of the privileged encoder ``mu``."""
    teacher_steps: int = 4_000_000
    """Env steps of phase 1 (teacher); the rest of the run's budget trains the student."""
    history: int = 25
    """Observations in the adaptation module's window (25 = 1 s at 25 Hz)."""
    adapter_hidden: tuple[int, ...] = (256, 128)
    """Hidden widths of the adaptation module ``phi`` (an MLP on the flattened window)."""
    adapter_lr: float = 1e-3
    """Adam learning rate of the adaptation module."""
    adapter_epochs: int = 4
    """Passes over the student replay per iteration."""
    adapter_batch: int = 512
    """Minibatch size of the regression."""
    replay_blocks: int = 4
    """Most recent student episode blocks kept for the regression."""
    calibration: str = "freeze"
    """After k >= 1 episodes of a task: ``freeze`` acts with the latent averaged over them;
    ``continuous`` keeps re-estimating from the running window (k = 0 behaviour)."""

    act_with: str = "student"
    """Meta-test policy: ``student`` (the adaptation module's latent, what deploys) or
    ``teacher`` (the encoder's latent of the privileged task vector: an oracle line)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.act_with not in ("student", "teacher"):
            raise ConfigError(f"algo.act_with={self.act_with!r}; allowed: 'student', 'teacher'")
        for name in ("latent_dim", "history", "adapter_epochs", "adapter_batch", "replay_blocks"):
            if getattr(self, name) < 1:
                raise ConfigError(f"algo.{name}={getattr(self, name)} must be >= 1")
        if self.teacher_steps < 0:
            raise ConfigError(f"algo.teacher_steps={self.teacher_steps} must be >= 0")
        if self.adapter_lr <= 0:
            raise ConfigError(f"algo.adapter_lr={self.adapter_lr} must be > 0")
        if self.calibration not in ("freeze", "continuous"):
            raise ConfigError(
                f"algo.calibration={self.calibration!r}; allowed: 'freeze', 'continuous'"
            )


class ConcatNorm(nn.Module):
    """Two running norms side by side: the first ``split`` input channels, then the rest."""

    def __init__(self, first: RunningNorm, second: RunningNorm, split: int) -> None:
        super().__init__()
        self.first, self.second, self.split = first, second, split

    def update(self, x: torch.Tensor | np.ndarray) -> None:
        x = torch.as_tensor(x)
        self.first.update(x[..., : self.split])
        self.second.update(x[..., self.split :])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.first(x[..., : self.split]), self.second(x[..., self.split :])], -1)


class TeacherNet(nn.Module):
    """``pi(obs, mu(e))`` with the interface PPO expects of its actor-critic.

    Its input is ``obs ⊕ e`` (the oracle's input). The observation part is normalised by
    the policy's own norm (``ac.norm``, so the student's policy is a plain
    :class:`ActorCritic` with its normalizer, as the exporter expects) and the task part
    by a separate one; the task part goes through the encoder, and the latent is the
    actor's and critic's context.
    """

    def __init__(self, config: RMAConfig, spec: EnvSpec, seed: int) -> None:
        super().__init__()
        self.obs_dim = spec.obs_dim
        self.ac = ActorCritic(
            spec.obs_dim, spec.act_dim, config.hidden, config.latent_dim, config.log_std_init, seed
        )
        self.norm = ConcatNorm(self.ac.norm, RunningNorm(spec.task_dim), spec.obs_dim)
        torch.manual_seed(seed + 3)
        self.encoder = mlp((spec.task_dim, *config.encoder_hidden, config.latent_dim))

    @property
    def actor(self) -> nn.ParameterDict:
        return self.ac.actor

    @property
    def device(self) -> torch.device:
        """Where the parameters are (``run.device``)."""
        return self.ac.device

    def obs_norm(self, obs: torch.Tensor) -> torch.Tensor:
        """Normalise raw observations (the policy's own normalizer)."""
        return self.ac.norm(obs)

    def latent(self, x_n: torch.Tensor) -> torch.Tensor:
        """``mu(e)`` for normalised ``obs ⊕ e`` inputs."""
        return self.encoder(x_n[..., self.obs_dim :])

    def log_prob(
        self, x_n: torch.Tensor, actions: torch.Tensor, context: None = None
    ) -> torch.Tensor:
        return self.ac.log_prob(x_n[..., : self.obs_dim], actions, self.latent(x_n))

    def mean(self, x_n: torch.Tensor, context: None = None) -> torch.Tensor:
        return self.ac.mean(x_n[..., : self.obs_dim], self.latent(x_n))

    def value(self, x_n: torch.Tensor, context: None = None) -> torch.Tensor:
        return self.ac.value(x_n[..., : self.obs_dim], self.latent(x_n))

    @torch.no_grad()
    def sample(
        self,
        x: np.ndarray,
        context: torch.Tensor | None = None,
        deterministic: bool = False,
        generator: torch.Generator | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Teacher actions, log-probs and values for raw ``obs ⊕ e`` inputs."""
        x_n = self.norm(torch.as_tensor(x, dtype=torch.float32).to(self.device))
        z = self.latent(x_n)
        return self.ac.sample_normalised(x_n[..., : self.obs_dim], z, deterministic, generator)


def windows(obs_n: torch.Tensor, history: int) -> torch.Tensor:
    """Sliding windows over episodes: ``(n, T, o)`` -> ``(n, T, history, o + 1)``.

    Window ``t`` ends with observation ``t``; entries before the episode start are zeros
    with validity flag 0 (the last channel), exactly as the running window at meta-test.
    """
    n, horizon, o = obs_n.shape
    flagged = torch.cat([obs_n, obs_n.new_ones(n, horizon, 1)], -1)
    padded = torch.cat([obs_n.new_zeros(n, history - 1, o + 1), flagged], 1)
    return padded.unfold(1, history, 1).permute(0, 1, 3, 2)


_TEACHER_KEYS = ("pg_loss", "v_loss", "entropy", "kl")
_STUDENT_KEYS = ("adapter_loss", "latent_var")


class RMA(PPO):
    """RMA (teacher PPO, then a history-based adaptation module); see the module docstring."""

    name: ClassVar[str] = "rma"
    Config: ClassVar[type] = RMAConfig
    privileged: ClassVar[bool] = True  # the teacher's collect/update see the task vector
    ORACLE_SETTINGS: ClassVar[dict[str, Any]] = {"act_with": "teacher"}
    LEARNER_ONLY: ClassVar[tuple[str, ...]] = ("opt", "adapter_opt", "_replay")
    """Attributes rollout workers do not need (see :class:`~metagrasp.policies.sampler.Rollout`)."""
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "grasp:quick": {
            "run": {"total_env_steps": 120_000, "num_envs": 32},
            "algo": {"teacher_steps": 90_000, "bound_coef": 0.01},
        },
        "grasp:default": {
            "run": {"total_env_steps": 6_000_000, "num_envs": 32},
            "algo": {"teacher_steps": 5_000_000, "bound_coef": 0.01},
        },
        "point:quick": {
            "run": {"total_env_steps": 200_000, "num_envs": 100},
            "algo": {"hidden": [64, 64], "teacher_steps": 150_000, "history": 10},
        },
        "point:default": {
            "run": {"total_env_steps": 1_000_000, "num_envs": 100},
            "algo": {"hidden": [64, 64], "teacher_steps": 800_000, "history": 10},
        },
    }

    def __init__(self, config: RMAConfig, spec: EnvSpec, seed: int = 0) -> None:
        super().__init__(config, spec, seed)
        torch.manual_seed(seed + 5)
        self.adapter = mlp(
            (config.history * (spec.obs_dim + 1), *config.adapter_hidden, config.latent_dim)
        )
        self.adapter_opt = torch.optim.Adam(self.adapter.parameters(), lr=config.adapter_lr)
        self.env_steps = 0
        self._replay: list[tuple[torch.Tensor, torch.Tensor]] = []

    def to_device(self, device: torch.device) -> None:
        """PPO's move (the teacher) and the adaptation module's (``run.device``); the
        student's history replay is built on the device from then on."""
        super().to_device(device)
        self.adapter.to(device)

    def make_net(self, config: RMAConfig, spec: EnvSpec, seed: int) -> TeacherNet:
        return TeacherNet(config, spec, seed)

    @property
    def phase(self) -> int:
        """1 while the teacher trains, 2 once the student does."""
        return 1 if self.env_steps < self.config.teacher_steps else 2

    # --- the adaptation module ----------------------------------------------------------

    def estimate(self, window: torch.Tensor) -> torch.Tensor:
        """``phi``: latent estimates from windows ``(..., history, obs_dim + 1)``."""
        return self.adapter(window.flatten(-2))

    def _push(self, window: torch.Tensor, obs: np.ndarray) -> torch.Tensor:
        """The window with the newest (normalised, flagged) observation appended."""
        o = self.net.obs_norm(on(obs, window.device))
        new = torch.cat([o, o.new_ones(o.shape[0], 1)], -1)
        return torch.cat([window[:, 1:], new[:, None]], 1)

    def _empty_window(self, n: int) -> torch.Tensor:
        dims = (n, self.config.history, self.spec.obs_dim + 1)
        return torch.zeros(dims, device=self.net.device)

    # --- meta-test side: continuous estimation, then a calibrated latent -----------------

    def init_state(self, n: int) -> dict[str, torch.Tensor | None]:
        return {"window": self._empty_window(n), "z": None}

    @torch.no_grad()
    def act(
        self, obs: np.ndarray, task: np.ndarray, state: dict, deterministic: bool = False
    ) -> tuple[np.ndarray, dict]:
        if self.config.act_with == "teacher":
            a, _, _ = self.net.sample(self._inputs(obs, task), None, deterministic, self.gen)
            return a, state
        window = self._push(state["window"], obs)
        z = state["z"]
        if z is None or self.config.calibration == "continuous":
            z = self.estimate(window)
        obs_n = self.net.obs_norm(on(obs, window.device))
        a, _, _ = self.net.ac.sample_normalised(obs_n, z, deterministic, self.gen)
        return a, {"window": window, "z": state["z"]}

    def observe(self, state: dict, step: dict[str, np.ndarray]) -> dict:
        return state  # act() already pushed the observation into the window

    @torch.no_grad()
    def calibrated_latent(self, episodes: list[Episodes]) -> torch.Tensor:
        """Mean estimate over the second half of every episode's valid steps, per member."""
        total, weight = 0.0, 0.0
        dev = self.net.device
        for ep in episodes:
            obs_n = self.net.obs_norm(torch.as_tensor(ep.obs).to(dev))
            z = self.estimate(windows(obs_n, self.config.history))  # (n, T, latent)
            mask = torch.as_tensor(ep.mask).to(dev)
            steps = torch.arange(mask.shape[1], dtype=mask.dtype, device=dev)
            late = (steps[None] >= 0.5 * mask.sum(1, keepdim=True)).to(mask.dtype) * mask
            total = total + (z * late[..., None]).sum(1)
            weight = weight + late.sum(1, keepdim=True)
        return total / torch.clamp(weight, min=1.0)

    def adapt(self, state: dict, episodes: list[Episodes]) -> dict:
        """A fresh window for the next episode, with the latent calibrated on all so far."""
        n = state["window"].shape[0]
        return {"window": self._empty_window(n), "z": self.calibrated_latent(episodes)}

    def export_modules(self) -> Any:
        """Deployable graphs (the seam of :mod:`metagrasp.export.plan`): the student policy
        with its running history window, and the reward-free calibration."""
        from metagrasp.export.modules import rma_graphs
        from metagrasp.export.plan import ExportPlan

        c, s = self.config, self.spec
        return ExportPlan(
            self.name,
            rma_graphs(self),
            init_state={
                "history": self._empty_window(1),
                "z": torch.zeros(1, c.latent_dim),
                "calibrated": torch.zeros(1, 1),
            },
            adaptation={
                "kind": "history",
                "reward_free": True,
                "restart": True,
                "episode_fields": ["obs"],
                "settings": {
                    "history": c.history,
                    "latent_dim": c.latent_dim,
                    "calibration": c.calibration,
                    "episode_length": s.max_steps,
                },
            },
            exploration="gaussian",
        )

    # --- phase 2: collect -> regress --------------------------------------------------------

    @torch.no_grad()
    def collect_student(self, env: Any) -> Episodes:
        """One episode per member acting with ``pi(obs, phi(window))`` (no task vector)."""
        return as_sampler(env).sample(Rollout(_student_policy, self), self.spec.max_steps)[0]

    def update_student(self, ep: Episodes) -> dict[str, float]:
        """Regress ``phi(window)`` on the frozen teacher latent ``mu(e)`` over the replay."""
        with torch.no_grad():
            dev = self.net.device
            mask = torch.as_tensor(ep.mask).to(dev).bool()
            obs_n = self.net.obs_norm(torch.as_tensor(ep.obs).to(dev))
            task = on(np.asarray(ep.task, np.float32), dev)
            x = torch.cat([torch.zeros_like(obs_n[:, 0]), task], -1)
            target = self.net.latent(self.net.norm(x))  # (n, latent), one per member
            target = target[:, None].expand(-1, mask.shape[1], -1)
            self._replay.append((windows(obs_n, self.config.history)[mask], target[mask]))
            self._replay = self._replay[-self.config.replay_blocks :]
            w_all = torch.cat([w for w, _ in self._replay])
            z_all = torch.cat([z for _, z in self._replay])
        cfg, losses = self.config, []
        for _ in range(cfg.adapter_epochs):
            perm = torch.randperm(w_all.shape[0], generator=self.gen).to(w_all.device)
            for i in range(0, w_all.shape[0], cfg.adapter_batch):
                idx = perm[i : i + cfg.adapter_batch]
                loss = ((self.estimate(w_all[idx]) - z_all[idx]) ** 2).mean()
                self.adapter_opt.zero_grad()
                loss.backward()
                self.adapter_opt.step()
                losses.append(loss.item())
        with torch.no_grad():
            spread = float(z_all.var(0).mean())
        return {"adapter_loss": float(np.mean(losses)), "latent_var": spread}

    def train_iteration(self, env: Any) -> dict[str, float]:
        if self.phase == 1:
            metrics = super().train_iteration(env)
        else:
            ep = self.collect_student(env)
            metrics = self.update_student(ep)
            self.iteration += 1
            metrics.update(episode_metrics([ep]))
            metrics["action_std"] = float(torch.exp(self.net.actor["log_std"].detach()).mean())
        # One set of columns in both phases (the CSV header is fixed by the first row);
        # the other phase's losses read 0.
        for key in (*_TEACHER_KEYS, *_STUDENT_KEYS):
            metrics.setdefault(key, 0.0)
        metrics["phase"] = float(self.phase)
        self.env_steps += int(metrics["env_steps"])
        return metrics

    # --- checkpoints -------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {
            **super().state_dict(),
            "adapter": self.adapter.state_dict(),
            "adapter_opt": self.adapter_opt.state_dict(),
            "env_steps": self.env_steps,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.adapter.load_state_dict(state["adapter"])
        self.adapter_opt.load_state_dict(state["adapter_opt"])
        self.env_steps = int(state["env_steps"])


def _student_policy(algo: RMA, per_member: dict[str, Any], n: int) -> BoundPolicy:
    """The student acting through its own history window of the ``n`` members."""
    state = [algo.init_state(n)]

    def policy(obs: np.ndarray, task: np.ndarray) -> tuple[np.ndarray, dict]:
        a, state[0] = algo.act(obs, task, state[0])
        return a, {}

    return BoundPolicy(policy)
