"""Unit tier of meta-training: strict configs, GAE, the normalizer, the episode collector,
seeded reproducibility and checkpoints of every registered algorithm, the runner's NaN and
Ctrl-C handling, and the meta-test protocol's arithmetic.

Everything runs on the cheap ``point-nav`` family in-process (``workers=0``) with tiny
networks and one torch thread, so the file stays fast on 2 shared cores.
"""

from __future__ import annotations

import ast
import copy
import csv
import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from metagrasp.errors import CheckpointError, ConfigError, TrainingError, UnknownNameError
from metagrasp.policies import config as cfgs
from metagrasp.policies.base import algorithm_class, algorithms_for
from metagrasp.policies.cli import parse_overrides
from metagrasp.policies.collect import PolicyOutputError, collect_episodes
from metagrasp.policies.evaluate import GAP_K, ci95, gap_closure, meta_test, summarise
from metagrasp.policies.networks import RunningNorm, gae
from metagrasp.policies.runner import (
    Runner,
    build_algorithm,
    env_spec,
    load_checkpoint,
    load_trained,
    resolve_config,
    save_checkpoint,
)
from metagrasp.sim import make_vector_env

REPO = Path(__file__).resolve().parents[1]
NUM_ENVS = 4
POINT_ALGOS = algorithms_for("point-nav")
"""Algorithms that run on point-nav (sac-grip is for grasp families: tests/test_grip_search.py)."""
HORIZON = 20  # point-nav's episode length
SMALL_ALGO = {
    "hidden": [16, 16],
    "epochs": 2,
    "minibatches": 2,
    # SAC: learn from the first iteration on (4 members x 20 steps = 80 > 40 warm-up steps).
    "warmup_steps": 40,
    "batch_size": 16,
    "buffer_size": 1000,
    "updates_per_step": 0.1,
}
"""Cheap hyper-parameters, each applied to the algorithms that have the field."""


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny_config(algo: str, seed: int = 0, **run: Any) -> dict[str, Any]:
    names = {f.name for f in dataclasses.fields(algorithm_class(algo).Config)}
    overrides = {
        "run": {"num_envs": NUM_ENVS, "workers": 0, "seed": seed, **run},
        "algo": {k: v for k, v in SMALL_ALGO.items() if k in names},
    }
    return resolve_config(algo, "point-nav", "quick", overrides=overrides)


def fresh(algo: str, seed: int = 0) -> tuple[Any, Any, dict[str, Any]]:
    """(env, algorithm, resolved config) built the way the runner builds them."""
    resolved = tiny_config(algo, seed)
    env = make_vector_env("point-nav", NUM_ENVS, seed=seed, workers=0)
    return env, build_algorithm(resolved, env_spec(env, "point-nav")), resolved


