"""Episode collection throughput: local sampler vs 1 and 2 Ray rollout workers, one run.

Measures env samples (control steps) per second of the whole collection path an
algorithm uses (``Sampler.sample``: weights out with ``ray.put``, episodes stepped and
the policy run in the workers, results back and concatenated), for

* the local sampler (the vector env of this machine, ``--local-workers`` processes),
* a :class:`~metagrasp.policies.ray_sampler.RaySampler` with 1 worker and with 2
  workers (``--ray-workers``) on a local Ray instance started by this script,

and the learner's side of an iteration for docs/SCALING.md: the algorithm's update time
on one iteration's episodes, and the pickled size and ``ray.put`` time of the rollout.
Target (issue #8): 2 Ray workers >= 1.7x one worker. Run it on an otherwise idle machine
with at least as many cores as the largest worker count.

Usage::

    python benchmarks/ray_scaling.py --task grasp-lift --num-envs 32 --blocks 4 \\
        --repeats 3 --json ray_scaling.json
"""

from __future__ import annotations

import argparse
import json
import pickle
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from provenance import git_commit, utc_now


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--algo", default="ppo", help="algorithm whose policy collects")
    p.add_argument("--task", default="grasp-lift", help="task family")
    p.add_argument("--num-envs", type=int, default=32, help="members (all workers together)")
    p.add_argument("--blocks", type=int, default=4, help="timed episode blocks per repeat")
    p.add_argument("--repeats", type=int, default=3, help="repeats (the median is reported)")
    p.add_argument("--ray-workers", type=int, nargs="+", default=[1, 2], help="Ray worker counts")
    p.add_argument(
        "--local-workers",
        type=int,
        default=None,
        help="env processes of the local sampler (default: all cores)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of envs and networks")
    p.add_argument(
        "--set",
        action="append",
        metavar="algo.FIELD=VALUE",
        help="algorithm setting, e.g. algo.warmup_steps=0 (SAC updates from the start)",
    )
    p.add_argument("--json", default=None, help="write the results to this JSON file")
    return p.parse_args(argv)


