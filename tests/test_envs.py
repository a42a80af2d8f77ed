"""Invariants that every registered environment must satisfy."""

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import metagrasp.sim  # noqa: F401  (registers the envs)
from metagrasp.errors import ConfigError, TaskParamError, UnknownNameError
from metagrasp.kinematics import forward_tcp
from metagrasp.sim import FAMILIES, make_env
from metagrasp.sim.grasp_env import OBS_NAMES, TCP_HI, TCP_LO, EnvConfig, GraspEnv
from metagrasp.sim.tasks import TaskParams, split_tasks

ENV_IDS = [f.env_id for f in FAMILIES.values()]
GRASP_IDS = [f.env_id for f in FAMILIES.values() if f.entry_point.endswith(":GraspEnv")]


def random_actions(env, steps: int, seed: int) -> np.ndarray:
    """Uniform actions over the env's own action space (families differ in its size)."""
    space = env.action_space
    rng = np.random.default_rng(seed)
    return rng.uniform(space.low, space.high, (steps, *space.shape)).astype(space.dtype)


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_gymnasium_env_checker_passes(env_id):
    env = gym.make(env_id)
    with pytest.warns(UserWarning):  # only the infinite-bounds Box warnings are expected
        check_env(env.unwrapped, skip_render_check=True)
    env.close()


@pytest.mark.parametrize("env_id", ENV_IDS)
@pytest.mark.parametrize("split", ["train", "val", "test", "hard"])
def test_rollout_invariants(env_id, split):
    env = gym.make(env_id, split=split)
    grasp = env_id in GRASP_IDS
    obs, info = env.reset(seed=3)
    assert obs.shape == env.observation_space.shape and obs.dtype == np.float32
    if grasp:
        assert obs.shape == (len(OBS_NAMES),)
    # Families with weighted terms say so in their config; otherwise the terms sum.
    weights = getattr(env.unwrapped.config, "reward_weights", None)
    for a in random_actions(env, 40, seed=0):
        obs, reward, term, trunc, info = env.step(a)
        assert env.observation_space.contains(obs)
        assert np.all(np.isfinite(obs))
        assert set(info) >= {"success", "reward_terms", "task"}
        expected = sum(
            (1.0 if weights is None else weights.get(k, 0.0)) * v
            for k, v in info["reward_terms"].items()
        )
        assert reward == pytest.approx(expected)
        assert info["task"].ndim == 1 and info["task"].dtype == np.float32
        if grasp:
            assert set(info) >= {"grip_force", "crushed"}
            assert info["task"].shape == (11,)
            assert 0.0 <= info["grip_force"] <= 20.0 + 1e-6
        if term or trunc:
            obs, info = env.reset()
    env.close()


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_seeded_determinism(env_id):
    def run():
        env = gym.make(env_id)
        obs, _ = env.reset(seed=11)
        out = [obs]
        for a in random_actions(env, 25, seed=5):
            obs, r, *_ = env.step(a)
            out.append(np.append(obs, r))
        return np.concatenate(out)

    np.testing.assert_array_equal(run(), run())


def test_episode_length_and_truncation():
    env = GraspEnv(config=EnvConfig(episode_seconds=1.0))
    env.reset(seed=0)
    steps, trunc, term = 0, False, False
    while not (trunc or term):
        _, _, term, trunc, _ = env.step(np.zeros(6, np.float32))
        steps += 1
    assert trunc and steps == 25


def test_hidden_parameters_never_reach_the_observation():
    """Two tasks differing only in hidden properties give the same first observation.

    The robot's channels are identical; the object's settled pose may differ by the
    sub-millimetre (and fraction of a degree) that its weight and centre of mass press it
    into the soft contact, as a real object's would.
    """
    env = GraspEnv()
    base = TaskParams(shape="box", size=(0.02, 0.025, 0.02))
    twin = base.replace(mass=0.35, friction=0.4, crush_limit=3.0, com_offset=(0.005, 0, 0))
    o1, i1 = env.reset(seed=4, options={"task": base})
    o2, i2 = env.reset(seed=4, options={"task": twin})
    robot = [i for i, n in enumerate(OBS_NAMES) if not n.startswith(("obj_", "goal_"))]
    np.testing.assert_array_equal(o1[robot], o2[robot])
    np.testing.assert_allclose(o1, o2, atol=2e-3)
    assert not np.array_equal(i1["task"], i2["task"])


def test_latency_delays_the_command():
    env = GraspEnv(config=EnvConfig(action_mode="joint"))
    task = TaskParams(latency=2)
    env.reset(seed=0, options={"task": task, "object_pose": (0.25, 0.08, 0.0)})
    ctrl0 = env.data.ctrl[0]
    push = np.array([1, 0, 0, 0, 0, 1], np.float32)
    env.step(push)
    env.step(push)
    assert env.data.ctrl[0] == pytest.approx(ctrl0)  # not yet applied
    env.step(push)
    assert env.data.ctrl[0] == pytest.approx(ctrl0 + env.config.max_joint_delta)


