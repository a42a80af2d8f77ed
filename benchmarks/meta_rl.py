"""Meta-RL benchmark: train every algorithm, meta-test on held-out splits, one table.

For a task family and a preset, trains each algorithm (one run per seed, skipped when
the run directory already holds a finished run), runs the meta-test protocol of
``metagrasp eval`` on each split, and writes, under ``--out``:

* ``table.md`` — per algorithm and split: success and return at k = 0..K (mean and 95 %
  CI over tasks and seeds), gap closure at k = 3 against the DR and oracle runs,
  training wall-clock, env steps, and env steps until the training success first
  reaches 80 % of the oracle line's meta-test success;
* ``results.json`` — everything in the table, machine-readable (with success by object
  class and by shape);
* ``success_vs_k_<split>.png`` — success vs adaptation episodes, every algorithm plus the
  DR and oracle lines.

A line may be an algorithm evaluated with meta-test-time settings, written
``ALGO:FIELD=VALUE[,FIELD=VALUE]``: it shares the runs of ``ALGO`` (trained once) and is
evaluated with those settings, e.g. ``--oracle rma:act_with=teacher`` uses RMA's teacher
(the privileged latent) as the oracle line.

``--train-set ALGO:SECTION.FIELD=VALUE[,...]`` changes the training settings of one
algorithm only (e.g. ``sac-oracle:algo.demo_episodes=1000``); its runs are named after the
settings (``sac-oracle-demo_episodes=1000-s0``), so they never mix with default runs.

``--warm-start TARGET=SOURCE`` trains TARGET starting from the finished SOURCE run of the
same seed (``algo.init_from``, e.g. ``sac-oracle=sac``: the oracle is seeded with the DR
policy). Its runs are ``TARGET-from-SOURCE-sN``, and its training wall-clock and env
steps include the source's, since a user needs both runs to get it.

Usage::

    python benchmarks/meta_rl.py --task point-nav --preset default \
        --algos ppo ppo-oracle cavia --dr ppo --oracle ppo-oracle --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", default="grasp-lift", help="task family")
    p.add_argument("--preset", default="default", help="quick or default")
    p.add_argument("--algos", nargs="+", default=["ppo", "ppo-oracle", "cavia"])
    p.add_argument("--dr", default="ppo", help="algorithm of the DR reference line")
    p.add_argument("--oracle", default="ppo-oracle", help="algorithm of the oracle line")
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="training seeds")
    p.add_argument("--splits", nargs="+", default=["test", "hard"])
    p.add_argument("--episodes-per-task", type=int, default=3, help="K")
    p.add_argument("--eval-seeds", type=int, nargs="+", default=[0], help="meta-test seeds")
    p.add_argument("--set", action="append", default=[], help="config override for all runs")
    p.add_argument(
        "--train-set",
        action="append",
        default=[],
        metavar="ALGO:SECTION.FIELD=VALUE[,...]",
        help="training settings of one algorithm only",
    )
    p.add_argument(
        "--warm-start",
        action="append",
        default=[],
        metavar="TARGET=SOURCE",
        help="train TARGET from the finished SOURCE run of the same seed (algo.init_from)",
    )
    p.add_argument(
        "--deterministic",
        action="store_true",
        help="meta-test every line with mean actions (default: sampled, as the protocol)",
    )
    p.add_argument("--workers", type=int, default=None, help="env worker processes")
    p.add_argument("--out", default="benchmarks/results", help="output folder")
    return p.parse_args(argv)


def train(
    algo: str,
    seed: int,
    args: argparse.Namespace,
    out: Path,
    init_from: Path | None = None,
    own: list[str] | None = None,
) -> dict[str, Any]:
    """Train one run unless it is already finished; returns its progress."""
    from metagrasp.policies.cli import parse_overrides
    from metagrasp.policies.runner import Runner, load_checkpoint, resolve_config

    ckpt = out / "checkpoints" / "last.pt"
    if ckpt.exists():
        data = load_checkpoint(ckpt, algo)
        if data["progress"]["env_steps"] >= data["config"]["run"]["total_env_steps"]:
            return dict(data["progress"])
        runner = Runner({}, out, resume=True, progress_bar=False)
    else:
        overrides = parse_overrides([*args.set, *(own or [])])
        overrides["run"]["seed"] = seed
        if init_from is not None:
            overrides["algo"]["init_from"] = str(init_from.resolve())
        if args.workers is not None:
            overrides["run"]["workers"] = args.workers
        resolved = resolve_config(algo, args.task, args.preset, None, overrides)
        runner = Runner(resolved, out, progress_bar=False)
    t0 = time.monotonic()
    progress = runner.train()
    print(f"  trained {algo} seed {seed}: {time.monotonic() - t0:.0f} s", file=sys.stderr)
    return progress


def split_line(line: str) -> tuple[str, dict[str, Any]]:
    """``ALGO[:FIELD=VALUE,...]`` -> (algorithm, meta-test-time algo settings)."""
    from metagrasp.policies.cli import parse_overrides

    algo, _, rest = line.partition(":")
    items = [f"algo.{kv}" for kv in rest.split(",") if kv]
    return algo, parse_overrides(items)["algo"]


def _as_json(config: Any) -> dict[str, Any]:
    """A dataclass config, defaults included, as JSON reads it back (how caches compare)."""
    return json.loads(json.dumps(dataclasses.asdict(config), default=str))


def _acting_config(algo: Any) -> dict[str, Any]:
    """The algorithm's whole config."""
    return _as_json(algo.config)


