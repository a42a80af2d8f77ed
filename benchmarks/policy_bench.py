"""Policy latency benchmark for issue #5: onnxruntime vs torch, one thread, one run.

Exports each given training run to a temporary fp32 bundle (with the export's parity
checks) and runs ``metagrasp bench-policy`` on it, printing and optionally saving the
figures. Targets (issue #5): ``act`` p50 <= 20 us and p99 <= 100 us from Python; one
``adapt`` on 3 episodes <= 50 ms.

Usage::

    python benchmarks/policy_bench.py RUN [RUN ...] [--calls 20000] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from provenance import git_commit

from metagrasp.export.bench import bench_policy, format_bench
from metagrasp.export.exporter import export_run

TARGETS = {"act_p50_us": 20.0, "act_p99_us": 100.0, "adapt_p50_us": 50_000.0}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", help="training run directories")
    p.add_argument("--calls", type=int, default=20000, help="timed act() calls")
    p.add_argument("--adapt-calls", type=int, default=30, help="timed adapt() calls")
    p.add_argument("--json", default=None, help="write all results to this JSON file")
    args = p.parse_args(argv)
    commit = git_commit()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for run in args.runs:
            out = Path(tmp, Path(run).name, "policy.onnx")
            export_run(run, out, random_inputs=1000, real_episodes=1, log=lambda *a: None)
            res = bench_policy(out, run, args.calls, args.adapt_calls, 3)
            res["run"], res["commit"] = str(run), commit
            act = res["act"]["onnxruntime"]
            res["targets"] = {
                "act_p50_us": act["p50_us"] <= TARGETS["act_p50_us"],
                "act_p99_us": act["p99_us"] <= TARGETS["act_p99_us"],
            }
            if "adapt" in res:
                ok = res["adapt"]["onnxruntime"]["p50_us"] <= TARGETS["adapt_p50_us"]
                res["targets"]["adapt_p50_us"] = ok
            print(format_bench(res))
            print("targets met:", res["targets"], "\n")
            results.append(res)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
