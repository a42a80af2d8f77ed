"""The benchmark scripts' own logic, with tiny budgets: meta_rl.py's warm-started lines
(trained from their source run and charged its time and steps) and its per-class table,
the scripted reference grip, and grip_probe.py."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from metagrasp.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
META_RL = REPO / "benchmarks" / "meta_rl.py"
TINY = ["run.total_env_steps=160", "run.num_envs=4", "run.workers=0", "algo.warmup_steps=40"]


def _bench(name: str):
    """The module of ``benchmarks/NAME.py`` (the benchmarks are scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _meta_rl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(META_RL), *args], capture_output=True, text=True, timeout=600
    )


def test_warm_started_oracle_with_its_own_settings_trains_from_the_dr_run(tmp_path):
    """--warm-start trains the oracle from the DR run and charges it the DR run's cost;
    --train-set gives it settings the DR run does not get, in a run folder of its own."""
    sets = [x for item in TINY for x in ("--set", item)]
    res = _meta_rl(
        "--task", "point-nav", "--preset", "quick",
        "--algos", "sac-oracle", "sac", "--dr", "sac", "--oracle", "sac-oracle",
        "--warm-start", "sac-oracle=sac", "--train-set", "sac-oracle:algo.demo_fraction=0.25",
        "--splits", "test", "--episodes-per-task", "1", "--workers", "0",
        *sets, "--out", str(tmp_path),
    )  # fmt: skip
    assert res.returncode == 0, res.stdout + res.stderr
    out = tmp_path / "point-nav-quick"
    dr_run = out / "runs" / "sac-s0"
    oracle_run = out / "runs" / "sac-oracle-demo_fraction=0.25-from-sac-s0"
    config = json.loads((oracle_run / "config.json").read_text())
    assert config["algo"]["init_from"] == str(dr_run.resolve())
    assert config["algo"]["demo_fraction"] == 0.25  # its own setting, not the DR run's
    assert json.loads((dr_run / "config.json").read_text())["algo"]["demo_fraction"] == 0.5
    table = json.loads((out / "results.json").read_text())["splits"]["test"]
    assert table["sac"]["env_steps"] == 160
    assert table["sac-oracle"]["env_steps"] == 320  # its own 160 and the source's
    assert table["sac-oracle"]["runs"] == [str(oracle_run)]  # the report's training curves
    assert table["sac-oracle"]["train_wall_s"] > table["sac"]["train_wall_s"]

    # --deterministic: the same runs meta-tested with mean actions, cached apart.
    deterministic = (
        "--task", "point-nav", "--preset", "quick",
        "--algos", "sac", "--dr", "sac", "--oracle", "sac", "--deterministic",
        "--splits", "test", "--episodes-per-task", "1", "--workers", "0",
        *sets, "--out", str(tmp_path),
    )  # fmt: skip
    res = _meta_rl(*deterministic)
    assert res.returncode == 0, res.stdout + res.stderr
    mean = json.loads((dr_run / "eval-test-deterministic" / "results.json").read_text())
    sampled = json.loads((dr_run / "eval-test" / "results.json").read_text())
    assert mean["deterministic"] is True and sampled["deterministic"] is False

    # A cache made under another acting config (a default changed since) is redone.
    assert mean["algo_config"]["demo_fraction"] == 0.5
    path = dr_run / "eval-test-deterministic" / "results.json"
    path.write_text(json.dumps({**mean, "algo_config": {**mean["algo_config"], "lr": 9.0}}))
    res = _meta_rl(*deterministic)
    assert res.returncode == 0, res.stdout + res.stderr
    assert json.loads(path.read_text())["algo_config"] == mean["algo_config"]
    # So is one made under older grip-search rules (SEARCH_VERSION).
    redone = json.loads(path.read_text())
    path.write_text(json.dumps({**redone, "search_version": redone["search_version"] - 1}))
    res = _meta_rl(*deterministic)
    assert res.returncode == 0, res.stdout + res.stderr
    assert json.loads(path.read_text())["search_version"] == redone["search_version"]


