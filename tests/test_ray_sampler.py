"""The Ray sampler: same task assignment as the local sampler, matching returns, a killed
rollout worker replaced mid-run, and bad addresses refused with the fix.

Every test but the address ones shares one local Ray instance of two CPUs (started once
for the module, a few seconds); budgets are a few point-nav iterations.
"""

from __future__ import annotations

import json
import os
import pickle
import socket
import subprocess
import sys

import numpy as np
import pytest
import ray

from metagrasp.errors import ConfigError, SamplerError
from metagrasp.policies.ppo import _exploring_policy
from metagrasp.policies.ray_sampler import RaySampler, check_reachable
from metagrasp.policies.runner import Runner, build_algorithm, resolve_config
from metagrasp.policies.sac import _behaviour_policy
from metagrasp.policies.sampler import LocalSampler, Rollout, reseeded
from metagrasp.sim import make_vector_env

FAMILY = "point-nav"


@pytest.fixture(scope="module")
def ray_cpus2():
    """A local Ray instance with two CPUs (what CI's two cores hold)."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def _pair(n: int, seed: int) -> tuple[LocalSampler, RaySampler]:
    local = LocalSampler(make_vector_env(FAMILY, n, seed=seed, workers=0))
    return local, RaySampler(FAMILY, n, seed=seed, workers=2)


def _algos(name: str, n: int, seed: int, spec) -> tuple:
    resolved = resolve_config(name, FAMILY, "quick", overrides={"run": {"num_envs": n}})
    resolved["run"]["seed"] = seed
    return build_algorithm(resolved, spec), build_algorithm(resolved, spec)


def _assert_same_distribution(a: np.ndarray, b: np.ndarray, z_max: float = 4.0) -> None:
    """Means of two samples of one distribution: |difference| within z_max standard errors."""
    se = np.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b))
    assert abs(a.mean() - b.mean()) <= z_max * se + 1e-6, (a.mean(), b.mean(), se)


def test_ray_sampler_assigns_tasks_like_local_and_returns_match(ray_cpus2):
    n, seed = 64, 5
    local, remote = _pair(n, seed)
    try:
        spec = local.env_spec(FAMILY)  # the runner's spec reset of the local env
        assert remote.env_spec(FAMILY) == spec
        assert remote.bounds == [(0, 32), (32, 64)]
        ppo_l, ppo_r = _algos("ppo", n, seed, spec)
        for _ in range(2):  # tasks drawn by each member's own generator, reset after reset
            (ep_l,), (ep_r,) = ppo_l.collect(local), ppo_r.collect(remote)
            np.testing.assert_array_equal(ep_l.task, ep_r.task)
            np.testing.assert_array_equal(ep_l.obs[:, 0], ep_r.obs[:, 0])
            _assert_same_distribution(ep_l.returns, ep_r.returns)
        # Workers draw their own exploration noise: not the driver's stream, and not
        # one stream repeated on both workers (member 0 and 32 see the same first obs).
        assert not np.allclose(ep_l.actions[:, 0], ep_r.actions[:, 0])
        np.testing.assert_array_equal(ep_r.obs[0, 0], ep_r.obs[32, 0])
        assert not np.allclose(ep_r.actions[0, 0], ep_r.actions[32, 0])

        # RL²: tasks set by the algorithm, the hidden state carried across a trial's
        # episodes inside each worker.
        rl2_l, rl2_r = _algos("rl2", n, seed, spec)
        trial_l, trial_r = rl2_l.collect(local), rl2_r.collect(remote)
        assert len(trial_l) == len(trial_r) == rl2_l.config.trial_episodes >= 2
        for b_l, b_r in zip(trial_l, trial_r, strict=True):
            np.testing.assert_array_equal(b_l.task, b_r.task)
            np.testing.assert_array_equal(b_l.mask.sum(1), b_r.mask.sum(1))
        np.testing.assert_array_equal(trial_r[1].extras["prev_done"][:, 0], 1.0)
        last = trial_r[0].mask.sum(1).astype(int) - 1
        np.testing.assert_allclose(
            trial_r[1].extras["prev_reward"][:, 0], trial_r[0].rewards[np.arange(n), last]
        )
        _assert_same_distribution(sum(b.returns for b in trial_l), sum(b.returns for b in trial_r))
    finally:
        local.close()
        remote.close()


def test_rollout_ships_only_the_acting_parts():
    env = make_vector_env(FAMILY, 4, seed=0, workers=0)
    try:
        spec = LocalSampler(env).env_spec(FAMILY)
        sac, _ = _algos("sac", 4, 0, spec)
        blob = pickle.dumps(Rollout(_behaviour_policy, sac))
        shipped = pickle.loads(blob)
        assert shipped.actor.replay is None and shipped.actor.opt_q is None
        assert sac.replay is not None and sac.opt_q is not None  # the learner keeps them
        assert len(blob) < 200_000  # the actor and its normaliser, no replay buffer
        obs = np.zeros((2, spec.obs_dim), np.float32)
        actions, _ = shipped.bind(2, 4, seed=1).act(obs, np.zeros((2, spec.task_dim)))
        assert actions.shape == (2, spec.act_dim)
        # A worker's generators are fresh, seeded per call: two seeds, two streams.
        one, two = reseeded(sac, 1), reseeded(sac, 2)
        assert one.rng.random() != two.rng.random() and one.gen is not sac.gen
        assert reseeded(sac, 1).rng.random() == reseeded(sac, 1).rng.random()
    finally:
        env.close()


def _runner_config(**run) -> dict:
    resolved = resolve_config("ppo", FAMILY, "quick")
    resolved["run"].update(
        {"num_envs": 16, "total_env_steps": 16 * 20 * 4, "checkpoint_every": 100, **run}
    )
    return resolved


def test_training_survives_a_killed_rollout_worker(ray_cpus2, tmp_path):
    runner = Runner(_runner_config(ray="local", ray_workers=2), tmp_path, progress_bar=False)
    original = runner.algo.train_iteration
    killed: list[int] = []

    def kill_then_train(sampler):
        if runner.progress["iteration"] == 1:  # after one iteration, mid-run
            victim = sampler.actors[0]
            killed.append(ray.get(victim.pid.remote()))
            ray.kill(victim, no_restart=True)
        return original(sampler)

    runner.algo.train_iteration = kill_then_train
    progress = runner.train()
    assert killed and runner.sampler.replacements == 1
    assert progress["iteration"] == 4 and progress["env_steps"] == 16 * 20 * 4
    assert (tmp_path / "checkpoints" / "last.pt").is_file()
    saved = json.loads((tmp_path / "config.json").read_text())["run"]
    assert saved["ray"] == "local" and saved["ray_workers"] == 2


def test_worker_killed_during_a_collection_is_replaced_and_its_slice_rerun(ray_cpus2, tmp_path):
    n, blocks = 16, 40
    marker = tmp_path / "die-once"
    marker.touch()

    def dying_once(actor, per_member, m):
        # Worker 1's process exits in the middle of its first block, deterministically
        # (a timer-driven kill raced the collection on a fast machine); the marker file
        # makes it happen once, so the replacement completes the slice.
        bound = _exploring_policy(actor, {}, m)
        inner, steps = bound.act, [0]

        def act(obs, task):
            steps[0] += 1
            if per_member["victim"][0] and steps[0] == 5:
                try:
                    os.remove(marker)
                except FileNotFoundError:
                    pass
                else:
                    os._exit(1)
            return inner(obs, task)

        bound.act = act
        return bound

    remote = RaySampler(FAMILY, n, seed=2, workers=2)
    try:
        ppo, _ = _algos("ppo", n, 2, remote.env_spec(FAMILY))
        remote.set_tasks([None] * n)
        victim = remote.actors[1]
        ray.get(victim.pid.remote())
        flags = {"victim": np.array([0] * 8 + [1] * 8)}
        eps = remote.sample(Rollout(dying_once, ppo, flags), 20, blocks)
        assert not marker.exists()  # the worker did die mid-collection
        assert remote.replacements == 1 and remote.actors[1] is not victim
        assert len(eps) == blocks and all(e.obs.shape[0] == n for e in eps)
        assert all(e.mask.sum(1).min() > 0 for e in eps)  # every member has its episodes
    finally:
        remote.close()


def test_train_cli_collects_on_ray_and_saves_the_setting(ray_cpus2, tmp_path):
    from metagrasp.cli import main

    out = tmp_path / "run"
    args = ["train", "--algo", "ppo", "--task", FAMILY, "--preset", "quick", "--no-progress"]
    args += ["--set", "run.num_envs=8", "--set", "run.total_env_steps=320", "--out", str(out)]
    assert main([*args, "--ray", "--ray-workers", "2"]) == 0
    saved = json.loads((out / "config.json").read_text())["run"]
    assert saved["ray"] == "local" and saved["ray_workers"] == 2
    rows = (out / "metrics.csv").read_text().splitlines()
    assert len(rows) == 3  # header + 2 iterations of 8 x 20 steps


def test_more_workers_than_cpus_is_refused(ray_cpus2):
    with pytest.raises(SamplerError, match="fewer --ray-workers"):
        RaySampler(FAMILY, 8, workers=3)


def test_bad_ray_settings_are_config_errors():
    with pytest.raises(ConfigError, match="ray_workers"):
        resolve_config("ppo", FAMILY, "quick", overrides={"run": {"ray_workers": 0}})
    with pytest.raises(SamplerError, match="HOST:PORT"):
        check_reachable("headnode")


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_address_names_the_fix(tmp_path):
    """Through the CLI in a fresh process (no Ray joined yet): fails in seconds."""
    port = _closed_port()
    cmd = [sys.executable, "-m", "metagrasp.cli", "train", "--algo", "ppo", "--task", FAMILY]
    cmd += ["--preset", "quick", "--ray", f"127.0.0.1:{port}", "--out", str(tmp_path / "r")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert f"cannot reach a Ray cluster at 127.0.0.1:{port}" in proc.stderr
    assert "ray start --head" in proc.stderr
    assert not (tmp_path / "r" / "config.json").exists()


def test_resume_may_move_a_run_to_another_sampler(tmp_path):
    """The sampler is not part of what a checkpoint learned: --resume may change it."""
    Runner(_runner_config(total_env_steps=16 * 20), tmp_path, progress_bar=False).train()
    with pytest.raises(ConfigError, match="ray_workers"):
        Runner({}, tmp_path, resume=True, progress_bar=False, sampler={"ray_workers": 0})
    runner = Runner({}, tmp_path, resume=True, progress_bar=False, sampler={"ray_workers": 3})
    runner.sampler.close()
    saved = json.loads((tmp_path / "config.json").read_text())["run"]
    assert saved["ray_workers"] == 3 and saved["ray"] is None