ADDED_FIELDS: dict[str, Any] = {"keep_raised": 0, "raised_nudge": 1.0}
"""Acting-config fields added after evaluations were cached, with the value the code
before them acted as: a cache without the field matches only a config at that value."""


def _same_config(cached: dict[str, Any] | None, algo: Any) -> bool:
    """Whether a cached evaluation's config is ``algo``'s acting one (see
    :data:`ADDED_FIELDS` for caches older than a field)."""
    now = _acting_config(algo)
    if cached is None or set(cached) - set(now):
        return False  # (a field since removed: the code that wrote the cache is gone)
    missing = object()
    return all(cached.get(k, ADDED_FIELDS.get(k, missing)) == v for k, v in now.items())


def _device_judge() -> dict[str, Any]:
    """The device's judging thresholds (``sac-grip`` lines with ``judge=device`` use them)."""
    from metagrasp.adapt.reward import RewardConfig

    return _as_json(RewardConfig())


def evaluate(run: Path, split: str, args: argparse.Namespace, line: str = "") -> dict[str, Any]:
    """The meta-test protocol on one run (cached in RUN/eval-SPLIT[-SETTINGS]/results.json)."""
    from metagrasp.grip_search import SEARCH_VERSION
    from metagrasp.policies.evaluate import meta_test, summarise, write_results
    from metagrasp.policies.runner import load_trained
    from metagrasp.sim.objects import FAMILY_VERSION

    _, settings = split_line(line)
    suffix = "".join(f"-{k}={v}" for k, v in sorted(settings.items()))
    suffix += "-deterministic" if args.deterministic else ""
    cache = run / f"eval-{split}{suffix}" / "results.json"
    algo, resolved, spec = load_trained(run, None, settings)
    if cache.exists():
        cached = json.loads(cache.read_text())
        # The settings in the folder name are only those given; a default that changed
        # since (e.g. sac-grip's squeeze_guard) would make the cache stale, so the whole
        # acting config must match, and so must the family's physics (FAMILY_VERSION),
        # the grip search's rules (SEARCH_VERSION) and the device's judging thresholds.
        # Caches written before one of them was stored are redone.
        if (
            cached["episodes_per_task"] == args.episodes_per_task
            and cached["seeds"] == list(args.eval_seeds)
            and _same_config(cached.get("algo_config"), algo)
            and cached.get("family_version") == FAMILY_VERSION
            and cached.get("search_version") == SEARCH_VERSION
            and cached.get("device_judge") == _device_judge()
        ):
            return cached
    raw = meta_test(
        algo,
        spec,
        split,
        args.episodes_per_task,
        tuple(args.eval_seeds),
        workers=args.workers,
        deterministic=args.deterministic,
    )
    summary = summarise(raw)
    summary["algo"], summary["run"] = line or resolved["run"]["algo"], str(run)
    summary["algo_config"] = _acting_config(algo)
    summary["family_version"] = FAMILY_VERSION
    summary["search_version"] = SEARCH_VERSION
    summary["device_judge"] = _device_judge()
    write_results(summary, cache.parent)
    return summary


