"""The shared action/observation module: the env and the device map actions the same way."""

import numpy as np
import pytest

from metagrasp import actions
from metagrasp.actions import ActionMap, ActionMapConfig, goal_position
from metagrasp.errors import ConfigError, UnknownNameError
from metagrasp.hardware.observation import ObservationBuilder
from metagrasp.hardware.pose import ObjectPose
from metagrasp.hardware.robot import JointReading
from metagrasp.kinematics import ARM
from metagrasp.sim import scene
from metagrasp.sim.grasp_env import LIFT_HEIGHT, EnvConfig, GraspEnv
from metagrasp.sim.tasks import TaskParams


def test_device_constants_equal_the_scenes():
    # core/actions.py cannot import the (mujoco) scene; these must never drift apart.
    assert actions.PAD_HALF_HEIGHT == scene.PAD_HALF_HEIGHT
    assert actions.GRIPPER_CTRL_MIN == scene.GRIPPER_CTRL_MIN
    assert actions.GRIPPER_SPEED == scene.GRIPPER_SPEED
    assert pytest.approx(LIFT_HEIGHT + 0.02) == actions.GOAL_LIFT
    cfg = ActionMapConfig()
    env_cfg = EnvConfig()
    assert (cfg.control_hz, cfg.max_tcp_delta, cfg.max_joint_delta) == (
        env_cfg.control_hz,
        env_cfg.max_tcp_delta,
        env_cfg.max_joint_delta,
    )
    assert cfg.grip_open == ARM.joint_upper[5]


@pytest.mark.parametrize("mode", ["ee", "joint"])
def test_a_standalone_action_map_reproduces_the_envs_servo_targets(mode):
    """The device's ActionMap, fed the same actions, commands exactly what the env did."""
    env = GraspEnv(config=EnvConfig(action_mode=mode, home_noise=0.0))
    env.reset(seed=3, options={"task": TaskParams(latency=0)})
    amap = ActionMap(ActionMapConfig(action_mode=mode))
    amap.reset(np.array(ARM.home))
    rng = np.random.default_rng(0)
    for _ in range(40):
        a = rng.uniform(-1, 1, 6).astype(np.float32)
        gripper_q = float(env.data.qpos[env.h.arm_qpos[5]])  # read before acting, as on a robot
        env.step(a)
        targets, force = amap.step(np.clip(a, -1, 1), gripper_q)
        np.testing.assert_array_equal(env.data.ctrl[env.h.actuators], targets)
        full = scene.GRIPPER_FORCE * env.task.actuator_gain
        assert env.model.actuator_forcerange[env.h.actuators[5], 1] == pytest.approx(full * force)


def test_device_observation_matches_the_envs():
    """Built from the same joint state and object pose, the device's vector is the env's."""
    env = GraspEnv(config=EnvConfig(home_noise=0.0))
    obs, _ = env.reset(seed=1, options={"task": TaskParams(obs_noise=0.0)})
    for _ in range(15):
        obs, *_ = env.step(np.array([0.5, -0.3, -0.5, 0.2, 0.0, 0.6], np.float32))
    d, h = env.data, env.h
    oq = h.object_qpos
    pose = ObjectPose(
        d.qpos[oq : oq + 3].copy(), actions.canonical_quat(d.qpos[oq + 3 : oq + 7].copy()), 0.0
    )
    start = ObjectPose(env._obj_start.copy(), pose.quaternion, 0.0)
    q = d.qpos[h.arm_qpos].copy()
    effort = np.zeros(6)
    effort[5] = -d.actuator_force[h.actuators[5]] / scene.GRIPPER_FORCE
    reading = JointReading(0.0, q, d.qvel[h.arm_dof].copy(), effort, np.zeros(6, np.int64))
    builder = ObservationBuilder("grasp-lift")
    builder.start_episode(start)
    mine = builder.build(reading, pose, obs[14:20])
    # The coupled second finger tracks the first within the equality constraint's softness.
    rel = slice(20, 23)
    np.testing.assert_allclose(
        np.delete(mine, range(20, 23)), np.delete(obs, range(20, 23)), atol=2e-4
    )
    # The sim reads its TCP site from the kinematics computed *before* its last physics
    # step integrated the joints (4 ms stale); the device's forward kinematics of the read
    # joints is current. The difference is the hand's motion in 4 ms: under a millimetre.
    np.testing.assert_allclose(mine[rel], obs[rel], atol=1e-3)


def test_goal_position_and_config_checks():
    start = np.array([0.2, 0.0, 0.02])
    np.testing.assert_allclose(goal_position("grasp-lift", start), start + (0, 0, 0.07))
    np.testing.assert_allclose(goal_position("reach", start), start)
    with pytest.raises(ConfigError, match="goal"):
        goal_position("place", start)
    with pytest.raises(UnknownNameError):
        goal_position("juggle", start)
    with pytest.raises(UnknownNameError):
        ActionMapConfig(action_mode="torque")
    with pytest.raises(ConfigError):
        ActionMapConfig(max_tcp_delta=1.0)
