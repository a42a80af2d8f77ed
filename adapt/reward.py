"""Success and reward of a grasp-lift episode from what the robot's computer has.

The sim's reward (``metagrasp.sim.grasp_env``) uses the finger pads' contact sensors and
the hidden crush limit, which a servo arm does not have. On the device an episode is
judged from its recorded observations alone (numpy only): servo positions, the gripper
opening and load, the previous action, and the object pose source.

Per step ``t`` (from ``obs[t]``, the action, and ``next_obs[t]``, as the sim evaluates
after its physics step):

* ``reach = 1 - tanh(10 |object - TCP|)`` (the same as the sim);
* ``close = 1 - q_gripper / span`` while the object is within 2 cm of the TCP (the same);
* ``grasp`` (*device proxy*): the gripper squeezes (load >= ``min_load``), its fingers
  stopped apart (opening >= ``min_opening``: something is between them) and the object
  is within ``hold_radius`` of the TCP. The sim asks instead whether both pads touch the
  object with more than 0.2 N;
* ``lift = clip(height / 5 cm, 0, 1) * grasp`` and ``hold = (height >= 5 cm) * grasp``,
  ``height`` the object's z above its z at the episode's start (the same, with the
  proxy grasp);
* ``drop``: the object left the workspace (the same); the step is ``done`` and later
  steps are masked, as the sim ends the episode there;
* ``action_rate = |a_t - a_{t-1}|^2`` on clipped actions (the same);
* ``crush``: the crush limit is hidden, so by default never. Blind to it, the device
  credits a crushed object's grasp and lift like any other: on scripted sim grasps at
  3-15 N it called 84 % (``test``) and 63 % (``hard``) of the crushed objects successes
  (``benchmarks/device_reward.py``; docs/BENCHMARKS.md). When the operator knows what the
  object tolerates (``max_grip_n``, ``metagrasp calibrate --max-grip N``), the first step
  that squeezes it harder (servo load x half the full force, per pad, as the sim
  measures its grip) is the crush: ``crush = 1`` once, and from that step on no
  ``close``, ``grasp``, ``lift`` or ``hold`` and no success, as in the sim.

An episode succeeds when its last step holds the object 5 cm up (``hold``) and nothing was
crushed, as the sim's success flag is the last step's. Weights are the sim's defaults
(:data:`DEFAULT_WEIGHTS`; a test checks they agree with ``EnvConfig``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from metagrasp.actions import OBS_NAMES
from metagrasp.errors import ConfigError
from metagrasp.kinematics import ARM

__all__ = ["DEFAULT_WEIGHTS", "DeviceReward", "EpisodeOutcome", "RewardConfig"]

DEFAULT_WEIGHTS: dict[str, float] = {
    "reach": 0.5,
    "close": 0.5,
    "grasp": 0.5,
    "lift": 2.0,
    "hold": 2.0,
    "crush": -10.0,
    "drop": -5.0,
    "action_rate": -0.02,
}
"""The sim's grasp-lift reward weights (``EnvConfig.reward_weights``, minus ``place``)."""

_I = {name: i for i, name in enumerate(OBS_NAMES)}
_REL = slice(20, 23)  # object position relative to the TCP
_POS = slice(23, 26)  # object position
_PREV = slice(14, 20)  # previous (applied) action
_GRIP_Q, _OPENING, _LOAD = 5, 12, 13
_GRIP_SPAN = ARM.joint_upper[5] - ARM.joint_lower[5]


@dataclass
class RewardConfig:
    """How the device judges a grasp-lift episode."""

    lift_height: float = 0.05
    """Success height of the object above its start (m); the sim's ``LIFT_HEIGHT``."""
    close_radius: float = 0.02
    """TCP-to-object distance (m) within which closing earns ``close`` (the sim's)."""
    hold_radius: float = 0.035
    """TCP-to-object distance (m) within which a squeezing gripper counts as holding it
    (object centre to the pads' centre: half the largest object plus a margin)."""
    min_load: float = 0.03
    """Gripper load (fraction of full force) above which the gripper is squeezing."""
    min_opening: float = 0.006
    """Opening of both fingers (m) above which they stopped on something, not closed."""
    gripper_full_force_n: float = 40.0
    """Gripper servo force at full load (N), to report the grip force (per pad: half)."""
    max_grip_n: float | None = None
    """Grip force per pad (N) the object tolerates, when the operator knows it (a
    datasheet, a test squeeze); squeezing harder counts as crushing it, as in the sim.
    ``None``: crushes are invisible to the device (see the module docstring)."""
    weights: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_WEIGHTS))
    """Weight of each term; the reward is their weighted sum."""

    def __post_init__(self) -> None:
        unknown = set(self.weights) - set(DEFAULT_WEIGHTS)
        if unknown:
            raise ConfigError(f"unknown reward term(s) {sorted(unknown)}: {list(DEFAULT_WEIGHTS)}")
        for name in ("lift_height", "close_radius", "hold_radius", "gripper_full_force_n"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"reward setting {name} must be > 0")
        if self.max_grip_n is not None and not (0 < self.max_grip_n < math.inf):
            raise ConfigError(
                f"max_grip_n={self.max_grip_n} must be a positive number of newtons "
                "(--max-grip), or unset when the object's limit is unknown"
            )


