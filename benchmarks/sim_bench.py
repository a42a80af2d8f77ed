"""Simulation throughput benchmark (same as ``metagrasp sim-bench``).

Prints, in one run: raw ``mujoco.mj_step`` steps/s on the grasp model, the env's physics
steps/s on one thread, and the vector env's on one worker and on all cores, with the
ratios against the targets (env >= 70 % of raw; all cores >= 1.7x one core).

Usage::

    python benchmarks/sim_bench.py --seconds 3 --json sim_bench.json
"""

from __future__ import annotations

import argparse
import sys


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The same options as ``metagrasp sim-bench``."""
    from metagrasp.cli import add_sim_bench_args

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_sim_bench_args(p)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; returns the exit code."""
    from metagrasp.errors import MetagraspError
    from metagrasp.sim.bench import main_sim_bench

    args = parse_args(argv)
    try:
        return main_sim_bench(args)
    except MetagraspError as exc:
        print(f"sim_bench: error: {exc}", file=sys.stderr)
        return 2


# The guard matters: the vector env's worker processes are spawned and re-import __main__.
if __name__ == "__main__":
    sys.exit(main())
