"""The policy's interface to the arm: observation layout and action -> servo-target mapping.

Contract: one definition, numpy only (no mujoco, no torch), used by both sides so they
cannot drift:

* the sim (:class:`metagrasp.sim.grasp_env.GraspEnv`) turns every action into servo
  targets with :class:`ActionMap`, and lays its observation out as :data:`OBS_NAMES`;
* the device (:mod:`metagrasp.hardware.control_loop`) builds the same observation from
  servo reads and an object-pose source, and sends :class:`ActionMap`'s targets to the bus.

Action modes (6 values in [-1, 1] each):

* ``"ee"``: TCP target deltas (integrated, clipped to :data:`TCP_BOX`, solved with the
  numpy IK of :mod:`metagrasp.kinematics`, anti-windup at the reach limit), the wrist roll
  straight from the action, a wrist pitch offset, and the gripper;
* ``"joint"``: bounded arm joint-target deltas and the gripper.

The gripper action is absolute in both modes: g > 0 moves the gripper target towards
past-closed at the servo's profile speed with a current (force) limit of
:func:`grip_fraction` ``(g)`` x full, log-scaled from :data:`GRIP_MIN_FRACTION` at g -> 0
to full at g = 1; g <= 0 is position control of the opening at full current, from
closed (g = 0) to fully open (g = -1), so a closed position target on an object squeezes
at full force.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from metagrasp.errors import ConfigError, UnknownNameError
from metagrasp.kinematics import ARM, forward_tcp, top_down_ik

__all__ = [
    "ACTION_MODES",
    "ACTION_NAMES",
    "EE_ACTION_NAMES",
    "GRIPPER_CTRL_MIN",
    "GRIPPER_SPEED",
    "GRIP_MIN_FRACTION",
    "JOINT_ACTION_NAMES",
    "OBS_NAMES",
    "PAD_HALF_HEIGHT",
    "PITCH_OFFSET",
    "TCP_BOX",
    "TCP_HI",
    "TCP_LO",
    "ActionMap",
    "ActionMapConfig",
    "auto_pitch",
    "canonical_quat",
    "goal_position",
    "grip_action",
    "grip_fraction",
]

OBS_NAMES: tuple[str, ...] = (
    *(f"q_{n}" for n in ARM.joint_names),
    *(f"dq_{n}" for n in ARM.joint_names),
    "gripper_opening",
    "gripper_effort",
    *(f"prev_action_{i}" for i in range(6)),
    "obj_rel_x",
    "obj_rel_y",
    "obj_rel_z",
    "obj_x",
    "obj_y",
    "obj_z",
    "obj_qw",
    "obj_qx",
    "obj_qy",
    "obj_qz",
    "goal_x",
    "goal_y",
    "goal_z",
)
"""Observation layout; units: rad, rad/s, m, m/s, effort in [-1, 1], quaternion. The
previous action is in the action-mode order (see :data:`ACTION_MODES`)."""

JOINT_ACTION_NAMES: tuple[str, ...] = ARM.joint_names
"""Actions of ``action_mode="joint"``: 5 arm joint deltas and the gripper target."""
EE_ACTION_NAMES: tuple[str, ...] = (
    "tcp_dx",
    "tcp_dy",
    "tcp_dz",
    "finger_yaw",
    "wrist_pitch",
    "gripper",
)
"""Actions of ``action_mode="ee"``: TCP target deltas, wrist roll, pitch offset, gripper."""
ACTION_MODES: dict[str, tuple[str, ...]] = {"ee": EE_ACTION_NAMES, "joint": JOINT_ACTION_NAMES}
ACTION_NAMES: tuple[str, ...] = EE_ACTION_NAMES
"""Action names of the default mode."""

# The three constants below are the scene's (metagrasp.sim.scene imports mujoco, so the
# device cannot import them from there); tests/hardware/test_actions.py checks they agree.
PAD_HALF_HEIGHT = 0.022
"""Half-height of the finger pads (m); they are centred on the TCP."""
GRIPPER_CTRL_MIN = -0.02
"""Gripper target below the closed stop (m) where a closing command aims, so the current
limit alone sets the squeeze."""
GRIPPER_SPEED = 0.2
"""Finger speed (m/s) of the gripper's profile velocity."""
GRIP_MIN_FRACTION = 0.025
"""Current limit (fraction of full) of the gentlest squeeze, g -> 0+. The scale between it
and full is logarithmic because objects need squeezes from a fraction of a newton to tens
of newtons, and a fragile one tolerates only a ratio (not a difference) above its need:
equal action steps are equal force *ratios*, so exploration and a policy's precision are
alike for light and heavy objects."""

