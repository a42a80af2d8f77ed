"""How a trained policy handles the fragile objects of a split: crushes, gentle grasps, grip.

Runs one episode on each fragile task of the split (all tasks in parallel, no
adaptation: the algorithm's unadapted state) and reports the fraction crushed, the
fraction grasped by both pads without a crush, the success, and the gripper action
``g`` at the moment of each crush (1 = the full 20 N; ``g <= 0`` is position control at
full current). It shows *why* a line fails on fragile objects: squeezing at full force,
or not grasping them at all.

    python benchmarks/grip_probe.py runs/sac-s0 --split test [--deterministic] [--json out.json]
    python benchmarks/grip_probe.py runs/rma-s0 --set algo.act_with=teacher  # RMA's teacher
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np


def probe(
    run: str, split: str, deterministic: bool, seed: int = 0, settings: dict | None = None
) -> dict:
    """One episode per fragile task of ``split`` with the run's policy, acting with the
    meta-test ``settings`` (``algo`` fields, e.g. ``{"act_with": "teacher"}``)."""
    from metagrasp.policies.runner import load_trained
    from metagrasp.sim.registry import family_split_tasks, make_vector_env

    algo, _, spec = load_trained(run, algo_overrides=settings or {})
    tasks = [t for t in family_split_tasks(spec.family, split) if t.fragile]
    n = len(tasks)
    env = make_vector_env(spec.family, n, split=split, seed=seed)
    try:
        env.set_tasks(tasks)
        obs, info = env.reset(seed=seed)
        task_vec = np.asarray(info["task"], np.float32)
        state = algo.init_state(n)
        alive = np.ones(n, bool)
        crushed, grasped, success = np.zeros(n, bool), np.zeros(n, bool), np.zeros(n, bool)
        g_at_crush = np.full(n, np.nan)
        for _ in range(spec.max_steps):
            actions, state = algo.act(obs, task_vec, state, deterministic=deterministic)
            obs, _, term, trunc, info = env.step(actions)
            now = np.asarray(info["crushed"]) & alive & ~crushed
            g_at_crush[now] = actions[now, 5]
            crushed |= now
            grasped |= alive & (np.asarray(info["reward_terms"]["grasp"]) > 0)
            ended = (np.asarray(term) | np.asarray(trunc)) & alive
            success[ended] = np.asarray(info["final_info"]["success"], bool)[ended]
            alive &= ~ended
            if not alive.any():
                break
    finally:
        env.close()
    return {
        "run": run,
        "split": split,
        "deterministic": deterministic,
        "settings": settings or {},
        "fragile_tasks": n,
        "crushed": float(crushed.mean()),
        "grasped_intact": float(grasped.mean()),
        "success": float(success.mean()),
        "g_at_crush_median": float(np.nanmedian(g_at_crush)) if crushed.any() else None,
        "g_at_crush": [round(float(g), 3) for g in g_at_crush[crushed]],
    }


def main() -> int:
    from metagrasp.policies.cli import parse_overrides

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", help="run directory written by `metagrasp train`")
    ap.add_argument("--split", default="test", choices=["test", "hard"])
    ap.add_argument("--deterministic", action="store_true", help="act with the mean action")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--set", action="append", default=[], help="algo.FIELD=VALUE at meta-test")
    ap.add_argument("--json", default=None, help="write the result here")
    args = ap.parse_args()
    settings = parse_overrides(args.set)["algo"]
    res = probe(args.run, args.split, args.deterministic, args.seed, settings)
    g = res["g_at_crush_median"]
    print(
        f"{args.run}{' with ' + ','.join(args.set) if args.set else ''} on the "
        f"{res['fragile_tasks']} fragile `{args.split}` tasks "
        f"({'mean' if args.deterministic else 'sampled'} actions): crushed {res['crushed']:.2f}, "
        f"grasped intact {res['grasped_intact']:.2f}, success {res['success']:.2f}, "
        f"median g at crush {'-' if g is None else f'{g:.2f}'}"
    )
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(res, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