def test_warm_start_and_train_set_name_trained_algorithms(tmp_path):
    base = ["--task", "point-nav", "--algos", "sac", "--dr", "sac", "--oracle", "sac"]
    res = _meta_rl(*base, "--warm-start", "sac-oracle=sac", "--out", str(tmp_path))
    assert res.returncode != 0 and "--warm-start 'sac-oracle=sac'" in res.stderr
    res = _meta_rl(*base, "--train-set", "sac:demo_fraction=0.2", "--out", str(tmp_path))
    assert res.returncode != 0 and "SECTION.FIELD=VALUE" in res.stderr


def test_success_by_object_class_and_by_shape():
    import numpy as np

    from metagrasp.sim.registry import family_split_tasks

    meta_rl = _bench("meta_rl")
    fragile = np.array([t.fragile for t in family_split_tasks("grasp-lift", "test")])
    succ = np.zeros((2, fragile.size, 4))
    succ[:, ~fragile, 3] = 1.0  # lifts every robust object after 3 episodes, no fragile one
    succ[0, np.nonzero(fragile)[0][0], 0] = 1.0  # one fragile success at k = 0, seed 0
    lines, table = meta_rl.by_object_class({"x": {"raw_success": succ}}, "grasp-lift", "test")
    n_frag = int(fragile.sum())
    assert table["x"] == {
        "fragile_k0": 1 / (2 * n_frag),
        "fragile_klast": 0.0,
        "robust_k0": 0.0,
        "robust_klast": 1.0,
    }
    assert f"{n_frag} fragile" in lines[0] and lines[-2].startswith("| x |")
    assert meta_rl.by_object_class({"x": {"raw_success": succ}}, "point-nav", "test") == ([], {})
    # By shape: the robust objects' successes land on their shapes, k and seeds averaged.
    tasks = family_split_tasks("grasp-lift", "test")
    lines, table = meta_rl.by_shape({"x": {"raw_success": succ}}, "grasp-lift", "test")
    for shape, got in table["x"].items():
        mask = np.array([t.shape == shape for t in tasks])
        assert got == pytest.approx(succ[:, mask].mean())
    assert set(table["x"]) == {t.shape for t in tasks} and len(lines) == len(table["x"]) + 5
    assert meta_rl.by_shape({"x": {"raw_success": succ}}, "point-nav", "test") == ([], {})


def test_privileged_scripted_grip_sits_inside_each_objects_force_window():
    """The oracle's grip of benchmarks/scripted_grip.py and the demonstrations: above the
    force that lifts the object and below its crush limit, after the hidden gain."""
    from metagrasp.sim.registry import family_split_tasks
    from metagrasp.sim.scripted import privileged_grip

    for split in ("test", "hard"):
        for task in family_split_tasks("grasp-lift", split):
            delivered = privileged_grip(task) * task.actuator_gain
            assert task.required_grip_force() < delivered < task.crush_limit, task.task_id


def test_grip_probe_reports_each_fragile_task_of_a_trained_run(tmp_path):
    from metagrasp.policies.runner import Runner, resolve_config

    overrides = {
        "run": {"total_env_steps": 200, "num_envs": 2, "workers": 0},
        "algo": {"hidden": [16], "warmup_steps": 100, "batch_size": 8},
    }
    resolved = resolve_config("sac", "grasp-lift", "quick", overrides=overrides)
    Runner(resolved, tmp_path / "run", progress_bar=False).train()
    mod = _bench("grip_probe")
    res = mod.probe(str(tmp_path / "run"), "test", deterministic=True)
    assert res["fragile_tasks"] == 30
    assert len(res["g_at_crush"]) == round(res["crushed"] * 30)
    assert all(0.0 <= res[k] <= 1.0 for k in ("crushed", "grasped_intact", "success"))
    # Meta-test settings reach the loaded policy (RMA's teacher is probed this way): a
    # field SAC does not have is refused, not dropped.
    with pytest.raises(ConfigError, match="act_with"):
        mod.probe(str(tmp_path / "run"), "test", deterministic=True, settings={"act_with": "x"})


