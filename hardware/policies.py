"""The policy protocol the control loop runs, and small built-in numpy policies.

Contract: a policy has ``spec`` (:class:`PolicySpec`: action mode, rate, task kind and
action scales it was trained with), ``reset()`` (start of an episode) and
``act(obs) -> action`` (6 floats in [-1, 1]; out-of-range values are clipped by the loop,
NaN/inf stop the run). Built-ins, for bring-up, tests and soak runs (``builtin:NAME``):

* ``hold``: zero arm actions (ee mode: the TCP target stays put), gripper -1 (open);
* ``sweep``: slow, deterministic TCP circles with the gripper closing and opening, the
  wrist rolling: every servo moves, nothing leaves the workspace.

An exported policy file (``.onnx``) is loaded with ``metagrasp.adapt.runtime.load_bundle``
and wrapped by :class:`BundlePolicy`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from metagrasp.actions import ACTION_MODES, OBS_NAMES
from metagrasp.errors import ConfigError, UnknownNameError

__all__ = [
    "BUILTIN_POLICIES",
    "BundlePolicy",
    "HoldPolicy",
    "Policy",
    "PolicySpec",
    "SweepPolicy",
    "load_policy",
]


@dataclass(frozen=True)
class PolicySpec:
    """What the device must know about a policy to run it as it was trained."""

    action_mode: str = "ee"
    """``ee`` or ``joint`` (see :mod:`metagrasp.actions`)."""
    control_hz: float = 25.0
    """The rate the policy was trained at (Hz)."""
    task: str = "grasp-lift"
    """Task kind (sets the observation's goal)."""
    max_tcp_delta: float = 0.012
    """ee mode: TCP target change per step at action 1 (m)."""
    max_joint_delta: float = 0.06
    """joint mode: joint target change per step at action 1 (rad)."""

    def __post_init__(self) -> None:
        if self.action_mode not in ACTION_MODES:
            raise ConfigError(
                f"policy action_mode {self.action_mode!r} not in {list(ACTION_MODES)}"
            )


class Policy(Protocol):
    """What the control loop runs."""

    spec: PolicySpec

    def reset(self) -> None: ...

    def act(self, obs: np.ndarray) -> np.ndarray: ...


class HoldPolicy:
    """Zero arm actions: the arm holds its pose; gripper action -1: fully open."""

    def __init__(self, spec: PolicySpec | None = None) -> None:
        self.spec = spec or PolicySpec()

    def reset(self) -> None:
        """Stateless."""

    def act(self, obs: np.ndarray) -> np.ndarray:
        a = np.zeros(6, np.float32)
        a[5] = -1.0
        return a


class SweepPolicy:
    """TCP circles (ee mode) or joint waves (joint mode), gripper cycling; deterministic."""

    def __init__(self, spec: PolicySpec | None = None, period_s: float = 4.0) -> None:
        self.spec = spec or PolicySpec()
        self.period_steps = max(4, round(period_s * self.spec.control_hz))
        self.t = 0

    def reset(self) -> None:
        self.t = 0

    def act(self, obs: np.ndarray) -> np.ndarray:
        w = 2.0 * math.pi * self.t / self.period_steps
        self.t += 1
        a = np.zeros(6, np.float32)
        # Velocities of a circle about the start: the integrated target goes round and back.
        a[0], a[1] = 0.5 * math.cos(w), 0.5 * math.sin(w)
        a[2] = 0.3 * math.sin(2 * w)
        a[3] = 0.3 * math.sin(w)  # ee: absolute wrist roll; joint: a slow wave
        a[5] = 0.4 if math.sin(w) > 0 else -1.0
        return a


BUILTIN_POLICIES = {"hold": HoldPolicy, "sweep": SweepPolicy}


class BundlePolicy:
    """Adapts a ``metagrasp.adapt.runtime`` bundle (``act(obs, state)``) to :class:`Policy`.

    The spec comes from the bundle's metadata (``env.family``, ``env.action_map``,
    ``control_hz``, ``obs_names``), so the device maps actions exactly as in training.

    Args:
        bundle: A loaded :class:`metagrasp.adapt.runtime.PolicyBundle`.
        explore: Act with ``bundle.explore`` (Gaussian draws, for collecting adaptation
            episodes) instead of the deterministic action; the raw draw is returned (the
            loop records it and commands it clipped).
        seed: Seed of the exploration noise.
    """

    def __init__(self, bundle: Any, *, explore: bool = False, seed: int = 0) -> None:
        self.bundle = bundle
        meta = bundle.metadata
        obs_names = meta.get("obs_names")
        if obs_names is not None and tuple(obs_names) != OBS_NAMES:
            raise ConfigError(
                "the policy was trained on another observation layout than this device "
                f"builds ({len(obs_names)} vs {len(OBS_NAMES)} values); export it again"
            )
        env = meta.get("env") or {}
        family = env.get("family")
        if family not in ("reach", "grasp-lift", "place"):
            raise ConfigError(
                f"the policy was trained on task family {family!r}, not an arm task "
                "(reach, grasp-lift, place): it cannot drive a robot"
            )
        amap = env.get("action_map") or {}
        self.spec = PolicySpec(
            action_mode=amap.get("action_mode", "ee"),
            control_hz=float(meta.get("control_hz") or amap.get("control_hz", 25.0)),
            task=family,
            max_tcp_delta=float(amap.get("max_tcp_delta", 0.012)),
            max_joint_delta=float(amap.get("max_joint_delta", 0.06)),
        )
        self.explore = explore
        self._rng = np.random.default_rng(seed)
        self.state = bundle.init_state()
        """The bundle's state (adapted by calibration via ``bundle.adapt``)."""
        self._episode_start = self.state

    def reset(self) -> None:
        """Start an episode from the current (possibly adapted) task state."""
        self.state = self._episode_start

    def set_task_state(self, state: Any) -> None:
        """Use an adapted state from now on (e.g. after ``bundle.adapt``)."""
        self._episode_start = self.state = state

    def act(self, obs: np.ndarray) -> np.ndarray:
        if self.explore:
            _, sample, self.state = self.bundle.explore(obs, self.state, self._rng)
            return np.asarray(sample, np.float32).reshape(-1)
        action, self.state = self.bundle.act(obs, self.state)
        return np.asarray(action, np.float32).reshape(-1)


def load_policy(spec_text: str, *, action_mode: str | None = None) -> Policy:
    """``builtin:hold`` / ``builtin:sweep`` or a path to an exported policy (``.onnx``)."""
    if spec_text.startswith("builtin:"):
        name = spec_text[len("builtin:") :]
        if name not in BUILTIN_POLICIES:
            raise UnknownNameError(
                f"unknown built-in policy {name!r}; known: {list(BUILTIN_POLICIES)}"
            )
        spec = PolicySpec(action_mode=action_mode or "ee")
        return BUILTIN_POLICIES[name](spec)
    try:
        from metagrasp.adapt.runtime import load_bundle
    except ImportError as exc:
        raise ConfigError(
            f"cannot load {spec_text!r}: the policy runtime (metagrasp.adapt.runtime) is not "
            f"available ({exc}); use builtin:hold or builtin:sweep to test the robot"
        ) from None
    return BundlePolicy(load_bundle(spec_text))
