"""Reproduce every table of ``docs/BENCHMARKS.md`` in one command (issue #8).

Runs each section's benchmark command(s) -- the same scripts and arguments as
``docs/BENCHMARKS.md`` -- as subprocesses, then writes, under ``--out`` (default
``bench-report/``):

* ``SECTION/section.json``: the section's status, commands, logs, stamps and tables;
* ``SECTION/*.json`` and ``SECTION/*.png``: each benchmark's own JSON and the plots;
* ``SECTION/*.log``: each command's stdout and stderr;
* ``REPORT.md``: every table, each under a line stating the machine, the exact command,
  the date (UTC) and the git commit ("dirty" when tracked files had changes), with the
  plots beside them.

``REPORT.md`` is rewritten after every section from all the ``section.json`` files in
``--out``, so a section that fails is reported as failed (with the end of its log) while
the others go on, and the sections of an earlier run into the same folder stay in the
report until they are run again (``--only`` re-runs a subset). A section whose benchmark
is not available (``ray`` without the ``ray`` extra installed) is reported as
skipped. Sections: sim, point-nav, grasp-lift, policy, quant, soak, calibration, judging, ray.

Training sections reuse finished runs: ``benchmarks/meta_rl.py`` skips a run whose
checkpoint reached its budget and reuses cached evaluations, and ``--runs DIR`` points
them at an existing folder of runs (``meta_rl.py --out``). ``--quick`` swaps every budget
for a tiny one (a smoke check of the whole pipeline in a few minutes; the figures are not
comparable with ``docs/BENCHMARKS.md`` and the report says so).

Usage::

    python benchmarks/run_all.py                      # everything (many hours on 2 cores)
    python benchmarks/run_all.py --only sim policy    # a subset
    python benchmarks/run_all.py --quick --out /tmp/smoke
    metagrasp bench all --skip grasp-lift --runs /tmp/bench
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import report_render as render
from provenance import git_commit, machine_line, machine_stamp, utc_now

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "benchmarks"
SHIPPED_BUNDLES = [
    "sac-grip=assets/pretrained/sac-grip-grasp-lift/policy.onnx",
    "pearl=assets/pretrained/pearl-grasp-lift/policy.onnx",
    "rma=assets/pretrained/rma-grasp-lift/policy.onnx",
]

# The grasp-lift meta-RL table: keep these arguments equal to the last command printed in
# docs/BENCHMARKS.md's "Grasp-lift" section (it evaluates every line of its table).
GRASP_LIFT_ARGS = [
    "--task", "grasp-lift", "--preset", "default",
    "--algos", "ppo", "rma", "rma:act_with=teacher", "cavia", "sac", "pearl", "rl2",
    "sac-oracle",
    "--dr", "sac", "--oracle", "sac-oracle",
    "--train-set", "sac-oracle:algo.demo_episodes=1000,run.total_env_steps=400000",
    "--seeds", "0", "--eval-seeds", "0", "1",
]  # fmt: skip
# What the privileged input adds when DR and oracle get the same demonstrations (the DR
# line's expert uses the best single grip, the oracle's the privileged one). Same runs
# of the oracle as above; keep equal to BENCHMARKS.md's "DR with demonstrations" command.
GRASP_LIFT_DEMOS_ARGS = [
    "--task", "grasp-lift", "--preset", "default",
    "--algos", "sac", "sac-oracle", "--dr", "sac", "--oracle", "sac-oracle",
    "--train-set", "sac:algo.demo_episodes=1000,run.total_env_steps=400000",
    "--train-set", "sac-oracle:algo.demo_episodes=1000,run.total_env_steps=400000",
    "--seeds", "0", "1", "--eval-seeds", "0", "1",
]  # fmt: skip
# sac-grip (strategy optimisation over the grip force) against its own DR line (the same
# network at the best single grip) and its oracle (the same network given the privileged
# grip), beside the SAC lines with demonstrations; keep equal to BENCHMARKS.md's
# "Grip search" command, with the three training seeds of its 2026-12-01 update (the
# squeeze guard is the default there).
GRASP_LIFT_GRIP_ARGS = [
    "--task", "grasp-lift", "--preset", "default",
    "--algos", "sac", "sac-oracle", "sac-grip-dr", "sac-grip", "sac-grip:act_with=fixed",
    "sac-grip:act_with=oracle", "sac-grip:judge=device",
    "--dr", "sac-grip-dr", "--oracle", "sac-grip:act_with=oracle",
    "--train-set", "sac:algo.demo_episodes=1000,run.total_env_steps=400000",
    "--train-set", "sac-oracle:algo.demo_episodes=1000,run.total_env_steps=400000",
    "--seeds", "0", "1", "2", "--eval-seeds", "0", "1",
]  # fmt: skip
# The oracle reference of the grip lines: sac-grip trained with the lower entropy target,
# acting with the privileged grip; the closures against it come from reference_lines.py
# (BENCHMARKS.md, update of 2026-12-07 08:33 UTC).
GRIP_ORACLE = "sac-grip:act_with=oracle"
GRASP_LIFT_ORACLE_ARGS = [
    "--task", "grasp-lift", "--preset", "default",
    "--algos", GRIP_ORACLE, "--dr", GRIP_ORACLE, "--oracle", GRIP_ORACLE,
    "--train-set", "sac-grip:algo.target_entropy=-12",
    "--seeds", "0", "1", "2", "--eval-seeds", "0", "1",
]  # fmt: skip
QUICK_TRAIN_SET = {"run.total_env_steps": "1600", "algo.demo_episodes": "2"}
"""What ``--quick`` makes of a line's own training settings (``meta_rl.py --train-set``)."""


