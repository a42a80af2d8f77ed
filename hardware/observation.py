"""The device builds the observation the sim env builds, from servo reads and a pose source.

Contract: :meth:`ObservationBuilder.build` returns a float32 vector laid out as
:data:`metagrasp.actions.OBS_NAMES`, filled the way ``GraspEnv._observe`` fills it:

* joint positions and velocities (sim units) from one
  :class:`~metagrasp.hardware.robot.JointReading`;
* the gripper opening (both fingers: twice one finger's travel, as the coupled fingers
  move together) and the gripper servo's effort (positive while squeezing);
* the previous action (zeros at an episode's start);
* the object position relative to the TCP (from forward kinematics of the read joints,
  where the sim reads its TCP site), the object pose (quaternion with w >= 0);
* the goal, fixed at the episode's start from the object's start pose
  (:func:`metagrasp.actions.goal_position`).
"""

from __future__ import annotations

import numpy as np

from metagrasp.actions import OBS_NAMES, goal_position
from metagrasp.hardware.pose import ObjectPose
from metagrasp.hardware.robot import JointReading
from metagrasp.kinematics import forward_tcp

__all__ = ["ObservationBuilder"]


class ObservationBuilder:
    """Assembles observations for one task kind.

    Args:
        task: ``reach``, ``grasp-lift`` or ``place``.
        place_goal: The place target (m), needed for ``place`` only.
    """

    def __init__(self, task: str = "grasp-lift", place_goal: np.ndarray | None = None) -> None:
        self.task = task
        self.place_goal = place_goal
        goal_position(task, np.zeros(3), place_goal)  # validate now, not mid-episode
        self.goal = np.zeros(3)

    def start_episode(self, pose: ObjectPose) -> None:
        """Fix the goal from where the object rests at the episode's start."""
        self.goal = goal_position(self.task, pose.position, self.place_goal)

    def build(self, reading: JointReading, pose: ObjectPose, prev_action: np.ndarray) -> np.ndarray:
        """The observation vector (float32, ``len(OBS_NAMES)`` values)."""
        o = np.empty(len(OBS_NAMES), np.float64)
        q = reading.q
        o[0:6] = q
        o[6:12] = reading.dq
        o[12] = 2.0 * q[5]
        o[13] = reading.effort[5]
        o[14:20] = prev_action
        o[23:26] = pose.position
        o[26:30] = pose.quaternion
        o[20:23] = o[23:26] - forward_tcp(q)
        o[30:33] = self.goal
        return o.astype(np.float32)