def flat(obj: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts/lists of a state dict as ``{"a.b.0": leaf}``."""
    if isinstance(obj, dict):
        items = obj.items()
    elif isinstance(obj, (list, tuple)):
        items = enumerate(obj)
    else:
        return {prefix: obj}
    out: dict[str, Any] = {}
    for k, v in items:
        out.update(flat(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def leaves_equal(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return (
            isinstance(a, torch.Tensor)
            and isinstance(b, torch.Tensor)
            and a.dtype == b.dtype
            and torch.equal(a, b)
        )
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return bool(np.array_equal(a, b))
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return type(a) is type(b) and a == b


def assert_same(a: Any, b: Any) -> None:
    fa, fb = flat(a), flat(b)
    assert fa.keys() == fb.keys()
    differ = [k for k in fa if not leaves_equal(fa[k], fb[k])]
    assert not differ, f"entries differ: {differ[:10]}"


def weights(state: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Weight matrices of a state dict (no optimizer moments, no replay buffer)."""
    return {
        k: v
        for k, v in flat(state).items()
        if isinstance(v, torch.Tensor)
        and v.is_floating_point()
        and v.dim() == 2
        and "opt" not in k
        and "replay" not in k
    }


# --- configs ---------------------------------------------------------------------------


def test_unknown_field_names_it_and_suggests_the_close_name():
    with pytest.raises(ConfigError) as e:
        cfgs.from_dict(cfgs.RunConfig, {"num_env": 4}, "run")
    assert "'num_env'" in str(e.value) and "did you mean 'num_envs'" in str(e.value)
    with pytest.raises(ConfigError) as e:
        resolve_config("ppo", "point-nav", "quick", overrides={"algo": {"learning_rate": 1e-3}})
    assert "algo: unknown field 'learning_rate'" in str(e.value)


@pytest.mark.parametrize(
    ("section", "field", "value"),
    [
        ("algo", "lr", "fast"),
        ("run", "num_envs", 2.5),
        ("algo", "hidden", [64, "x"]),
        ("run", "seed", True),  # a bool is not an int
        ("run", "workers", "all"),
    ],
)
def test_mistyped_field_is_refused(section, field, value):
    with pytest.raises(ConfigError) as e:
        resolve_config("ppo", "point-nav", "quick", overrides={section: {field: value}})
    assert f"{section}.{field}=" in str(e.value) and "wrong type" in str(e.value)


def test_out_of_range_value_is_refused():
    with pytest.raises(ConfigError, match=r"run\.num_envs=0 must be >= 1"):
        resolve_config("ppo", "point-nav", "quick", overrides={"run": {"num_envs": 0}})
    with pytest.raises(ConfigError, match=r"algo\.gamma=1\.5"):
        resolve_config("ppo", "point-nav", "quick", overrides={"algo": {"gamma": 1.5}})


def test_invalid_json_config_file_reports_line_and_column(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('{\n  "run": {\n    "seed": 1,\n  }\n}\n')  # trailing comma
    with pytest.raises(ConfigError) as e:
        cfgs.load_config_file(path)
    assert "not valid JSON" in str(e.value) and "line 4, column 3" in str(e.value)
    with pytest.raises(ConfigError, match="cannot read config file"):
        cfgs.load_config_file(tmp_path / "missing.json")
    (tmp_path / "top.json").write_text('{"runs": {}}')
    with pytest.raises(ConfigError, match="keys 'run' and/or 'algo'"):
        cfgs.load_config_file(tmp_path / "top.json")


def test_layers_preset_then_file_then_overrides(tmp_path):
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps({"run": {"seed": 3, "num_envs": 5}, "algo": {"lr": 0.01}}))
    r = resolve_config("ppo", "point-nav", "quick", str(path), {"run": {"num_envs": 6}})
    assert r["run"]["seed"] == 3 and r["run"]["num_envs"] == 6  # file < --set
    assert r["algo"]["lr"] == 0.01 and r["algo"]["hidden"] == [64, 64]  # preset < file
    assert (
        r["run"]["total_env_steps"]
        == algorithm_class("ppo").PRESETS["point:quick"]["run"]["total_env_steps"]
    )
    assert cfgs.config_hash(r) == cfgs.config_hash(json.loads(json.dumps(r)))
    assert cfgs.config_hash(r) != cfgs.config_hash({**r, "run": {**r["run"], "seed": 4}})


@pytest.mark.parametrize(
    ("algo", "task", "preset", "named"),
    [
        ("ppo2", "point-nav", "quick", "unknown algorithm 'ppo2'"),
        ("ppo", "point-navv", "quick", "unknown task family 'point-navv'"),
        ("ppo", "point-nav", "fast", "unknown preset 'fast'"),
    ],
)
def test_unknown_names(algo, task, preset, named):
    with pytest.raises(UnknownNameError) as e:
        resolve_config(algo, task, preset)
    assert named in str(e.value)


def test_parse_overrides():
    got = parse_overrides(
        [
            "run.num_envs=8",
            "algo.lr=1e-3",
            "algo.hidden=[32, 32]",
            "run.workers=null",
            "run.task=point-nav",
            "algo.learn_inner_lr=false",
        ]
    )
    assert got == {
        "run": {"num_envs": 8, "workers": None, "task": "point-nav"},
        "algo": {"lr": 1e-3, "hidden": [32, 32], "learn_inner_lr": False},
    }
    assert parse_overrides(None) == {"run": {}, "algo": {}}


@pytest.mark.parametrize("item", ["num_envs=8", "model.lr=1", "run.num_envs", "run.=3", "=3"])
def test_parse_overrides_refuses_malformed_items(item):
    with pytest.raises(ConfigError, match="SECTION.FIELD=VALUE"):
        parse_overrides([item])


# --- GAE and the normalizer ------------------------------------------------------------


def test_gae_termination_truncation_and_masked_tail():
    gamma, lam = 0.5, 0.5
    # Member 0 terminates at step 1 (step 2 is padding); member 1 is truncated at step 2.
    rewards = torch.tensor([[1.0, 2.0, 99.0], [0.0, 0.0, 1.0]])
    values = torch.tensor([[0.5, 1.0, 7.0], [0.0, 0.0, 0.0]])
    next_values = torch.tensor([[1.0, 4.0, 8.0], [0.0, 0.0, 2.0]])
    dones = torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    adv, ret = gae(rewards, values, next_values, dones, mask, gamma, lam)
    # Member 0: delta_1 = 2 - 1 (no bootstrap: terminated) = 1; delta_0 = 1 + 0.5 - 0.5 = 1;
    # A_0 = 1 + 0.25 * 1. The padded step contributes nothing.
    # Member 1: delta_2 = 1 + 0.5 * 2 (bootstrapped: truncated) = 2; A_1 = 0.25 * 2;
    # A_0 = 0.25 * 0.5.
    expected = torch.tensor([[1.25, 1.0, 0.0], [0.125, 0.5, 2.0]])
    torch.testing.assert_close(adv, expected)
    torch.testing.assert_close(ret, torch.tensor([[1.75, 2.0, 0.0], [0.125, 0.5, 2.0]]))
    # The same last step as a termination drops the bootstrap: delta_2 = 1.
    dones[1, 2] = 1.0
    adv, _ = gae(rewards, values, next_values, dones, mask, gamma, lam)
    torch.testing.assert_close(adv[1], torch.tensor([0.0625, 0.25, 1.0]))


def test_running_norm_matches_numpy_over_batches():
    rng = np.random.default_rng(0)
    norm = RunningNorm(3)
    batches = [
        rng.normal([1.0, -2.0, 5.0], [0.5, 2.0, 10.0], size=shape)
        for shape in [(7, 3), (2, 5, 3), (1, 3), (0, 3), (40, 3)]
    ]
    for b in batches:
        norm.update(b)
    allx = np.concatenate([b.reshape(-1, 3) for b in batches])
    np.testing.assert_allclose(norm.mean.numpy(), allx.mean(0), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(norm.var.numpy(), allx.var(0), rtol=1e-7)
    assert norm.count.item() == pytest.approx(len(allx), abs=1e-6)
    x = torch.as_tensor(allx[:5], dtype=torch.float32)
    expected = (allx[:5] - allx.mean(0)) / np.sqrt(allx.var(0) + 1e-8)
    np.testing.assert_allclose(norm(x).numpy(), expected, rtol=1e-5, atol=1e-5)
    assert norm(torch.full((1, 3), 1e6)).max().item() == norm.clip  # clipped
    assert {k for k, _ in norm.named_buffers()} == {"mean", "var", "count"}


# --- the episode collector -------------------------------------------------------------


class EarlyEndBatchEnv:
    """Three members on the batched-env contract, horizon 4, same-step auto-reset.

    Observation = (member, steps into the episode); reward = 10 * member + step. Member 0
    terminates after 2 steps (its first episode fails, its second succeeds); members 1
    and 2 are truncated at the horizon, member 1 succeeding. ``info["success"]`` after an
    auto-reset describes the new episode, so only ``final_info`` has the ended one's.
    """

    num_envs = 3
    horizon = 4

    def __init__(self) -> None:
        self.t = np.zeros(3, np.int64)
        self.episode = np.zeros(3, np.int64)
        self.step_calls = 0
        self.task = np.arange(6, dtype=np.float32).reshape(3, 2)

    def _obs(self) -> np.ndarray:
        return np.stack([np.arange(3), self.t], 1).astype(np.float32)

    def reset(self, seed=None, options=None):
        self.t[:] = 0
        return self._obs(), {"task": self.task.copy(), "success": np.zeros(3, bool)}

    def step(self, actions):
        assert np.asarray(actions).shape == (3, 2)
        self.step_calls += 1
        self.t += 1
        reward = 10.0 * np.arange(3) + self.t
        members = np.arange(3)
        term = (members == 0) & (self.t >= 2)
        trunc = (self.t >= self.horizon) & ~term
        done = term | trunc
        final_obs = np.where(done[:, None], self._obs(), 0.0).astype(np.float32)
        ended_success = np.array([self.episode[0] >= 1, True, False])
        final_info = {"success": ended_success & done}
        self.episode[done] += 1
        self.t[done] = 0
        info = {
            # Member 2 claims success on its reset observation: must be ignored.
            "success": np.array([False, False, True]) & done,
            "task": self.task.copy(),
            "final_obs": final_obs,
            "_final_obs": done,
            "final_info": final_info,
            "_final_info": done.copy(),
        }
        return self._obs(), reward, term, trunc, info


def test_collect_masks_after_early_termination_and_reads_final_info():
    env = EarlyEndBatchEnv()
    seen: list[np.ndarray] = []

    def policy(obs, task):
        return np.tile(obs[:, 1:2] / 10.0, (1, 2)), {"value": obs[:, 1] * 0.5}

    ep = collect_episodes(env, policy, env.horizon, on_step=lambda s: seen.append(s["mask"]))
    np.testing.assert_array_equal(ep.mask, [[1, 1, 0, 0], [1, 1, 1, 1], [1, 1, 1, 1]])
    np.testing.assert_array_equal(ep.dones, [[0, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]])
    np.testing.assert_array_equal(
        ep.rewards, [[1, 2, 0, 0], [11, 12, 13, 14], [21, 22, 23, 24]]
    )  # member 0's steps after its reset are dropped
    np.testing.assert_array_equal(ep.next_obs[0, 1], [0, 2])  # the final obs, not the reset
    np.testing.assert_array_equal(ep.next_obs[1, 3], [1, 4])
    np.testing.assert_array_equal(ep.next_obs[2, 0], [2, 1])
    np.testing.assert_array_equal(ep.obs[1, :, 1], [0, 1, 2, 3])
    np.testing.assert_array_equal(ep.success, [False, True, False])
    np.testing.assert_array_equal(ep.returns, [3, 50, 90])
    np.testing.assert_array_equal(ep.lengths, [2, 4, 4])
    assert ep.env_steps == 10 and env.step_calls == 4
    np.testing.assert_array_equal(ep.task, env.task)
    np.testing.assert_array_equal(ep.extras["value"][1], [0.0, 0.5, 1.0, 1.5])
    np.testing.assert_array_equal(ep.actions[2, :, 0], np.float32([0.0, 0.1, 0.2, 0.3]))
    assert [m.tolist() for m in seen] == [[1, 1, 1], [1, 1, 1], [0, 1, 1], [0, 1, 1]]
    sub = ep.select(np.array([2, 0]))
    np.testing.assert_array_equal(sub.returns, [90, 3])


def test_collect_refuses_nan_actions_before_stepping():
    env = EarlyEndBatchEnv()

    def policy(obs, task):
        a = np.zeros((3, 2), np.float32)
        a[1, 0] = np.nan
        a[2, 1] = np.inf
        return a, {}

    with pytest.raises(PolicyOutputError, match=r"member\(s\) \[1, 2\] at step 0") as e:
        collect_episodes(env, policy, env.horizon)
    assert isinstance(e.value, FloatingPointError)
    assert env.step_calls == 0


# --- every algorithm: reproducibility and checkpoints ------------------------------------


@pytest.mark.parametrize("name", POINT_ALGOS)
def test_seeded_training_is_reproducible(name):
    runs = []
    for seed in (0, 0, 1):
        env, algo, _ = fresh(name, seed)
        metrics = [algo.train_iteration(env) for _ in range(2)]
        env.close()
        runs.append((metrics, algo.state_dict()))
    (m_a, s_a), (m_b, s_b), (_, s_c) = runs
    assert m_a[-1]["env_steps"] > 0
    for x, y in zip(m_a, m_b, strict=True):
        assert x.keys() == y.keys() and all(leaves_equal(x[k], y[k]) for k in x), (x, y)
    assert_same(s_a, s_b)
    w_a, w_c = weights(s_a), weights(s_c)
    assert w_a and w_a.keys() == w_c.keys()
    assert any(not torch.equal(w_a[k], w_c[k]) for k in w_a), "seed 1 trained the same weights"


@pytest.mark.parametrize("name", POINT_ALGOS)
def test_checkpoint_round_trip_and_resume_determinism(name, tmp_path):
    env, algo, resolved = fresh(name)
    algo.train_iteration(env)
    path = tmp_path / "ckpt.pt"
    progress = {"iteration": 1, "env_steps": 80, "wall_s": 0.5}
    save_checkpoint(path, algo, resolved, progress)
    assert not path.with_suffix(".tmp").exists()
    raw = torch.load(path, map_location="cpu", weights_only=True)
    assert raw["algo"] == name and raw["config_hash"] == cfgs.config_hash(resolved)
    ckpt = load_checkpoint(path, expected_algo=name)
    assert ckpt["progress"] == progress and ckpt["config"] == resolved

    # Load into an algorithm built with another seed: everything must be overwritten.
    env_b = copy.deepcopy(env)  # the env's state at the save, for the resumed twin
    other = build_algorithm(tiny_config(name, seed=5), algo.spec)
    other.load_state_dict(ckpt["state"])
    state = algo.state_dict()
    assert_same(state, other.state_dict())
    entries = flat(state)
    norms = [k for k in entries if k.rsplit(".", 2)[-2:-1] == ["norm"]]
    assert {k.rsplit(".", 1)[-1] for k in norms} == {"mean", "var", "count"}, norms
    assert all(entries[k].item() > 1 for k in norms if k.endswith("count")), "norm unused"
    assert any("exp_avg" in k for k in entries), "no optimizer moments in the state"

    # One more iteration: the loaded copy trains exactly like the original.
    m_orig = algo.train_iteration(env)
    m_loaded = other.train_iteration(env_b)
    assert m_orig.keys() == m_loaded.keys()
    assert all(leaves_equal(m_orig[k], m_loaded[k]) for k in m_orig), (m_orig, m_loaded)
    assert_same(algo.state_dict(), other.state_dict())
    env.close()
    env_b.close()

    # A truncated file and a checkpoint of another algorithm are refused by name.
    blob = path.read_bytes()
    path.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(path, expected_algo=name)
    path.write_bytes(blob)
    wrong = next(a for a in POINT_ALGOS if a != name)
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path, expected_algo=wrong)
    assert f"trained by {name!r}, not {wrong!r}" in str(e.value)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nothing.pt")


def test_every_torch_load_passes_weights_only_true():
    calls = []
    for folder in ("policies", "sim", "core", "export", "adapt", "hardware"):
        for path in sorted((REPO / folder).rglob("*.py")):
            text = path.read_text()
            assert "from torch import load" not in text, path
            for node in ast.walk(ast.parse(text)):
                func = getattr(node, "func", None)
                if (
                    isinstance(node, ast.Call)
                    and isinstance(func, ast.Attribute)
                    and func.attr == "load"
                    and isinstance(func.value, ast.Name)
                    and func.value.id == "torch"
                ):
                    kw = {k.arg: k.value for k in node.keywords}
                    ok = isinstance(kw.get("weights_only"), ast.Constant) and (
                        kw["weights_only"].value is True
                    )
                    calls.append((f"{path.relative_to(REPO)}:{node.lineno}", ok))
    assert calls, "no torch.load call found (the checkpoint loader should have one)"
    assert [c for c, ok in calls if not ok] == []
    # The plain-text count agrees with the parsed one (no call hidden from the AST walk).
    text_hits = sum(
        line.split("#")[0].count("torch.load(")
        for folder in ("policies", "sim", "core", "export", "adapt", "hardware")
        for path in (REPO / folder).rglob("*.py")
        for line in path.read_text().splitlines()
        if "``torch.load(" not in line  # docstrings quoting the call
    )
    assert text_hits == len(calls)


# --- the runner: divergence and Ctrl-C ----------------------------------------------------


def runner_config(**run: Any) -> dict[str, Any]:
    # 4 members x 20 steps = 80 env steps per PPO iteration; 400 steps = 5 iterations.
    return tiny_config("ppo", total_env_steps=400, **run)


def wrap_iterations(runner: Runner, on_call) -> list[dict[str, float]]:
    """Route the runner's algorithm's train_iteration through ``on_call(i, original)``."""
    original = runner.algo.train_iteration
    calls: list[dict[str, float]] = []

    def patched(env):
        calls.append({})
        return on_call(len(calls), lambda: original(env))

    runner.algo.train_iteration = patched
    return calls


def test_runner_stops_on_nan_and_keeps_the_last_good_checkpoint(tmp_path):
    out = tmp_path / "run"
    runner = Runner(runner_config(checkpoint_every=1), out, progress_bar=False)

    def on_call(i, train):
        metrics = train()
        if i == 2:
            metrics["v_loss"] = float("nan")
        return metrics

    wrap_iterations(runner, on_call)
    with pytest.raises(TrainingError) as e:
        runner.train()
    msg = str(e.value)
    assert "iteration 2" in msg and "'v_loss'" in msg and "last.pt" in msg
    ckpt = load_checkpoint(out / "checkpoints" / "last.pt", "ppo")
    assert ckpt["progress"]["iteration"] == 1 and ckpt["progress"]["env_steps"] == 80
    algo, resolved, spec = load_trained(out)
    assert spec.family == "point-nav" and resolved["run"]["total_env_steps"] == 400
    assert all(torch.isfinite(v).all() for v in weights(algo.state_dict()).values())
    with (out / "metrics.csv").open() as f:
        assert [r["iteration"] for r in csv.DictReader(f)] == ["1"]


def test_metrics_that_appear_later_get_csv_columns_too(tmp_path):
    """SAC's losses start after warm-up: the CSV widens instead of dropping them,
    also across a resume."""
    out = tmp_path / "run"
    runner = Runner(runner_config(checkpoint_every=1), out, progress_bar=False)

    def on_call(i, train):
        metrics = train()
        if i >= 2:
            metrics["late_loss"] = float(i)
        if i == 4:
            raise KeyboardInterrupt
        return metrics

    wrap_iterations(runner, on_call)
    with pytest.raises(KeyboardInterrupt):
        runner.train()
    resumed = Runner({}, out, resume=True, progress_bar=False)
    wrap_iterations(resumed, lambda i, train: {**train(), "later_still": 7.0})
    resumed.train()
    with (out / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [int(r["iteration"]) for r in rows] == [1, 2, 3, 4, 5]
    assert [r["late_loss"] for r in rows] == ["", "2.0", "3.0", "", ""]
    assert [r["later_still"] for r in rows] == ["", "", "", "7.0", "7.0"]
    assert all(r["return"] for r in rows)


def test_ctrl_c_saves_a_checkpoint_and_resume_reaches_the_budget(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    runner = Runner(runner_config(checkpoint_every=100), out, progress_bar=False)

    def on_call(i, train):
        if i == 3:
            raise KeyboardInterrupt
        return train()

    wrap_iterations(runner, on_call)
    with pytest.raises(KeyboardInterrupt):
        runner.train()
    ckpt = load_checkpoint(out / "checkpoints" / "last.pt", "ppo")
    assert ckpt["progress"]["iteration"] == 2 and ckpt["progress"]["env_steps"] == 160
    # The saved state is the algorithm after its 2nd iteration.
    assert ckpt["state"]["iteration"] == 2

    resumed = Runner({}, out, resume=True, progress_bar=False)
    assert resumed.progress["iteration"] == 2 and resumed.algo.iteration == 2
    progress = resumed.train()
    assert progress["iteration"] == 5 and progress["env_steps"] == 400
    assert load_checkpoint(out / "checkpoints" / "last.pt")["progress"]["iteration"] == 5
    with (out / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [int(r["iteration"]) for r in rows] == [1, 2, 3, 4, 5]
    assert [int(r["env_steps"]) for r in rows] == [80, 160, 240, 320, 400]
    # TensorBoard keeps the steps logged before the interruption after the resume.
    acc = EventAccumulator(str(out / "tb"))
    acc.Reload()
    assert [e.step for e in acc.Scalars("return")] == [80, 160, 240, 320, 400]
    # A finished run resumed again trains nothing more.
    again = Runner({}, out, resume=True, progress_bar=False).train()
    assert again["iteration"] == 5


def test_checkpoint_of_another_architecture_is_a_clear_error(tmp_path):
    from metagrasp.policies.runner import load_trained

    out = tmp_path / "run"
    Runner(runner_config(), out, progress_bar=False).train()
    cfg = json.loads((out / "config.json").read_text())
    cfg["algo"]["hidden"] = [8]  # the saved weights are [16, 16]
    (out / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="does not fit the 'ppo' network"):
        load_trained(out)


def test_sigterm_saves_a_checkpoint_like_ctrl_c(tmp_path):
    import os
    import signal

    out = tmp_path / "run"
    runner = Runner(runner_config(checkpoint_every=100), out, progress_bar=False)

    def on_call(i, train):
        if i == 3:
            os.kill(os.getpid(), signal.SIGTERM)
        return train()

    before = signal.getsignal(signal.SIGTERM)
    wrap_iterations(runner, on_call)
    with pytest.raises(KeyboardInterrupt):
        runner.train()
    assert signal.getsignal(signal.SIGTERM) is before  # the handler is restored
    ckpt = load_checkpoint(out / "checkpoints" / "last.pt", "ppo")
    assert ckpt["progress"]["iteration"] == 2


def test_resume_after_a_crash_logs_each_iteration_once(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    runner = Runner(runner_config(checkpoint_every=2), out, progress_bar=False)

    def on_call(i, train):
        if i == 4:  # a hard crash: no checkpoint after iteration 3, which was logged
            raise RuntimeError("simulated crash")
        return train()

    wrap_iterations(runner, on_call)
    with pytest.raises(RuntimeError, match="simulated crash"):
        runner.train()
    assert load_checkpoint(out / "checkpoints" / "last.pt")["progress"]["iteration"] == 2
    Runner({}, out, resume=True, progress_bar=False).train()
    with (out / "metrics.csv").open() as f:
        assert [int(r["iteration"]) for r in csv.DictReader(f)] == [1, 2, 3, 4, 5]
    acc = EventAccumulator(str(out / "tb"))
    acc.Reload()
    assert [e.step for e in acc.Scalars("return")] == [80, 160, 240, 320, 400]


# --- the meta-test protocol ---------------------------------------------------------------


@pytest.fixture(scope="module")
def trained_ppo():
    torch.set_num_threads(1)
    env, algo, _ = fresh("ppo")
    for _ in range(2):
        algo.train_iteration(env)
    env.close()
    return algo


def test_meta_test_shapes_and_summary(trained_ppo):
    algo, spec = trained_ppo, trained_ppo.spec
    raw = meta_test(algo, spec, "test", episodes_per_task=2, seeds=(0, 1), num_envs=16, workers=0)
    assert raw["success"].shape == raw["returns"].shape == (2, 40, 3)
    assert raw["success"].dtype == bool
    assert raw["task_ids"][:2] == ["test-000", "test-001"] and len(raw["task_ids"]) == 40
    # Dense reward: -distance after each step; the goal is 1 away and a step moves at most
    # 0.1 * sqrt(2), so a return lies in (-sum_t (1 + 0.1 sqrt(2) t), 0).
    worst = -sum(1 + 0.1 * math.sqrt(2) * t for t in range(1, HORIZON + 1))
    assert np.all(raw["returns"] < 0) and np.all(raw["returns"] > worst)
    s = summarise(raw)
    assert [r["k"] for r in s["per_k"]] == [0, 1, 2]
    for k, row in enumerate(s["per_k"]):
        assert row["success"] == pytest.approx(raw["success"][:, :, k].mean())
        assert row["return"] == pytest.approx(raw["returns"][:, :, k].mean())
        sd = raw["returns"][:, :, k].std(ddof=1)
        assert row["return_ci95"] == pytest.approx(1.96 * sd / math.sqrt(80))
        assert math.isfinite(row["success_ci95"]) and row["success_ci95"] >= 0
    assert np.array(s["raw_success"]).shape == (2, 40, 3)
    json.dumps(s)  # JSON-ready


def test_meta_test_chunks_and_pads_like_one_batch(trained_ppo):
    algo, spec = trained_ppo, trained_ppo.spec
    whole = meta_test(algo, spec, "test", 1, num_envs=None, workers=0, deterministic=True)
    chunked = meta_test(algo, spec, "test", 1, num_envs=16, workers=0, deterministic=True)
    np.testing.assert_array_equal(whole["returns"], chunked["returns"])
    # PPO-DR does not adapt: with the mean action every k is the same episode.
    np.testing.assert_array_equal(whole["returns"][..., 0], whole["returns"][..., 1])
    with pytest.raises(ConfigError, match="episodes_per_task=-1"):
        meta_test(algo, spec, "test", -1, workers=0)


def _summary(successes: list[float]) -> dict[str, Any]:
    return {"per_k": [{"k": k, "success": s} for k, s in enumerate(successes)]}


def test_gap_closure_and_ci_arithmetic():
    adapted = _summary([0.1, 0.3, 0.5, 0.6])
    dr = _summary([0.2, 0.2, 0.2, 0.2])
    oracle = _summary([0.7, 0.9, 0.8, 0.8])  # reference level = mean over k = 0.8
    assert GAP_K == 3
    assert gap_closure(adapted, dr, oracle) == pytest.approx((0.6 - 0.2) / (0.8 - 0.2))
    assert gap_closure(_summary([0.0, 0.0, 0.0, 0.1]), dr, oracle) == pytest.approx(-1 / 6)
    assert math.isnan(gap_closure(_summary([0.1, 0.3, 0.5]), dr, oracle))  # K < 3
    assert math.isnan(gap_closure(adapted, dr, _summary([0.2] * 4)))  # no gap
    mean, half = ci95(np.array([0.0, 1.0, 1.0, 0.0]))
    assert mean == 0.5 and half == pytest.approx(1.96 * math.sqrt(1 / 3) / 2)
    assert ci95(np.array([1.0]))[0] == 1.0 and math.isnan(ci95(np.array([1.0]))[1])


@pytest.mark.parametrize("target, rises", [(None, False), (5.0, True), (-50.0, False)])
def test_sac_temperature_is_tuned_towards_the_target_entropy(target, rises):
    """The temperature grows when the policy's entropy is below the target and shrinks
    when it is above it; ``None`` means -act_dim (a fresh policy's entropy is above it)."""
    from metagrasp.policies.base import EnvSpec
    from metagrasp.policies.sac import SAC, SACConfig, actor_and_temperature_step

    spec = EnvSpec("point-nav", 2, 2, 2, 20, ("x", "y"), ("vx", "vy"))
    sac = SAC(SACConfig(hidden=(8,), target_entropy=target, lr=1e-2), spec)
    before = sac.log_alpha.item()
    x = torch.randn(64, 2)
    for _ in range(5):
        a, logp = sac.actor(x)
        alpha = sac.log_alpha.exp().detach()
        actor_and_temperature_step(sac, torch.cat([x, a], -1), logp, alpha)
    assert (sac.log_alpha.item() > before) == rises


def test_oracle_warm_started_from_a_dr_run_acts_and_values_as_it_did(tmp_path):
    """``init_from`` copies a trained SAC-DR run into the oracle with zero weights on the
    privileged inputs: whatever the task vector, the first actions and Q values are the
    source's; then training moves those weights (they get gradients)."""
    out = tmp_path / "dr"
    Runner(tiny_config("sac", total_env_steps=160), out, progress_bar=False).train()
    src, _, spec = load_trained(out)
    resolved = tiny_config("sac-oracle")
    resolved["algo"]["init_from"] = str(out)
    env = make_vector_env("point-nav", NUM_ENVS, seed=0, workers=0)
    oracle = build_algorithm(resolved, env_spec(env, "point-nav"))
    oracle._warm_start(str(out))
    obs = np.random.default_rng(0).normal(size=(8, spec.obs_dim)).astype(np.float32)
    task = np.random.default_rng(1).normal(size=(8, spec.task_dim)).astype(np.float32)
    x_src = src.norm(torch.as_tensor(obs))
    x_or = oracle.norm(torch.as_tensor(np.concatenate([obs, task], -1)))
    a_src, _ = src.actor(x_src, deterministic=True)
    a_or, _ = oracle.actor(x_or, deterministic=True)
    torch.testing.assert_close(a_or, a_src)
    for q in ("q1", "q2_t"):
        q_src = getattr(src, q)(torch.cat([x_src, a_src], -1))
        q_or = getattr(oracle, q)(torch.cat([x_or, a_src], -1))
        torch.testing.assert_close(q_or, q_src)
    first = oracle.actor.body[0].weight
    assert torch.count_nonzero(first[:, spec.obs_dim :]) == 0
    metrics = oracle.train_iteration(env)  # warm-starts (again) and updates at once
    env.close()
    assert metrics["updates"] > 0 and torch.count_nonzero(first[:, spec.obs_dim :]) > 0


def test_warm_start_refuses_a_source_it_cannot_seed_and_a_dr_run_that_asks(tmp_path):
    ppo_run = tmp_path / "ppo"
    Runner(tiny_config("ppo", total_env_steps=80), ppo_run, progress_bar=False).train()
    resolved = tiny_config("sac-oracle")
    resolved["algo"]["init_from"] = str(ppo_run)
    env = make_vector_env("point-nav", NUM_ENVS, seed=0, workers=0)
    oracle = build_algorithm(resolved, env_spec(env, "point-nav"))
    with pytest.raises(ConfigError, match="algorithm 'ppo' != 'sac'"):
        oracle.train_iteration(env)
    resolved = tiny_config("sac")
    resolved["algo"]["init_from"] = str(ppo_run)
    with pytest.raises(ConfigError, match="is for the oracle"):
        build_algorithm(resolved, env_spec(env, "point-nav"))
    env.close()


def test_sac_demonstrations_fill_half_of_every_batch_and_come_back_on_resume():
    """``demo_episodes``: scripted grasps (the oracle's with the privileged grip) in their
    own buffer, half of each update batch, recorded again identically after a resume."""
    from metagrasp.policies.sac import SAC

    overrides = {
        "run": {"num_envs": 2, "workers": 0},
        "algo": {"hidden": [16], "warmup_steps": 100, "batch_size": 8, "demo_episodes": 2},
    }
    resolved = resolve_config("sac-oracle", "grasp-lift", "quick", overrides=overrides)
    env = make_vector_env("grasp-lift", 2, seed=0, workers=0)
    algo = build_algorithm(resolved, env_spec(env, "grasp-lift"))
    metrics = algo.train_iteration(env)
    env.close()
    assert metrics["updates"] > 0 and algo.demos.size == 200  # two 100-step episodes
    assert algo.demos.data["obs"].shape[1] == algo.spec.obs_dim + algo.spec.task_dim
    batch = algo._batch(8)
    demo_rows = {tuple(r) for r in algo.demos.data["obs"].tolist()}
    from_demos = [tuple(r) in demo_rows for r in batch["obs"].tolist()]
    assert from_demos == [False] * 4 + [True] * 4
    again = SAC._record_demos(algo)
    assert np.array_equal(again.data["actions"], algo.demos.data["actions"])


@pytest.mark.parametrize("algo_name, field", [("sac", "demo_episodes"), ("cavia", "demo_tasks")])
def test_demonstrations_need_a_grasp_family(algo_name, field):
    resolved = tiny_config(algo_name)
    resolved["algo"][field] = 1
    env = make_vector_env("point-nav", NUM_ENVS, seed=0, workers=0)
    algo = build_algorithm(resolved, env_spec(env, "point-nav"))
    with pytest.raises(UnknownNameError, match="no scripted grasp expert"):
        algo.train_iteration(env)
    env.close()


def _cavia_with_demos(bc_coef: float) -> tuple[Any, dict[str, Any], dict[str, float]]:
    """A grasp-lift CAVIA learner with 3 demonstration tasks after one iteration, the
    arguments of its update (spied) and the iteration's metrics."""
    overrides = {
        "run": {"num_envs": 2, "workers": 0},
        "algo": {
            "hidden": [16],
            "epochs": 1,
            "minibatches": 1,
            "demo_tasks": 3,
            "bc_coef": bc_coef,
        },
    }
    resolved = resolve_config("cavia", "grasp-lift", "quick", overrides=overrides)
    env = make_vector_env("grasp-lift", 2, seed=0, workers=0)
    algo = build_algorithm(resolved, env_spec(env, "grasp-lift"))
    seen: dict[str, Any] = {}
    update = algo.update

    def spy(pre, post, rows=None):
        seen.update(pre=pre, post=post, rows=rows)
        return update(pre, post, rows)

    algo.update = spy
    metrics = algo.train_iteration(env)
    env.close()
    return algo, seen, metrics


def test_cavia_demonstrations_are_its_training_tasks_and_come_back_on_resume():
    """``demo_tasks`` (guided meta-policy search): every member trains on one of the
    demonstrated tasks, its demonstration is the one passed to the outer loss, and the
    recording is a pure function of the seed."""
    from metagrasp.policies.cavia import CAVIA

    algo, seen, metrics = _cavia_with_demos(0.1)
    d = algo.demos
    assert d["obs"].shape == (3, algo.spec.max_steps, algo.spec.obs_dim)
    assert d["mask"].sum(1).min() > 0 and metrics["bc_post"] > 0
    assert 0.0 <= metrics["demo_success"] <= 1.0
    want = np.stack([d["tasks"][i].privileged_vector() for i in seen["rows"]])
    np.testing.assert_allclose(seen["pre"].task, want, rtol=1e-5)
    again = CAVIA._record_demos(algo)
    assert torch.equal(again["actions"], d["actions"]) and torch.equal(again["mask"], d["mask"])
    # Rollout workers get the acting networks, not the demonstrations (learner-only).
    import pickle

    from metagrasp.policies.cavia import _context_policy
    from metagrasp.policies.sampler import Rollout

    del algo.update  # the spy (a local function) back to the method
    sent = pickle.loads(pickle.dumps(Rollout(_context_policy, algo, {"context": algo._ctx0(2)})))
    assert sent.actor.demos is None and algo.demos is d
    with pytest.raises(ValueError, match="2 tasks for 3 episodes"):
        from metagrasp.sim.scripted import expert_episodes

        expert_episodes("grasp-lift", 3, 0, privileged=True, tasks=d["tasks"][:2])


def test_cavia_behaviour_cloning_pulls_the_adapted_policy_to_the_expert():
    """``bc_coef``: outer updates raise the demonstrations' likelihood under the adapted
    context, against the same updates without the term."""
    nll = {}
    for coef in (0.0, 1.0):
        algo, seen, _ = _cavia_with_demos(coef)
        for _ in range(15):
            algo.update(seen["pre"], seen["post"], seen["rows"])
        rows = seen["rows"]
        ctx = algo.adapted_context(algo.inner_batch([seen["pre"]]), create_graph=False)
        with torch.no_grad():
            nll[coef] = float(algo._bc_term(rows, ctx.detach()))
    assert nll[1.0] < nll[0.0] - 0.05, nll


def _sac_after_one_iteration(name: str, overrides: dict) -> Any:
    """A grasp-lift SAC-family learner after its first training iteration (2 envs)."""
    resolved = resolve_config(name, "grasp-lift", "quick", overrides=overrides)
    env = make_vector_env("grasp-lift", 2, seed=0, workers=0)
    algo = build_algorithm(resolved, env_spec(env, "grasp-lift"))
    algo.train_iteration(env)
    env.close()
    return algo


def test_sac_behaviour_cloning_pulls_the_actor_to_the_expert_where_the_q_filter_allows():
    """``bc_weight``: the actor's mean action moves towards the demonstrations' actions
    (against the same run without it), and the Q-filter clones only rows where the
    critics rate the expert's action above the actor's."""
    overrides = {
        "run": {"num_envs": 2, "workers": 0},
        "algo": {"hidden": [32], "warmup_steps": 100, "batch_size": 64, "demo_episodes": 2},
    }
    err = {}
    for weight in (0.0, 1.0):
        overrides["algo"].update(bc_weight=weight, bc_q_filter=False)
        algo = _sac_after_one_iteration("sac-oracle", overrides)
        metrics = algo.update(300)
        x = algo.norm(torch.as_tensor(algo.demos.data["obs"]))
        with torch.no_grad():
            mean_action, _ = algo.actor(x, deterministic=True)
        expert = torch.as_tensor(algo.demos.data["actions"])
        err[weight] = float(((mean_action - expert) ** 2).sum(-1).mean())
    assert metrics["bc_kept"] == 1.0 and metrics["bc_loss"] > 0
    assert err[1.0] < 0.5 * err[0.0], err

    algo.config.bc_q_filter = True
    x, expert = x[:64], expert[:64]
    sampled, _ = algo.actor(x, gen=algo.gen)
    loss, kept = algo._bc_loss(x, expert, sampled)
    from metagrasp.policies.sac import _min_q

    with torch.no_grad():
        keep = _min_q(algo, torch.cat([x, expert], -1)) > _min_q(algo, torch.cat([x, sampled], -1))
        mean_action, _ = algo.actor(x, deterministic=True)
        scale = _min_q(algo, torch.cat([x, sampled], -1)).abs().mean()
        want = (((mean_action - expert) ** 2).sum(-1) * keep.float()).mean() * scale
    assert kept == pytest.approx(float(keep.float().mean()))
    torch.testing.assert_close(loss.detach(), want)


def test_sac_smoothness_makes_the_mean_action_change_less_between_consecutive_states():
    """``smooth_weight`` (CAPS): after the same updates, the actor's mean action differs
    less between each replayed state and its successor, and between a state and a
    perturbed copy, than in the same run without it; the loss is the documented one."""
    overrides = {
        "run": {"num_envs": 2, "workers": 0},
        "algo": {"hidden": [32], "warmup_steps": 100, "batch_size": 64},
    }
    gaps = {}
    for weight in (0.0, 0.5):
        overrides["algo"]["smooth_weight"] = weight
        algo = _sac_after_one_iteration("sac", overrides)
        metrics = algo.update(200)
        n = algo.replay.size
        x = algo.norm(torch.as_tensor(algo.replay.data["obs"][:n]))
        nx = algo.norm(torch.as_tensor(algo.replay.data["next_obs"][:n]))
        with torch.no_grad():
            mu, _ = algo.actor(x, deterministic=True)
            mu_next, _ = algo.actor(nx, deterministic=True)
            mu_near, _ = algo.actor(x + 0.05 * torch.randn(x.shape), deterministic=True)
        gaps[weight] = (
            float((mu - mu_next).norm(dim=-1).mean()),
            float((mu - mu_near).norm(dim=-1).mean()),
        )
    assert metrics["smooth_loss"] > 0
    assert gaps[0.5][0] < 0.5 * gaps[0.0][0] and gaps[0.5][1] < 0.5 * gaps[0.0][1], gaps

    from metagrasp.policies.sac import _min_q

    x, nx = x[:64], nx[:64]
    a, _ = algo.actor(x, gen=algo.gen)
    xa = torch.cat([x, a], -1)
    state = algo.gen.get_state()
    loss = algo._smooth_loss(x, nx, xa)
    algo.gen.set_state(state)
    eps = torch.randn(x.shape, generator=algo.gen)
    with torch.no_grad():
        mu, _ = algo.actor(x, deterministic=True)
        mu_next, _ = algo.actor(nx, deterministic=True)
        mu_near, _ = algo.actor(x + 0.05 * eps, deterministic=True)
        d = (mu - mu_next).norm(dim=-1).mean() + (mu - mu_near).norm(dim=-1).mean()
        want = 0.5 * _min_q(algo, xa).abs().mean() * d
    torch.testing.assert_close(loss.detach(), want, rtol=1e-4, atol=1e-6)
    with pytest.raises(ConfigError, match="smooth_weight"):
        resolve_config("sac", "grasp-lift", "quick", overrides={"algo": {"smooth_weight": -1}})


def test_behaviour_cloning_needs_demonstrations():
    with pytest.raises(ConfigError, match="algo.demo_episodes is 0"):
        resolve_config("sac", "grasp-lift", "quick", overrides={"algo": {"bc_weight": 0.4}})


def test_keep_every_keeps_loadable_copies_at_their_budgets(tmp_path):
    out = tmp_path / "run"
    Runner(runner_config(keep_every=2), out, progress_bar=False).train()
    kept = sorted(p.name for p in (out / "checkpoints").glob("step_*.pt"))
    assert kept == ["step_160.pt", "step_320.pt"]  # iterations 2 and 4 of 5
    for name, it in (("step_160.pt", 2), ("step_320.pt", 4)):
        ckpt = load_checkpoint(out / "checkpoints" / name, "ppo")
        assert ckpt["progress"]["iteration"] == it and ckpt["state"]["iteration"] == it
    assert load_checkpoint(out / "checkpoints" / "last.pt")["progress"]["iteration"] == 5
    with pytest.raises(ConfigError, match="keep_every"):
        Runner(runner_config(keep_every=-1), tmp_path / "bad", progress_bar=False)
