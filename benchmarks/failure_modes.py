"""How a grasp line's meta-test episodes end: success, or which failure.

Runs the meta-test protocol (:func:`metagrasp.policies.evaluate.meta_test`, the episodes
``metagrasp eval`` runs, same seeds) on one or more training runs of a line and sorts
every episode into one outcome, in this order of precedence:

* ``success`` -- the env's success flag at the last step;
* ``crushed`` -- the object was crushed (the env's flag);
* ``released while held`` -- the object rose to the lift height, then, while it was still
  up and the fingers still held it (the squeeze guard's proxy: load >= 3 %, opening >=
  6 mm), the policy sent an opening command (a gripper value ``g <= 0`` whose position
  target is wider than the fingers). With sampled actions one step of noise does it;
* ``slipped out`` -- lifted, then lost without such a release (an opening command after
  the fingers had already closed on nothing is a regrasp, not the cause);
* ``raised, not lifted`` -- the object rose at least 1 cm, never to the lift height;
* ``never raised`` -- the grasp never picked it up.

It tells what a line's failures are made of, e.g. whether sampling noise (releases) or the
grip (crushes, slips) limits an oracle line. Beside the shares it reports, per outcome of
the lifted episodes, the median *carry jitter*: the mean absolute change per step of the
arm's actions (every action but the gripper) from the first step at the lift height until
the object is back below half of it, or the episode's end (:func:`carry_jitter`).

    python benchmarks/failure_modes.py RUN [RUN ...] --split test --seeds 0 1 \\
        [--episodes-per-task K] [--set algo.act_with=oracle] [--deterministic] \\
        [--label NAME] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import numpy as np
from provenance import stamp

from metagrasp.actions import OBS_NAMES, ActionMapConfig
from metagrasp.policies.collect import Episodes

MODES = (
    "success",
    "crushed",
    "released while held",
    "slipped out",
    "raised, not lifted",
    "never raised",
)
LIFT_M = 0.05
"""Lift height (m) of grasp-lift's success (``sim.grasp_env.LIFT_HEIGHT``)."""
RAISED_M = 0.01
"""Rise (m) above which an object counts as picked up at all (well above the 1-2 mm
of observation noise and settling)."""
_Z, _Q = OBS_NAMES.index("obj_z"), OBS_NAMES.index("q_gripper")
_LOAD, _OPENING = OBS_NAMES.index("gripper_effort"), OBS_NAMES.index("gripper_opening")


def classify(ep: Episodes, gripper: int) -> list[str]:
    """The outcome (one of :data:`MODES`) of each member of an episode block.

    Args:
        ep: episodes as the protocol collected them; ``actions`` are the env's actions.
        gripper: index of the gripper value in the action.
    """
    from metagrasp.policies.grip_search import GUARD_MIN_LOAD, GUARD_MIN_OPENING

    c = ActionMapConfig()
    out = []
    for i in range(len(ep.success)):
        n = int(ep.mask[i].sum())
        z = np.append(ep.obs[i, :n, _Z], ep.next_obs[i, n - 1, _Z])
        rise = z - z[0]
        g = ep.actions[i, :n, gripper]
        o = ep.obs[i, :n]
        opening = (g <= 0) & (c.grip_stop + (-g) * (c.grip_open - c.grip_stop) > o[:, _Q])
        held = (o[:, _LOAD] >= GUARD_MIN_LOAD) & (o[:, _OPENING] >= GUARD_MIN_OPENING)
        if ep.success[i]:
            out.append("success")
        elif ep.crushed is not None and ep.crushed[i]:
            out.append("crushed")
        elif rise.max() >= LIFT_M:
            up = int(np.flatnonzero(rise >= LIFT_M)[0])
            up_steps = rise[:n] >= LIFT_M * 0.5  # still well off the table
            released = opening[up:] & held[up:] & up_steps[up:]
            out.append("released while held" if released.any() else "slipped out")
        elif rise.max() >= RAISED_M:
            out.append("raised, not lifted")
        else:
            out.append("never raised")
    return out


