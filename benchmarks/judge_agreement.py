"""Where the device's judgement of a learned grip search's episodes differs from the sim's.

``sac-grip`` with ``algo.judge=device`` adapts its grip on what the robot itself can see
(:class:`~metagrasp.adapt.reward.DeviceReward` with ``detect_collapse``, the judgement of
``metagrasp calibrate --detect-crush``). This runs that search through the meta-test
protocol and records, at every adaptation step, the device's verdict on each episode
(crushed, lifted or missed) beside the sim's flags, so a gap between the two closure
figures can be traced to missed crushes, false crushes or misjudged lifts, by shape.
``benchmarks/device_reward.py`` measures the same detector on scripted grasps.

    python benchmarks/judge_agreement.py RUN [RUN ...] --split test --json out.json

An episode is judged again at each later adaptation step (the search re-reads every
outcome so far), so with K = 3 the first episode counts three times, as the search used it.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

VERDICTS = ("crushed", "lifted", "missed")


def verdict(lifted: bool, crushed: bool) -> str:
    """One episode's outcome as a word; a crush outranks a lift."""
    return "crushed" if crushed else ("lifted" if lifted else "missed")


def summarise(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Confusion of sim vs device verdicts, and the disagreements by shape.

    Args:
        records: one per judgement, with ``shape``, ``sim`` and ``device`` (verdicts) and
            ``crush_delay`` (steps from the first squeeze command to the sim's crush, or
            None when the sim saw no crush or there was no squeeze).
    """
    confusion = {s: {d: 0 for d in VERDICTS} for s in VERDICTS}
    crushes, missed, false = (collections.Counter() for _ in range(3))
    delays: dict[str, list[int]] = {"found": [], "missed": []}
    for r in records:
        confusion[r["sim"]][r["device"]] += 1
        if r["sim"] == "crushed":
            crushes[r["shape"]] += 1
            found = r["device"] == "crushed"
            missed[r["shape"]] += not found
            if r["crush_delay"] is not None:
                delays["found" if found else "missed"].append(int(r["crush_delay"]))
        elif r["device"] == "crushed":
            false[r["shape"]] += 1
    n_crush = sum(crushes.values())
    return {
        "judgements": len(records),
        "confusion": confusion,
        "crush_recall": (n_crush - sum(missed.values())) / n_crush if n_crush else None,
        "missed_crushes_by_shape": {k: [missed[k], crushes[k]] for k in sorted(crushes)},
        "false_crushes_by_shape": dict(sorted(false.items())),
        "crush_delay_median": {k: float(np.median(v)) if v else None for k, v in delays.items()},
    }


def measure(runs: Sequence[Path], split: str, k: int, seeds: Sequence[int]) -> dict[str, Any]:
    """Meta-test each run's device-judged search and record every judgement."""
    from metagrasp.policies.evaluate import meta_test
    from metagrasp.policies.runner import load_trained
    from metagrasp.sim.tasks import split_tasks

    shapes = [t.shape for t in split_tasks(split)]
    records: list[dict[str, Any]] = []

    def record(ep: Any, lifted: np.ndarray, crushed: np.ndarray) -> None:
        """Each verdict of the search (which runs unchanged) beside the sim's flags."""
        for i in range(len(ep.success)):
            n = int(ep.mask[i].sum())
            squeeze = np.flatnonzero(ep.actions[i, :n, 5] > 0)
            # The crush is the episode's one-off -10 reward term, its lowest reward.
            at = int(np.argmin(ep.rewards[i, :n])) if ep.crushed[i] else None
            delay = at - int(squeeze[0]) if at is not None and len(squeeze) else None
            records.append(
                {
                    "shape": shapes[i],
                    "sim": verdict(bool(ep.success[i]), bool(ep.crushed[i])),
                    "device": verdict(bool(lifted[i]), bool(crushed[i])),
                    "crush_delay": delay,
                }
            )

    for run in runs:
        algo, _, spec = load_trained(run, None, {"judge": "device", "squeeze_guard": True})
        if not hasattr(algo, "judgement_observer"):
            raise SystemExit(f"{run} is not a sac-grip run (no grip search to judge)")
        algo.judgement_observer = record
        # One member per task, so member i is task i of the split (``shapes[i]``).
        meta_test(algo, spec, split, k, tuple(seeds), num_envs=len(shapes))
    return summarise(records)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", type=Path, help="finished sac-grip run folders")
    p.add_argument("--split", default="test", choices=("val", "test", "hard"))
    p.add_argument("--episodes-per-task", type=int, default=3, help="K")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="meta-test seeds")
    p.add_argument("--json", type=Path, help="write the summary here")
    args = p.parse_args(argv)
    out = measure(args.runs, args.split, args.episodes_per_task, args.seeds)
    out.update(split=args.split, runs=[str(r) for r in args.runs], seeds=args.seeds)
    print(f"{args.split}: {out['judgements']} judgements, sim (rows) vs device (columns)")
    print("| sim \\ device | " + " | ".join(VERDICTS) + " |")
    for s in VERDICTS:
        print(f"| {s} | " + " | ".join(str(out["confusion"][s][d]) for d in VERDICTS) + " |")
    print(f"crush recall {out['crush_recall']}; missed / all crushes by shape:")
    print("  " + ", ".join(f"{k} {m}/{n}" for k, (m, n) in out["missed_crushes_by_shape"].items()))
    print(f"false crushes by shape: {out['false_crushes_by_shape']}")
    print(f"steps from the first squeeze to the crush, median: {out['crush_delay_median']}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
