"""A hand-written grasp controller: a sanity check that the tasks are solvable.

It sees what a policy sees (the observation) plus the object's visible geometry (shape
and size, to align the fingers with the narrow side). It knows nothing of the hidden
parameters: its one grip level cannot suit heavy, slippery and fragile objects at once,
which is exactly the gap meta-learning must close. It is used by ``metagrasp rollout``,
by the tests, and as a reference line in task-family checks.
"""

from __future__ import annotations

import math

import numpy as np

from metagrasp.kinematics import ARM, top_down_ik
from metagrasp.sim import scene
from metagrasp.sim.grasp_env import OBS_NAMES
from metagrasp.sim.objects import half_extents
from metagrasp.sim.tasks import TaskParams

_I = {n: i for i, n in enumerate(OBS_NAMES)}


def _yaw(qw: float, qz: float) -> float:
    return 2.0 * math.atan2(qz, qw)


class ScriptedGrasp:
    """Approach from above, descend, squeeze at a fixed level, then lift or carry.

    Args:
        task: the episode's task (only its shape and size are used).
        kind: ``reach``, ``grasp-lift`` or ``place``.
        grip_force: squeeze to aim for (N): sets the finger target that far inside the
            object's visible half-width, through the gripper servo's stiffness.
        max_joint_delta: the env's action scale (rad per step at action 1).
    """

    def __init__(
        self,
        task: TaskParams,
        kind: str = "grasp-lift",
        grip_force: float = 8.0,
        max_joint_delta: float = 0.06,
    ) -> None:
        self.ext = half_extents(task.shape, task.size)
        self.kind = kind
        half_width = float(min(self.ext[0], self.ext[1]))
        # Each pad gets half the servo's (tendon) force.
        finger = half_width - 2.0 * grip_force / scene.GRIPPER_KP
        lo, hi = scene.GRIPPER_CTRL_MIN, ARM.joint_upper[5]
        self.grip = float(np.clip(2.0 * (finger - lo) / (hi - lo) - 1.0, -1.0, 1.0))
        self.scale = max_joint_delta
        self.phase = "approach"
        self.t = 0
        self._roll = 0.0

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        q = obs[_I["q_shoulder_pan"] : _I["q_wrist_roll"] + 1].astype(float)
        obj = obs[_I["obj_x"] : _I["obj_z"] + 1].astype(float)
        rel = obs[_I["obj_rel_x"] : _I["obj_rel_z"] + 1].astype(float)
        goal = obs[_I["goal_x"] : _I["goal_z"] + 1].astype(float)
        yaw = _yaw(obs[_I["obj_qw"]], obs[_I["obj_qz"]])
        # Close across the object's narrow horizontal side.
        finger_yaw = yaw + (math.pi / 2 if self.ext[1] < self.ext[0] else 0.0)
        gripper = 1.0
        self.t += 1
        # A slightly low grasp point on tall objects keeps the pads clear of the table.
        grasp_z = max(obj[2], 0.012)
        if self.phase == "approach":
            target = obj + (0, 0, 0.07)
            aligned = abs(q[4] - self._roll) < 0.05
            if np.linalg.norm(rel + (0, 0, 0.07)) < 0.015 and aligned or self.t > 40:
                self.phase = "descend"
        elif self.phase == "descend":
            target = np.array([obj[0], obj[1], grasp_z])
            if (
                abs(rel[2] - (grasp_z - obj[2])) < 0.008
                and np.linalg.norm(rel[:2]) < 0.006
                or self.t > 60
            ):
                self.phase, self.t_close = "close", self.t
        if self.phase == "close":
            target = np.array([obj[0], obj[1], grasp_z])
            gripper = self.grip
            if self.t - self.t_close > 12:
                self.phase = "lift" if self.kind != "reach" else "hold"
        if self.phase == "lift":
            gripper = self.grip
            target = (
                goal + (0, 0, 0.03)
                if self.kind == "grasp-lift"
                else np.array([goal[0], goal[1], goal[2] + 0.04])
            )
        if self.phase == "hold":
            target = np.array([obj[0], obj[1], grasp_z])
        r = math.hypot(target[0], target[1])
        pitch = float(np.clip((r - 0.24) * 8.0, 0.0, 0.6))
        sol = top_down_ik(target, finger_yaw=finger_yaw, pitch=pitch)
        self._roll = sol.q[4]
        delta = (sol.q - q) / self.scale
        return np.concatenate([np.clip(delta, -1, 1), [gripper]]).astype(np.float32)


def run_episode(
    env,
    policy=None,
    seed: int | None = None,
    options: dict | None = None,
    frames: list | None = None,
) -> dict:
    """Run one episode; ``policy`` defaults to :class:`ScriptedGrasp` for the env's task.

    Returns a summary: return, success, crushed, peak grip force, steps, reward terms.
    """
    obs, info = env.reset(seed=seed, options=options)
    base = env.unwrapped
    if policy is None:
        policy = ScriptedGrasp(
            base.task, base.config.task, max_joint_delta=base.config.max_joint_delta
        )
    total, peak, steps = 0.0, 0.0, 0
    sums: dict[str, float] = {}
    while True:
        if frames is not None:
            frames.append(env.render())
        obs, r, term, trunc, info = env.step(policy(obs))
        total += r
        steps += 1
        peak = max(peak, info["grip_force"])
        for k, v in info["reward_terms"].items():
            sums[k] = sums.get(k, 0.0) + v
        if term or trunc:
            break
    if frames is not None:
        frames.append(env.render())
    return {
        "return": total,
        "success": bool(info["success"]),
        "crushed": info["crushed"],
        "peak_grip_force": peak,
        "steps": steps,
        "reward_terms": sums,
        "task": base.task.to_dict(),
    }


__all__ = ["ARM", "ScriptedGrasp", "run_episode"]
