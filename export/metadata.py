"""What a deployed policy must know about the environment it was trained in.

The observation and action semantics of a bundle are those of the sim env of the run's
task family: channel names (from the run's env spec), units, the action limits and the
scale from a normalised action to physical units, the control rate, the episode length
(the adaptation batch is padded to it), the arm's joint names and limits (for the
mapping to servos) and the env settings the device's command layer reproduces
(``env.action_map``: the :class:`metagrasp.actions.ActionMapConfig` that turns actions
into servo targets, the TCP box...).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from metagrasp.policies.base import EnvSpec, family_kind


def _obs_unit(name: str) -> str:
    if name.startswith("q_gripper") or name.startswith("dq_gripper"):
        return "m" if name.startswith("q_") else "m/s"  # finger travel of the slide
    if name.startswith("q_"):
        return "rad"
    if name.startswith("dq_"):
        return "rad/s"
    if name in ("gripper_opening",) or name[:4] in ("obj_", "goal") and name[-1] in "xyz":
        return "m"
    if name.startswith("obj_q"):
        return "quaternion"
    return "1"  # dimensionless: effort fraction, previous (normalised) action


def _grasp_facts(spec: EnvSpec) -> dict[str, Any]:
    from metagrasp.actions import GRIP_MIN_FRACTION, PITCH_OFFSET, TCP_BOX, ActionMapConfig
    from metagrasp.kinematics import ARM
    from metagrasp.sim.grasp_env import EnvConfig
    from metagrasp.sim.tasks import PRIVILEGED_NAMES

    cfg = EnvConfig(task=spec.family)
    # The device's command layer (metagrasp.actions.ActionMap) is built from these fields;
    # its gripper defaults are the sim's (checked by tests/hardware/test_actions.py).
    amap = ActionMapConfig(
        action_mode=cfg.action_mode,
        control_hz=cfg.control_hz,
        max_tcp_delta=cfg.max_tcp_delta,
        max_joint_delta=cfg.max_joint_delta,
    )
    # The gripper action is not linear in any unit (log-scaled current limit): scale 1.
    if cfg.action_mode == "ee":
        scale = [cfg.max_tcp_delta] * 3 + [math.pi / 2, PITCH_OFFSET, 1.0]
        units = ["m/step"] * 3 + ["rad", "rad", "grip"]
    else:
        scale = [cfg.max_joint_delta] * 5 + [1.0]
        units = ["rad/step"] * 5 + ["grip"]
    return {
        "control_hz": cfg.control_hz,
        "episode_seconds": cfg.episode_seconds,
        "episode_length": cfg.max_steps,
        "obs_units": [_obs_unit(n) for n in spec.obs_names],
        "action_scale": scale,
        "action_units": units,
        "task_names": list(PRIVILEGED_NAMES),
        "joint_names": list(ARM.joint_names),
        "joint_lower": list(ARM.joint_lower),
        "joint_upper": list(ARM.joint_upper),
        "env": {
            "family": spec.family,
            "action_map": dataclasses.asdict(amap),
            "tcp_box_m": [list(b) for b in TCP_BOX],
            "wrist_pitch_offset_rad": PITCH_OFFSET,
            "finger_yaw_rad_at_1": math.pi / 2,
            # The semantics live in one place (metagrasp.actions); its docstring says it.
            "gripper": "see metagrasp.actions.ActionMap: g > 0 squeezes with a current "
            f"limit of {GRIP_MIN_FRACTION:g} ** (1 - g) of full; g <= 0 is position "
            "control of the opening (0 closed, -1 fully open)",
        },
    }


def _point_facts(spec: EnvSpec) -> dict[str, Any]:
    from metagrasp.sim.point_nav import ACTION_SCALE, PRIVILEGED_NAMES

    return {
        "control_hz": None,
        "episode_seconds": None,
        "episode_length": spec.max_steps,
        "obs_units": ["1"] * spec.obs_dim,
        "action_scale": [ACTION_SCALE] * spec.act_dim,
        "action_units": ["1/step"] * spec.act_dim,
        "task_names": list(PRIVILEGED_NAMES),
        "joint_names": [],
        "joint_lower": [],
        "joint_upper": [],
        "env": {"family": spec.family},
    }


def env_facts(spec: EnvSpec) -> dict[str, Any]:
    """Env facts stamped into a bundle's metadata (see the module docstring)."""
    facts = _point_facts(spec) if family_kind(spec.family) == "point" else _grasp_facts(spec)
    if facts["episode_length"] != spec.max_steps:
        # The run was trained with another episode length than the env has now.
        facts["episode_length"] = spec.max_steps
    facts["action_low"] = [-1.0] * spec.act_dim
    facts["action_high"] = [1.0] * spec.act_dim
    return facts
