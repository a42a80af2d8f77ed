"""Arguments and handler of ``metagrasp export`` (training side: imports torch lazily)."""

from __future__ import annotations

import argparse
from typing import Any


def add_export_parser(sub: Any, handler: Any) -> None:
    """Register ``metagrasp export``."""
    p = sub.add_parser(
        "export",
        help="export a trained run to an ONNX deployment bundle",
        description="Write the policy graph at -o and the graphs adaptation needs beside "
        "it (policy.<role>.onnx), with names, units, limits, control rate, joints, run id, "
        "adaptation settings and SHA-256s in the policy file's metadata. Every graph is "
        "checked against the training code (random inputs and sim rollouts) first.",
    )
    p.add_argument("run", help="training run directory")
    p.add_argument("--checkpoint", default=None, help="checkpoint (default: the run's last.pt)")
    p.add_argument("-o", "--out", required=True, help="policy file to write (.onnx)")
    prec = p.add_mutually_exclusive_group()
    prec.add_argument(
        "--fp16",
        dest="precision",
        action="store_const",
        const="fp16",
        help="fp16 policy graph; refused if the test-split success changes by > 2 points",
    )
    prec.add_argument(
        "--int8",
        dest="precision",
        action="store_const",
        const="int8",
        help="int8 (dynamic) policy graph; refused like --fp16",
    )
    p.set_defaults(precision="fp32")
    p.add_argument(
        "--random-inputs", type=int, default=1000, help="random inputs per graph for parity"
    )
    p.add_argument(
        "--real-episodes",
        type=int,
        default=100,
        help="sim episodes (test split) for the end-to-end parity check: every valid "
        "step's action, and one adaptation per episode (0 = skip)",
    )
    p.add_argument(
        "--set",
        action="append",
        metavar="algo.FIELD=VALUE",
        help="acting-time algorithm setting baked into the bundle, e.g. "
        "algo.search_rule=prior (sac-grip)",
    )
    p.add_argument(
        "--quality-seeds",
        type=int,
        default=5,
        help="seeds of the fp16/int8 success check (one episode per test task and seed)",
    )
    p.set_defaults(handler=handler)


def run_export(args: argparse.Namespace) -> int:
    """CLI handler of ``metagrasp export``."""
    from metagrasp.errors import ConfigError
    from metagrasp.export.exporter import export_run
    from metagrasp.policies.cli import parse_overrides

    overrides = parse_overrides(args.set)
    if overrides["run"]:
        raise ConfigError("export --set only takes algo.FIELD=VALUE (acting-time settings)")
    export_run(
        args.run,
        args.out,
        checkpoint=args.checkpoint,
        precision=args.precision,
        random_inputs=args.random_inputs,
        real_episodes=args.real_episodes,
        quality_seeds=tuple(range(args.quality_seeds)),
        algo_overrides=overrides["algo"] or None,
    )
    return 0