def test_adaptive_scripted_grip_bisects_between_a_drop_and_a_crush():
    """benchmarks/scripted_grip.py's adaptive rule: keep a grip while it lifts, halve the
    log-interval after a crush or a drop, never leave the gripper's range."""
    mod = _bench("scripted_grip")
    assert mod.next_grip([]) == mod.BEST_FIXED_GRIP_N
    assert mod.next_grip([(4.0, True, False)]) == 4.0
    # Outcomes after a lift still count: lifted then crushed at 4 N goes below 4 N (the
    # first lift used to end the search, so one missed crush fixed the grip for good).
    assert mod.next_grip([(4.0, True, False), (4.0, False, True)]) == pytest.approx(2.0**0.5)
    assert mod.next_grip([(4.0, True, False), (4.0, True, False)]) == 4.0
    assert mod.next_grip([(4.0, False, True)]) == pytest.approx((0.5 * 4.0) ** 0.5)
    assert mod.next_grip([(4.0, False, False)]) == pytest.approx((4.0 * 20.0) ** 0.5)
    crush_then_drop = mod.next_grip([(4.0, False, True), (2.0, False, False)])
    assert 2.0 < crush_then_drop < 4.0 and crush_then_drop == pytest.approx(8.0**0.5)
    grip = 4.0
    history = []
    for _ in range(20):  # always crushed: goes down towards 0.5 N, never below
        history.append((grip, False, True))
        grip = mod.next_grip(history)
    assert 0.5 <= grip < 0.6


def test_the_grip_blind_to_the_crush_limit_is_a_multiple_of_the_lifting_force():
    """benchmarks/scripted_grip.py's ``lift xM`` rules: M times the force that lifts the
    object, after the hidden gain, inside the gripper's range; the crush limit unused."""
    import dataclasses

    from metagrasp.sim.registry import family_split_tasks

    mod = _bench("scripted_grip")
    task = family_split_tasks("grasp-lift", "test")[0]
    want = 2.0 * task.required_grip_force() / task.actuator_gain
    assert mod._lift_only(2.0, task) == pytest.approx(min(max(want, 0.5), 20.0))
    other = dataclasses.replace(task, crush_limit=task.crush_limit * 0.1)
    assert mod._lift_only(2.0, other) == mod._lift_only(2.0, task)
    assert mod._lift_only(1e6, task) == 20.0


def test_judge_agreement_counts_missed_and_false_crushes_by_shape():
    """benchmarks/judge_agreement.py's summary: the confusion of sim vs device verdicts,
    the crushes the device missed and the ones it invented, per shape."""
    mod = _bench("judge_agreement")
    assert mod.verdict(lifted=True, crushed=True) == "crushed"
    assert mod.verdict(lifted=True, crushed=False) == "lifted"
    assert mod.verdict(lifted=False, crushed=False) == "missed"
    recs = [
        {"shape": "box", "sim": "crushed", "device": "crushed", "crush_delay": 3},
        {"shape": "mesh_4", "sim": "crushed", "device": "lifted", "crush_delay": 5},
        {"shape": "mesh_4", "sim": "crushed", "device": "missed", "crush_delay": None},
        {"shape": "mesh_1", "sim": "missed", "device": "crushed", "crush_delay": None},
        {"shape": "box", "sim": "lifted", "device": "lifted", "crush_delay": None},
    ]
    out = mod.summarise(recs)
    assert out["judgements"] == 5
    assert out["confusion"]["crushed"] == {"crushed": 1, "lifted": 1, "missed": 1}
    assert out["confusion"]["missed"]["crushed"] == 1
    assert out["crush_recall"] == pytest.approx(1 / 3)
    assert out["missed_crushes_by_shape"] == {"box": [0, 1], "mesh_4": [2, 2]}
    assert out["false_crushes_by_shape"] == {"mesh_1": 1}
    assert out["crush_delay_median"] == {"found": 3.0, "missed": 5.0}
    assert mod.summarise([])["crush_recall"] is None


def test_a_cache_from_before_a_new_option_matches_only_the_value_it_acted_with():
    from dataclasses import dataclass
    from types import SimpleNamespace

    @dataclass
    class Config:
        lr: float = 3e-4
        keep_raised: int = 1  # added (acting as 0 before) after the cache below
        other: int = 0  # added, not registered in ADDED_FIELDS: such a cache is redone

    bench = _bench("meta_rl")
    assert bench.ADDED_FIELDS["keep_raised"] == 0
    old = {"lr": 3e-4, "other": 0}
    same = bench._same_config
    assert same(old, SimpleNamespace(config=Config(keep_raised=0)))
    assert not same(old, SimpleNamespace(config=Config()))  # the default since: redone
    assert not same({"lr": 3e-4, "keep_raised": 0}, SimpleNamespace(config=Config()))
    assert not same({**old, "gone": 1}, SimpleNamespace(config=Config(keep_raised=0)))
    assert not same(None, SimpleNamespace(config=Config()))