@dataclass
class Step:
    """One command of a section."""

    name: str
    """Stem of the step's log file (``SECTION/NAME.log``)."""
    argv: list[str]
    """The command, run with the repository root as working directory."""
    reuse_if: str = ""
    """A path that, when it exists, means the step's result is already there (skipped)."""
    collect: dict[str, str] = field(default_factory=dict)
    """Files to copy into the section folder after the step: source -> name there."""

    def display(self) -> str:
        """The command as a user types it (``python`` / ``metagrasp`` for this Python)."""
        argv = list(self.argv)
        if argv[:3] == [sys.executable, "-m", "metagrasp.cli"]:
            argv = ["metagrasp", *argv[3:]]
        elif argv and argv[0] == sys.executable:
            argv[0] = "python"
        return shlex.join(_rel(a) for a in argv)


def _rel(arg: str) -> str:
    """Paths inside the repository are shown relative to it, as in BENCHMARKS.md."""
    try:
        return str(Path(arg).relative_to(REPO)) if arg.startswith(str(REPO)) else arg
    except ValueError:
        return arg


# --- stamps -----------------------------------------------------------------------------


# --- sections ---------------------------------------------------------------------------


@dataclass
class Context:
    """What every section's commands are built from (the command-line options)."""

    out: Path
    """Report folder."""
    runs: Path
    """Folder of training runs shared by the training sections (``meta_rl.py --out``)."""
    quick: bool
    """Tiny budgets everywhere (smoke check)."""
    policy_runs: list[str]
    """Training runs to time in the policy section (empty: train two tiny ones)."""
    bundles: list[str]
    """``NAME=policy.onnx`` bundles for the calibration section."""
    time_bundles: list[str]
    """``NAME=policy.onnx`` bundles whose adaptation is only timed."""


def py(script: str, *args: str) -> list[str]:
    return [sys.executable, str(BENCH / script), *args]


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "metagrasp.cli", *args]


def sim_steps(ctx: Context, sdir: Path) -> list[Step]:
    budget = ["--seconds", "0.2", "--num-envs", "4"] if ctx.quick else ["--seconds", "3"]
    return [Step("sim_bench", py("sim_bench.py", *budget, "--json", str(sdir / "sim_bench.json")))]


