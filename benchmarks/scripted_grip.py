"""How much the hidden parameters are worth: a scripted grasp with the right grip vs any one grip.

The scripted grasp (:class:`~metagrasp.sim.scripted.ScriptedGrasp`) solves the motion. Run
on every fixed task of a split, it squeezes either

* with a **privileged grip** chosen from the hidden parameters
  (:func:`~metagrasp.sim.scripted.privileged_grip`: the geometric mean of the grip force
  the object needs and its crush limit, divided by the hidden actuator gain), or
* with **one fixed grip** for every object, for each level of a grid; the best level is the
  best a policy that cannot tell objects apart does with this motion.

The difference is the success that adapting the grip to the object can add: what the
task family demands of adaptation, and an upper reference for the oracle line. Fragile
and robust objects are reported apart, since one grip cannot serve both.

A third kind of rule knows **every hidden parameter but the crush limit** (the force
that lifts the object and the actuator gain) and squeezes at a multiple of that force:
the most a reward-free estimator can know if crushing leaves no trace in what the robot
observes, as in this family (an RMA-style history encoder, issue #9). The best multiple
is its upper reference.

Two rules **adapt** without the hidden parameters, the way few-shot calibration must:
k = 0..3 episodes on the same object, each grip chosen from the outcomes of the ones
before (:func:`next_grip`: a bisection on the log of the force, down after a crush, up
after a drop), and the same search with a prior learned from training objects
(:func:`next_grip_prior`: the grip most likely to lie inside the object's window, given
the outcomes). Their success at k = 3 against the two others is the gap closure that
adapting the grip alone can reach with this motion. The bisection runs twice: on the
sim's flags (what an operator answers) and on the device's own judgement of each
recorded episode (:class:`~metagrasp.adapt.reward.DeviceReward` with
``detect_collapse``: lifted from the recorded observations, crushed from the object giving
way), the search as it runs on a robot with neither reward nor operator.

``--split val`` runs the same lines on the 48 objects of the ``val`` split, a fixed draw
from the training distribution (``--split train`` is the same draw, its name before the
split existed): where a search rule or the device's thresholds are chosen, before
``test`` and ``hard`` are looked at.

    python benchmarks/scripted_grip.py --split test --seeds 0 1 --json out.json
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from collections.abc import Callable
from typing import Any

import numpy as np

from metagrasp.adapt.reward import DeviceReward, RewardConfig
from metagrasp.grip_search import next_grip as search_grip
from metagrasp.grip_search import next_grip_prior as search_grip_prior
from metagrasp.sim.registry import family_split_tasks, make_env
from metagrasp.sim.scripted import (
    BEST_FIXED_GRIP_N,
    GRIP_FORCE_MIN,
    ScriptedGrasp,
    privileged_grip,
    record_episode,
    run_episode,
    training_grip_windows,
)
from metagrasp.sim.tasks import GRIP_FORCE_MAX

FIXED_GRIPS_N = (1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0, 20.0)
"""The grid of single grip levels per pad (N)."""
LIFT_MARGINS = (1.0, 1.5, 2.0, 3.0, 4.0)
"""Multiples of the lifting force of the rules blind to the crush limit."""
ADAPT_K = 3
"""Calibration episodes of the adaptive rule (success is reported at k = 0..ADAPT_K)."""


def split_tasks(split: str) -> tuple[Any, ...]:
    """The split's fixed tasks; ``train`` names the ``val`` draw (see the module doc)."""
    return family_split_tasks("grasp-lift", "val" if split == "train" else split)


def _fixed(grip: float, task: Any) -> float:
    return grip


def _lift_only(margin: float, task: Any) -> float:
    """``margin`` times the force that lifts the object, after the actuator gain: the
    privileged grip without the crush limit."""
    want = margin * task.required_grip_force() / task.actuator_gain
    return float(np.clip(want, GRIP_FORCE_MIN, GRIP_FORCE_MAX))


def _prior_rule(windows: np.ndarray) -> Callable[[list], float]:
    """:func:`metagrasp.grip_search.next_grip_prior` with the training objects' windows."""

    def rule(outcomes: list[tuple[float, bool, bool]]) -> float:
        return search_grip_prior(
            outcomes, windows, BEST_FIXED_GRIP_N, GRIP_FORCE_MIN, GRIP_FORCE_MAX
        )

    return rule


def next_grip(outcomes: list[tuple[float, bool, bool]]) -> float:
    """The adaptive rule's grip (N) after ``outcomes`` = [(grip, success, crushed), ...]:
    :func:`metagrasp.grip_search.next_grip` from the best single grip, in the gripper's
    0.5-20 N (``sac-grip`` adapts with the same rule)."""
    return search_grip(outcomes, BEST_FIXED_GRIP_N, GRIP_FORCE_MIN, GRIP_FORCE_MAX)


