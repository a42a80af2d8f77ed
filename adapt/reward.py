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
  ``close``, ``grasp``, ``lift`` or ``hold`` and no success, as in the sim. Without the
  limit, ``detect_collapse`` (``metagrasp calibrate --detect-crush``) finds crushes from
  their trace instead. A crushed object gives way a moment after the squeeze that crushed
  it (``metagrasp.sim.objects.CRUSH_COLLAPSE``), so the fingers, stopped on it, close
  further under the same load; an intact one holds them where they stopped
  (:func:`collapse_step`). The crush counts from the first collapsed step. It is judged on
  whole episodes only (it needs the steps after the squeeze), and it sees only crushes
  that change the object's shape, not a crushed object that drops out of the fingers (a
  slip looks the same).

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

__all__ = ["DEFAULT_WEIGHTS", "DeviceReward", "EpisodeOutcome", "RewardConfig", "collapse_step"]

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
    detect_collapse: bool = False
    """Find crushes from the fingers closing further after contact (module docstring),
    for objects that give way when crushed; whole episodes only (not :meth:`DeviceReward.step`).
    Used when ``max_grip_n`` is unset."""
    collapse_drop: float = 0.25
    """Fraction of the stopped fingers' opening they must close further to call a crush (a
    crushed object in the sim gives way by 40 %, ``CRUSH_COLLAPSE``)."""
    collapse_window: int = 12
    """Steps whose median opening is compared with the reference. Long, because on small
    objects the opening's noise (3-5 mm while squeezing a 10-20 mm mesh) is as large as
    the collapse; a collapse lasts as long as the squeeze, so a long window loses little.
    12 (and ``collapse_ref`` 8, ``collapse_noise`` 2.0, from 6, 4 and 2.5) were chosen on
    ``val`` episodes of the learned grip search and on ``train`` scripted grasps
    (docs/BENCHMARKS.md, "a longer look at the opening"): crushes found 0.81 -> 0.83 and
    0.88 -> 0.94, false crushes 30 -> 13 of 806 and 0 -> 0 of 200. A squeeze must then
    last ``collapse_ref + collapse_window`` = 20 steps (0.8 s at 25 Hz) to be judged."""
    collapse_ref: int = 8
    """Steps after the fingers stop whose median opening is the reference (the object
    gives way no sooner than a moment after the squeeze, so these steps hold it intact)."""
    collapse_search: int = 8
    """Steps after the load comes on within which the fingers must stop."""
    collapse_stop_tol: float = 0.12
    """Relative change of the opening below which the fingers count as stopped."""
    collapse_horizon: int = 14
    """Steps after the reference within which a collapse is looked for (the object gives
    way a moment after the squeeze that crushes it)."""
    collapse_fall: float = 0.008
    """Fall of the object relative to the fingers (m) above which a closing is a slip."""
    collapse_noise: float = 2.0
    """The closing must also exceed this many times the opening's own noise (its robust
    spread step to step while squeezing, from the episode itself): on a small object a
    quarter of the width is within the noise. With the first 4- and 6-step windows, 2.5
    halved false crushes on ``train`` episodes (0.085 -> 0.035 scripted, 0.085 -> 0.064
    learned) for 0.06 / 0.03 of the crushes found; the longer windows' medians are less
    noisy, so 2.0 (see ``collapse_window``)."""
    weights: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_WEIGHTS))
    """Weight of each term; the reward is their weighted sum."""

    def __post_init__(self) -> None:
        unknown = set(self.weights) - set(DEFAULT_WEIGHTS)
        if unknown:
            raise ConfigError(f"unknown reward term(s) {sorted(unknown)}: {list(DEFAULT_WEIGHTS)}")
        for name in ("lift_height", "close_radius", "hold_radius", "gripper_full_force_n"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"reward setting {name} must be > 0")
        if not 0 < self.collapse_drop < 1:
            raise ConfigError(f"collapse_drop={self.collapse_drop} must be in (0, 1)")
        for name in ("collapse_window", "collapse_ref", "collapse_search", "collapse_horizon"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise ConfigError(f"reward setting {name}={v} must be an int >= 1")
        if not (self.collapse_stop_tol > 0 and self.collapse_fall > 0):
            raise ConfigError("collapse_stop_tol and collapse_fall must be > 0")
        if not (self.collapse_noise >= 0 and math.isfinite(self.collapse_noise)):
            raise ConfigError(f"collapse_noise={self.collapse_noise} must be >= 0")
        if self.max_grip_n is not None and not (0 < self.max_grip_n < math.inf):
            raise ConfigError(
                f"max_grip_n={self.max_grip_n} must be a positive number of newtons "
                "(--max-grip), or unset when the object's limit is unknown"
            )

    @property
    def uses_collapse(self) -> bool:
        """Whether crushes are found from the object giving way: ``detect_collapse`` with
        no known limit (a known ``max_grip_n`` decides instead). Whole episodes only."""
        return self.detect_collapse and self.max_grip_n is None


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
    """The grip exceeded ``max_grip_n``, or the object gave way (``detect_collapse``);
    always False when neither is set."""

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


def collapse_step(
    opening: np.ndarray,
    load: np.ndarray,
    rel_z: np.ndarray,
    config: RewardConfig | None = None,
) -> int:
    """The step an object gave way under the fingers, or -1 (``detect_collapse``).

    For each squeeze (the load coming on), the fingers' stop is the first point within
    ``collapse_search`` steps where the opening's median over 3 steps and over the next 3
    agree within 3 mm or ``collapse_stop_tol`` of it. Its opening over ``collapse_ref``
    steps is the reference. A collapse is an opening whose median over ``collapse_window``
    steps falls ``collapse_drop`` or more below the reference within ``collapse_horizon``
    steps of the stop, and by at least ``collapse_noise`` times the opening's own noise,
    while the gripper goes on squeezing and the object does not fall by more than
    ``collapse_fall`` relative to the fingers (that would be a slip, a drop).

    Args:
        opening: (T,) the fingers' opening after each step (m).
        load: (T,) the gripper's load after each step (fraction of full force).
        rel_z: (T,) the object's height relative to the TCP after each step (m).
        config: the thresholds.

    Returns:
        The step the collapse is first seen: inside the collapsed window, the first whose
        3-step median opening has fallen that far; -1 if none.
    """
    c = config or RewardConfig()
    o, rz = np.asarray(opening, float), np.asarray(rel_z, float)
    on = np.asarray(load, float) >= c.min_load
    n, ref_n, win = len(o), c.collapse_ref, c.collapse_window
    # The opening's noise: the robust spread of its step-to-step change while squeezing
    # (mostly a steady hold, so the median absolute deviation ignores the real motion).
    d = np.diff(o)[on[1:] & on[:-1]]
    noise = 1.4826 * np.median(np.abs(d - np.median(d))) / math.sqrt(2) if d.size >= 6 else 0.0
    least = c.collapse_noise * noise
    for s0 in np.nonzero(on[1:] & ~on[:-1])[0] + 1:
        stop = None
        for q in range(s0, min(s0 + c.collapse_search, n - 6 + 1)):
            if not on[q : q + 6].all():
                break
            m1, m2 = np.median(o[q : q + 3]), np.median(o[q + 3 : q + 6])
            if abs(m1 - m2) <= max(0.003, c.collapse_stop_tol * m1):
                stop = q
                break
        if stop is None:
            continue
        ref = np.median(o[stop : stop + ref_n])
        if ref < c.min_opening:
            continue
        for k in range(c.collapse_horizon + 1):
            a, b = stop + ref_n + k, stop + ref_n + k + win
            if b > n or on[a:b].mean() < 0.8:  # the episode or the squeeze ended
                break
            need = max(c.collapse_drop * ref, least)
            if ref - np.median(o[a:b]) >= need:
                fell = np.min(rz[stop:b]) - np.median(rz[stop : stop + ref_n])
                if fell < -c.collapse_fall:
                    break
                # The window is long; the crush is where, inside it, the opening (a 3-step
                # median against single noisy reads) first falls by ``need``.
                closed = [ref - np.median(o[t : t + 3]) >= need for t in range(a, b - 2)]
                return int(a + closed.index(True)) if any(closed) else int(a)
    return -1


class DeviceReward:
    """Reward, dones and success of recorded episodes; see the module docstring."""

    def __init__(self, config: RewardConfig | None = None) -> None:
        self.config = config or RewardConfig()

    def _terms(
        self,
        obs: np.ndarray,
        action: np.ndarray,
        nxt: np.ndarray,
        z0: float,
        crushed: bool,
        collapse: int = -1,
    ) -> dict:
        """Per-step terms of consecutive transitions; ``crushed``: before the first one;
        ``collapse``: the step the object gave way (-1: none)."""
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
        if collapse >= 0:
            over[collapse] = True
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
        c = self.config
        collapse = -1
        if c.uses_collapse:
            collapse = collapse_step(nxt[:, _OPENING], nxt[:, _LOAD], nxt[:, _REL][:, 2], c)
        terms = self._terms(obs, action, nxt, z0, crushed=False, collapse=collapse)
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

        Raises:
            ConfigError: ``detect_collapse`` without ``max_grip_n``: a collapse is seen only
                in the steps after it, so it cannot be judged one step at a time.
        """
        if self.config.uses_collapse:
            raise ConfigError(
                "detect_collapse judges whole episodes, not single steps; a bundle that "
                "rewards each step (recurrent) needs --max-grip N or --ask instead"
            )
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
