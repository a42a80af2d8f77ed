"""Point-robot navigation: Gymnasium checks, PEARL's reward definitions, tasks and splits,
and the batched env's equality with single envs and its auto-reset contract."""

import math
import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import metagrasp.sim  # noqa: F401  (registers the envs)
from metagrasp.errors import ConfigError, TaskParamError, UnknownNameError
from metagrasp.sim.point_nav import (
    HARD_BAND,
    NUM_HARD_TASKS,
    NUM_TEST_TASKS,
    PointNavConfig,
    PointNavEnv,
    PointNavTask,
    VectorPointNavEnv,
    _advance,
    sample_task,
    split_tasks,
)
from metagrasp.sim.registry import family_sample_task, make_env, make_vector_env
from metagrasp.sim.vector import member_seed

IDS = ["metagrasp/PointNav-v0", "metagrasp/PointNavSparse-v0"]
REWARDS = ["dense", "sparse"]
EAST = PointNavTask(0.0)  # goal exactly (1, 0)


def oracle(obs: np.ndarray, goal: np.ndarray) -> np.ndarray:
    """Head straight for the goal at full speed (optimal for both rewards)."""
    return np.clip((goal - obs) / 0.1, -1.0, 1.0).astype(np.float32)


def actions(steps: int, n: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1.2, 1.2, (steps, n, 2)).astype(np.float32)


@pytest.mark.parametrize("env_id", IDS)
def test_gymnasium_env_checker_passes(env_id):
    env = gym.make(env_id)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(env.unwrapped, skip_render_check=True)
    # Only the infinite-bounds Box warnings: the plane is unbounded, as in PEARL.
    assert all("infinity" in str(w.message) for w in caught), [str(w.message) for w in caught]
    env.close()


@pytest.mark.parametrize("reward", REWARDS)
def test_seeded_determinism(reward):
    def run(seed):
        env = PointNavEnv(reward=reward)
        obs, info = env.reset(seed=seed)
        out = [obs, info["task"]]
        for k, a in enumerate(actions(45, 1, seed=5)[:, 0]):
            obs, r, term, trunc, info = env.step(a)
            assert not term and trunc == ((k + 1) % 20 == 0)
            out.append(np.append(obs, r))
            if trunc:
                obs, info = env.reset()  # unseeded: the env's own stream continues
                out += [obs, info["task"]]
        return np.concatenate(out)

    np.testing.assert_array_equal(run(11), run(11))
    assert not np.array_equal(run(11), run(12))


def test_dense_and_sparse_rewards_follow_pearl():
    dense, sparse = PointNavEnv(reward="dense"), PointNavEnv(reward="sparse")
    for env in (dense, sparse):
        obs, info = env.reset(seed=0, options={"task": EAST})
        np.testing.assert_array_equal(obs, [0, 0])
        np.testing.assert_array_equal(info["task"], [1, 0])
        assert not info["success"]
    push = np.array([1.0, 0.0], np.float32)
    for _ in range(10):
        _, rd, *_ = dense.step(push)
        obs, rs, _, _, info = sparse.step(push)
        d = float(np.linalg.norm(obs.astype(np.float64) - EAST.goal))
        assert rd == pytest.approx(-d, abs=1e-6)
        assert info["reward_terms"] == {"goal": rs}
        assert info["success"] == (rs > 0)
        if d > 0.2 + 1e-6:
            assert rs == 0.0 and not info["success"]
        elif d < 0.2 - 1e-6:
            assert rs == pytest.approx(1.0 - d, abs=1e-6)  # 1 - d, not 1 - d / 0.2
    # Step 10 lands on the goal: the largest reward of each variant.
    assert rd == pytest.approx(0.0, abs=1e-9) and rs == pytest.approx(1.0, abs=1e-9)
    # PEARL's mask is r >= -goal_radius: the boundary is inside.
    cfg = PointNavConfig(reward="sparse")
    _, r, inside = _advance(np.array([1.0, 0.2]), np.zeros(2, np.float32), EAST.goal, cfg)
    assert inside and float(r) == pytest.approx(0.8)
    # Actions are clipped per axis to [-1, 1], then scaled by 0.1.
    dense.reset(options={"task": EAST})
    obs, *_ = dense.step(np.array([5.0, -0.5], np.float32))
    np.testing.assert_allclose(obs, [0.1, -0.05], atol=1e-7)


