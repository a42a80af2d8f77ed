"""The safety shield: every servo command passes through it before it reaches the bus.

Contract: :meth:`SafetyShield.filter` takes the targets the action map produced and the
present positions, and returns targets that are

1. finite (NaN/inf raise :class:`~metagrasp.hardware.errors.UnsafeCommandError`: a broken
   policy must stop the run, not be papered over);
2. within the robot file's position limits;
3. at most ``max_step`` from the present position (a target far from where the joint is
   means a large, fast, hard-to-stop motion);
4. at most ``max_velocity * period`` beyond the previous command or the present
   position, whichever the target is nearer (the target's own speed). A target left
   behind the joint may come back to it at once: a squeeze leaves the gripper's command
   past-closed, inside the object the fingers stopped on, and letting go must not creep
   out from there at full current (it crushed a fragile object on the virtual robot that
   the sim, which has no shield, let go of intact). Moving the command towards where the
   joint is lowers the servo's effort; it never speeds the joint up.

Each limit that changed a target is counted per joint in :attr:`SafetyShield.counts` and
flagged per call, so recordings show when the shield, not the policy, drove the robot.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from metagrasp.errors import ConfigError
from metagrasp.hardware.errors import UnsafeCommandError
from metagrasp.hardware.robot_config import RobotConfig

__all__ = ["SHIELD_FLAGS", "SafetyShield", "ShieldLimits"]

SHIELD_FLAGS = ("position", "step", "velocity")
"""Names of the limits, in the order of the per-call flag bits (bit 0 = position)."""


@dataclass(frozen=True)
class ShieldLimits:
    """Per-joint limits in sim units (6 values each, sim joint order)."""

    lower: np.ndarray
    """Lowest target (rad; gripper m)."""
    upper: np.ndarray
    """Highest target."""
    max_step: np.ndarray
    """Largest |target - present position|."""
    max_velocity: np.ndarray
    """Largest speed of the target (units/s): per period it moves at most this times the
    period beyond the previous target, or beyond the present position when it comes
    back towards the joint."""

    def __post_init__(self) -> None:
        arrays = (self.lower, self.upper, self.max_step, self.max_velocity)
        if any(np.shape(a) != (6,) for a in arrays):
            raise ConfigError("shield limits need 6 values each (sim joint order)")
        if not np.all(self.lower < self.upper):
            raise ConfigError("shield: need lower < upper for every joint")
        if not (np.all(self.max_step > 0) and np.all(self.max_velocity > 0)):
            raise ConfigError("shield: max_step and max_velocity must be > 0")

    @classmethod
    def from_robot(cls, config: RobotConfig) -> ShieldLimits:
        """The limits a robot file sets."""
        a = config.arrays
        return cls(a["min"], a["max"], a["max_step"], a["max_velocity"])


class SafetyShield:
    """Clips commands to the robot's limits; see the module docstring.

    Args:
        limits: Per-joint limits.
        period_s: Control period (s), for the velocity limit.
    """

    def __init__(self, limits: ShieldLimits, period_s: float) -> None:
        if period_s <= 0:
            raise ConfigError(f"period_s must be > 0, got {period_s}")
        self.limits = limits
        self.period_s = float(period_s)
        self._max_move = limits.max_velocity * self.period_s
        self._last: np.ndarray | None = None
        self.counts = {name: np.zeros(6, np.int64) for name in SHIELD_FLAGS}
        """Per-joint number of commands each limit changed since construction."""

    def reset(self, present: np.ndarray) -> None:
        """Start from the present positions (the previous command is 'hold here')."""
        self._last = np.asarray(present, float).copy()

    def filter(self, target: np.ndarray, present: np.ndarray) -> tuple[np.ndarray, int]:
        """Safe targets for ``target`` given the ``present`` positions.

        Returns:
            ``(safe, flags)``: the safe targets (a new array) and a bit mask of the
            limits that acted (bit i = :data:`SHIELD_FLAGS` [i]).

        Raises:
            UnsafeCommandError: ``target`` or ``present`` holds NaN or inf.
        """
        target = np.asarray(target, float)
        present = np.asarray(present, float)
        if not np.all(np.isfinite(target)):
            raise UnsafeCommandError(
                f"servo targets contain NaN/inf ({target}); the policy or its inputs are "
                "broken: check the observation (pose source, servo reads) and the policy file"
            )
        if not np.all(np.isfinite(present)):
            raise UnsafeCommandError(f"present positions contain NaN/inf ({present})")
        lim = self.limits
        last = present if self._last is None else self._last
        flags = 0
        safe = np.minimum(np.maximum(target, lim.lower), lim.upper)
        flags |= self._count(0, safe, target)
        stepped = np.minimum(np.maximum(safe, present - lim.max_step), present + lim.max_step)
        flags |= self._count(1, stepped, safe)
        # From the nearer of the previous command and the joint (module docstring, 4).
        lo = np.minimum(last, present) - self._max_move
        hi = np.maximum(last, present) + self._max_move
        moved = np.minimum(np.maximum(stepped, lo), hi)
        flags |= self._count(2, moved, stepped)
        # The step and velocity clips are relative to positions that may lie outside the
        # limits (a joint pushed past them): the position limit has the last word.
        safe = np.minimum(np.maximum(moved, lim.lower), lim.upper)
        self._last = safe
        return safe, flags

    def _count(self, bit: int, after: np.ndarray, before: np.ndarray) -> int:
        changed = after != before
        if not changed.any():
            return 0
        self.counts[SHIELD_FLAGS[bit]] += changed
        return 1 << bit