def _meta_rl_step(ctx: Context, sdir: Path, name: str, args: list[str]) -> Step:
    if ctx.quick:
        # Same algorithms and lines, one seed, tiny budgets.
        args = _swap(args, "--preset", ["quick"])
        args = _swap(args, "--seeds", ["0"])
        args = _swap(args, "--eval-seeds", ["0"])
        args = _swap(args, "--workers", ["0"]) + ["--set", "run.total_env_steps=1600"]
        args = [_quick_settings(a) if i and args[i - 1] == "--train-set" else a
                for i, a in enumerate(args)]  # fmt: skip
    task, preset = args[args.index("--task") + 1], args[args.index("--preset") + 1]
    src = ctx.runs / f"{task}-{preset}"
    collect = {str(src / "results.json"): f"{name}/results.json"}
    collect |= {str(src / f"success_vs_k_{s}.png"): f"{name}/success_vs_k_{s}.png" for s in SPLITS}
    return Step(name, py("meta_rl.py", *args, "--out", str(ctx.runs)), collect=collect)


SPLITS = ("test", "hard")


def _quick_settings(value: str) -> str:
    """A ``--train-set ALGO:SECTION.FIELD=VALUE,...`` value with tiny budgets."""
    algo, _, rest = value.partition(":")
    items = dict(kv.partition("=")[::2] for kv in rest.split(",") if kv)
    items = {k: QUICK_TRAIN_SET.get(k, v) for k, v in items.items()}
    return algo + ":" + ",".join(f"{k}={v}" for k, v in items.items())


def _swap(args: list[str], flag: str, values: list[str]) -> list[str]:
    """``args`` with the values after ``flag`` replaced (appended when absent)."""
    if flag not in args:
        return [*args, flag, *values]
    i = args.index(flag)
    return [*args[: i + 1], *values, *args[i + 1 + len(_values(args, flag)) :]]


def point_nav_steps(ctx: Context, sdir: Path) -> list[Step]:
    # The issue #3 table, then the issue #4 table: the second re-uses the first's runs and
    # evaluations, so running both costs one training of PEARL and RL² more.
    base = ["--task", "point-nav", "--preset", "default"]
    tail = ["--seeds", "0", "1", "--eval-seeds", "0", "1", "--workers", "0"]
    issue3 = [*base, "--algos", "ppo", "ppo-oracle", "cavia", *tail]
    issue4 = [*base, "--algos", "ppo", "ppo-oracle", "cavia", "pearl", "rl2"]
    issue4 += ["--dr", "ppo", "--oracle", "ppo-oracle", *tail]
    return [
        _meta_rl_step(ctx, sdir, "issue3", issue3),
        _meta_rl_step(ctx, sdir, "issue4", issue4),
    ]


def grasp_lift_steps(ctx: Context, sdir: Path) -> list[Step]:
    args = list(GRASP_LIFT_ARGS)
    if ctx.quick:
        args = _swap(args, "--algos", ["ppo", "rma"])
    grip = _meta_rl_step(ctx, sdir, "grasp-lift-grip", list(GRASP_LIFT_GRIP_ARGS))
    oracle = _meta_rl_step(ctx, sdir, "grasp-lift-oracle", list(GRASP_LIFT_ORACLE_ARGS))
    return [
        _meta_rl_step(ctx, sdir, "grasp-lift", args),
        _meta_rl_step(ctx, sdir, "grasp-lift-demos", list(GRASP_LIFT_DEMOS_ARGS)),
        grip,
        oracle,
        _closure_step(sdir, grip, oracle),
        _judge_agreement_step(ctx, sdir, grip),
        *_failure_modes_steps(ctx, sdir, grip),
    ]


CLOSURE_STEP = "grasp-lift-closure"