def _line(successes: list[float], seeds: list[int]) -> dict:
    per_k = [
        {"k": k, "success": s, "success_ci95": 0.05, "return": 100 * s}
        for k, s in enumerate(successes)
    ]
    return {"per_k": per_k, "runs": [f"/r/x-s{s}" for s in seeds]}


def test_reference_lines_close_the_gap_against_an_earlier_dr_line(tmp_path):
    """closure = (k=3 - DR level) / (oracle level - DR level), the DR line read from the
    older file; a seed mismatch between the two files is refused."""
    old = {"task": "grasp-lift", "splits": {"test": {"dr": _line([0.5] * 4, [0, 1])}}}
    new = {
        "task": "grasp-lift",
        "splits": {
            "test": {
                "oracle": _line([0.9, 0.9, 0.9, 0.9], [0, 1]),
                "search": _line([0.5, 0.6, 0.7, 0.8], [0, 1]),
            }
        },
    }
    (tmp_path / "old.json").write_text(json.dumps(old))
    (tmp_path / "new").mkdir()
    (tmp_path / "new" / "results.json").write_text(json.dumps(new))
    cmd = [
        sys.executable,
        str(REPO / "benchmarks" / "reference_lines.py"),
        str(tmp_path / "new" / "results.json"),
        "--dr-from",
        str(tmp_path / "old.json"),
        "--dr",
        "dr",
        "--oracle",
        "oracle",
    ]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    row = next(r for r in res.stdout.splitlines() if r.startswith("| search |"))
    assert row.endswith("| 0.75 | 0.75 |")  # (0.8 - 0.5) / (0.9 - 0.5)
    assert (tmp_path / "new" / "success_vs_k_test.png").stat().st_size > 0
    assert "closure k=3" in (tmp_path / "new" / "closure.md").read_text()
    new["splits"]["test"]["oracle"]["runs"].append("/r/x-s2")
    (tmp_path / "new" / "results.json").write_text(json.dumps(new))
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert res.returncode != 0 and "seeds" in res.stderr
    # --other-seeds: a line of one seed against references of others, said in the table.
    res = subprocess.run([*cmd, "--other-seeds"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "Training seeds differ: the DR line's runs are seeds ['s0', 's1']" in res.stdout
    # --splits: only those (a split RESULTS lacks is refused by name).
    new["splits"]["val"] = new["splits"]["test"]  # the old file has no `val` DR line
    (tmp_path / "new" / "results.json").write_text(json.dumps(new))
    res = subprocess.run([*cmd, "--other-seeds"], capture_output=True, text=True, timeout=120)
    assert res.returncode != 0 and "no line 'dr' on split 'val'" in res.stderr
    only = [*cmd, "--other-seeds", "--splits", "test"]
    res = subprocess.run(only, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and "split `val`" not in res.stdout, res.stderr
    res = subprocess.run([*only, "hard"], capture_output=True, text=True, timeout=120)
    assert res.returncode != 0 and "has no split 'hard'" in res.stderr


def test_reference_lines_take_the_oracle_from_a_third_file(tmp_path):
    """--oracle-from: the closure is against that file's oracle line, which is listed under
    its own label beside a same-named line of RESULTS; its seeds are checked too."""
    old = {"task": "grasp-lift", "splits": {"test": {"dr": _line([0.5] * 4, [0, 1])}}}
    new = {
        "task": "grasp-lift",
        "splits": {
            "test": {
                "oracle": _line([0.8] * 4, [0, 1]),
                "search": _line([0.5, 0.6, 0.7, 0.8], [0, 1]),
            }
        },
    }
    new["splits"]["test"]["dr"] = _line([0.4] * 4, [0, 1])  # RESULTS' own DR line: kept apart
    strong = {"task": "grasp-lift", "splits": {"test": {"oracle": _line([1.0] * 4, [0, 1])}}}
    for name, data in (("old", old), ("new", new), ("strong", strong)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(json.dumps(data))
    cmd = [
        sys.executable,
        str(REPO / "benchmarks" / "reference_lines.py"),
        str(tmp_path / "new" / "results.json"),
        "--dr-from",
        str(tmp_path / "old" / "results.json"),
        "--dr",
        "dr",
        "--oracle",
        "oracle",
        "--oracle-from",
        str(tmp_path / "strong" / "results.json"),
        "--out",
        str(tmp_path / "against-strong"),
    ]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "against-strong" / "closure.md").exists()
    assert not (tmp_path / "new" / "closure.md").exists()
    rows = res.stdout.splitlines()
    assert next(r for r in rows if r.startswith("| search |")).endswith("| 0.60 | 0.60 |")
    assert next(r for r in rows if r.startswith("| oracle |")).endswith("| 0.60 | 0.60 |")
    assert any(r.startswith("| oracle from ") and r.endswith("| 1.00 | 1.00 |") for r in rows)
    assert any(r.startswith("| dr from ") and r.endswith("| 0.00 | 0.00 |") for r in rows)
    assert next(r for r in rows if r.startswith("| dr |")).endswith("| -0.20 | -0.20 |")
    assert "oracle line 1.000" in res.stdout
    # Without --dr-from the DR line is RESULTS' own, listed once.
    own = [a for a in cmd if a not in ("--dr-from", str(tmp_path / "old" / "results.json"))]
    res = subprocess.run(own, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    rows = [r for r in res.stdout.splitlines() if r.startswith("| dr")]
    assert len(rows) == 1 and rows[0].startswith("| dr |")
    search = next(r for r in res.stdout.splitlines() if r.startswith("| search |"))
    assert search.endswith("| 0.67 | 0.67 |")  # (0.8 - 0.4) / (1.0 - 0.4)
    strong["splits"]["test"]["oracle"]["runs"].append("/r/x-s2")
    (tmp_path / "strong" / "results.json").write_text(json.dumps(strong))
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert res.returncode != 0 and "oracle line was trained with seeds" in res.stderr


class _FixedGrip:
    """What GradientGrip needs of a sac-grip algorithm: its start grip and ``act_at``."""

    class config:  # noqa: N801 (stands in for the algorithm's config)
        start_grip_n = 4.0

    def act_at(self, obs, grips, deterministic=False):
        return np.repeat(np.asarray(grips, np.float32)[:, None], 6, axis=1)


def _episodes(returns):
    class Ep:
        pass

    ep = Ep()
    ep.returns = np.asarray(returns, float)
    return ep


def test_gradient_grip_steps_towards_grips_that_beat_the_baseline():
    """benchmarks/grip_gradient.py's inner loop: c moves towards the drawn grip after a
    return above the baseline, away from it after one below, not at all with alpha = 0,
    and never leaves the gripper's range; the network acts at the drawn grip."""
    mod = _bench("grip_gradient")
    line = mod.GradientGrip(_FixedGrip(), sigma=0.3, alpha=0.1, baseline=200.0, seed=3)
    state = line.init_state(4)
    assert np.allclose(state["c"], np.log(4.0))
    assert np.allclose(np.log(state["grip"]), state["c"] + 0.3 * state["eps"])
    actions, _ = line.act(np.zeros((4, 3)), None, state)
    assert np.allclose(actions[:, 0], state["grip"])
    after = line.adapt(state, [_episodes([400.0, 0.0, 200.0, 400.0])])
    moved = after["c"] - state["c"]
    expected = 0.1 * np.array([2.0, -2.0, 0.0, 2.0]) * state["eps"]
    assert np.allclose(moved, expected)
    assert np.sign(moved[0]) == np.sign(state["eps"][0])  # towards the better grip
    assert np.sign(moved[1]) == -np.sign(state["eps"][1])  # away from the worse one
    still = mod.GradientGrip(_FixedGrip(), 0.3, 0.0, 200.0).adapt(state, [_episodes([900.0] * 4)])
    assert np.allclose(still["c"], state["c"])
    far = mod.GradientGrip(_FixedGrip(), 0.3, 1e6, 0.0).adapt(state, [_episodes([900.0] * 4)])
    assert np.all((far["grip"] >= 0.5 - 1e-9) & (far["grip"] <= 20.0 + 1e-9))
    with pytest.raises(ValueError, match="sigma"):
        mod.GradientGrip(_FixedGrip(), sigma=0.0, alpha=0.1, baseline=0.0)


def test_emulated_search_finds_the_window_of_a_table():
    """The emulator draws episodes from the table's nearest grid grip: on an object that
    is crushed above 6 N and dropped below 3 N, the search lifts it from k = 1 on; the
    best single grip of the table lifts it at k = 0."""
    mod = _bench("grip_gradient")
    grips = mod.GRID
    ok = (grips >= 3.0) & (grips <= 6.0)
    col = lambda v: [[[float(x)] * 4] for x in v]  # noqa: E731 (grips x 1 object x 4 episodes)
    fragile = {
        "grips": grips.tolist(),
        "success": col(ok),
        "crushed": col(grips > 6.0),
        "returns": col(np.where(ok, 400.0, np.where(grips > 6.0, 30.0, 100.0))),
        "raised": col(ok),
    }
    emu = mod.Emulator([fragile])
    assert emu.search(repeats=2).tolist() == [1.0, 1.0, 1.0, 1.0]  # 4 N is inside
    heavy = dict(
        fragile, success=col(grips >= 8.0), crushed=col(grips < 0), raised=col(grips >= 8.0)
    )
    emu = mod.Emulator([heavy])
    wins = emu.search(repeats=2)
    assert wins[0] == 0.0 and wins[1] == 1.0  # one drop at 4 N, then the midpoint to 20 N


def _table(grips, objects, device=None):
    """An outcome table: ``objects`` is a list of (lifted, crushed) grip masks, 2
    episodes a cell; ``device`` the device's (lifted, crushed) masks (default: the same)."""
    cells = lambda masks: [[[float(m[i])] * 2 for m in masks] for i in range(len(grips))]  # noqa: E731
    lifted, crushed = [m[0] for m in objects], [m[1] for m in objects]
    dev = device or objects
    return {
        "grips": grips.tolist(),
        "success": cells(lifted),
        "crushed": cells(crushed),
        "raised": cells(lifted),
        "device_lifted": cells([m[0] for m in dev]),
        "device_crushed": cells([m[1] for m in dev]),
        "device_raised": cells([m[0] for m in dev]),
    }


def test_bayes_optimal_search_identifies_an_object_from_its_outcomes():
    """benchmarks/outcome_bound.py: with a fragile object (lifts at 3-6 N, crushed above)
    and a heavy one (lifts only from 8 N) equally likely, no single grip lifts both, but
    one episode's outcome tells them apart, so the best search lifts every object at its
    last episode. A device that reads every crush as a drop cannot tell a crushed fragile
    object from a dropped heavy one at 8 N and up: the search must probe lower."""
    mod = _bench("outcome_bound")
    grips = _bench("grip_gradient").GRID
    fragile = ((grips >= 3.0) & (grips <= 6.0), grips > 6.0)
    heavy = (grips >= 8.0, np.zeros_like(grips, bool))
    table = _table(grips, [fragile, heavy])
    own = (mod.outcome_chances(table), mod.lift_chances(table))
    assert own[0].sum(axis=0) == pytest.approx(np.ones((len(grips), 2)))
    best, scored, _ = mod.best_search(own, own, explore=1)
    assert best == pytest.approx(1.0) and scored == pytest.approx(1.0)
    assert mod.best_search(own, own, explore=0)[0] == pytest.approx(0.5)  # no episode to learn from
    blind = _table(
        grips, [fragile, heavy], device=[(fragile[0], np.zeros_like(grips, bool)), heavy]
    )
    seen = (mod.outcome_chances(blind, "device"), mod.lift_chances(blind))
    assert mod.best_search(seen, seen, explore=1)[0] == pytest.approx(1.0)  # 4 N still tells
    # Planned on the fragile object alone, the search never leaves its window: scored on
    # both objects it lifts only the fragile one.
    only = _table(grips, [fragile])
    planned = (mod.outcome_chances(only), mod.lift_chances(only))
    assert mod.best_search(planned, own, explore=1)[1] == pytest.approx(0.5)
