"""The best a grip search reading episode outcomes can do: the Bayes-optimal search on tables.

The grip search (``metagrasp.grip_search.next_grip``) picks each episode's grip from what
the earlier episodes of the object did: lifted, crushed, or neither, and whether a drop came
after the object was raised (``keep_raised``). No rule that reads only those outcomes
can do better at k = 3 than the Bayes-optimal one. That rule knows the distribution of
objects it will meet and, for each object and grip, the chance of each outcome. It picks
its grips for k = 0, 1 and 2 for what they will tell it, and its k = 3 grip for the best
chance of a lift given the three outcomes. This script computes that rule exactly, by
dynamic programming over the 16 grips x 4 outcomes of each episode, on the outcome tables
of ``grip_gradient.py table`` (per object, grip and episode: lifted, crushed, raised).

Two figures per table, each for one trained network (one run's table):

* **in-sample**: the prior is the split's own objects, with their measured outcome
  chances. It is an upper bound for any outcome-reading search on those objects with
  that network, and an optimistic one: it knows the objects it is tested on, and its
  choices fit the noise of 8 episodes a cell.
* **val prior**: the rule built on a ``val`` table of the same run (a fixed draw of
  training objects) and scored on the split's table, a search a robot could run.

Beside them, per table: each object at its own best grip of the table (no search's last
episode can beat it on that table), and the grip search itself (``next_grip``, default
settings) emulated on the same table as ``grip_gradient.py choose`` does.

``--judge sim`` reads outcomes by the sim's flags, what an operator answers; ``--judge
device`` by the device's verdicts from the recorded observations (the tables hold both),
the search without an operator. Success is always the sim's flag, what the protocol counts.

    python benchmarks/outcome_bound.py --tables test-sac-grip-s0.json.gz ... \\
        --val-tables val-sac-grip-s0.json.gz ... [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from grip_gradient import JUDGES, Emulator, _read  # noqa: E402


def outcome_chances(table: dict[str, Any], judge: str = "sim") -> np.ndarray:
    """``(outcomes, grips, objects)``: each outcome's share of the table's episodes, as
    ``judge`` reads them; the outcomes are lifted, crushed, raised then dropped, dropped.

    A crush counts as a crush whatever else happened; a lift that was not crushed as a
    lift; otherwise a raised object that ended down as ``raised, then dropped``.
    """
    s, c, up = (np.asarray(table[k], bool) for k in JUDGES[judge])
    lifted = s & ~c
    raised_drop = up & ~s & ~c
    dropped = ~up & ~s & ~c
    return np.stack([x.mean(axis=2) for x in (lifted, c, raised_drop, dropped)])


def lift_chances(table: dict[str, Any]) -> np.ndarray:
    """``(grips, objects)``: the share of episodes that succeed (the sim's flag, what the
    protocol counts, whoever judges for the search)."""
    return np.asarray(table["success"], bool).mean(axis=2)


def best_search(
    plan: tuple[np.ndarray, np.ndarray], score: tuple[np.ndarray, np.ndarray], explore: int = 3
) -> tuple[float, float, int]:
    """The Bayes-optimal search planned on ``plan`` and scored on ``score``.

    Each is ``(outcome_chances, lift_chances)`` of one table over the same grips (their
    objects may differ); each object of a table is equally likely. The search picks
    ``explore`` grips, each after the outcomes of the ones before, then one grip for the
    best chance of a lift. Where ``plan`` never sees an outcome that ``score`` does, the
    search has no grip to pick there, and those episodes count as failures.

    Returns:
        (chance of a lift in the last episode on ``plan``'s objects, the same on
        ``score``'s objects when they meet the search planned on ``plan``, the index of
        the first grip).
    """
    (obs_plan, lift_plan), (obs_score, lift_score) = plan, score
    n_out, n_grips, _ = obs_plan.shape

    def node(w_plan: np.ndarray, w_score: np.ndarray, left: int) -> tuple[float, float, int]:
        # Beliefs stay unnormalised (prior x likelihood): a node's value is then the joint
        # chance of reaching it and lifting, and the values of its children add up.
        if left == 0:
            v_plan, v_score = lift_plan @ w_plan, lift_score @ w_score
            g = int(np.argmax(v_plan))
            return float(v_plan[g]), float(v_score[g]), g
        values = np.zeros((n_grips, 2))
        for g in range(n_grips):
            for o in range(n_out):
                child_plan = w_plan * obs_plan[o, g]
                if child_plan.sum() <= 1e-12:  # the plan never sees this outcome here
                    continue
                v_plan, v_score, _ = node(child_plan, w_score * obs_score[o, g], left - 1)
                values[g] += (v_plan, v_score)
        g = int(np.argmax(values[:, 0]))
        return float(values[g, 0]), float(values[g, 1]), g

    uniform = [np.full(x[1].shape[1], 1.0 / x[1].shape[1]) for x in (plan, score)]
    return node(*uniform, explore)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tables", type=Path, nargs="+", required=True, help="the split's tables")
    p.add_argument(
        "--val-tables", type=Path, nargs="+", help="val tables of the same runs, same order"
    )
    p.add_argument("--judge", choices=sorted(JUDGES), default="sim", help="who reads outcomes")
    p.add_argument("--repeats", type=int, default=16, help="emulated searches per object")
    p.add_argument("--json", type=Path, help="write the figures here")
    args = p.parse_args(argv)
    if args.val_tables and len(args.val_tables) != len(args.tables):
        raise SystemExit("--val-tables needs one val table per table, in the same order")
    rows = []
    for i, path in enumerate(args.tables):
        table = _read(path)
        own = (outcome_chances(table, args.judge), lift_chances(table))
        grips = np.asarray(table["grips"])
        k3, _, first = best_search(own, own)
        row = {"table": str(path), "judge": args.judge, "in_sample_k3": k3}
        row["in_sample_first_grip"] = float(grips[first])
        # Beside it: each object at its own best grid grip (no search can beat it), and
        # the grip search itself on the same table, reading outcomes as the judge does.
        row["best_grip_per_object"] = float(own[1].max(axis=0).mean())
        emulated = Emulator([table]).search(args.repeats, judge=args.judge)
        row["grip_search_k3"] = float(emulated[-1])
        if args.val_tables:
            val = _read(args.val_tables[i])
            if not np.allclose(val["grips"], grips):
                raise SystemExit(f"{args.val_tables[i]} and {path} have different grips")
            planned = (outcome_chances(val, args.judge), lift_chances(val))
            on_val, on_split, first = best_search(planned, own)
            row |= {"val_prior_on_val_k3": on_val, "val_prior_k3": on_split}
            row["val_prior_first_grip"] = float(grips[first])
        rows.append(row)
        print(json.dumps(row), flush=True)
    keys = [k for k in rows[0] if k.endswith("_k3") or k == "best_grip_per_object"]
    means = {k: float(np.mean([r[k] for r in rows])) for k in keys}
    print("mean over tables:", json.dumps(means))
    if args.json:
        args.json.write_text(json.dumps({"tables": rows, "mean": means}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