def measure(split: str, seeds: tuple[int, ...], max_tasks: int = 0) -> dict:
    """Success of each grip rule on every (task, seed) pair, overall and per object class
    (the first ``max_tasks`` tasks of the split if > 0: a smoke check)."""
    tasks = split_tasks(split)
    tasks = tasks[:max_tasks] if max_tasks > 0 else tasks
    fragile = np.array([t.fragile for t in tasks])
    env = make_env("grasp-lift", split=split)  # every episode passes its task
    rules: dict[str, Callable[[Any], float]] = {
        "privileged": privileged_grip,
        **{f"fixed {g:g} N": functools.partial(_fixed, g) for g in FIXED_GRIPS_N},
        **{f"lift x{m:g}": functools.partial(_lift_only, m) for m in LIFT_MARGINS},
    }
    success = {name: np.zeros((len(seeds), len(tasks)), bool) for name in rules}
    crushed = {name: np.zeros((len(seeds), len(tasks)), bool) for name in rules}
    adaptive = np.zeros((ADAPT_K + 1, len(seeds), len(tasks)), bool)
    adaptive_prior = np.zeros_like(adaptive)
    adaptive_device = np.zeros_like(adaptive)
    windows = training_grip_windows()
    device = DeviceReward(RewardConfig(detect_collapse=True))

    def episode(task, force: float, seed: int) -> tuple[bool, bool]:
        policy = ScriptedGrasp(task, grip_force=force, config=env.unwrapped.config)
        res = run_episode(env, policy, seed=seed, options={"task": task})
        return res["success"], res["crushed"]

    def judged(task, force: float, seed: int) -> tuple[bool, bool, bool]:
        """(the sim's success, the device's lifted, the device's crushed)."""
        config = env.unwrapped.config
        ep, info = record_episode(
            env,
            lambda: ScriptedGrasp(task, grip_force=force, config=config),
            seed=seed,
            options={"task": task},
        )
        out = device.episode(ep["obs"], ep["actions"], ep["next_obs"])
        return bool(info["success"]), out.success and not out.crushed, out.crushed

    try:
        for si, seed in enumerate(seeds):
            for ti, task in enumerate(tasks):
                for name, rule in rules.items():
                    success[name][si, ti], crushed[name][si, ti] = episode(task, rule(task), seed)
                for rule, out in ((next_grip, adaptive), (_prior_rule(windows), adaptive_prior)):
                    outcomes: list[tuple[float, bool, bool]] = []
                    for k in range(ADAPT_K + 1):  # episode k follows k calibration episodes
                        force = rule(outcomes)
                        ok, crush = episode(task, force, 1000 * (seed + 1) + k)
                        out[k, si, ti] = ok
                        outcomes.append((force, ok, crush))
                outcomes = []
                for k in range(ADAPT_K + 1):
                    force = next_grip(outcomes)
                    ok, lifted, crush = judged(task, force, 1000 * (seed + 1) + k)
                    adaptive_device[k, si, ti] = ok
                    outcomes.append((force, lifted, crush))
    finally:
        env.close()

    def cells(name: str) -> dict[str, float]:
        s, c = success[name], crushed[name]
        return {
            "success": float(s.mean()),
            "success_fragile": float(s[:, fragile].mean()),
            "success_robust": float(s[:, ~fragile].mean()),
            "crushed_fragile": float(c[:, fragile].mean()),
        }

    table = {name: cells(name) for name in rules}
    best_fixed = max((n for n in rules if n.startswith("fixed")), key=lambda n: table[n]["success"])
    best_lift = max((n for n in rules if n.startswith("lift")), key=lambda n: table[n]["success"])
    span = table["privileged"]["success"] - table[best_fixed]["success"]

    def adapt_cells(runs: np.ndarray) -> dict[str, Any]:
        return {
            "success": [float(a.mean()) for a in runs],
            "success_fragile": [float(a[:, fragile].mean()) for a in runs],
            "success_robust": [float(a[:, ~fragile].mean()) for a in runs],
            "gap_closure_k3": float((runs[ADAPT_K].mean() - table[best_fixed]["success"]) / span)
            if span > 0
            else float("nan"),
        }

    adapt, adapt_prior = adapt_cells(adaptive), adapt_cells(adaptive_prior)
    return {
        "adaptive": adapt,
        "adaptive_prior": adapt_prior,
        "adaptive_device": adapt_cells(adaptive_device),
        "split": split,
        "seeds": list(seeds),
        "tasks": len(tasks),
        "fragile_tasks": int(fragile.sum()),
        "rules": table,
        "best_fixed": best_fixed,
        "best_lift_only": best_lift,
        "lift_only_gap_closure": float(
            (table[best_lift]["success"] - table[best_fixed]["success"]) / span
        )
        if span > 0
        else float("nan"),
        "gap_points": 100 * (table["privileged"]["success"] - table[best_fixed]["success"]),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--split", default="test", choices=["train", "val", "test", "hard"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="episode seeds")
    ap.add_argument("--tasks", type=int, default=0, help="only the first N tasks (0: all)")
    ap.add_argument("--json", default=None, help="write the result here")
    args = ap.parse_args()
    res = measure(args.split, tuple(args.seeds), args.tasks)
    print(
        f"{args.split}: {res['tasks']} tasks ({res['fragile_tasks']} fragile) x "
        f"{len(res['seeds'])} seeds, scripted grasp"
    )
    print("grip rule        success  fragile  robust  fragile crushed")
    for name, c in res["rules"].items():
        mark = "  <- best fixed" if name == res["best_fixed"] else ""
        mark = "  <- best blind to crushing" if name == res["best_lift_only"] else mark
        print(
            f"{name:15s}  {c['success']:.3f}    {c['success_fragile']:.3f}    "
            f"{c['success_robust']:.3f}   {c['crushed_fragile']:.3f}{mark}"
        )
    print(f"privileged - best fixed: {res['gap_points']:+.1f} points")
    print(
        f"blind to the crush limit, best {res['best_lift_only']}: gap closure "
        f"{res['lift_only_gap_closure']:.2f}"
    )
    for key, label in (
        ("adaptive", "adaptive"),
        ("adaptive_prior", "adaptive, prior"),
        ("adaptive_device", "adaptive, device judges"),
    ):
        a = res[key]
        print(
            f"{label} (k = 0..3): "
            + " / ".join(f"{x:.3f}" for x in a["success"])
            + "; fragile "
            + " / ".join(f"{x:.3f}" for x in a["success_fragile"])
            + f"; gap closure at k = 3: {a['gap_closure_k3']:.2f}"
        )
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(res, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