def pooled(summaries: list[dict[str, Any]]) -> dict[str, Any]:
    """Pool several seeds' meta-test results: mean and CI over (seed, task) pairs."""
    from metagrasp.policies.evaluate import per_k_stats

    succ = np.concatenate([np.asarray(s["raw_success"], float) for s in summaries])
    ret = np.concatenate([np.asarray(s["raw_return"], float) for s in summaries])
    per_k = per_k_stats(succ, ret)
    family, split = summaries[0]["family"], summaries[0]["split"]
    return {"per_k": per_k, "family": family, "split": split, "raw_success": succ}


def by_object_class(
    res: dict[str, dict[str, Any]], family: str, split: str
) -> tuple[list[str], dict[str, dict[str, float]]]:
    """Success on fragile and on robust objects at k = 0 and the last k, per line.

    The crush limit is the hidden parameter that a single grip cannot serve (a grip that
    lifts a heavy robust object crushes a fragile one), so this split of the table shows
    whether a line adapts its grip at all. Empty for families without fragile objects.
    """
    from metagrasp.sim.registry import family_split_tasks

    tasks = family_split_tasks(family, split)
    if not tasks or not hasattr(tasks[0], "fragile"):
        return [], {}
    fragile = np.array([t.fragile for t in tasks])
    lines = [
        f"Success by object class on `{split}` ({int(fragile.sum())} fragile and "
        f"{int((~fragile).sum())} robust tasks):",
        "",
        "| line | fragile k=0 | fragile k=last | robust k=0 | robust k=last |",
        "|---|---:|---:|---:|---:|",
    ]
    table: dict[str, dict[str, float]] = {}
    names = ("fragile_k0", "fragile_klast", "robust_k0", "robust_klast")
    for line, r in res.items():
        succ = r["raw_success"]  # (seeds, tasks, k)
        cells = [succ[:, cls][..., k].mean() for cls in (fragile, ~fragile) for k in (0, -1)]
        table[line] = {n: float(c) for n, c in zip(names, cells, strict=True)}
        lines.append(f"| {line} | " + " | ".join(f"{c:.3f}" for c in cells) + " |")
    return [*lines, ""], table


def by_shape(
    res: dict[str, dict[str, Any]], family: str, split: str
) -> tuple[list[str], dict[str, dict[str, float]]]:
    """Success per object shape (mean over k and seeds), per line.

    Where every line fails on one shape whatever its grip, the motion or the object is
    at fault, not the adaptation (family version 3 came from this: no line lifted the
    toppled ``mesh_1``). Empty for families without shapes.
    """
    from metagrasp.sim.registry import family_split_tasks

    tasks = family_split_tasks(family, split)
    if not tasks or not hasattr(tasks[0], "shape"):
        return [], {}
    shapes = sorted({t.shape for t in tasks})
    names = list(res)
    lines = [
        f"Success by shape on `{split}` (mean over k and seeds; tasks of each shape):",
        "",
        "| shape | tasks | " + " | ".join(names) + " |",
        "|---|---:" + "|---:" * len(names) + "|",
    ]
    table: dict[str, dict[str, float]] = {a: {} for a in names}
    for shape in shapes:
        mask = np.array([t.shape == shape for t in tasks])
        for a in names:
            table[a][shape] = float(np.asarray(res[a]["raw_success"])[:, mask].mean())
        cells = " | ".join(f"{table[a][shape]:.2f}" for a in names)
        lines.append(f"| {shape} | {int(mask.sum())} | {cells} |")
    return [*lines, ""], table


def steps_to_fraction(run_dirs: list[Path], level: float, offset: float = 0.0) -> float:
    """Env steps until the training success (10-row moving average) first reaches level
    (plus ``offset``, the steps of a warm start's source run)."""
    found = []
    for run in run_dirs:
        rows = list(csv.DictReader((run / "metrics.csv").open()))
        succ = np.array([float(r["success"]) for r in rows])
        steps = np.array([float(r["env_steps"]) for r in rows])
        smooth = np.convolve(succ, np.ones(10) / 10, mode="full")[: len(succ)]
        hit = np.nonzero(smooth >= level)[0]
        found.append(steps[hit[0]] + offset if hit.size else np.nan)
    return float(np.nanmean(found)) if not np.all(np.isnan(found)) else float("nan")