TCP_BOX = ((0.04, 0.36), (-0.22, 0.22), (PAD_HALF_HEIGHT - 0.004, 0.22))
"""Bounds (m, base frame) of the ``ee`` mode's TCP target: the workspace plus a margin.
The floor lets the pads press 4 mm into the table and no further: a target far below what
the table lets the hand reach would wind up, and lifting would first have to unwind it."""
TCP_LO = np.array([b[0] for b in TCP_BOX])
"""Lower corner of :data:`TCP_BOX` as an array."""
TCP_HI = np.array([b[1] for b in TCP_BOX])
"""Upper corner of :data:`TCP_BOX` as an array."""
PITCH_OFFSET = 0.3
"""Largest wrist pitch offset (rad) of the ``ee`` mode's ``wrist_pitch`` action."""
GOAL_LIFT = 0.07
"""Height of the grasp-lift goal above the object's start (m): success height + 2 cm."""


def grip_fraction(g: float) -> float:
    """Gripper current limit (fraction of full) for a squeeze action ``g`` in (0, 1]."""
    return GRIP_MIN_FRACTION ** (1.0 - min(g, 1.0))


def grip_action(fraction: float) -> float:
    """Inverse of :func:`grip_fraction`: the action that squeezes with ``fraction`` of full."""
    f = min(max(fraction, GRIP_MIN_FRACTION), 1.0)
    return max(1.0 - math.log(f) / math.log(GRIP_MIN_FRACTION), 1e-6)


def auto_pitch(x: float, y: float) -> float:
    """Gripper tilt (rad) that keeps a top-down grasp reachable at radial distance r.

    Vertical up to r = 0.265 m (as far as a vertical gripper reaches the table), then
    tilting towards the base as the target gets farther. Vertical is best: a tilted hand
    digs a pad corner into the table before the pads reach a low object.
    """
    return min(max((math.hypot(x, y) - 0.265) * 8.0, 0.0), 0.7)


def canonical_quat(q: np.ndarray) -> np.ndarray:
    """The quaternion (w, x, y, z) with w >= 0, as the observation carries it (in place)."""
    if q[0] < 0:
        q *= -1.0
    return q


def goal_position(
    task: str, object_start: np.ndarray, goal: np.ndarray | None = None
) -> np.ndarray:
    """The observation's goal for a task kind, from where the object rests at the start.

    Args:
        task: ``reach`` (the object itself), ``grasp-lift`` (:data:`GOAL_LIFT` above its
            start) or ``place`` (``goal`` must be given: where to put it).
        object_start: Object position at the episode's start (m, base frame).
        goal: Place target (m), only for ``place``.
    """
    start = np.asarray(object_start, float)
    if task == "grasp-lift":
        return start + (0.0, 0.0, GOAL_LIFT)
    if task == "reach":
        return start.copy()
    if task == "place":
        if goal is None:
            raise ConfigError("task 'place' needs a goal position (x, y, z); pass --goal X,Y,Z")
        return np.asarray(goal, float).copy()
    raise UnknownNameError(f"unknown task {task!r}; allowed: reach, grasp-lift, place")


@dataclass(frozen=True)
class ActionMapConfig:
    """How actions become servo targets (the sim's values are the defaults)."""

    action_mode: str = "ee"
    """``ee`` (TCP target deltas through IK) or ``joint`` (joint target deltas)."""
    control_hz: float = 25.0
    """Policy step rate (Hz): sets how far the gripper target moves per step."""
    max_tcp_delta: float = 0.012
    """Largest TCP target change per step and axis at action = +-1 (m), ee mode."""
    max_joint_delta: float = 0.06
    """Largest arm joint target change per step at action = +-1 (rad), joint mode."""
    grip_closed: float = GRIPPER_CTRL_MIN
    """Gripper target of a closing command (m of finger travel, past the closed stop)."""
    grip_open: float = ARM.joint_upper[5]
    """Gripper target of a fully opening command, g = -1 (m)."""
    grip_stop: float = ARM.joint_lower[5]
    """The closed stop (m): the position target of g = 0."""
    grip_speed: float = GRIPPER_SPEED
    """Profile speed of the gripper target (m/s)."""

    def __post_init__(self) -> None:
        if self.action_mode not in ACTION_MODES:
            raise UnknownNameError(
                f"unknown action_mode {self.action_mode!r}; allowed: {list(ACTION_MODES)}"
            )
        if not 1.0 <= self.control_hz <= 250.0:
            raise ConfigError(f"control_hz={self.control_hz} outside [1, 250] Hz")
        if not 0.0 < self.max_tcp_delta <= 0.05:
            raise ConfigError(f"max_tcp_delta={self.max_tcp_delta} outside (0, 0.05] m")
        if not 0.0 < self.max_joint_delta <= 0.5:
            raise ConfigError(f"max_joint_delta={self.max_joint_delta} outside (0, 0.5] rad")
        if not self.grip_closed < self.grip_open or self.grip_speed <= 0:
            raise ConfigError("need grip_closed < grip_open and grip_speed > 0")


