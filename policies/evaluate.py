"""The meta-test protocol shared by every algorithm (``metagrasp eval``).

For each held-out task of a split and each evaluation seed, the algorithm runs K + 1
episodes of that task in a row, starting from its unadapted state. Episode ``k`` is run
with the state adapted on episodes ``0 .. k-1`` (the algorithm's own adaptation:
a gradient step on a context, a posterior over a latent, a hidden state...), so its
success and return are the figures "after k adaptation episodes", k = 0..K. Every
algorithm acts with its exploration policy during meta-test (a gradient-based inner
loop needs stochastic actions to adapt from), the baselines included, so all lines
are measured the same way.

Reported: mean and 95 % confidence interval over (task, seed) pairs at each k, and,
given the domain-randomisation (DR) and oracle reference runs evaluated on the same
tasks, the gap closure ``(adapted - DR) / (oracle - DR)`` of the success rate at k = 3.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from metagrasp.errors import ConfigError
from metagrasp.policies.base import EnvSpec
from metagrasp.policies.collect import Episodes, collect_episodes

GAP_K = 3
"""Number of adaptation episodes at which gap closure is reported (the headline)."""


def meta_test(
    algo: Any,
    spec: EnvSpec,
    split: str,
    episodes_per_task: int = 3,
    seeds: tuple[int, ...] = (0,),
    num_envs: int | None = None,
    workers: int | None = None,
    deterministic: bool = False,
    episode_observer: Callable[[int, Episodes], None] | None = None,
) -> dict[str, Any]:
    """Run the protocol; returns per-(seed, task, k) success and return arrays.

    Args:
        algo: a trained algorithm (the :mod:`~metagrasp.policies.base` contract).
        spec: its env spec (the task family is ``spec.family``).
        split: task split with fixed tasks: ``test`` or ``hard``.
        episodes_per_task: K, the largest number of adaptation episodes.
        seeds: evaluation seeds (env noise, policy sampling).
        num_envs: tasks evaluated in parallel (default: all tasks of the split).
        workers: env worker processes (default: all cores).
        deterministic: act with the policy's mean (no exploration noise).
        episode_observer: if set, called with ``(k, episodes)`` for every block of
            episodes the protocol collects (the tasks of one chunk, padding removed), as
            it is collected; it must not change them (``benchmarks/failure_modes.py``).
    """
    from metagrasp.sim.registry import family_split_tasks, make_vector_env

    if episodes_per_task < 0:
        raise ConfigError(f"episodes_per_task={episodes_per_task} must be >= 0")
    tasks = list(family_split_tasks(spec.family, split))
    if not tasks:
        raise ConfigError(f"split {split!r} of {spec.family!r} has no fixed tasks to meta-test on")
    n = min(num_envs or len(tasks), len(tasks))
    k_total = episodes_per_task + 1
    success = np.zeros((len(seeds), len(tasks), k_total), bool)
    returns = np.zeros((len(seeds), len(tasks), k_total))
    env = make_vector_env(spec.family, n, split=split, seed=None, workers=workers)
    try:
        for si, seed in enumerate(seeds):
            env.reset(seed=int(seed))
            for start in range(0, len(tasks), n):
                chunk = tasks[start : start + n]
                real = len(chunk)
                env.set_tasks(chunk + [chunk[-1]] * (n - real))  # pad the last chunk
                succ, ret = _adapt_in_a_row(
                    algo, env, spec, n, k_total, deterministic, episode_observer, real
                )
                success[si, start : start + real] = succ[:real]
                returns[si, start : start + real] = ret[:real]
    finally:
        env.close()
    return {
        "split": split,
        "family": spec.family,
        "episodes_per_task": episodes_per_task,
        "seeds": [int(s) for s in seeds],
        "task_ids": [getattr(t, "task_id", str(i)) for i, t in enumerate(tasks)],
        "deterministic": deterministic,
        "success": success,
        "returns": returns,
    }


def _adapt_in_a_row(
    algo: Any,
    env: Any,
    spec: EnvSpec,
    n: int,
    k_total: int,
    deterministic: bool,
    observer: Callable[[int, Episodes], None] | None = None,
    real: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``k_total`` episodes per member on the env's current tasks, adapting after each.

    Returns:
        success (n, k_total) and returns (n, k_total).
    """
    state = [algo.init_state(n)]

    def policy(obs: np.ndarray, task: np.ndarray) -> tuple[np.ndarray, dict]:
        a, state[0] = algo.act(obs, task, state[0], deterministic)
        return a, {}

    def on_step(step: dict[str, np.ndarray]) -> None:
        state[0] = algo.observe(state[0], step)

    success = np.zeros((n, k_total), bool)
    returns = np.zeros((n, k_total))
    history: list[Episodes] = []
    for k in range(k_total):
        ep = collect_episodes(env, policy, spec.max_steps, on_step)
        success[:, k], returns[:, k] = ep.success, ep.returns
        if observer is not None:
            observer(k, ep if real in (None, n) else ep.select(slice(0, real)))
        history.append(ep)
        if k + 1 < k_total:
            state[0] = algo.adapt(state[0], history)
    return success, returns