def _rate(sampler: Any, rollout: Any, max_steps: int, blocks: int, repeats: int) -> dict:
    """Median samples/s over ``repeats`` timed calls of ``blocks`` blocks (after one
    untimed warm-up block: worker start-up, first pickles, caches)."""
    sampler.sample(rollout, max_steps)
    rates, steps = [], 0
    for _ in range(repeats):
        t0 = time.perf_counter()
        eps = sampler.sample(rollout, max_steps, blocks)
        wall = time.perf_counter() - t0
        steps = sum(e.env_steps for e in eps)
        rates.append(steps / wall)
    return {
        "samples_per_s": statistics.median(rates),
        "samples_per_s_all": rates,
        "env_steps_per_call": steps,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import ray
    import torch

    from metagrasp.policies.device import place_learner
    from metagrasp.policies.ray_sampler import RaySampler
    from metagrasp.policies.runner import build_algorithm, resolve_config
    from metagrasp.policies.sampler import LocalSampler, Rollout
    from metagrasp.sim import make_vector_env
    from metagrasp.sim.bench import machine_info

    torch.set_num_threads(1)  # as the runner: the cores go to the env workers
    from metagrasp.policies.cli import parse_overrides

    overrides = parse_overrides(args.set)
    overrides["run"]["num_envs"] = args.num_envs
    resolved = resolve_config(args.algo, args.task, "default", overrides=overrides)
    resolved["run"]["seed"] = args.seed
    local = LocalSampler(
        make_vector_env(args.task, args.num_envs, seed=args.seed, workers=args.local_workers)
    )
    spec = local.env_spec(args.task)
    algo = build_algorithm(resolved, spec)
    # --set run.device=cuda measures a GPU learner's u (docs/SCALING.md), as the runner places it.
    device = place_learner(algo, resolved["run"]["device"])

    # The algorithm's own rollout (for PPO: the exploring Gaussian policy), found by
    # training through a sampler that records what it is asked to collect and how long
    # collecting takes: the rest of an iteration is the learner's update.
    class _Spy(LocalSampler):
        rollouts: list[Rollout] = []
        collect_s = 0.0

        def sample(self, rollout: Rollout, max_steps: int, episodes: int = 1) -> list:
            self.rollouts.append(rollout)
            t0 = time.perf_counter()
            try:
                return super().sample(rollout, max_steps, episodes)
            finally:
                self.collect_s += time.perf_counter() - t0

    spy = _Spy(local.env)
    update_s, iteration_steps = [], 0.0
    for i in range(args.repeats + 1):  # the first iteration warms up (not counted)
        spy.collect_s = 0.0
        t0 = time.perf_counter()
        iteration_steps = algo.train_iteration(spy)["env_steps"]
        if i:
            update_s.append(time.perf_counter() - t0 - spy.collect_s)
    rollout = spy.rollouts[-1]
    results: dict[str, Any] = {
        "benchmark": "ray_scaling",
        "command": " ".join([Path(sys.argv[0]).name, *(argv or sys.argv[1:])]),
        "date": utc_now(),
        "commit": git_commit(),
        "machine": machine_info(),
        "ray": ray.__version__,
        "config": vars(args),
        "max_steps": spec.max_steps,
        "learner": {
            "algo": args.algo,
            "device": str(device),
            "iteration_env_steps": iteration_steps,
            "update_s_median": statistics.median(update_s),
            "update_s_all": update_s,
            "note": "update = train_iteration wall time minus its time in Sampler.sample",
            "rollout_pickle_bytes": len(pickle.dumps(rollout)),
        },
    }

    rows = [
        {
            "sampler": "local",
            "workers": local.env.num_workers,
            **_rate(local, rollout, spec.max_steps, args.blocks, args.repeats),
        }
    ]
    local.close()
    print(f"local ({rows[0]['workers']} env processes): {rows[0]['samples_per_s']:,.0f} samples/s")

    ray.init(num_cpus=max(args.ray_workers), include_dashboard=False, log_to_driver=False)
    try:
        t0 = time.perf_counter()
        for _ in range(10):
            ray.put(rollout)
        results["learner"]["ray_put_s"] = (time.perf_counter() - t0) / 10
        for w in args.ray_workers:
            t0 = time.perf_counter()
            sampler = RaySampler(args.task, args.num_envs, seed=args.seed, workers=w)
            start_s = time.perf_counter() - t0
            try:
                row = {"sampler": "ray", "workers": w, "startup_s": start_s}
                row.update(_rate(sampler, rollout, spec.max_steps, args.blocks, args.repeats))
            finally:
                sampler.close()
            rows.append(row)
            print(f"ray ({w} workers): {row['samples_per_s']:,.0f} samples/s")
    finally:
        ray.shutdown()

    results["results"] = rows
    by_w = {r["workers"]: r["samples_per_s"] for r in rows if r["sampler"] == "ray"}
    if 1 in by_w and 2 in by_w:
        ratio = by_w[2] / by_w[1]
        results["ray_2_vs_1"] = ratio
        results["target_2_vs_1"] = 1.7
        results["target_met"] = ratio >= 1.7
        print(f"2 workers / 1 worker: {ratio:.2f}x (target >= 1.7x)")
    learner = results["learner"]
    print(
        f"learner ({learner['device']}) update {learner['update_s_median']:.3f} s per iteration of "
        f"{learner['iteration_env_steps']:,.0f} samples; rollout "
        f"{learner['rollout_pickle_bytes']:,} bytes, ray.put {learner['ray_put_s'] * 1e3:.2f} ms"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
        print(f"wrote {args.json}")
    return 0


# The guard matters: the local vector env's workers are spawned and re-import __main__.
if __name__ == "__main__":
    sys.exit(main())