@dataclass
class EpisodeOutcome:
    """What the device computed for one recorded episode."""

    rewards: np.ndarray
    """(T,) reward per step."""
    dones: np.ndarray
    """(T,) 1 at the step the object was dropped (the sim's termination)."""
    mask: np.ndarray
    """(T,) 1 for steps up to and including the first ``done``."""
    success: bool
    """Object held ``lift_height`` up at the episode's last valid step."""
    episode_return: float
    """Sum of the valid steps' rewards."""
    grip_peak_n: float
    """Largest grip force per pad while holding (N; 0 if never held)."""
    max_height: float
    """Highest the object got above its start (m)."""
    crushed: bool = False
    """The grip exceeded ``max_grip_n`` (always False when it is unset)."""

    def summary(self) -> dict[str, Any]:
        """JSON-ready scalars."""
        return {
            "success": bool(self.success),
            "return": float(self.episode_return),
            "grip_peak_n": float(self.grip_peak_n),
            "max_height_m": float(self.max_height),
            "crushed": bool(self.crushed),
            "steps": int(self.mask.sum()),
        }


class DeviceReward:
    """Reward, dones and success of recorded episodes; see the module docstring."""

    def __init__(self, config: RewardConfig | None = None) -> None:
        self.config = config or RewardConfig()

    def _terms(
        self, obs: np.ndarray, action: np.ndarray, nxt: np.ndarray, z0: float, crushed: bool
    ) -> dict:
        """Per-step terms of consecutive transitions; ``crushed``: before the first one."""
        c = self.config
        dist = np.linalg.norm(nxt[:, _REL], axis=1)
        height = nxt[:, _POS][:, 2] - z0
        held = (
            (nxt[:, _LOAD] >= c.min_load)
            & (nxt[:, _OPENING] >= c.min_opening)
            & (dist <= c.hold_radius)
        )
        over = np.zeros(len(obs), bool)
        if c.max_grip_n is not None:
            over = held & (nxt[:, _LOAD] * 0.5 * c.gripper_full_force_n > c.max_grip_n)
        # From the crushing step on, a crushed object earns nothing more (the sim's rule).
        gone = np.logical_or.accumulate(over) | crushed
        crush_now = gone & ~np.concatenate([[crushed], gone[:-1]])
        held = held & ~gone
        pos = nxt[:, _POS]
        dropped = (np.abs(pos[:, 0] - 0.15) > 0.4) | (np.abs(pos[:, 1]) > 0.4) | (pos[:, 2] < -0.05)
        a = np.clip(action, -1.0, 1.0)
        da = a - obs[:, _PREV]
        return {
            "reach": 1.0 - np.tanh(10.0 * dist),
            "close": np.where(
                (dist < c.close_radius) & ~gone, 1.0 - nxt[:, _GRIP_Q] / _GRIP_SPAN, 0.0
            ),
            "grasp": held.astype(float),
            "lift": np.clip(height / c.lift_height, 0.0, 1.0) * held,
            "hold": ((height >= c.lift_height) & held).astype(float),
            "crush": crush_now.astype(float),
            "drop": dropped.astype(float),
            "action_rate": np.sum(da * da, axis=1),
            "_height": height,
            "_held": held,
            "_crushed": gone,
        }

    def episode(self, obs: np.ndarray, action: np.ndarray, next_obs: np.ndarray) -> EpisodeOutcome:
        """Judge one episode from its recorded ``obs``, ``action`` and ``next_obs``."""
        obs, nxt = np.asarray(obs, float), np.asarray(next_obs, float)
        action = np.asarray(action, float)
        if obs.ndim != 2 or obs.shape[1] != len(OBS_NAMES) or len(obs) == 0:
            raise ConfigError(f"episode obs has shape {obs.shape}; need (T>0, {len(OBS_NAMES)})")
        if nxt.shape != obs.shape or action.shape != (len(obs), 6):
            raise ConfigError("episode next_obs/action do not match its obs")
        z0 = float(obs[0, _POS][2])
        terms = self._terms(obs, action, nxt, z0, crushed=False)
        w = self.config.weights
        reward = sum(w.get(k, 0.0) * v for k, v in terms.items() if not k.startswith("_"))
        dones = terms["drop"].astype(np.float32)
        mask = np.ones(len(obs), np.float32)
        hit = np.nonzero(dones)[0]
        if hit.size:
            mask[hit[0] + 1 :] = 0.0
            dones[hit[0] + 1 :] = 0.0
        last = int(mask.sum()) - 1
        held = terms["_held"]
        grip = np.where(held, nxt[:, _LOAD], 0.0) * 0.5 * self.config.gripper_full_force_n
        valid = mask > 0
        return EpisodeOutcome(
            rewards=(np.asarray(reward) * mask).astype(np.float32),
            dones=dones,
            mask=mask,
            success=bool(terms["hold"][last] > 0 and not dones[last]),
            crushed=bool(terms["_crushed"][valid].any()),
            episode_return=float(np.sum(np.asarray(reward)[valid])),
            grip_peak_n=float(grip[valid].max(initial=0.0)),
            max_height=float(terms["_height"][valid].max(initial=0.0)),
        )

    def step(
        self,
        obs: np.ndarray,
        action: np.ndarray,
        next_obs: np.ndarray,
        z0: float,
        crushed: bool = False,
    ) -> tuple[float, bool]:
        """Reward of one transition (for recurrent bundles' per-step ``observe``).

        Args:
            obs, action, next_obs: the transition.
            z0: the object's height at the episode's start.
            crushed: whether an earlier step of the episode crushed the object.

        Returns:
            The reward (0 if not finite) and whether the object is crushed after the step.
        """
        terms = self._terms(
            np.asarray(obs, float).reshape(1, -1),
            np.asarray(action, float).reshape(1, -1),
            np.asarray(next_obs, float).reshape(1, -1),
            z0,
            crushed,
        )
        w = self.config.weights
        r = sum(w.get(k, 0.0) * float(v[0]) for k, v in terms.items() if not k.startswith("_"))
        return (float(r) if math.isfinite(r) else 0.0), bool(terms["_crushed"][0])
