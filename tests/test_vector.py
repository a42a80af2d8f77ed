"""VectorGraspEnv: determinism across worker counts, per-member tasks, auto-reset, errors,
clean shutdown. Episodes are shortened to 10 control steps so 30 steps cross resets."""

import os
import subprocess
import sys
import textwrap
import time

import gymnasium as gym
import numpy as np
import pytest

from metagrasp.errors import TaskParamError
from metagrasp.sim.grasp_env import EnvConfig, GraspEnv
from metagrasp.sim.tasks import sample_task
from metagrasp.sim.vector import REWARD_TERMS, VectorEnvError, VectorGraspEnv, member_seed

N = 4


def short_config(task: str = "grasp-lift") -> EnvConfig:
    return EnvConfig(task=task, episode_seconds=0.4)  # 10 control steps per episode


def some_tasks(n: int, seed: int = 0) -> list:
    rng = np.random.default_rng(seed)
    return [sample_task(rng, "train") for _ in range(n)]


def actions(steps: int, n: int = N, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 1, (steps, n, 6)).astype(np.float32)


def rollout(workers: int, tasks: list, steps: int = 30) -> list[tuple]:
    out = []
    with VectorGraspEnv(N, workers=workers, config=short_config()) as venv:
        obs, info = venv.reset(seed=7, tasks=tasks)
        out.append((obs, info["task"]))
        for a in actions(steps):
            obs, rew, term, trunc, info = venv.step(a)
            out.append(
                (
                    obs,
                    rew,
                    term,
                    trunc,
                    info["final_obs"],
                    info["task"],
                    info["final_info"]["episode_return"],
                )
            )
    return out


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for its reaper counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_gymnasium_vector_api():
    with VectorGraspEnv(N, workers=0, config=short_config()) as venv:
        assert isinstance(venv, gym.vector.VectorEnv)
        assert venv.num_envs == N
        assert venv.single_observation_space.shape == (33,)
        assert venv.single_action_space.shape == (6,)
        assert venv.observation_space.shape == (N, 33)
        assert venv.action_space.shape == (N, 6)
        assert "SAME_STEP" in str(venv.metadata["autoreset_mode"]).upper().replace("-", "_")
        obs, info = venv.reset(seed=0)
        assert obs.shape == (N, 33) and obs.dtype == np.float32
        assert info["success"].shape == (N,) and info["success"].dtype == np.bool_
        assert info["crushed"].dtype == np.bool_ and info["grip_force"].shape == (N,)
        assert info["task"].shape == (N, 11)
        assert set(info["reward_terms"]) == set(REWARD_TERMS)
        obs, rew, term, trunc, info = venv.step(venv.action_space.sample())
        assert rew.shape == term.shape == trunc.shape == (N,)
        assert info["final_obs"].shape == (N, 33) and not info["_final_obs"].any()


def test_same_seed_same_obs_regardless_of_workers():
    tasks = [some_tasks(1, 3)[0], None, some_tasks(1, 4)[0], None]
    a, b = rollout(0, tasks), rollout(2, tasks)
    assert len(a) == len(b) == 31
    for ra, rb in zip(a, b, strict=True):
        for xa, xb in zip(ra, rb, strict=True):
            np.testing.assert_array_equal(xa, xb)
    # Fixed-task members kept their task through both auto-resets (steps 10, 20, 30).
    for r in a:
        task_vec = r[1] if len(r) == 2 else r[5]
        np.testing.assert_array_equal(task_vec[0], tasks[0].privileged_vector())
        np.testing.assert_array_equal(task_vec[2], tasks[2].privileged_vector())
    # A different seed gives different episodes.
    with VectorGraspEnv(N, workers=0, config=short_config()) as venv:
        other, _ = venv.reset(seed=8, tasks=tasks)
    assert not np.array_equal(other, a[0][0])


def test_tasks_stay_fixed_across_auto_reset_and_unset_members_resample():
    tasks = some_tasks(N, seed=5)
    tasks[3] = None  # member 3 samples from the split at every reset
    with VectorGraspEnv(N, workers=0, seed=11, config=short_config()) as venv:
        venv.set_tasks(tasks)
        assert venv.tasks == tasks
        venv.reset()
        seen_unset = {venv.current_tasks()[3]}
        for a in actions(25):
            _, _, term, trunc, info = venv.step(a)
            for i in range(3):
                np.testing.assert_array_equal(info["task"][i], tasks[i].privileged_vector())
            assert venv.current_tasks()[:3] == tasks[:3]
            seen_unset.add(venv.current_tasks()[3])
        assert len(seen_unset) == 3  # initial draw plus one per auto-reset
        # Changing a task takes effect at the member's next reset, then stays.
        new = some_tasks(1, seed=99)[0]
        venv.set_tasks([new, *tasks[1:]])
        assert venv.current_tasks()[0] == tasks[0]
        for a in actions(5, seed=3):
            venv.step(a)  # 25 + 5 = 30: every member auto-resets on this last step
        assert venv.current_tasks()[0] == new