def ci95(x: np.ndarray) -> tuple[float, float]:
    """Mean and half-width of the 95 % confidence interval (normal approximation)."""
    x = np.asarray(x, float).reshape(-1)
    if x.size < 2:
        return float(x.mean()) if x.size else math.nan, math.nan
    return float(x.mean()), float(1.96 * x.std(ddof=1) / math.sqrt(x.size))


def per_k_stats(success: np.ndarray, returns: np.ndarray) -> list[dict[str, float]]:
    """Per-k mean and CI of success and return; arrays are (seeds, tasks, K + 1)."""
    rows = []
    for k in range(success.shape[2]):
        s_mean, s_ci = ci95(success[:, :, k])
        r_mean, r_ci = ci95(returns[:, :, k])
        rows.append(
            {"k": k, "success": s_mean, "success_ci95": s_ci, "return": r_mean, "return_ci95": r_ci}
        )
    return rows


def summarise(raw: dict[str, Any]) -> dict[str, Any]:
    """Per-k mean and CI of success and return over (seed, task) pairs."""
    return {
        **{k: v for k, v in raw.items() if k not in ("success", "returns")},
        "per_k": per_k_stats(raw["success"], raw["returns"]),
        "raw_success": raw["success"].astype(int).tolist(),
        "raw_return": np.round(raw["returns"], 4).tolist(),
    }


def reference_level(summary: dict[str, Any], metric: str = "success") -> float:
    """A non-adapting reference line: its mean over every k (they are i.i.d. episodes)."""
    return float(np.mean([row[metric] for row in summary["per_k"]]))


def gap_closure(
    summary: dict[str, Any], dr: dict[str, Any], oracle: dict[str, Any], metric: str = "success"
) -> float:
    """``(adapted - DR) / (oracle - DR)`` at k = :data:`GAP_K` (NaN if K < 3 or no gap)."""
    if len(summary["per_k"]) <= GAP_K:
        return math.nan
    lo, hi = reference_level(dr, metric), reference_level(oracle, metric)
    if hi - lo <= 1e-9:
        return math.nan
    return (summary["per_k"][GAP_K][metric] - lo) / (hi - lo)


def plot(summary: dict[str, Any], path: str | Path, refs: dict[str, dict] | None = None) -> None:
    """Success vs adaptation episodes k (mean, 95 % CI), with reference lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.8), dpi=120)
    ks = [r["k"] for r in summary["per_k"]]
    ys = [r["success"] for r in summary["per_k"]]
    es = [r["success_ci95"] for r in summary["per_k"]]
    ax.errorbar(ks, ys, yerr=es, marker="o", capsize=3, label=summary.get("algo", "adapted"))
    for (name, ref), style in zip((refs or {}).items(), ("--", ":", "-.", "--"), strict=False):
        ax.axhline(reference_level(ref), linestyle=style, color="grey", label=name)
    ax.set_xlabel("adaptation episodes k")
    ax.set_ylabel("success rate")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xticks(ks)
    ax.set_title(f"{summary['family']} / {summary['split']}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_results(summary: dict[str, Any], out_dir: str | Path) -> Path:
    """Write ``results.json`` (and return its path)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "results.json"
    path.write_text(json.dumps(summary, indent=1) + "\n")
    return path