def _closure_step(sdir: Path, grip: Step, oracle: Step) -> Step:
    """The grip lines' closures against the oracle reference (``reference_lines.py``,
    from the two steps' collected results; the DR line is the grip step's own)."""
    lines = str(sdir / grip.name / "results.json")
    argv = [lines, "--dr", _values(grip.argv, "--dr")[0]]
    argv += ["--oracle", GRIP_ORACLE, "--oracle-from", str(sdir / oracle.name / "results.json")]
    return Step(CLOSURE_STEP, py("reference_lines.py", *argv, "--out", str(sdir / CLOSURE_STEP)))


def _judge_agreement_step(ctx: Context, sdir: Path, grip: Step) -> Step:
    """The device's verdicts beside the sim's flags (``judge_agreement.py``), on the
    sac-grip runs and evaluation seeds of the grip step, on ``test``."""
    runs = ctx.runs / f"grasp-lift-{_values(grip.argv, '--preset')[0]}" / "runs"
    argv = [str(runs / f"sac-grip-s{s}") for s in _values(grip.argv, "--seeds")]
    argv += ["--split", "test", "--seeds", *_values(grip.argv, "--eval-seeds")]
    out = str(sdir / "judge-agreement-test.json")
    return Step("judge-agreement", py("judge_agreement.py", *argv, "--json", out))


FAILURE_MODE_LINES = {
    "dr": ("sac-grip-dr", []),
    "oracle": ("sac-grip", ["--set", "algo.act_with=oracle"]),
    "oracle-mean": ("sac-grip", ["--set", "algo.act_with=oracle", "--deterministic"]),
    "search": ("sac-grip", ["--episodes-per-task", "3"]),
}
"""``failure_modes.py`` lines on ``test``: name -> (runs' algorithm, its arguments)."""


def _failure_modes_steps(ctx: Context, sdir: Path, grip: Step) -> list[Step]:
    """How the grip lines' ``test`` episodes end (``failure_modes.py``), on the runs and
    evaluation seeds of the grip step."""
    runs = ctx.runs / f"grasp-lift-{_values(grip.argv, '--preset')[0]}" / "runs"
    seeds = _values(grip.argv, "--seeds")
    steps = []
    for name, (algo, extra) in FAILURE_MODE_LINES.items():
        argv = [str(runs / f"{algo}-s{s}") for s in seeds]
        argv += ["--split", "test", "--seeds", *_values(grip.argv, "--eval-seeds"), *extra]
        argv += ["--label", name, "--json", str(sdir / f"failure-modes-{name}-test.json")]
        steps.append(Step(f"failure-modes-{name}", py("failure_modes.py", *argv)))
    return steps


def _values(args: list[str], flag: str) -> list[str]:
    """The values after ``flag`` in ``args``, up to the next flag."""
    i = args.index(flag) + 1
    j = i
    while j < len(args) and not args[j].startswith("--"):
        j += 1
    return args[i:j]


def _policy_runs(ctx: Context, algos: tuple[str, ...]) -> tuple[list[Step], list[str]]:
    """The runs the export sections measure, and the steps that train them if needed."""
    if ctx.policy_runs:
        return [], list(ctx.policy_runs)
    steps, runs = [], []
    # The latency does not depend on training (BENCHMARKS.md): tiny grasp-lift runs with
    # the default preset's network sizes, one per exported graph family.
    for algo in algos:
        run = ctx.runs / "policy-latency" / f"{algo}-s0"
        train = ["train", "--algo", algo, "--task", "grasp-lift", "--preset", "default"]
        train += ["--seed", "0", "--set", "run.total_env_steps=1600"]
        train += ["--set", "run.workers=0", "--out", str(run), "--no-progress"]
        steps.append(Step(f"train-{algo}", cli(*train), reuse_if=str(run / "checkpoints/last.pt")))
        runs.append(str(run))
    return steps, runs


def policy_steps(ctx: Context, sdir: Path) -> list[Step]:
    steps, runs = _policy_runs(ctx, ("ppo-oracle", "cavia"))
    budget = ["--calls", "2000", "--adapt-calls", "3"] if ctx.quick else []
    out = str(sdir / "policy_bench.json")
    steps.append(Step("policy_bench", py("policy_bench.py", *runs, *budget, "--json", out)))
    return steps