class ActionMap:
    """Turns policy actions into servo targets; holds the integrated targets between steps.

    Args:
        config: Action mode and scales.

    Example:
        >>> m = ActionMap(ActionMapConfig())
        >>> m.reset(np.array(ARM.home))
        >>> targets, force = m.step(np.zeros(6, np.float32))
        >>> targets.shape, force
        ((6,), 1.0)
    """

    def __init__(self, config: ActionMapConfig) -> None:
        self.config = config
        self.ee = config.action_mode == "ee"
        self._lo = np.array(ARM.joint_lower[:5])
        self._hi = np.array(ARM.joint_upper[:5])
        self._grip_step = config.grip_speed / config.control_hz
        self.targets = np.zeros(6)
        """Servo targets (5 arm joints in rad, gripper in m); updated in place by step()."""
        self.tcp_target = np.zeros(3)
        """Integrated TCP target of the ee mode (m, base frame)."""
        self.grip_target = 0.0
        """Current gripper target (m), moving at the profile speed."""

    def reset(self, q: np.ndarray) -> None:
        """Start from joint positions ``q`` (6 values): targets = q, TCP target = FK(q)."""
        q = np.asarray(q, float)
        self.targets = q.copy()
        self.grip_target = float(q[5])
        self.tcp_target = forward_tcp(q)

    def step(self, applied: np.ndarray, gripper_q: float | None = None) -> tuple[np.ndarray, float]:
        """Servo targets for one (clipped, finite) action.

        Args:
            applied: the action, clipped to [-1, 1] and finite.
            gripper_q: the gripper's measured position now (m), when known. An opening
                command then starts the gripper target from no narrower than the fingers
                (see :meth:`_gripper`); the sim and the robot's control loop both pass it.

        Returns:
            ``(targets, force_fraction)``: the 6 servo targets (the same array each call,
            updated in place) and the gripper's current limit as a fraction of full.
        """
        t = self.targets
        if self.ee:
            t[:5] = self._ee_joint_targets(applied)
        else:
            d = self.config.max_joint_delta
            t[:5] = np.minimum(np.maximum(t[:5] + applied[:5] * d, self._lo), self._hi)
        g = float(applied[5])
        t[5] = self._gripper(g, gripper_q)
        return t, (grip_fraction(g) if g > 0.0 else 1.0)

    def _gripper(self, g: float, q: float | None = None) -> float:
        # Current-based position control with a profile velocity: the target moves at the
        # servo's speed towards past-closed (or fully open) and the current limit caps the
        # squeeze, so the fingers meet the object gently and then press with the commanded
        # force whatever the object's width.
        # g <= 0 is plain position control of the opening at full current, so a policy can
        # hover with the fingers just wider than the object and close in a step or two.
        c = self.config
        goal = c.grip_closed if g > 0.0 else c.grip_stop + (-g) * (c.grip_open - c.grip_stop)
        if q is not None and goal > self.grip_target:
            # Anti-windup: a squeeze leaves the target past-closed, inside the object the
            # fingers stop on. An opening command must start from the fingers, not from
            # there: the target would otherwise stay narrower than the object for several
            # steps, at full current, and crush what it was told to let go (before family
            # version 4, 15 % of the oracle's episodes on fragile `val` objects).
            self.grip_target = max(self.grip_target, min(q, goal))
        step = self._grip_step
        self.grip_target = min(max(goal, self.grip_target - step), self.grip_target + step)
        return self.grip_target

    def _ee_joint_targets(self, a: np.ndarray) -> np.ndarray:
        # The target integrates the deltas (not the measured TCP), so servo lag and latency
        # never feed back into the command: a constant action is a constant velocity.
        tt = self.tcp_target
        tt += a[:3] * self.config.max_tcp_delta
        np.minimum(np.maximum(tt, TCP_LO), TCP_HI, out=tt)
        pitch = auto_pitch(tt[0], tt[1]) + float(a[4]) * PITCH_OFFSET
        sol = top_down_ik(tt, pitch=max(pitch, 0.0))
        q = sol.q
        if not sol.reachable:
            # Anti-windup: pull the target back onto what the arm reaches, so pushing
            # against the edge of the workspace never stores up motion to unwind later.
            tt[:] = np.minimum(np.maximum(forward_tcp(q), TCP_LO), TCP_HI)
        # Wrist roll straight from the action: the finger yaw relative to the arm's
        # pointing direction, so it never wraps as the pan angle changes.
        q[4] = float(a[3]) * (math.pi / 2)
        return np.minimum(np.maximum(q, self._lo), self._hi)
