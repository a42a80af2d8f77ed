"""``metagrasp bench-policy``: per-call latency of a bundle, onnxruntime vs torch.

Measured in one process, one thread each (onnxruntime ``intra_op_num_threads=1``,
``torch.set_num_threads(1)``), so the two columns share the machine's state:

* ``act``: :meth:`PolicyBundle.act` from Python (input checks included) on one
  observation, against the torch module the graph was traced from (numpy in, numpy out)
  and the algorithm's own ``act(..., deterministic=True)``;
* ``adapt``: one :meth:`PolicyBundle.adapt` on ``episodes`` full-length episodes
  (critic, GAE, inner loop) against the algorithm's ``adapt`` on the same data.

The torch side needs the training run named in the bundle (``metadata["run"]["dir"]``,
or ``--run``) and torch; without them only onnxruntime is measured.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from metagrasp.adapt.runtime import PolicyBundle, load_bundle


def _times(fn: Callable[[], Any], calls: int, warmup: int) -> np.ndarray:
    for _ in range(warmup):
        fn()
    out = np.empty(calls)
    clock = time.perf_counter_ns
    for i in range(calls):
        t0 = clock()
        fn()
        out[i] = clock() - t0
    return out / 1000.0  # microseconds


def _stats(us: np.ndarray) -> dict[str, float]:
    return {
        "p50_us": float(np.percentile(us, 50)),
        "p99_us": float(np.percentile(us, 99)),
        "mean_us": float(us.mean()),
        "calls": int(us.size),
    }


def _torch_side(bundle: PolicyBundle, run: str | Path | None) -> Any:
    """(algo, plan) of the bundle's run, or None with a reason."""
    try:
        import torch
    except ImportError:
        return None, "torch is not installed"
    from metagrasp.errors import MetagraspError
    from metagrasp.policies.runner import load_trained

    info = bundle.metadata.get("run", {})
    run_dir = Path(run) if run else Path(info.get("dir", ""))
    ckpt = None if run else info.get("checkpoint")
    try:
        algo, _, _ = load_trained(run_dir, ckpt)
    except MetagraspError as exc:
        return None, f"no torch reference ({exc})"
    torch.set_num_threads(1)
    return (algo, algo.export_modules()), ""


def _episodes(bundle: PolicyBundle, k: int, rng: np.random.Generator, obs: np.ndarray) -> list:
    t, o, a = bundle.episode_length, bundle.obs_dim, bundle.act_dim
    eps = []
    for _ in range(k):
        x = (obs + 0.1 * rng.standard_normal((t + 1, o))).astype(np.float32)
        eps.append(
            {
                "obs": x[:-1],
                "next_obs": x[1:],
                "actions": rng.uniform(-1, 1, (t, a)).astype(np.float32),
                "rewards": rng.standard_normal(t).astype(np.float32),
                "dones": np.zeros(t, np.float32),
                "mask": np.ones(t, np.float32),
            }
        )
    return eps


def bench_policy(
    path: str | Path,
    run: str | Path | None = None,
    calls: int = 20000,
    adapt_calls: int = 30,
    episodes: int = 3,
    seed: int = 0,
) -> dict[str, Any]:
    """Latency figures of a bundle (see the module docstring)."""
    bundle = load_bundle(path, threads=1)
    rng = np.random.default_rng(seed)
    ref, why = _torch_side(bundle, run)
    obs = rng.standard_normal(bundle.obs_dim).astype(np.float32)
    if ref is not None:
        # A realistic observation: the normaliser's mean, so the MLP sees typical values.
        policy_module = ref[1].graph("policy").module
        obs = policy_module.norm.mean.numpy()[: bundle.obs_dim].copy()
    task = np.zeros(len(bundle.task_names), np.float32) if bundle.task_names else None
    state = bundle.init_state()
    res: dict[str, Any] = {
        "bundle": str(path),
        "algorithm": bundle.metadata["algorithm"],
        "precision": bundle.metadata.get("precision"),
        "machine": f"{platform.machine()} {platform.processor() or platform.platform()}",
        "threads": 1,
        "act": {"onnxruntime": _stats(_times(lambda: bundle.act(obs, state, task), calls, 500))},
    }
    if ref is not None:
        import torch

        algo, plan = ref
        module = plan.graph("policy").module
        extra = []
        if task is not None:
            extra.append(torch.from_numpy(task[None]))
        extra += [torch.from_numpy(v) for v in state.values()]

        def torch_module() -> np.ndarray:
            with torch.inference_mode():
                out = module(torch.from_numpy(obs[None]), *extra)
            return (out[0] if isinstance(out, tuple) else out)[0].numpy()

        a_state = algo.init_state(1)
        t_in = task[None] if task is not None else np.zeros((1, algo.spec.task_dim), np.float32)
        res["act"]["torch_module"] = _stats(_times(torch_module, calls, 500))
        res["act"]["torch_algo_act"] = _stats(
            _times(lambda: algo.act(obs[None], t_in, a_state, True), calls // 4, 200)
        )
    else:
        res["torch_missing"] = why
    if bundle.adapts:
        eps = _episodes(bundle, episodes, rng, obs)
        res["adapt"] = {
            "episodes": episodes,
            "steps_per_episode": bundle.episode_length,
            "onnxruntime": _stats(_times(lambda: bundle.adapt(state, eps), adapt_calls, 3)),
        }
        if ref is not None:
            from metagrasp.policies.collect import Episodes

            algo = ref[0]
            blocks = [
                Episodes(
                    **{k: v[None] for k, v in e.items()},
                    task=np.zeros((1, algo.spec.task_dim), np.float32),
                    success=np.zeros(1, bool),
                )
                for e in eps
            ]
            a0 = algo.init_state(1)
            res["adapt"]["torch_algo_adapt"] = _stats(
                _times(lambda: algo.adapt(a0, blocks), adapt_calls, 3)
            )
    return res


def format_bench(res: dict[str, Any]) -> str:
    """The figures as a small table."""
    lines = [
        f"{res['algorithm']} bundle {res['bundle']} ({res['precision']}), 1 thread, "
        f"{res['machine']}",
        f"{'call':8s} {'runtime':24s} {'p50 us':>10s} {'p99 us':>10s} {'calls':>7s}",
    ]
    for call in ("act", "adapt"):
        for name, st in res.get(call, {}).items():
            if isinstance(st, dict):
                lines.append(
                    f"{call:8s} {name:24s} {st['p50_us']:10.1f} {st['p99_us']:10.1f} "
                    f"{st['calls']:7d}"
                )
    if "torch_missing" in res:
        lines.append(f"(torch side not measured: {res['torch_missing']})")
    return "\n".join(lines)


def run_bench_policy(args: argparse.Namespace) -> int:
    """CLI handler of ``metagrasp bench-policy``."""
    res = bench_policy(args.bundle, args.run, args.calls, args.adapt_calls, args.episodes)
    print(format_bench(res))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1) + "\n")
    return 0