def carry_jitter(ep: Episodes, gripper: int) -> np.ndarray:
    """Per member: the mean absolute change per step of the arm's actions while the object
    is carried (from the first step at :data:`LIFT_M` until it is back below half of it,
    or the end); NaN for a member that never lifted it."""
    out = np.full(len(ep.success), np.nan)
    for i in range(len(ep.success)):
        n = int(ep.mask[i].sum())
        rise = ep.obs[i, :n, _Z] - ep.obs[i, 0, _Z]
        up = np.flatnonzero(rise >= LIFT_M)
        if len(up) == 0 or up[0] >= n - 1:
            continue
        fell = np.flatnonzero(rise[up[0] :] < LIFT_M * 0.5)
        end = int(up[0] + fell[0]) if len(fell) else n - 1
        # end > up[0]: the object is still above half the lift height at the lift step.
        arm = np.delete(ep.actions[i, up[0] : end + 1], gripper, axis=-1)
        out[i] = float(np.abs(np.diff(arm, axis=0)).mean())
    return out


def measure(
    runs: list[str],
    split: str,
    seeds: list[int],
    k_max: int,
    settings: dict[str, Any],
    deterministic: bool,
) -> dict[str, Any]:
    """Outcome counts per k, and per object shape over every k, pooled over ``runs``
    (each evaluated on every seed)."""
    from metagrasp.policies.evaluate import meta_test
    from metagrasp.policies.runner import load_trained
    from metagrasp.sim.registry import family_split_tasks

    counts = [dict.fromkeys(MODES, 0) for _ in range(k_max + 1)]
    by_shape: dict[str, dict[str, int]] = {}
    jitter: dict[str, list[float]] = {m: [] for m in MODES}
    for run in runs:
        algo, _, spec = load_trained(run, algo_overrides=settings)
        gripper = spec.action_names.index("gripper")
        shapes = [t.shape for t in family_split_tasks(spec.family, split)]

        def observe(k: int, ep: Episodes, gripper: int = gripper, shapes=shapes) -> None:
            # One block holds every task of the split, in order (meta_test's default).
            assert len(ep.success) == len(shapes), "expected all tasks in one block"
            modes = classify(ep, gripper)
            for mode, shape, jit in zip(modes, shapes, carry_jitter(ep, gripper), strict=True):
                counts[k][mode] += 1
                by_shape.setdefault(shape, dict.fromkeys(MODES, 0))[mode] += 1
                if not np.isnan(jit):
                    jitter[mode].append(jit)

        meta_test(algo, spec, split, k_max, tuple(seeds), deterministic=deterministic,
                  episode_observer=observe)  # fmt: skip
        print(f"  {run}: done", file=sys.stderr, flush=True)
    carry = {m: float(np.median(v)) for m, v in jitter.items() if v}
    return {"per_k": counts, "by_shape": dict(sorted(by_shape.items())), "carry_jitter": carry}


def table(label: str, res: dict[str, Any]) -> str:
    """Markdown: the share of episodes per outcome, one row per k, then one per shape."""
    rows = [(f"k = {k}", c) for k, c in enumerate(res["per_k"])]
    rows += [(shape, c) for shape, c in res.get("by_shape", {}).items()]
    lines = [f"| {label} | episodes | " + " | ".join(MODES) + " |"]
    lines.append("|---|---:|" + "---:|" * len(MODES))
    for name, c in rows:
        n = sum(c.values())
        lines.append(f"| {name} | {n} | " + " | ".join(f"{c[m] / n:.3f}" for m in MODES) + " |")
    if res.get("carry_jitter"):
        jit = res["carry_jitter"]
        lines += ["", "| carry jitter (median arm-action change per step while lifted) | "
                  + " | ".join(jit) + " |", "|---|" + "---:|" * len(jit),
                  "| | " + " | ".join(f"{v:.3f}" for v in jit.values()) + " |"]  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from metagrasp.policies.cli import parse_overrides

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", help="training run directories of one line")
    p.add_argument("--split", default="test")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="evaluation seeds")
    p.add_argument("--episodes-per-task", type=int, default=0, help="K (adaptation episodes)")
    p.add_argument("--set", action="append", default=[], help="algo.FIELD=VALUE at meta-test")
    p.add_argument("--deterministic", action="store_true", help="act with the mean action")
    p.add_argument("--label", default="", help="the line's name in the table")
    p.add_argument("--json", default="")
    args = p.parse_args(argv)
    settings = parse_overrides(args.set)["algo"]
    res = measure(
        args.runs, args.split, args.seeds, args.episodes_per_task, settings, args.deterministic
    )
    label = args.label or ",".join(args.set) or "line"
    out = {
        **stamp(),
        "command": "python benchmarks/failure_modes.py " + " ".join(argv or sys.argv[1:]),
        "runs": args.runs,
        "split": args.split,
        "seeds": args.seeds,
        "settings": settings,
        "deterministic": args.deterministic,
        "label": label,
        "modes": list(MODES),
        **res,
    }
    print(table(label, res))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
