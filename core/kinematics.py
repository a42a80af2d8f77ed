"""Geometry and analytic inverse kinematics of the SO-101-style arm (numpy only).

The arm is the single source of truth for the sim model (``metagrasp.sim.scene`` builds
its MJCF from :data:`ARM`) and for anything on the device that needs kinematics, so it
lives in the import-light core package: no torch, no mujoco.

Conventions (zero pose = the "ready" pose, as drawn below in the arm plane)::

    upper arm vertical (+z), forearm horizontal (+x), gripper pointing down (-z)

    shoulder_pan   about world +z at the base
    shoulder_lift  about +y: positive leans the upper arm forward (towards +x)
    elbow_flex     about +y: positive tilts the forearm down
    wrist_flex     about +y: positive tilts the gripper back (towards -x)
    wrist_roll     about the gripper's pointing axis; closing-axis yaw = pan + roll + pi/2
    gripper        one servo driving two coupled parallel fingers (slide, metres per finger)

Link lengths and joint ranges follow the SO-101 (TheRobotStudio / LeRobot), rounded to the
millimetre; the parallel gripper replaces the SO-101's rotating jaw so one servo maps onto
one coupled finger pair.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class ArmGeometry:
    """Kinematic and servo parameters of the arm (SI units)."""

    joint_names: tuple[str, ...] = (
        "shoulder_pan",
        "shoulder_lift",
        "elbow_flex",
        "wrist_flex",
        "wrist_roll",
        "gripper",
    )
    """Servo order: one entry per bus servo, arm joints first, the gripper last."""
    joint_lower: tuple[float, ...] = (-1.92, -1.75, -1.69, -1.66, -2.74, 0.0)
    """Lower joint limits (rad for arm joints; metres of one finger's travel for the gripper)."""
    joint_upper: tuple[float, ...] = (1.92, 1.75, 1.69, 1.66, 2.84, 0.04)
    """Upper joint limits, same units as ``joint_lower``."""
    pan_height: float = 0.055
    """Height of the shoulder_pan servo body above the table top (m)."""
    shoulder_offset: tuple[float, float] = (0.03, 0.045)
    """(forward, up) offset of the shoulder_lift axis from the pan body origin (m)."""
    upper_arm: float = 0.116
    """Shoulder_lift axis to elbow_flex axis (m)."""
    forearm: float = 0.135
    """Elbow_flex axis to wrist_flex axis (m)."""
    wrist_to_roll: float = 0.03
    """Wrist_flex axis to the wrist_roll servo body along the gripper axis (m)."""
    wrist_to_tcp: float = 0.085
    """Wrist_flex axis to the tool centre point between the finger pads (m)."""
    home: tuple[float, ...] = (0.0, 0.0, 0.0, 0.0, 0.0, 0.035)
    """Joint positions at episode start: the ready pose with the gripper open."""

    @property
    def shoulder(self) -> tuple[float, float]:
        """(radial, height) of the shoulder_lift axis in the arm plane (m)."""
        return self.shoulder_offset[0], self.pan_height + self.shoulder_offset[1]

    @property
    def max_opening(self) -> float:
        """Widest gap between the finger pads (m)."""
        return 2.0 * self.joint_upper[-1]


ARM = ArmGeometry()


@dataclass
class IKSolution:
    """Result of :func:`top_down_ik`."""

    q: np.ndarray = field(default_factory=lambda: np.zeros(5))
    """Arm joint angles (shoulder_pan .. wrist_roll), clipped to the joint limits."""
    reachable: bool = True
    """False when the target was out of reach and ``q`` is the closest stretched pose."""


def forward_tcp(q: np.ndarray, arm: ArmGeometry = ARM) -> np.ndarray:
    """Tool-centre-point position (m, base frame) for arm joint angles ``q[:4]``."""
    pan, lift, elbow, wrist = (float(v) for v in q[:4])
    sr, sz = arm.shoulder
    # Planar chain in (radial, height): rotation by a about +y maps (x, z) unit vectors
    # (1, 0) -> (cos a, -sin a) and (0, 1) -> (sin a, cos a).
    r = sr + arm.upper_arm * np.sin(lift) + arm.forearm * np.cos(lift + elbow)
    z = sz + arm.upper_arm * np.cos(lift) - arm.forearm * np.sin(lift + elbow)
    a = lift + elbow + wrist
    r += -arm.wrist_to_tcp * np.sin(a)
    z += -arm.wrist_to_tcp * np.cos(a)
    return np.array([r * np.cos(pan), r * np.sin(pan), z])


def wrist_roll(finger_yaw: float, pan: float) -> float:
    """Wrist roll (rad, within +-pi/2) that closes the fingers along ``finger_yaw``.

    At roll 0 the fingers close along the hand's y axis, i.e. at yaw ``pan + pi/2``. The
    fingers are symmetric, so a half-turn is the same grasp: the smaller roll is returned.
    """
    rel = finger_yaw - math.pi / 2 - pan
    roll = math.atan2(math.sin(rel), math.cos(rel))
    if roll > math.pi / 2:
        roll -= math.pi
    elif roll < -math.pi / 2:
        roll += math.pi
    return roll


def top_down_ik(
    target: np.ndarray,
    finger_yaw: float = 0.0,
    pitch: float = 0.0,
    arm: ArmGeometry = ARM,
) -> IKSolution:
    """Arm joint angles that put the TCP at ``target`` with the gripper pointing down.

    Args:
        target: TCP position (x, y, z) in the base frame (m).
        finger_yaw: yaw of the fingers' closing axis in the base frame (rad).
        pitch: tilt of the gripper away from vertical, towards the base (rad); a few
            tenths of a radian extend the reach for far targets.
        arm: arm geometry.

    Returns:
        The elbow-up solution, clipped to joint limits; ``reachable`` says whether the
        target was within the arm's reach.
    """
    # Scalar math, not numpy: the env calls this every control step, and numpy's per-call
    # overhead on single numbers costs more than the arithmetic.
    x, y, z = (float(v) for v in target)
    pan = math.atan2(y, x)
    r = math.hypot(x, y)
    # Gripper direction in the plane for total angle a = lift + elbow + wrist is
    # (-sin a, -cos a); the wrist axis sits wrist_to_tcp back along it.
    a = -pitch
    wr = r + arm.wrist_to_tcp * math.sin(a)
    wz = z + arm.wrist_to_tcp * math.cos(a)
    sr, sz = arm.shoulder
    dr, dz = wr - sr, wz - sz
    l1, l2 = arm.upper_arm, arm.forearm
    d2 = dr * dr + dz * dz
    reachable = True
    c = (d2 - l1 * l1 - l2 * l2) / (2 * l1 * l2)
    if c > 1.0 or c < -1.0:
        reachable = False
        c = min(max(c, -1.0), 1.0)
    # Upper arm u1 = (sin l, cos l), forearm u2 = (cos(l+e), -sin(l+e)) in (radial, height):
    # u1 . u2 = -sin(e), so |d|^2 = l1^2 + l2^2 - 2 l1 l2 sin(e) gives the elbow directly.
    elbow = math.asin(-c)
    # In the frame (u1, u1 rotated by -90 deg) the wrist sits at (l1 - l2 sin e, l2 cos e);
    # rotating that frame by `lift` must land on d, which fixes lift.
    px = l1 - l2 * math.sin(elbow)
    py = l2 * math.cos(elbow)
    lift = math.atan2(px * dr - py * dz, px * dz + py * dr)
    wrist = a - lift - elbow
    roll = wrist_roll(finger_yaw, pan)
    q = []
    limits = zip(arm.joint_lower[:5], arm.joint_upper[:5], strict=True)
    for v, (lo, hi) in zip((pan, lift, elbow, wrist, roll), limits, strict=True):
        if v < lo or v > hi:
            reachable = False
        q.append(min(max(v, lo), hi))
    return IKSolution(q=np.array(q), reachable=reachable)
