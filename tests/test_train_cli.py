"""End-to-end tier: ``metagrasp train`` and ``metagrasp eval`` in-process, every algorithm.

Tiny budgets on ``point-nav`` (in-process envs), one grasp-lift smoke run, and the bad
inputs a user can type, each of which must exit 2 with a message naming the problem.
"""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import pytest
import torch

from metagrasp.cli import main
from metagrasp.policies.base import algorithms_for
from metagrasp.policies.config import config_hash
from metagrasp.policies.runner import load_checkpoint

TINY = 800  # env steps: one PPO/CAVIA iteration with the quick preset's 40 members
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
POINT_ALGOS = algorithms_for("point-nav")
"""Algorithms that run on point-nav (sac-grip is for grasp families: tests/test_grip_search.py)."""


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def train_args(algo: str, out: Path, *extra: str, task: str = "point-nav") -> list[str]:
    return [
        "train",
        "--algo",
        algo,
        "--task",
        task,
        "--preset",
        "quick",
        "--set",
        f"run.total_env_steps={TINY}",
        "--set",
        "run.workers=0",
        "--out",
        str(out),
        "--no-progress",
        *extra,
    ]


def eval_args(run: Path, k: int = 1, *extra: str) -> list[str]:
    return [
        "eval",
        str(run),
        "--split",
        "test",
        "--episodes-per-task",
        str(k),
        "--workers",
        "0",
        *extra,
    ]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """One tiny training run of every registered algorithm."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("runs")
    out = {}
    for algo in POINT_ALGOS:
        assert main(train_args(algo, root / algo)) == 0, algo
        out[algo] = root / algo
    return out


def read_results(path: Path) -> dict:
    return json.loads(path.read_text())  # NaN (no gap) parses as float("nan")


@pytest.mark.parametrize("algo", POINT_ALGOS)
def test_train_writes_config_metrics_events_and_checkpoint(algo, runs):
    run = runs[algo]
    meta = json.loads((run / "config.json").read_text())
    assert meta["run"]["algo"] == algo and meta["run"]["task"] == "point-nav"
    assert meta["run"]["total_env_steps"] == TINY and meta["run"]["workers"] == 0
    assert meta["run"]["preset"] == "quick"
    assert meta["config_hash"] == config_hash({"run": meta["run"], "algo": meta["algo"]})
    assert meta["env_spec"]["family"] == "point-nav" and meta["env_spec"]["obs_dim"] == 2
    with (run / "metrics.csv").open() as f:
        reader = csv.DictReader(f)
        rows = list(reader)
    assert {"iteration", "env_steps", "wall_s", "return", "success"} <= set(reader.fieldnames)
    assert len(rows) >= 1 and rows[0]["iteration"] == "1"
    assert int(rows[-1]["env_steps"]) >= TINY
    assert math.isfinite(float(rows[-1]["return"]))
    events = list((run / "tb").glob("events.out.tfevents.*"))
    assert events and all(e.stat().st_size > 0 for e in events)
    ckpt = load_checkpoint(run / "checkpoints" / "last.pt", expected_algo=algo)
    assert ckpt["config_hash"] == meta["config_hash"]
    assert ckpt["progress"]["iteration"] == len(rows)


@pytest.mark.parametrize("algo", POINT_ALGOS)
def test_eval_writes_results_and_plot(algo, runs, capsys):
    run = runs[algo]
    assert main(eval_args(run, 1)) == 0
    out = capsys.readouterr().out
    res = read_results(run / "eval-test" / "results.json")
    assert res["algo"] == algo and res["family"] == "point-nav" and res["split"] == "test"
    assert [r["k"] for r in res["per_k"]] == [0, 1]
    for row in res["per_k"]:
        assert 0.0 <= row["success"] <= 1.0 and row["return"] < 0
    assert len(res["raw_success"]) == 1 and len(res["raw_success"][0]) == 40
    assert all(len(per_task) == 2 for per_task in res["raw_success"][0])
    png = run / "eval-test" / "success_vs_k.png"
    assert png.read_bytes()[:8] == PNG_MAGIC and png.stat().st_size > 1000
    assert "k=0" in out and "results.json" in out


def test_eval_with_reference_runs_reports_gap_closure(runs, tmp_path):
    out = tmp_path / "gap"
    args = eval_args(
        runs["cavia"], 3, "--dr", str(runs["ppo"]), "--oracle", str(runs["ppo-oracle"])
    )
    assert main([*args, "--out", str(out)]) == 0
    res = read_results(out / "results.json")
    assert [r["k"] for r in res["per_k"]] == [0, 1, 2, 3]
    assert "gap_closure_k3" in res
    dr, oracle = res["reference_dr"], res["reference_oracle"]
    assert dr["run"] == str(runs["ppo"]) and oracle["run"] == str(runs["ppo-oracle"])
    assert dr["settings"] == oracle["settings"] == {}  # ppo-oracle always sees the task
    assert len(dr["per_k"]) == len(oracle["per_k"]) == 4
    gap = res["gap_closure_k3"]
    if oracle["success"] - dr["success"] > 1e-9:
        expected = (res["per_k"][3]["success"] - dr["success"]) / (
            oracle["success"] - dr["success"]
        )
        assert gap == pytest.approx(expected)
    else:
        assert gap is None or math.isnan(gap)
    assert (out / "success_vs_k.png").read_bytes()[:8] == PNG_MAGIC


def test_grasp_lift_smoke(tmp_path):
    out = tmp_path / "grasp"
    args = train_args("ppo", out, task="grasp-lift")
    args[args.index(f"run.total_env_steps={TINY}")] = "run.total_env_steps=400"
    assert main([*args, "--set", "run.num_envs=2"]) == 0
    meta = json.loads((out / "config.json").read_text())
    assert meta["run"]["task"] == "grasp-lift" and meta["run"]["num_envs"] == 2
    with (out / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert rows and int(rows[-1]["env_steps"]) >= 400
    assert load_checkpoint(out / "checkpoints" / "last.pt", "ppo")["progress"]["env_steps"] >= 400


def test_resume_of_a_finished_run_trains_no_more(runs, tmp_path, capsys):
    run = tmp_path / "sac"
    shutil.copytree(runs["sac"], run)  # a copy, so the shared run is left as it is
    done = load_checkpoint(run / "checkpoints" / "last.pt")["progress"]
    assert main(["train", "--resume", "--out", str(run), "--no-progress"]) == 0
    assert f"done: {done['iteration']} iterations" in capsys.readouterr().out


def test_resume_with_a_larger_budget_trains_on(runs, tmp_path, capsys):
    run = tmp_path / "ppo"
    shutil.copytree(runs["ppo"], run)
    done = load_checkpoint(run / "checkpoints" / "last.pt")["progress"]["env_steps"]
    more = ["--set", f"run.total_env_steps={done + TINY}"]
    assert main(["train", "--resume", "--out", str(run), "--no-progress", *more]) == 0
    after = load_checkpoint(run / "checkpoints" / "last.pt")["progress"]["env_steps"]
    assert after >= done + TINY
    assert json.loads((run / "config.json").read_text())["run"]["total_env_steps"] == done + TINY
    # Anything else in a resumed run's config stays as it was saved.
    capsys.readouterr()
    expect_error(
        ["train", "--resume", "--out", str(run), "--set", "algo.lr=0.1"],
        capsys,
        "only --set run.total_env_steps",
        "algo.lr",
    )
    expect_error(
        ["train", "--resume", "--out", str(run), "--set", f"run.total_env_steps={done}"],
        capsys,
        "not beyond",
    )


# --- bad input: exit 2 and a message naming the problem -----------------------------------


def expect_error(argv: list[str], capsys, *needles: str) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"metagrasp {argv[0]}: error: ")
    for needle in needles:
        assert needle in err, (needle, err)
    return err


def test_unknown_algorithm(tmp_path, capsys):
    out = tmp_path / "run"
    expect_error(train_args("ppo2", out), capsys, "unknown algorithm 'ppo2'", "cavia")
    assert not out.exists()


def test_config_file_with_an_unknown_field(tmp_path, capsys):
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"run": {"num_env": 3}}))
    out = tmp_path / "run"
    expect_error(
        train_args("ppo", out, "--config", str(cfg)),
        capsys,
        "unknown field 'num_env'",
        "did you mean 'num_envs'",
    )
    assert not out.exists()
    cfg.write_text('{"algo": {"lr": 0.1,}}')
    expect_error(train_args("ppo", out, "--config", str(cfg)), capsys, "line 1, column 21")


def test_bad_set_override(tmp_path, capsys):
    expect_error(
        train_args("ppo", tmp_path / "run", "--set", "num_envs=3"), capsys, "SECTION.FIELD=VALUE"
    )
    expect_error(
        train_args("ppo", tmp_path / "run", "--set", "algo.lr=fast"), capsys, "algo.lr='fast'"
    )


def test_eval_on_a_directory_that_is_not_a_run(tmp_path, capsys):
    expect_error(eval_args(tmp_path, 1), capsys, str(tmp_path), "not a training run")


def test_eval_of_a_truncated_checkpoint(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(train_args("sac", run)) == 0
    ckpt = run / "checkpoints" / "last.pt"
    ckpt.write_bytes(ckpt.read_bytes()[:100])
    capsys.readouterr()
    expect_error(eval_args(run, 1), capsys, "truncated or corrupt")


def test_resume_without_an_existing_run(tmp_path, capsys):
    out = tmp_path / "nothing"
    expect_error(["train", "--resume", "--out", str(out), "--no-progress"], capsys, "cannot resume")
    expect_error(["train", "--resume", "--no-progress"], capsys, "--resume needs --out")


def test_second_train_into_an_existing_run(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(train_args("sac", run)) == 0
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    capsys.readouterr()
    expect_error(train_args("ppo", run), capsys, str(run), "already holds a run", "--resume")
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before


@pytest.mark.parametrize(
    ("algo", "settings"),
    [
        ("sac-grip", {"act_with": "oracle"}),
        ("rma", {"act_with": "teacher"}),
        ("ppo-oracle", {}),
        ("sac-grip-dr", {}),
        ("no-such-algo", {}),
    ],
)
def test_an_oracle_reference_acts_on_the_privileged_parameters(tmp_path, algo, settings):
    """eval --oracle RUN: sac-grip with the privileged grip, RMA with its teacher; an
    unreadable or unknown run gets no settings (loading it raises the clear error)."""
    from metagrasp.policies.cli import oracle_settings

    (tmp_path / "config.json").write_text(json.dumps({"run": {"algo": algo}}))
    assert oracle_settings(tmp_path) == settings
    assert oracle_settings(tmp_path / "missing") == {}