@pytest.mark.parametrize("env_id", IDS)
def test_oracle_reaches_every_test_goal(env_id):
    env = gym.make(env_id, split="test")
    for task in split_tasks("test")[:8]:
        obs, info = env.reset(options={"task": task})
        best, hits = -math.inf, 0
        for _ in range(20):
            obs, r, term, trunc, info = env.step(oracle(obs, task.goal))
            best, hits = max(best, r), hits + info["success"]
        assert trunc and hits >= 10  # at most 8 steps to get within 0.2, then it stays
        assert best == pytest.approx(0.0 if "Sparse" not in env_id else 1.0, abs=1e-6)


def test_task_validation_and_round_trip():
    t = PointNavTask(1.25, "x")
    assert PointNavTask.from_dict(t.to_dict()) == t
    assert t.to_dict() == {"goal_angle": 1.25, "task_id": "x"}
    np.testing.assert_allclose(t.goal, [math.cos(1.25), math.sin(1.25)])
    assert t.privileged_vector().dtype == np.float32
    assert PointNavTask(np.float32(1.0)).goal_angle == pytest.approx(1.0)
    for bad in (-0.01, math.pi + 0.01, math.nan, math.inf):
        with pytest.raises(TaskParamError, match=r"goal_angle.*\[0, pi\]"):
            PointNavTask(bad)
    for bad in (True, "1.0", None, [1.0]):
        with pytest.raises(TaskParamError, match=r"goal_angle.*\[0, pi\]"):
            PointNavTask.from_dict({"goal_angle": bad})
    with pytest.raises(TaskParamError, match=r"unknown .*'radius'.*goal_angle"):
        PointNavTask.from_dict({"goal_angle": 1.0, "radius": 2.0})
    with pytest.raises(TaskParamError, match="missing"):
        PointNavTask.from_dict({"task_id": "a"})
    with pytest.raises(TaskParamError, match="task_id"):
        PointNavTask.from_dict({"goal_angle": 1.0, "task_id": 3})
    with pytest.raises(TaskParamError, match="dict"):
        PointNavTask.from_dict([1.0])


def test_config_and_input_errors_name_the_field():
    for kwargs, field in (
        ({"reward": "shaped"}, "reward"),
        ({"split": "dev"}, "split"),
        ({"max_steps": 0}, "max_steps"),
        ({"max_steps": 2.5}, "max_steps"),
        ({"goal_radius": 0.0}, "goal_radius"),
        ({"goal_radius": math.nan}, "goal_radius"),
    ):
        with pytest.raises(ConfigError, match=field):
            PointNavConfig(**kwargs)
    with pytest.raises(ConfigError, match="'dense', 'sparse'"):
        PointNavEnv(reward="shaped")
    with pytest.raises(UnknownNameError, match="allowed"):
        make_env("point-nav", split="dev")
    env = PointNavEnv()
    with pytest.raises(RuntimeError, match="reset"):
        env.step(np.zeros(2, np.float32))
    with pytest.raises(ConfigError, match="reset option"):
        env.reset(options={"goal": (1, 0)})
    with pytest.raises(TaskParamError, match="goal_angle"):
        env.reset(options={"task": {"goal_angle": 4.0}})
    env.reset(seed=0)
    with pytest.raises(ValueError, match="NaN"):
        env.step(np.array([0.0, np.nan], np.float32))
    with pytest.raises(ValueError, match="2 values"):
        env.step(np.zeros(3, np.float32))


