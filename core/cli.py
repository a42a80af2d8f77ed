"""The ``metagrasp`` command line: one entry point, one sub-command per user job.

Each sub-command registers its arguments here and imports its implementation lazily
inside the handler, so ``metagrasp --help`` is fast and the device-side commands never
pull in torch or mujoco.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from metagrasp import __version__
from metagrasp.errors import MetagraspError

Handler = Callable[[argparse.Namespace], int]


def _cmd_envs(args: argparse.Namespace) -> int:
    from metagrasp.sim.cli import run_envs

    return run_envs(args)


def add_sim_bench_args(p: argparse.ArgumentParser) -> None:
    """The options of ``metagrasp sim-bench`` (also used by ``benchmarks/sim_bench.py``)."""
    p.add_argument("--task", default="grasp-lift", help="task family (see `metagrasp envs`)")
    p.add_argument("--seconds", type=float, default=3.0, help="time budget per measurement")
    p.add_argument("--num-envs", type=int, default=16, help="vector env members")
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="worker processes for the vector env (default: all cores)",
    )
    p.add_argument("--json", metavar="FILE", default=None, help="also write results as JSON")


def _cmd_sim_bench(args: argparse.Namespace) -> int:
    from metagrasp.sim.cli import run_sim_bench

    return run_sim_bench(args)


def _cmd_rollout(args: argparse.Namespace) -> int:
    from metagrasp.sim.cli import run_rollout

    return run_rollout(args)


def _cmd_train(args: argparse.Namespace) -> int:
    from metagrasp.policies.cli import run_train

    return run_train(args)


def _cmd_eval(args: argparse.Namespace) -> int:
    from metagrasp.policies.cli import run_eval

    return run_eval(args)


def _cmd_export(args: argparse.Namespace) -> int:
    from metagrasp.export.cli import run_export

    return run_export(args)


def _cmd_inspect(args: argparse.Namespace) -> int:
    # Device-side: numpy + onnxruntime only (no torch, no mujoco).
    from metagrasp.export.inspect import run_inspect

    return run_inspect(args)


def _cmd_bench_policy(args: argparse.Namespace) -> int:
    from metagrasp.export.bench import run_bench_policy

    return run_bench_policy(args)


def _cmd_calibrate(args: argparse.Namespace) -> int:
    # Device-side: numpy + onnxruntime + the hardware layer (no torch, no mujoco).
    from metagrasp.adapt.calibrate_cli import run_calibrate

    return run_calibrate(args)


def _cmd_demo(args: argparse.Namespace) -> int:
    from metagrasp.demo import run_demo

    return run_demo(args)


def find_run_all() -> Path:
    """``benchmarks/run_all.py`` of the checkout this command runs in (or was installed from).

    The benchmark scripts live in the repository, not in the installed package, so the
    report needs a checkout: the current directory or one above it, or the source tree of
    an editable install.
    """
    here = Path.cwd().resolve()
    for root in (here, *here.parents, Path(__file__).resolve().parents[1]):
        script = root / "benchmarks" / "run_all.py"
        if script.is_file():
            return script
    raise MetagraspError(
        "benchmarks/run_all.py not found: `metagrasp bench all` runs the benchmark scripts "
        "of a metagrasp checkout; run it from inside the repository (or run "
        "`python benchmarks/run_all.py` there)"
    )


def _cmd_bench(args: argparse.Namespace) -> int:
    script = find_run_all()
    # Its own process, as `python benchmarks/run_all.py ...`: the scripts import each other
    # from benchmarks/ and every section runs as a subprocess with the repository as cwd.
    return subprocess.run([sys.executable, str(script), *args.args]).returncode


def build_parser() -> argparse.ArgumentParser:
    """Build the full argument parser (sub-commands and their options)."""
    parser = argparse.ArgumentParser(
        prog="metagrasp",
        description=(
            "Meta-RL grasping for low-cost servo arms: meta-train in MuJoCo, "
            "export to ONNX, calibrate on the device."
        ),
    )
    parser.add_argument("--version", action="version", version=f"metagrasp {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser(
        "envs",
        help="list registered task families, their environments and splits",
        description="List every registered task family with its Gymnasium id, "
        "observation/action sizes and the named task splits.",
    )
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    p.add_argument(
        "--show-tasks",
        metavar="SPLIT",
        default=None,
        help="also print the fixed tasks of SPLIT (test or hard) for each family",
    )
    p.set_defaults(handler=_cmd_envs)

    p = sub.add_parser(
        "sim-bench",
        help="measure simulation throughput (raw mj_step, single env, vector env)",
        description="Measure, in one run: raw mujoco.mj_step steps/s on the grasp model, "
        "the Gymnasium env's physics steps/s on one thread, and the vector env's "
        "physics steps/s on 1 and on all cores.",
    )
    add_sim_bench_args(p)
    p.set_defaults(handler=_cmd_sim_bench)

    p = sub.add_parser(
        "rollout",
        help="run a short sim rollout and write an episode video (or GIF/PNG)",
        description="Run episodes of a task with a scripted or random policy, print the "
        "reward terms and success, and write a video of the first episode.",
    )
    p.add_argument("--task", default="grasp-lift", help="task family (see `metagrasp envs`)")
    p.add_argument("--split", default="train", help="task split: train, test or hard")
    p.add_argument(
        "--policy",
        choices=["scripted", "random"],
        default="scripted",
        help="scripted: a hand-written grasp controller that knows nothing "
        "of the hidden parameters; random: uniform actions",
    )
    p.add_argument("--episodes", type=int, default=1, help="number of episodes")
    p.add_argument("--seed", type=int, default=0, help="seed for tasks and episodes")
    p.add_argument(
        "--video",
        default="rollout.mp4",
        help="output file: .mp4, .gif or .png (last frame); '' for none",
    )
    p.add_argument("--size", type=int, default=320, help="video frame size in pixels")
    p.set_defaults(handler=_cmd_rollout)

    # Registered from the training side's own module (which imports nothing heavy at
    # module level), so the options live next to their implementation.
    from metagrasp.policies.cli import add_eval_parser, add_train_parser

    add_train_parser(sub, _cmd_train)
    add_eval_parser(sub, _cmd_eval)

    # deploy / calibrate-joints (device side) and virtual-robot (sim side), lazily imported.
    from metagrasp.hardware.cli import add_hardware_parsers

    add_hardware_parsers(sub)

    from metagrasp.export.cli import add_export_parser

    add_export_parser(sub, _cmd_export)

    from metagrasp.adapt.calibrate_cli import add_calibrate_parser
    from metagrasp.demo import add_demo_parser

    add_calibrate_parser(sub, _cmd_calibrate)
    add_demo_parser(sub, _cmd_demo)

    p = sub.add_parser(
        "inspect",
        help="print an exported bundle's metadata, graphs, inputs and outputs",
        description="Verify a bundle (hashes, format version) and print what it holds. "
        "Runs on the device: needs numpy and onnxruntime only.",
    )
    p.add_argument("bundle", help="policy file written by `metagrasp export -o`")
    p.add_argument("--json", action="store_true", help="print the metadata as JSON")
    p.set_defaults(handler=_cmd_inspect)

    p = sub.add_parser(
        "bench-policy",
        help="p50/p99 latency per act/adapt call: onnxruntime vs torch, one thread",
        description="Time the bundle's act() (and adapt() on full-length episodes) from "
        "Python with onnxruntime, and in the same run the torch module it was exported "
        "from (needs torch and the training run).",
    )
    p.add_argument("bundle", help="policy file written by `metagrasp export -o`")
    p.add_argument("--run", default=None, help="training run (default: from the metadata)")
    p.add_argument("--calls", type=int, default=20000, help="timed act() calls")
    p.add_argument("--adapt-calls", type=int, default=30, help="timed adapt() calls")
    p.add_argument("--episodes", type=int, default=3, help="episodes per adapt() call")
    p.add_argument("--json", metavar="FILE", default=None, help="also write results as JSON")
    p.set_defaults(handler=_cmd_bench_policy)

    p = sub.add_parser(
        "bench",
        help="reproduce every table of docs/BENCHMARKS.md (bench all [--quick] [--only ...])",
        description="`metagrasp bench all [OPTIONS]` runs `python benchmarks/run_all.py "
        "[OPTIONS]` from the checkout: every benchmark section, a REPORT.md with each table "
        "stamped (machine, command, date, commit) and PNG plots, in --out (default "
        "bench-report/). `metagrasp bench all --help` lists the options.",
    )
    p.add_argument("what", choices=["all"], help="all: the full report (run_all.py)")
    p.add_argument("args", nargs=argparse.REMAINDER, help="options passed to run_all.py")
    p.set_defaults(handler=_cmd_bench)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except MetagraspError as exc:
        print(f"metagrasp {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"metagrasp {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