def warm_starts(items: list[str], algos: list[str]) -> dict[str, str]:
    """``TARGET=SOURCE`` items -> {target: source}, both among the trained algorithms."""
    warm: dict[str, str] = {}
    for item in items:
        target, sep, source = item.partition("=")
        if not sep or target not in algos or source not in algos or target == source:
            raise SystemExit(
                f"--warm-start {item!r}: expected TARGET=SOURCE, two different algorithms "
                f"of this benchmark ({', '.join(algos)})"
            )
        warm[target] = source
    if set(warm) & set(warm.values()):
        raise SystemExit("--warm-start: a warm-started algorithm cannot be a source too")
    return warm


def train_settings(items: list[str], algos: list[str]) -> dict[str, list[str]]:
    """``ALGO:SECTION.FIELD=VALUE[,...]`` items -> {algo: ["SECTION.FIELD=VALUE", ...]}."""
    from metagrasp.errors import ConfigError
    from metagrasp.policies.cli import parse_overrides

    own: dict[str, list[str]] = {}
    for item in items:
        algo, sep, rest = item.partition(":")
        settings = [kv for kv in rest.split(",") if kv]
        if not sep or algo not in algos or not settings:
            raise SystemExit(
                f"--train-set {item!r}: expected ALGO:SECTION.FIELD=VALUE[,...] with ALGO one "
                f"of this benchmark's algorithms ({', '.join(algos)})"
            )
        try:  # malformed items are refused now, not after hours of other trainings
            parse_overrides(settings)
        except ConfigError as exc:
            raise SystemExit(f"--train-set {item!r}: {exc}") from exc
        own.setdefault(algo, []).extend(settings)
    return own


def run_name(algo: str, settings: list[str], source: str | None) -> str:
    """Run folder stem: the algorithm, its own training settings, its warm-start source."""
    name = algo + "".join(f"-{kv.partition('.')[2]}" for kv in settings)
    return f"{name}-from-{source}" if source else name