def test_ee_mode_moves_the_tcp_target_through_ik():
    """A constant ee action is a constant TCP velocity; the servos follow the IK target."""
    env = GraspEnv()
    assert env.action_names[:3] == ("tcp_dx", "tcp_dy", "tcp_dz")
    env.reset(seed=0, options={"task": TaskParams(latency=1), "object_pose": (0.25, 0.08, 0.0)})
    start = forward_tcp(env.data.ctrl[:5])
    push = np.array([1, 0, -1, 0, 0, 1], np.float32)
    env.step(push)
    assert forward_tcp(env.data.ctrl[:5]) == pytest.approx(start, abs=1e-9)  # latency 1
    for _ in range(5):
        env.step(push)
    d = env.config.max_tcp_delta
    commanded = forward_tcp(env.data.ctrl[:5])
    np.testing.assert_allclose(commanded, start + (5 * d, 0, -5 * d), atol=1e-6)
    for _ in range(15):
        env.step(np.zeros(6, np.float32))
    # The arm's servos settle near the commanded TCP: within their gravity sag (the servos
    # are stiff position loops, not perfect ones) and well away from where they started.
    tcp = env.data.site_xpos[env.h.tcp_site]
    np.testing.assert_allclose(tcp, start + (5 * d, 0, -5 * d), atol=0.02)
    assert np.linalg.norm(tcp - start) > 0.04


@pytest.mark.parametrize("push", [(1, 1, 1), (-1, -1, -1), (1, -1, -1), (-1, 1, 1)])
def test_ee_target_stays_in_its_box_and_in_reach(push):
    """Pushing past the workspace never winds the target up beyond what the arm reaches."""
    env = GraspEnv()
    env.reset(seed=0)
    for _ in range(60):
        env.step(np.array([*push, 0, 0, 1], np.float32))
    lo, hi = TCP_LO, TCP_HI
    target = env.unwrapped._tcp_target
    assert np.all(target >= lo - 1e-12) and np.all(target <= hi + 1e-12)
    # Where the box edge and the reach limit meet, the two clamps agree within mm.
    np.testing.assert_allclose(forward_tcp(env.data.ctrl[:5]), target, atol=5e-3)
    # Coming back takes effect at once: no stored motion to unwind first.
    before = forward_tcp(env.data.ctrl[:5])
    for _ in range(3):  # covers up to 2 steps of latency
        env.step(np.array([*(-np.asarray(push)), 0, 0, 1], np.float32))
    moved = forward_tcp(env.data.ctrl[:5]) - before
    assert np.dot(moved, -np.asarray(push, float)) > 0.005


def test_reset_with_task_dict_and_object_pose():
    env = GraspEnv(split="test")
    # A box rests where it is put down (a lumpy mesh may topple a little while settling).
    t = next(t for t in split_tasks("test") if t.shape == "box")
    obs, _ = env.reset(seed=0, options={"task": t.to_dict(), "object_pose": (0.2, 0.05, 0.3)})
    assert env.task == t
    np.testing.assert_allclose(obs[23:25], (0.2, 0.05), atol=0.01)  # obs noise
    np.testing.assert_allclose(
        env.data.qpos[env.h.object_qpos : env.h.object_qpos + 2], (0.2, 0.05), atol=1e-3
    )


def test_bad_input_is_rejected_clearly():
    with pytest.raises(UnknownNameError, match="allowed"):
        GraspEnv(task="juggle")
    with pytest.raises(UnknownNameError, match="allowed"):
        GraspEnv(split="dev")
    with pytest.raises(UnknownNameError, match="registered"):
        make_env("metagrasp/Juggle-v0")
    with pytest.raises(ConfigError, match="control_hz"):
        EnvConfig(control_hz=33.0)
    with pytest.raises(ConfigError, match="reward term"):
        EnvConfig(reward_weights={"style": 1.0})
    env = GraspEnv()
    with pytest.raises(TaskParamError, match="mass"):
        env.reset(options={"task": {"mass": 50.0}})
    with pytest.raises(ConfigError, match="reset option"):
        env.reset(options={"difficulty": 3})
    env.reset(seed=0)
    with pytest.raises(ValueError, match="NaN"):
        env.step(np.array([0, np.nan, 0, 0, 0, 0], np.float32))
    with pytest.raises(ValueError, match="6 values"):
        env.step(np.zeros(5, np.float32))


def test_render_rgb_array():
    env = GraspEnv(render_mode="rgb_array", width=96, height=72)
    env.reset(seed=0)
    frame = env.render()
    assert frame.shape == (72, 96, 3) and frame.dtype == np.uint8
    assert frame.std() > 5  # a real image, not a blank buffer
    env.close()


@pytest.mark.parametrize("split", ["train", "val", "test", "hard"])
def test_objects_start_at_rest(split):
    """Objects settle before the episode: left alone, none drifts, topples or rolls away."""
    env = GraspEnv(split=split)
    tasks = split_tasks(split)[:8] if split != "train" else None
    for i in range(8):
        options = {"task": tasks[i]} if tasks else None
        obs, _ = env.reset(seed=100 + i, options=options)
        start = env.data.qpos[env.h.object_qpos : env.h.object_qpos + 3].copy()
        for _ in range(25):  # one second with the gripper open, the arm still
            env.step(np.array([0, 0, 0, 0, 0, 1], np.float32))
        end = env.data.qpos[env.h.object_qpos : env.h.object_qpos + 3]
        assert np.linalg.norm(end - start) < 3e-3, (split, i, env.task.shape, end - start)