def quant_steps(ctx: Context, sdir: Path) -> list[Step]:
    steps, runs = _policy_runs(ctx, ("ppo-oracle",))
    checks = ["--quality-seeds", "1", "--real-episodes", "1", "--random-inputs", "100"]
    for run in runs:
        for precision in ("fp16", "int8"):
            out = sdir / f"{Path(run).name}-{precision}" / "policy.onnx"
            argv = ["export", run, "-o", str(out), f"--{precision}"]
            steps.append(Step(f"export-{Path(run).name}-{precision}", cli(*argv, *checks)))
            if not ctx.quick:
                steps[-1].argv = cli(*argv)  # the command's own defaults (5 seeds x 48 tasks)
    return steps


def soak_steps(ctx: Context, sdir: Path) -> list[Step]:
    cycles = "100" if ctx.quick else "10000"
    base = ["--cycles", cycles, "--rate", "50"]
    return [
        Step("soak-normal", py("soak.py", *base, "--json", str(sdir / "soak-normal.json"))),
        Step(
            "soak-rt",
            py("soak.py", *base, "--realtime-priority", "10", "--json", str(sdir / "soak-rt.json")),
        ),
    ]


def calibration_steps(ctx: Context, sdir: Path) -> list[Step]:
    args: list[str] = []
    for b in ctx.bundles or SHIPPED_BUNDLES:
        args += ["--bundle", b]
    for b in ctx.time_bundles:
        args += ["--time-bundle", b]
    if ctx.quick:
        args += ["--splits", "test", "--tasks", "1", "--k-max", "1", "--sim-seeds", "1"]
        args += ["--time-calls", "3"]
    else:
        args += ["--tasks", "4", "--sim-seeds", "3"]
    out = str(sdir / "calibration.json")
    # The robot's slower wrist roll, in sim with the shipped grip bundle.
    wrist = ["--splits", "test", "--rates", "none", "4.7", "--tasks", "1", "--seeds", "0"]
    wrist = [*wrist, "--k-max", "1"] if ctx.quick else []  # full: the script's defaults
    return [
        Step("calibration", py("calibration.py", *args, "--json", out)),
        Step("wrist_rate", py("wrist_rate.py", *wrist, "--json", str(sdir / "wrist-rate.json"))),
    ]


def judging_steps(ctx: Context, sdir: Path) -> list[Step]:
    """The device's judgement of scripted episodes, and the scripted grip rules' bounds."""
    budgets = {
        "device_reward": ["--episodes", "9"] if ctx.quick else ["--episodes", "90"],
        "scripted_grip": ["--seeds", "0", "--tasks", "4"] if ctx.quick else ["--seeds", "0", "1"],
    }
    steps = []
    for script, budget in budgets.items():
        for split in ("test", "hard"):
            out = str(sdir / f"{script.replace('_', '-')}-{split}.json")
            argv = py(f"{script}.py", "--split", split, *budget, "--json", out)
            steps.append(Step(f"{script}-{split}", argv))
    return steps


def ray_steps(ctx: Context, sdir: Path) -> list[Step]:
    # The arguments of benchmarks/ray_scaling.py's own usage line; keep them equal to the
    # command printed beside its table in the docs (docs/SCALING.md / BENCHMARKS.md).
    script = BENCH / "ray_scaling.py"
    if not script.exists():
        raise SectionUnavailableError(f"{_rel(str(script))} is not in this checkout; skipped")
    if importlib.util.find_spec("ray") is None:
        raise SectionUnavailableError(
            "ray is not installed (pip install -c constraints.txt '.[ray]'); skipped"
        )
    budget = ["--num-envs", "4", "--blocks", "1", "--repeats", "1"] if ctx.quick else []
    budget = budget or ["--num-envs", "32", "--blocks", "4", "--repeats", "3"]
    args = ["--task", "grasp-lift", *budget, "--json", str(sdir / "ray_scaling.json")]
    return [Step("ray_scaling", py("ray_scaling.py", *args))]