def main(argv: list[str] | None = None) -> int:
    from metagrasp.policies.evaluate import GAP_K, reference_level

    args = parse_args(argv)
    out = Path(args.out) / f"{args.task}-{args.preset}"
    out.mkdir(parents=True, exist_ok=True)
    algos = list(dict.fromkeys([*args.algos, args.dr, args.oracle]))
    trained = [split_line(a)[0] for a in algos]
    warm = warm_starts(args.warm_start, trained)
    own = train_settings(args.train_set, trained)
    # Sources train first, so their finished runs exist when a warm-started run begins.
    order = sorted(algos, key=lambda line: split_line(line)[0] in warm)
    runs: dict[str, list[Path]] = {}
    progress: dict[str, list[dict[str, Any]]] = {}
    offset: dict[str, float] = {}
    for line in order:
        algo = split_line(line)[0]
        source = warm.get(algo)
        names = {a: run_name(a, own.get(a, []), warm.get(a)) for a in (algo, source) if a}
        runs[line] = [out / "runs" / f"{names[algo]}-s{s}" for s in args.seeds]
        src_runs = [out / "runs" / f"{names[source]}-s{s}" for s in args.seeds] if source else None
        progs = [
            train(algo, s, args, d, src_runs[i] if src_runs else None, own.get(algo))
            for i, (s, d) in enumerate(zip(args.seeds, runs[line], strict=True))
        ]
        if source:  # the user ran both: count both
            src_progs = progress[next(a for a in order if split_line(a)[0] == source)]
            offset[line] = float(np.mean([p["env_steps"] for p in src_progs]))
            progs = [
                {k: p[k] + q[k] for k in ("wall_s", "env_steps")}
                for p, q in zip(progs, src_progs, strict=True)
            ]
        progress[line] = progs
    wall = {a: float(np.mean([p["wall_s"] for p in progress[a]])) for a in algos}
    steps = {a: float(np.mean([p["env_steps"] for p in progress[a]])) for a in algos}
    report: dict[str, Any] = {"task": args.task, "preset": args.preset, "splits": {}}
    lines = [f"# {args.task}, preset {args.preset}, training seeds {args.seeds}", ""]
    for split in args.splits:
        res = {a: pooled([evaluate(r, split, args, a) for r in runs[a]]) for a in algos}
        dr, oracle = res[args.dr], res[args.oracle]
        lo, hi = reference_level(dr), reference_level(oracle)
        # "Steps to 80 % of the oracle": the first training step at which an algorithm's
        # (smoothed) training success reaches 80 % of the oracle's meta-test success here.
        oracle_train = hi
        k_cols = [f"k={k}" for k in range(args.episodes_per_task + 1)]
        lines += [
            f"## split `{split}` (DR line {lo:.3f}, oracle line {hi:.3f})",
            "",
            "| algorithm | "
            + " | ".join(f"success {c}" for c in k_cols)
            + " | return k=0 | return k=last | gap closure k=3 (success) | gap closure k=3 (return)"
            " | train wall-clock | env steps"
            " | steps to 80% oracle |",
            "|---" * (len(k_cols) + 8) + "|",
        ]
        report["splits"][split] = {}
        for a in algos:
            pk = res[a]["per_k"]
            gap = (
                (pk[GAP_K]["success"] - lo) / (hi - lo)
                if len(pk) > GAP_K and hi - lo > 1e-9
                else float("nan")
            )
            r_lo, r_hi = reference_level(dr, "return"), reference_level(oracle, "return")
            gap_r = (
                (pk[GAP_K]["return"] - r_lo) / (r_hi - r_lo)
                if len(pk) > GAP_K and abs(r_hi - r_lo) > 1e-9
                else float("nan")
            )
            s80 = (
                steps_to_fraction(runs[a], 0.8 * oracle_train, offset.get(a, 0.0))
                if oracle_train > 0
                else np.nan
            )
            report["splits"][split][a] = {
                "per_k": pk,
                "gap_closure_k3": gap,
                "gap_closure_k3_return": gap_r,
                "train_wall_s": wall[a],
                "env_steps": steps[a],
                "steps_to_80pct_oracle": s80,
                "runs": [str(r) for r in runs[a]],
            }
            cells = [f"{r['success']:.3f} ± {r['success_ci95']:.3f}" for r in pk]
            lines.append(
                f"| {a} | "
                + " | ".join(cells)
                + f" | {pk[0]['return']:.2f} | {pk[-1]['return']:.2f} | {gap:.2f} | {gap_r:.2f}"
                f" | {wall[a] / 60:.1f} min | {steps[a]:,.0f} | {s80:,.0f} |"
            )
        lines.append("")
        class_lines, by_class = by_object_class(res, args.task, split)
        lines += class_lines
        for a, cells in by_class.items():
            report["splits"][split][a]["success_by_class"] = cells
        shape_lines, per_shape = by_shape(res, args.task, split)
        lines += shape_lines
        for a, cells in per_shape.items():
            report["splits"][split][a]["success_by_shape"] = cells
        _plot(res, split, args, out / f"success_vs_k_{split}.png", lo, hi)
    (out / "table.md").write_text("\n".join(lines) + "\n")
    (out / "results.json").write_text(json.dumps(report, indent=1) + "\n")
    print("\n".join(lines))
    print(f"wrote {out / 'table.md'}")
    return 0


def _plot(res: dict, split: str, args: argparse.Namespace, path: Path, lo: float, hi: float):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for a, r in res.items():
        if a in (args.dr, args.oracle):
            continue
        ks = [row["k"] for row in r["per_k"]]
        ax.errorbar(
            ks,
            [row["success"] for row in r["per_k"]],
            yerr=[row["success_ci95"] for row in r["per_k"]],
            marker="o",
            capsize=3,
            label=a,
        )
    ax.axhline(lo, ls="--", color="grey", label=f"DR ({args.dr})")
    ax.axhline(hi, ls=":", color="black", label=f"oracle ({args.oracle})")
    ax.set(xlabel="adaptation episodes k", ylabel="success rate", ylim=(-0.02, 1.02))
    ax.set_title(f"{args.task} / {split}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