def test_auto_reset_matches_a_single_env_and_reports_the_final_step():
    tasks = some_tasks(N, seed=2)
    acts = actions(11, seed=4)
    with VectorGraspEnv(N, workers=0, config=short_config()) as venv:
        obs0, _ = venv.reset(seed=3, tasks=tasks)
        rewards = []
        for a in acts[:10]:
            obs, rew, term, trunc, info = venv.step(a)
            rewards.append(rew)
        # Step 10 ended every episode by time: same-step auto-reset.
        assert trunc.all() and not term.any()
        assert info["_final_obs"].all() and info["_final_info"].all()
        fin = info["final_info"]
        np.testing.assert_array_equal(fin["episode_length"], np.full(N, 10))
        np.testing.assert_allclose(fin["episode_return"], np.sum(rewards, axis=0))
        assert not np.array_equal(info["final_obs"], obs)
        obs11, _, term, trunc, info11 = venv.step(acts[10])
        assert not (term | trunc).any() and not info11["_final_obs"].any()
        assert not info11["final_obs"].any()  # rows of unfinished members are zero
    # Member 0 by hand: same seed derivation, same actions, then an unseeded reset.
    env = GraspEnv(config=short_config())
    ref, _ = env.reset(seed=member_seed(3, 0), options={"task": tasks[0]})
    np.testing.assert_array_equal(ref, obs0[0])
    for k, a in enumerate(acts[:10]):
        ref, r, _, t, ref_info = env.step(a[0])
        assert r == rewards[k][0]
    assert t
    np.testing.assert_array_equal(ref, info["final_obs"][0])
    assert bool(ref_info["success"]) == bool(fin["success"][0])
    ref, _ = env.reset(options={"task": tasks[0]})
    np.testing.assert_array_equal(ref, obs[0])  # the returned obs is the new episode's
    env.close()


def test_bad_inputs_give_clear_errors():
    with VectorGraspEnv(N, workers=0, config=short_config()) as venv:
        with pytest.raises(RuntimeError, match="reset"):
            venv.step(np.zeros((N, 6)))
        venv.reset(seed=0)
        with pytest.raises(ValueError, match=r"shape \(4, 6\).*got \(4, 5\)"):
            venv.step(np.zeros((N, 5)))
        with pytest.raises(ValueError, match=r"got \(6,\)"):
            venv.step(np.zeros(6))
        with pytest.raises(TaskParamError, match="4 tasks"):
            venv.set_tasks(some_tasks(3))
        with pytest.raises(TaskParamError, match="member 1"):
            venv.set_tasks([None, "box", None, None])
        with pytest.raises(TaskParamError, match="mass"):
            venv.set_tasks([None, {"mass": -1.0}, None, None])
        venv.step(np.zeros((N, 6)))  # still usable after rejected inputs
    with pytest.raises(RuntimeError, match="closed"):
        venv.reset()


@pytest.mark.parametrize("workers", [0, 2])
def test_member_exception_propagates_with_member_index(workers):
    with VectorGraspEnv(N, workers=workers, config=short_config()) as venv:
        venv.reset(seed=0)
        bad = np.zeros((N, 6), np.float32)
        bad[3, 2] = np.nan
        with pytest.raises(VectorEnvError, match=r"member 3 .*ValueError.*NaN") as err:
            venv.step(bad)
        assert err.value.member == 3 and err.value.exc_type == "ValueError"
        assert isinstance(err.value.__cause__, ValueError)
        if workers:
            assert "worker 1" in str(err.value) and "grasp_env.py" in err.value.remote_traceback
        with pytest.raises(RuntimeError, match="reset"):
            venv.step(np.zeros((N, 6)))  # members are out of step until a reset
        venv.reset(seed=0)
        venv.step(np.zeros((N, 6)))


def test_close_leaves_no_child_processes():
    venv = VectorGraspEnv(N, workers=2, config=short_config())
    procs = list(venv._procs)
    assert len(procs) == 2 and all(p.is_alive() for p in procs)
    venv.reset(seed=0)
    venv.close()
    venv.close()  # idempotent
    assert venv.closed
    assert all(p.exitcode is not None for p in procs)
    assert not any(_alive(p.pid) for p in procs)


def test_workers_exit_when_the_parent_dies():
    script = textwrap.dedent("""
        import os, signal
        from metagrasp.sim.grasp_env import EnvConfig
        from metagrasp.sim.vector import VectorGraspEnv
        if __name__ == "__main__":
            venv = VectorGraspEnv(2, workers=2, config=EnvConfig(episode_seconds=0.4))
            print(*[p.pid for p in venv._procs], flush=True)
            os.kill(os.getpid(), signal.SIGKILL)  # no close(), no atexit handlers
    """)
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    pids = [int(p) for p in res.stdout.split()]
    assert len(pids) == 2, res.stderr
    deadline = time.monotonic() + 10.0
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    alive = [p for p in pids if _alive(p)]
    for p in alive:  # do not leak them into the rest of the session
        os.kill(p, 9)
    assert not alive, "vector env workers outlived their parent"


def test_sim_bench_runs_and_reports_every_row(tmp_path, capsys):
    import argparse
    import json

    from metagrasp.sim.bench import main_sim_bench

    out = tmp_path / "bench.json"
    args = argparse.Namespace(task="reach", seconds=0.05, num_envs=2, workers=2, json=str(out))
    assert main_sim_bench(args) == 0
    res = json.loads(out.read_text())
    assert set(res["rows"]) == {
        "raw_mj_step",
        "raw_mj_step_nstep",
        "raw_mj_step_threads",
        "env",
        "vector_1",
        "vector_all",
    }
    assert all(r["physics_steps_per_s"] > 0 for r in res["rows"].values())
    assert res["rows"]["raw_mj_step"]["replay_exact"]  # the replay retraces the episodes
    assert set(res["targets"]) == {"env_vs_raw", "all_vs_one"}
    table = capsys.readouterr().out
    assert "primary raw" in table and "targets:" in table