def test_splits_are_fixed_distinct_and_where_specified():
    test, hard = split_tasks("test"), split_tasks("hard")
    assert len(test) == NUM_TEST_TASKS == 40 and len(hard) == NUM_HARD_TASKS == 40
    # Rebuilt from scratch (not the cache), the lists are identical.
    assert split_tasks.__wrapped__("test") == test and split_tasks.__wrapped__("hard") == hard
    assert [t.task_id for t in test[:2]] == ["test-000", "test-001"]
    assert hard[-1].task_id == "hard-039"
    assert not {t.goal_angle for t in test} & {t.goal_angle for t in hard}
    assert len({t.goal_angle for t in test}) == 40
    for t in hard:
        assert t.goal_angle <= HARD_BAND or t.goal_angle >= math.pi - HARD_BAND
    assert {t.goal_angle <= HARD_BAND for t in hard} == {True, False}  # both bands used
    rng = np.random.default_rng(0)
    angles = [sample_task(rng, "train").goal_angle for _ in range(200)]
    assert 0.0 <= min(angles) < 0.1 and math.pi - 0.1 < max(angles) <= math.pi
    assert sample_task(rng, "hard") in hard and sample_task(rng, "test") in test
    assert isinstance(family_sample_task("point-nav-sparse", rng, "test"), PointNavTask)
    with pytest.raises(UnknownNameError, match="distribution"):
        split_tasks("train")
    with pytest.raises(UnknownNameError, match="allowed"):
        split_tasks("dev")
    env = make_env("point-nav", split="hard")
    for s in range(5):
        env.reset(seed=s)
        assert env.unwrapped.task in hard


@pytest.mark.parametrize("reward", REWARDS)
def test_vector_env_equals_single_envs(reward):
    n, steps = 5, 45  # auto-resets at steps 20 and 40
    tasks = [split_tasks("test")[3], None, EAST, None, {"goal_angle": 2.0}]
    acts = actions(steps, n, seed=2)
    acts[7, 1] = (9.0, -9.0)  # out-of-range actions are clipped identically
    with VectorPointNavEnv(n, reward=reward, seed=7) as venv:
        vobs, vinfo = venv.reset(tasks=tasks)
        vout = [(vobs, vinfo["task"])]
        for a in acts:
            obs, rew, term, trunc, info = venv.step(a)
            fin = info["final_info"]
            vout.append(
                (obs, rew, term, trunc, info["success"], info["task"], info["final_obs"])
                + (fin["success"], fin["episode_return"], fin["episode_length"])
            )
    envs = [PointNavEnv(reward=reward) for _ in range(n)]
    opts = [None if t is None else {"task": t} for t in tasks]
    first = [e.reset(seed=member_seed(7, i), options=opts[i]) for i, e in enumerate(envs)]
    rout = [(np.stack([o for o, _ in first]), np.stack([i["task"] for _, i in first]))]
    ret, length = np.zeros(n), np.zeros(n, np.int64)
    for a in acts:
        stepped = [e.step(a[i]) for i, e in enumerate(envs)]
        rew = np.array([s[1] for s in stepped])
        term, trunc = np.array([s[2] for s in stepped]), np.array([s[3] for s in stepped])
        done = term | trunc
        ret, length = ret + rew, length + 1
        final = (
            np.where(done[:, None], np.stack([s[0] for s in stepped]), 0),
            np.array([s[4]["success"] for s in stepped]) & done,
            np.where(done, ret, 0.0),
            np.where(done, length, 0),
        )
        now = []  # (obs, info) each member shows after the step: a new episode if done
        for i, e in enumerate(envs):
            now.append(e.reset(options=opts[i]) if done[i] else (stepped[i][0], stepped[i][4]))
        ret, length = np.where(done, 0.0, ret), np.where(done, 0, length)
        rout.append(
            (
                np.stack([o for o, _ in now]),
                rew,
                term,
                trunc,
                np.array([x["success"] for _, x in now]),
                np.stack([x["task"] for _, x in now]),
                *final,
            )
        )
    assert len(vout) == len(rout) == steps + 1
    for v, r in zip(vout, rout, strict=True):
        for xv, xr in zip(v, r, strict=True):
            np.testing.assert_array_equal(xv, xr)  # bit-identical, not approx


