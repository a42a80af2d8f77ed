"""benchmarks/meta_rl.py: a warm-started line (``--warm-start``) trains from its source run
and is charged with the source's time and steps (tiny point-nav budgets, about 20 s)."""

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
META_RL = REPO / "benchmarks" / "meta_rl.py"
TINY = ["run.total_env_steps=160", "run.num_envs=4", "run.workers=0", "algo.warmup_steps=40"]


def _meta_rl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(META_RL), *args], capture_output=True, text=True, timeout=600
    )


def test_warm_started_oracle_trains_from_the_dr_run_and_counts_its_cost(tmp_path):
    sets = [x for item in TINY for x in ("--set", item)]
    res = _meta_rl(
        "--task", "point-nav", "--preset", "quick",
        "--algos", "sac-oracle", "sac", "--dr", "sac", "--oracle", "sac-oracle",
        "--warm-start", "sac-oracle=sac",
        "--splits", "test", "--episodes-per-task", "1", "--workers", "0",
        *sets, "--out", str(tmp_path),
    )  # fmt: skip
    assert res.returncode == 0, res.stdout + res.stderr
    out = tmp_path / "point-nav-quick"
    dr_run, oracle_run = out / "runs" / "sac-s0", out / "runs" / "sac-oracle-from-sac-s0"
    config = json.loads((oracle_run / "config.json").read_text())
    assert config["algo"]["init_from"] == str(dr_run.resolve())
    table = json.loads((out / "results.json").read_text())["splits"]["test"]
    assert table["sac"]["env_steps"] == 160
    assert table["sac-oracle"]["env_steps"] == 320  # its own 160 and the source's
    assert table["sac-oracle"]["train_wall_s"] > table["sac"]["train_wall_s"]


def test_warm_start_names_must_be_two_trained_algorithms(tmp_path):
    res = _meta_rl(
        "--task", "point-nav", "--algos", "sac", "--dr", "sac", "--oracle", "sac",
        "--warm-start", "sac-oracle=sac", "--out", str(tmp_path),
    )  # fmt: skip
    assert res.returncode != 0 and "--warm-start 'sac-oracle=sac'" in res.stderr