class SectionError(RuntimeError):
    """A section could not run: the message says why and what to do."""


class SectionUnavailableError(SectionError):
    """A section whose benchmark is not in this checkout: reported as skipped, not failed."""


@dataclass
class Section:
    """One part of docs/BENCHMARKS.md and how to reproduce it."""

    name: str
    title: str
    benchmarks_md: str
    """The heading in docs/BENCHMARKS.md whose tables this section reproduces."""
    steps: Any
    render: Any


SECTIONS: dict[str, Section] = {
    s.name: s
    for s in (
        Section(
            "sim",
            "Simulation throughput vs raw MuJoCo",
            "Simulation throughput (issue #2)",
            sim_steps,
            render.render_sim,
        ),
        Section(
            "point-nav",
            "Point-robot navigation: meta-test, gap closure, training curves, references",
            "Meta-training core (issue #3) / PEARL and RL² (issue #4): point-robot navigation",
            point_nav_steps,
            render.render_meta_rl,
        ),
        Section(
            "grasp-lift",
            "Grasp-lift: meta-test per algorithm and split, gap closure, training curves",
            "Grasp-lift",
            grasp_lift_steps,
            render.render_grasp_lift,
        ),
        Section(
            "policy",
            "ONNX runtime latency vs torch",
            "ONNX export (issue #5)",
            policy_steps,
            render.render_policy,
        ),
        Section(
            "quant",
            "ONNX fp16 / int8 policy graphs: test-split success vs fp32",
            "ONNX export (issue #5): fp16 / int8",
            quant_steps,
            render.render_quant,
        ),
        Section(
            "soak", "Control-loop timing", "Control loop (issue #6)", soak_steps, render.render_soak
        ),
        Section(
            "calibration",
            "On-device calibration and adaptation time",
            "On-device calibration (issue #7)",
            calibration_steps,
            render.render_calibration,
        ),
        Section(
            "judging",
            "Judging episodes on the device; what the grip search reaches with a scripted motion",
            "Device reward vs the sim's (issue #7) / scripted grip bounds (issue #3, #9)",
            judging_steps,
            render.render_judging,
        ),
        Section(
            "ray",
            "Sampling throughput: Ray workers vs the local sampler",
            "Scale-out (issue #8)",
            ray_steps,
            render.render_ray,
        ),
    )
}


# --- running ----------------------------------------------------------------------------


def run_section(sec: Section, ctx: Context, machine: dict[str, Any]) -> dict[str, Any]:
    """Run one section's commands and render its tables; never raises."""
    sdir = ctx.out / sec.name
    sdir.mkdir(parents=True, exist_ok=True)
    rec: dict[str, Any] = {
        "name": sec.name,
        "title": sec.title,
        "benchmarks_md": sec.benchmarks_md,
        "quick": ctx.quick,
        "machine": machine,
        "commit": git_commit(),
        "started": utc_now(),
        "loadavg": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "status": "running",
        "steps": [],
        "tables": [],
    }
    t0 = time.monotonic()
    print(f"run_all: [{sec.name}] {sec.title}", flush=True)
    try:
        for step in sec.steps(ctx, sdir):
            rec["steps"].append(_run_step(step, sdir))
            _save(sdir, rec)
            if rec["steps"][-1]["status"] == "failed":
                raise SectionError(rec["steps"][-1]["error"])
        rec["tables"] = [asdict(t) for t in sec.render(sdir, rec)]
        rec["status"] = "ok"
    except SectionUnavailableError as exc:
        rec["status"], rec["error"] = "skipped", str(exc)
    except Exception as exc:  # a failed section is reported; the others go on
        rec["status"] = "failed"
        detail = "" if isinstance(exc, SectionError) else "\n" + traceback.format_exc(limit=3)
        rec["error"] = f"{type(exc).__name__}: {exc}{detail}"
    rec["finished"] = utc_now()
    rec["wall_s"] = time.monotonic() - t0
    _save(sdir, rec)
    print(f"run_all: [{sec.name}] {rec['status']} ({rec['wall_s']:.0f} s)", flush=True)
    return rec