def test_vector_auto_reset_contract():
    n = 3
    fixed = [EAST, PointNavTask(2.5), None]
    with VectorPointNavEnv(n, reward="sparse", split="train", workers=4, seed=3) as venv:
        assert isinstance(venv, gym.vector.VectorEnv)
        assert "SAME_STEP" in str(venv.metadata["autoreset_mode"]).upper().replace("-", "_")
        assert venv.single_observation_space.shape == (2,)
        assert venv.action_space.shape == (n, 2)
        with pytest.raises(RuntimeError, match="reset"):
            venv.step(np.zeros((n, 2)))
        obs, info = venv.reset(options={"tasks": fixed})
        assert venv.tasks == fixed
        assert obs.shape == (n, 2) and obs.dtype == np.float32 and not obs.any()
        assert info["task"].shape == (n, 2) and set(info) == {"success", "task", "reward_terms"}
        assert set(info["reward_terms"]) == {"goal"}
        drawn = venv.current_tasks()[2]
        rewards = []
        for _ in range(19):
            obs, rew, term, trunc, info = venv.step(np.ones((n, 2), np.float32))
            rewards.append(rew)
            assert not (term | trunc).any() and not info["_final_obs"].any()
            assert not info["final_obs"].any() and not info["final_info"]["episode_length"].any()
        last = obs.copy()
        venv.set_tasks([PointNavTask(1.0), *fixed[1:]])  # takes effect at the next reset
        assert venv.current_tasks()[0] == EAST
        obs, rew, term, trunc, info = venv.step(np.ones((n, 2), np.float32))
        rewards.append(rew)
        assert trunc.all() and not term.any()
        assert info["_final_obs"].all() and info["_final_info"].all()
        np.testing.assert_allclose(info["final_obs"], last + 0.1, atol=1e-6)
        assert not obs.any()  # the returned obs starts the new episode
        fin = info["final_info"]
        assert set(fin) == {"success", "task", "reward_terms", "episode_return", "episode_length"}
        np.testing.assert_array_equal(fin["episode_length"], [20] * n)
        np.testing.assert_allclose(fin["episode_return"], np.sum(rewards, axis=0))
        np.testing.assert_array_equal(fin["task"][1], fixed[1].privileged_vector())
        np.testing.assert_array_equal(info["reward_terms"]["goal"], rew)  # this step's reward
        assert not info["success"].any()  # new episodes have not succeeded yet
        now = venv.current_tasks()
        assert now[0] == PointNavTask(1.0) and now[1] == fixed[1] and now[2] != drawn
        np.testing.assert_array_equal(info["task"][0], PointNavTask(1.0).privileged_vector())
        # Bad inputs raise before anything changes: the env stays usable.
        bad = np.zeros((n, 2), np.float32)
        bad[1, 0] = np.nan
        with pytest.raises(ValueError, match=r"member\(s\) \[1\].*NaN"):
            venv.step(bad)
        with pytest.raises(ValueError, match=r"shape \(3, 2\).*got \(3, 6\)"):
            venv.step(np.zeros((n, 6)))
        with pytest.raises(TaskParamError, match="3 tasks"):
            venv.set_tasks([EAST])
        with pytest.raises(TaskParamError, match="member 1"):
            venv.set_tasks([None, "east", None])
        with pytest.raises(TaskParamError, match="goal_angle"):
            venv.set_tasks([None, {"goal_angle": -1}, None])
        with pytest.raises(ConfigError, match="reset option"):
            venv.reset(options={"goals": fixed})
        obs, *_ = venv.step(np.ones((n, 2), np.float32))
        np.testing.assert_allclose(obs, 0.1)
    with pytest.raises(RuntimeError, match="closed"):
        venv.reset()


def test_make_vector_env_builds_the_point_families():
    with make_vector_env("point-nav-sparse", 4, split="hard", seed=0, workers=2) as venv:
        assert isinstance(venv, VectorPointNavEnv) and venv.config.reward == "sparse"
        venv.reset()
        assert all(t in split_tasks("hard") for t in venv.current_tasks())
    with make_vector_env("point-nav", 2, seed=0) as venv:
        assert venv.config.reward == "dense" and venv.config.max_steps == 20
