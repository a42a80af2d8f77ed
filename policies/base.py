"""The algorithm contract and registry: what the one runner needs from every algorithm.

Every algorithm is one file with the same seams, called by
:class:`~metagrasp.policies.runner.Runner` and by the meta-test protocol in
:mod:`metagrasp.policies.evaluate` without knowing which algorithm it is:

* ``train_iteration(env)`` — one iteration of *collect -> adapt -> update* on the
  batched env; returns scalar metrics (and ``env_steps``, the steps it consumed);
* ``init_state(n)`` / ``act(obs, task, state)`` / ``adapt(state, episode)`` — the
  meta-test side: a per-member adaptation state (a context vector, a latent, a hidden
  state, or nothing), actions for a batch of observations, and the update of that
  state after each finished episode of the same task;
* ``state_dict()`` / ``load_state_dict()`` — tensors and plain Python only, so
  checkpoints load with ``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import numpy as np

from metagrasp.errors import ConfigError, UnknownNameError

ALGORITHMS: dict[str, str] = {
    "ppo": "metagrasp.policies.ppo:PPO",
    "ppo-oracle": "metagrasp.policies.ppo:PPOOracle",
    "sac": "metagrasp.policies.sac:SAC",
    "sac-oracle": "metagrasp.policies.sac:SACOracle",
    "sac-grip": "metagrasp.policies.grip_search:GripSearch",
    "sac-grip-dr": "metagrasp.policies.grip_search:GripSearchDR",
    "cavia": "metagrasp.policies.cavia:CAVIA",
    "pearl": "metagrasp.policies.pearl:PEARL",
    "rl2": "metagrasp.policies.rl2:RL2",
    "rma": "metagrasp.policies.rma:RMA",
}
"""Algorithm name -> ``module:Class``; imported only when used."""


@dataclass(frozen=True)
class EnvSpec:
    """What an algorithm may know about the task family before training."""

    family: str
    """Registered task family name."""
    obs_dim: int
    """Observation size."""
    act_dim: int
    """Action size (actions live in [-1, 1])."""
    task_dim: int
    """Size of the privileged task vector (only oracles may read it)."""
    max_steps: int
    """Control steps per episode."""
    obs_names: tuple[str, ...] = ()
    """Observation channel names (stamped into exports)."""
    action_names: tuple[str, ...] = ()
    """Action channel names (stamped into exports)."""


class Algorithm(Protocol):
    """Contract of a (meta-)RL algorithm; see the module docstring."""

    name: ClassVar[str]
    Config: ClassVar[type]
    config: Any
    spec: EnvSpec
    ORACLE_SETTINGS: ClassVar[dict[str, Any]]
    """Optional: the meta-test settings with which a run of this algorithm acts on the
    privileged task parameters (e.g. ``{"act_with": "teacher"}``), used when the run is
    an eval's ``--oracle`` reference; absent or empty when the algorithm always does
    (``ppo-oracle``) or never can."""

    def train_iteration(self, env: Any) -> dict[str, float]:
        """Collect, adapt and update once; metrics must include ``env_steps``."""

    def init_state(self, n: int) -> Any:
        """Adaptation state of ``n`` members before any episode of their task."""

    def act(
        self, obs: np.ndarray, task: np.ndarray, state: Any, deterministic: bool = False
    ) -> tuple[np.ndarray, Any]:
        """Actions (n, act_dim) in [-1, 1] for observations (n, obs_dim).

        ``task`` is the privileged vector (n, task_dim); only oracles may use it.
        """

    def observe(self, state: Any, step: dict[str, np.ndarray]) -> Any:
        """Per-step hook (recurrent state, running context); most algorithms return it."""

    def adapt(self, state: Any, episodes: list[Any]) -> Any:
        """New state after the finished episodes (oldest first) of each member's task."""

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume: networks, normalizers, optimizers, counters."""

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Inverse of :meth:`state_dict`."""


def algorithm_class(name: str) -> type:
    """The algorithm class registered as ``name``.

    Raises:
        UnknownNameError: listing the registered algorithms.
    """
    if name not in ALGORITHMS:
        raise UnknownNameError(f"unknown algorithm {name!r}; available: {sorted(ALGORITHMS)}")
    module, cls = ALGORITHMS[name].split(":")
    return getattr(importlib.import_module(module), cls)


def algorithms_for(family: str) -> list[str]:
    """Names of the algorithms with presets for ``family`` (those that train on it)."""
    kind = family_kind(family)
    return sorted(
        name
        for name in ALGORITHMS
        if any(key.startswith(f"{kind}:") for key in getattr(algorithm_class(name), "PRESETS", {}))
    )


def family_kind(family: str) -> str:
    """Preset group of a task family: ``point`` for point-robot navigation, else ``grasp``."""
    return "point" if family.startswith("point-nav") else "grasp"


def preset_layers(algo_cls: type, family: str, preset: str) -> dict[str, Any]:
    """The preset ``{"run": ..., "algo": ...}`` of an algorithm for a task family.

    Raises:
        UnknownNameError: unknown preset name.
    """
    presets: dict[str, dict[str, Any]] = getattr(algo_cls, "PRESETS", {})
    kind = family_kind(family)
    key = f"{kind}:{preset}"
    if preset not in ("quick", "default"):
        raise UnknownNameError(f"unknown preset {preset!r}; available: ['default', 'quick']")
    layer = presets.get(key)
    if layer is None:
        raise ConfigError(f"algorithm {algo_cls.name!r} has no {preset!r} preset for {family!r}")
    return layer