def _run_step(step: Step, sdir: Path) -> dict[str, Any]:
    log = sdir / f"{step.name}.log"
    res: dict[str, Any] = {"name": step.name, "command": step.display(), "log": log.name}
    if step.reuse_if and Path(step.reuse_if).exists():
        res.update(status="reused", rc=0, wall_s=0.0)
    else:
        print(f"run_all:   $ {step.display()}", flush=True)
        t0 = time.monotonic()
        with log.open("w") as fh:
            rc = subprocess.run(step.argv, cwd=REPO, stdout=fh, stderr=subprocess.STDOUT).returncode
        res.update(rc=rc, wall_s=time.monotonic() - t0, finished=utc_now())
        if rc != 0:
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
            res.update(status="failed", error=f"`{step.display()}` exited {rc}:\n{tail}")
            return res
        res["status"] = "ok"
    res["collected"] = step.collect
    for src, name in step.collect.items():
        dst = sdir / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        if Path(src).exists():
            shutil.copy2(src, dst)
    return res


def _save(sdir: Path, rec: dict[str, Any]) -> None:
    tmp = sdir / "section.json.tmp"
    tmp.write_text(json.dumps(rec, indent=1, default=str) + "\n")
    tmp.replace(sdir / "section.json")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="run_all",
        description=__doc__.splitlines()[0],
        epilog="sections: " + " ".join(SECTIONS),
    )
    p.add_argument("--out", default="bench-report", help="report folder (default bench-report/)")
    p.add_argument("--only", nargs="+", default=None, metavar="SECTION", help="run only these")
    p.add_argument("--skip", nargs="+", default=[], metavar="SECTION", help="do not run these")
    p.add_argument("--quick", action="store_true", help="tiny budgets: a smoke check")
    p.add_argument(
        "--runs",
        default=None,
        help="folder of training runs for the training sections, reused when finished "
        "(meta_rl.py --out; default OUT/runs)",
    )
    p.add_argument(
        "--policy-runs",
        nargs="+",
        default=[],
        metavar="RUN",
        help="training runs to time in the policy section (default: two tiny grasp-lift runs)",
    )
    p.add_argument(
        "--bundle",
        action="append",
        default=[],
        metavar="NAME=ONNX",
        help=f"calibration bundle (repeatable; default the shipped {', '.join(SHIPPED_BUNDLES)})",
    )
    p.add_argument(
        "--time-bundle",
        action="append",
        default=[],
        metavar="NAME=ONNX",
        help="bundle whose device-side adaptation is only timed (repeatable)",
    )
    args = p.parse_args(argv)
    for name in [*(args.only or []), *args.skip]:
        if name not in SECTIONS:
            p.error(f"unknown section {name!r}; sections: {', '.join(SECTIONS)}")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the selected sections; 0 when all of them succeeded, 1 otherwise."""
    args = parse_args(argv)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    ctx = Context(
        out=out,
        runs=Path(args.runs).resolve() if args.runs else out / "runs",
        quick=args.quick,
        policy_runs=[str(Path(r).resolve()) for r in args.policy_runs],
        bundles=args.bundle,
        time_bundles=args.time_bundle,
    )
    names = [n for n in (args.only or SECTIONS) if n not in args.skip]
    machine = machine_stamp()
    given = sys.argv[1:] if argv is None else argv
    invocation = "python benchmarks/run_all.py " + shlex.join(given)
    failed = []
    for name in names:
        rec = run_section(SECTIONS[name], ctx, machine)
        if rec["status"] == "failed":
            failed.append(name)
        render.write_report(out, list(SECTIONS), invocation.strip(), machine_line)
    print(f"run_all: wrote {out / 'REPORT.md'}; failed: {', '.join(failed) or 'none'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
