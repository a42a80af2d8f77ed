"""Tables, plots and REPORT.md for ``benchmarks/run_all.py``.

Each ``render_*`` function reads the JSON its section's commands wrote into the section
folder and returns the section's tables (markdown, with the command that produced each)
and writes its PNG plots beside them. ``write_report`` assembles ``REPORT.md`` from every
``section.json`` under the report folder, stamping each table with the machine, the
command, the date and the commit.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display; before pyplot is imported
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


@dataclass
class Table:
    """One table of the report."""

    title: str
    """What the table shows (a heading line)."""
    markdown: str
    """The table itself."""
    command: str
    """The exact command(s) that produced the numbers."""
    date: str
    """When that command finished (UTC)."""
    plots: list[str] = field(default_factory=list)
    """PNG files beside the table, relative to the report folder."""
    note: str = ""
    """A line under the table (references, caveats)."""


def _step(rec: dict[str, Any], name: str) -> dict[str, Any]:
    for s in rec["steps"]:
        if s["name"] == name:
            return s
    raise KeyError(f"section {rec['name']} has no step {name!r}")


def _table(rec: dict, step: str, title: str, md: list[str], plots=(), note="") -> Table:
    s = _step(rec, step)
    rel = [f"{rec['name']}/{Path(p).name}" if "/" not in str(p) else str(p) for p in plots]
    return Table(title, "\n".join(md), s["command"], s.get("finished", rec["started"]), rel, note)


def _fmt(x: Any, spec: str = ".2f") -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "—"
    return format(x, spec)


def _save(fig: Any, path: Path) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name


# --- simulation throughput --------------------------------------------------------------


def render_sim(sdir: Path, rec: dict[str, Any]) -> list[Table]:
    res = json.loads((sdir / "sim_bench.json").read_text())
    cfg, rows = res["config"], res["rows"]
    n, w, nsub = cfg["num_envs"], cfg["workers_all"], cfg["n_substeps"]
    labels = {
        "raw_mj_step": "raw `mj_step(m, d)`, 1 step/call (primary raw)",
        "raw_mj_step_nstep": f"raw `mj_step(m, d, nstep={nsub})`",
        "raw_mj_step_threads": f"raw `mj_step(nstep={nsub})`, {w} threads (hardware ceiling)",
        "env": "`GraspEnv`, 1 thread (random actions, resets included)",
        "vector_1": f"`VectorGraspEnv`, {n} envs, 1 worker process",
        "vector_all": f"`VectorGraspEnv`, {n} envs, {w} worker processes",
    }
    raw = rows["raw_mj_step"]["physics_steps_per_s"]
    md = ["| measurement | physics steps/s | vs raw |", "|---|---:|---:|"]
    names, rates = [], []
    for key, label in labels.items():
        if key in rows:
            r = rows[key]["physics_steps_per_s"]
            md.append(f"| {label} | {r:,.0f} | {r / raw:.2f} |")
            names.append(label.replace("`", ""))
            rates.append(r)
    tgt = ["| target | measured | status |", "|---|---:|---|"]
    goals = {"env_vs_raw": "single env >= 70 % of raw `mj_step`", "all_vs_one": ""}
    goals["all_vs_one"] = f"{w} cores >= 1.7x one core (vector env)"
    for key, t in res["targets"].items():
        tgt.append(f"| {goals[key]} | {t['value']:.2f} | {'met' if t['met'] else '**not met**'} |")
    fig, ax = plt.subplots(figsize=(9, 3.2))
    ax.barh(range(len(rates)), rates, color="tab:blue")
    ax.set_yticks(range(len(rates)), names, fontsize=7)
    ax.invert_yaxis()
    ax.axvline(raw, color="black", ls=":", label="raw mj_step")
    ax.set_xlabel("physics steps / s")
    ax.set_title(f"{cfg['task']}, {cfg['seconds']:g} s per measurement")
    ax.legend(fontsize=7)
    png = _save(fig, sdir / "sim_throughput.png")
    title = f"Throughput, task {cfg['task']}, {nsub} physics steps per control step"
    return [
        _table(rec, "sim_bench", title, md, [png]),
        _table(rec, "sim_bench", "Targets", tgt),
    ]


# --- meta-RL (point-nav, grasp-lift) ----------------------------------------------------


def optimal_point_nav_return(split: str) -> float:
    """Mean dense return of the straight-line policy (optimal, docs/point_nav_references.md)."""
    from metagrasp.sim.point_nav import PointNavEnv, split_tasks

    env = PointNavEnv(split=split)
    total = []
    for task in split_tasks(split):
        pos, _ = env.reset(options={"task": task})
        ret, done = 0.0, False
        while not done:
            a = np.clip((task.goal - pos.astype(np.float64)) / 0.1, -1, 1)
            pos, r, term, trunc, _ = env.step(a.astype(np.float32))
            ret, done = ret + r, term or trunc
        total.append(ret)
    return float(np.mean(total))


def render_meta_rl(sdir: Path, rec: dict[str, Any]) -> list[Table]:
    tables = []
    for step in rec["steps"]:
        path = sdir / step["name"] / "results.json"
        if not path.exists():
            raise FileNotFoundError(f"{path}: the meta_rl.py step wrote no results.json")
        res = json.loads(path.read_text())
        src = next(s for s in step.get("collected", {}) if s.endswith("results.json"))
        curves = _training_curves(Path(src).parent / "runs", res, sdir / step["name"])
        for split, lines in res["splits"].items():
            tables.append(_meta_rl_table(sdir, rec, step, res, split, lines, curves))
    return tables


def render_grasp_lift(sdir: Path, rec: dict[str, Any]) -> list[Table]:
    """The meta-test tables, then the device's verdicts against the sim's flags."""
    agreement, closure = "judge-agreement", "grasp-lift-closure"
    modes = [s["name"] for s in rec["steps"] if s["name"].startswith("failure-modes-")]
    other = {agreement, closure, *modes}
    steps = [s for s in rec["steps"] if s["name"] not in other]
    tables = render_meta_rl(sdir, {**rec, "steps": steps})
    path = sdir / closure / "closure.md"
    if any(s["name"] == closure for s in rec["steps"]) and path.exists():
        tables += _closure_tables(rec, closure, path.read_text())
    path = sdir / f"{agreement}-test.json"
    if any(s["name"] == agreement for s in rec["steps"]) and path.exists():
        tables.append(_judge_agreement_table(rec, json.loads(path.read_text())))
    for name in modes:
        path = sdir / f"{name}-test.json"
        if path.exists():
            tables.append(_failure_modes_table(rec, name, json.loads(path.read_text())))
    return tables


def _closure_tables(rec: dict[str, Any], step: str, text: str) -> list[Table]:
    """``reference_lines.py``'s ``closure.md``: one table per split, titled by its
    heading (the DR and oracle levels), the sources of the lines as the note."""
    tables, title, md, note = [], "", [], ""
    for line in [*text.splitlines(), ""]:
        if line.startswith("Lines from"):
            note = line
        elif line.startswith("## "):
            title = f"Gap closure against the oracle reference, {line[3:]}"
        elif line.startswith("|"):
            md.append(line)
        elif md:
            tables.append(_table(rec, step, title, md, note=note))
            md = []
    return tables


def _failure_modes_table(rec: dict[str, Any], step: str, res: dict[str, Any]) -> Table:
    """``failure_modes.py``: the share of a line's episodes per outcome, per k."""
    modes = res["modes"]
    rows = [(f"k = {k}", c) for k, c in enumerate(res["per_k"])]
    rows += [(shape, c) for shape, c in res.get("by_shape", {}).items()]  # every k pooled
    md = ["| k or shape | episodes | " + " | ".join(modes) + " |"]
    md.append("|---|---:|" + "---:|" * len(modes))
    for name, c in rows:
        n = sum(c.values())
        md.append(f"| {name} | {n} | " + " | ".join(f"{c[m] / n:.3f}" for m in modes) + " |")
    acting = "mean actions" if res["deterministic"] else "sampled actions"
    title = (
        f"How the `{res['label']}` line's `{res['split']}` episodes end ({acting}, "
        f"{len(res['runs'])} runs x seeds {res['seeds']})"
    )
    return _table(rec, step, title, md)


def _judge_agreement_table(rec: dict[str, Any], res: dict[str, Any]) -> Table:
    """``judge_agreement.py``: the device's verdicts against the sim's flags."""
    agreement = "judge-agreement"
    verdicts = list(res["confusion"])
    md = ["| sim \\ device | " + " | ".join(verdicts) + " |", "|---|" + "---:|" * len(verdicts)]
    for v in verdicts:
        md.append(f"| {v} | " + " | ".join(str(res["confusion"][v][d]) for d in verdicts) + " |")
    missed = ", ".join(f"{k} {m}/{n}" for k, (m, n) in res["missed_crushes_by_shape"].items())
    false = ", ".join(f"{k} {n}" for k, n in res["false_crushes_by_shape"].items()) or "none"
    note = (
        f"Crush recall {_fmt(res['crush_recall'])}. Missed / all crushes by shape: {missed}. "
        f"False crushes by shape: {false}."
    )
    title = (
        f"sac-grip's device-judged search (`judge=device`), `{res['split']}`: the device's "
        f"verdict on each of {res['judgements']} judgements vs the sim's flags"
    )
    return _table(rec, agreement, title, md, note=note)


def _meta_rl_table(sdir, rec, step, res, split, lines, curves) -> Table:
    ks = max(len(v["per_k"]) for v in lines.values())
    head = "| algorithm | " + " | ".join(f"k={k} return (success)" for k in range(ks))
    head += " | gap closure k=3 (return / success) | env steps | train wall-clock"
    head += " | steps to 80 % oracle |"
    md = [head, "|---|" + "---:|" * (ks + 4)]
    for algo, v in lines.items():
        cells = [f"{r['return']:.2f} ({r['success']:.2f})" for r in v["per_k"]]
        cells += [""] * (ks - len(cells))
        gap = f"{_fmt(v['gap_closure_k3_return'])} / {_fmt(v['gap_closure_k3'])}"
        md.append(
            f"| {algo} | " + " | ".join(cells) + f" | {gap} | {v['env_steps']:,.0f}"
            f" | {v['train_wall_s'] / 60:.1f} min | {_fmt(v['steps_to_80pct_oracle'], ',.0f')} |"
        )
    note = ""
    optimal = None
    if res["task"] == "point-nav":
        optimal = optimal_point_nav_return(split)
        empty = " |" * (ks + 3)
        md.append(f"| optimal straight line (computed, exact) | {optimal:.2f} (1.00) |{empty}")
        md.append(f"| standing still | -20.00 (0.00) |{empty}")
        note = (
            "Published figure beside ours: not available (the PEARL, MAML and ProMP papers "
            "give point-navigation results only as plots; see docs/point_nav_references.md). "
            "The computed optimum is the straight-line policy's return on this split."
        )
    png = _plot_return_vs_k(lines, sdir / step["name"] / f"return_vs_k_{split}.png", optimal)
    plots = [f"{rec['name']}/{step['name']}/{png}"]
    succ = sdir / step["name"] / f"success_vs_k_{split}.png"
    if succ.exists():
        plots.append(f"{rec['name']}/{step['name']}/{succ.name}")
    if curves:
        plots.append(f"{rec['name']}/{step['name']}/{curves}")
    title = f"{res['task']}, preset {res['preset']}, split `{split}` ({step['name']})"
    date = step.get("finished", rec["started"])
    return Table(title, "\n".join(md), step["command"], date, plots, note)


def _plot_return_vs_k(lines: dict, path: Path, optimal: float | None) -> str:
    fig, ax = plt.subplots(figsize=(6, 4))
    for algo, v in lines.items():
        ks = [r["k"] for r in v["per_k"]]
        ax.errorbar(
            ks,
            [r["return"] for r in v["per_k"]],
            yerr=[r["return_ci95"] for r in v["per_k"]],
            marker="o",
            capsize=3,
            label=algo,
        )
    if optimal is not None:
        ax.axhline(optimal, color="black", ls=":", label="optimal (computed)")
    ax.set(xlabel="adaptation episodes k", ylabel="return", title=path.stem)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _save(fig, path)


def _training_curves(runs: Path, res: dict, dest: Path) -> str:
    """Training success and return vs env steps, every seed of every algorithm."""
    # The run folders each line was trained in (meta_rl.py records them: a line with its
    # own training settings has its own folders), else the default ``ALGO-sN`` ones.
    algo_runs: dict[str, list[Path]] = {}
    for lines in res["splits"].values():
        for line, v in lines.items():
            algo = line.split(":")[0]
            found = [Path(r) for r in v["runs"]] if "runs" in v else runs.glob(f"{algo}-s*")
            algo_runs.setdefault(algo, sorted(found))
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    drawn = False
    for i, algo in enumerate(sorted(algo_runs)):
        color = f"C{i % 10}"
        for j, run in enumerate(algo_runs[algo]):
            metrics = run / "metrics.csv"
            if not metrics.exists():
                continue
            rows = list(csv.DictReader(metrics.open()))
            if not rows or "env_steps" not in rows[0]:
                continue
            steps = np.array([float(r["env_steps"]) for r in rows])
            for ax, key in zip(axes, ("success", "return"), strict=True):
                if key in rows[0]:
                    y = np.array([float(r[key] or "nan") for r in rows])
                    y = _moving_mean(y, 10)
                    # A run of a few iterations (quick budgets) still shows as points.
                    marker = "o" if len(y) < 5 else None
                    label = algo if not j else None
                    ax.plot(steps, y, color=color, lw=1, marker=marker, label=label)
                    drawn = True
    if not drawn:
        plt.close(fig)
        return ""
    for ax, key in zip(axes, ("training success", "training return"), strict=True):
        ax.set(xlabel="env steps", ylabel=key)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(f"{res['task']} ({res['preset']}): training curves (10-row moving mean)")
    return _save(fig, dest / "training_curves.png")


def _moving_mean(y: np.ndarray, w: int) -> np.ndarray:
    """Trailing mean over up to ``w`` rows (fewer at the start)."""
    c = np.concatenate([[0.0], np.cumsum(y)])
    idx = np.arange(1, len(y) + 1)
    lo = np.maximum(idx - w, 0)
    return (c[idx] - c[lo]) / (idx - lo)


# --- policy latency ---------------------------------------------------------------------


def render_policy(sdir: Path, rec: dict[str, Any]) -> list[Table]:
    results = json.loads((sdir / "policy_bench.json").read_text())
    md = [
        "| call | onnxruntime p50 / p99 | torch module p50 / p99 | torch algorithm p50 "
        "| target (onnxruntime) | met |",
        "|---|---|---|---|---|---|",
    ]
    labels, bars = [], {"onnxruntime": [], "torch module": [], "torch algorithm": []}
    for r in results:
        name = f"{r['algorithm']} ({Path(r['run']).name})"
        act = r["act"]
        ort, mod, alg = act["onnxruntime"], act.get("torch_module"), act.get("torch_algo_act")
        met = r["targets"]["act_p50_us"] and r["targets"]["act_p99_us"]
        md.append(
            f"| `act`, {name} | {ort['p50_us']:.1f} / {ort['p99_us']:.1f} µs | "
            + (f"{mod['p50_us']:.1f} / {mod['p99_us']:.1f} µs" if mod else "—")
            + f" | {_fmt(alg['p50_us'], '.1f') + ' µs' if alg else '—'}"
            f" | p50 <= 20 µs, p99 <= 100 µs | {'yes' if met else '**no**'} |"
        )
        labels.append(f"act\n{r['algorithm']}")
        bars["onnxruntime"].append(ort["p50_us"])
        bars["torch module"].append(mod["p50_us"] if mod else np.nan)
        bars["torch algorithm"].append(alg["p50_us"] if alg else np.nan)
        if "adapt" in r:
            ad = r["adapt"]
            o, t = ad["onnxruntime"], ad.get("torch_algo_adapt")
            md.append(
                f"| `adapt`, {name}, {ad['episodes']} episodes | {o['p50_us'] / 1e3:.2f} / "
                f"{o['p99_us'] / 1e3:.2f} ms | — | "
                + (f"{t['p50_us'] / 1e3:.1f} ms (algorithm's `adapt`)" if t else "—")
                + f" | <= 50 ms | {'yes' if r['targets'].get('adapt_p50_us') else '**no**'} |"
            )
            labels.append(f"adapt\n{r['algorithm']}")
            bars["onnxruntime"].append(o["p50_us"])
            bars["torch module"].append(np.nan)
            bars["torch algorithm"].append(t["p50_us"] if t else np.nan)
    fig, ax = plt.subplots(figsize=(7, 3.8))
    x = np.arange(len(labels))
    for i, (name, vals) in enumerate(bars.items()):
        ax.bar(x + (i - 1) * 0.27, vals, 0.27, label=name)
    ax.set_yscale("log")
    ax.set_xticks(x, labels, fontsize=8)
    ax.set_ylabel("p50 latency per call (µs, log)")
    ax.set_title("one thread, same process")
    ax.legend(fontsize=7)
    png = _save(fig, sdir / "policy_latency.png")
    title = "Policy call latency, onnxruntime (device runtime) vs torch, one thread"
    return [_table(rec, "policy_bench", title, md, [png])]


def render_quant(sdir: Path, rec: dict[str, Any]) -> list[Table]:
    from metagrasp.adapt.runtime import load_bundle

    md = [
        "| run | precision | test success quantised / fp32 | mean return quantised / fp32 "
        "| max abs action diff, 1,000 random inputs | episodes |",
        "|---|---|---|---|---|---:|",
    ]
    steps = [s for s in rec["steps"] if s["name"].startswith("export-")]
    for step in steps:
        run, precision = step["name"][len("export-") :].rsplit("-", 1)
        q = load_bundle(sdir / f"{run}-{precision}" / "policy.onnx").metadata["checks"]["quality"]
        md.append(
            f"| {run} | {precision} | {q[f'success_{precision}']:.3f} / {q['success_fp32']:.3f}"
            f" | {q[f'return_{precision}']:.2f} / {q['return_fp32']:.2f}"
            f" | {q['max_abs_action_diff_random']:.1e} | {q['episodes']} |"
        )
    table = _table(rec, steps[-1]["name"], "Quantised policy graphs vs fp32 (paired)", md)
    table.command = "; ".join(s["command"] for s in steps)
    table.note = (
        "Each export refuses (and this section fails) when the success changes by more than "
        "2 points; a policy that does not grasp passes trivially (0 vs 0)."
    )
    return [table]


# --- control loop -----------------------------------------------------------------------


def render_soak(sdir: Path, rec: dict[str, Any]) -> list[Table]:
    tables, labels, stats = [], [], []
    for step, run in (("soak-normal", "normal priority"), ("soak-rt", "SCHED_FIFO 10")):
        path = sdir / f"{step}.json"
        if not path.exists():
            continue
        data = json.loads(path.read_text())
        md = [
            "| run | protocol | cycles | period p50 | p99 | max | p99 \\|period − target\\| "
            "| missed deadlines | read p50 / p99 | load avg before / after |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
        ]
        for r in data["results"]:
            md.append(
                f"| {run} | {r['protocol']} | {r['cycles']:,} | {r['period_p50_ms']:.2f} ms | "
                f"{r['period_p99_ms']:.2f} ms | {r['period_max_ms']:.2f} ms | "
                f"**{r['period_error_p99_ms']:.2f} ms** | {r['missed']} "
                f"({100 * r['missed_fraction']:.2f} %) | {r['read_p50_ms']:.2f} / "
                f"{r['read_p99_ms']:.2f} ms | {r['loadavg_before'][0]:.1f} / "
                f"{r['loadavg_after'][0]:.1f} |"
            )
            labels.append(f"{r['protocol']}\n{run}")
            stats.append((r["period_p50_ms"], r["period_p99_ms"], r["period_max_ms"]))
        tables.append(_table(rec, step, f"Control loop at 50 Hz, {run}", md))
    if stats:
        fig, ax = plt.subplots(figsize=(7, 3.5))
        x = np.arange(len(labels))
        for i, name in enumerate(("p50", "p99", "max")):
            ax.bar(x + (i - 1) * 0.27, [s[i] for s in stats], 0.27, label=name)
        ax.axhline(20.0, color="black", ls=":", label="20 ms target period")
        ax.set_xticks(x, labels, fontsize=8)
        ax.set_ylabel("loop period (ms)")
        ax.legend(fontsize=7)
        png = _save(fig, sdir / "soak_periods.png")
        tables[-1].plots.append(f"{rec['name']}/{png}")
    if tables:
        tables[-1].note = "Targets: p99 period error < 2 ms, < 0.1 % missed deadlines."
    return tables


# --- on-device calibration --------------------------------------------------------------


def render_calibration(sdir: Path, rec: dict[str, Any]) -> list[Table]:
    data = json.loads((sdir / "calibration.json").read_text())
    md = [
        "| bundle | split | k | success: robot (device) | robot (sim flag) | sim env "
        "| return: robot (device reward) | robot (sim reward) | sim env |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    keys = ("robot_device_success", "robot_sim_flag_success", "sim_success")
    rkeys = ("robot_device_return", "robot_sim_return", "sim_return")
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for name, b in data["bundles"].items():
        for split, s in b["splits"].items():
            ks = sorted({int(k) for key in keys for k in s[key]})
            for k in ks:

                def cell(key: str, spec: str, k: int = k, s: dict = s) -> str:
                    mean, ci = s[key].get(str(k), (float("nan"), float("nan")))
                    return f"{_fmt(mean, spec)} ± {_fmt(ci, spec)}"

                md.append(
                    f"| {name} | {split} | {k} | "
                    + " | ".join(cell(key, ".2f") for key in keys)
                    + " | "
                    + " | ".join(cell(key, ".0f") for key in rkeys)
                    + " |"
                )
            for ax, key in zip(axes, ("robot_device_success", "robot_device_return"), strict=True):
                xs = [k for k in ks if str(k) in s[key]]
                ax.plot(xs, [s[key][str(k)][0] for k in xs], marker="o", label=f"{name} {split}")
    for ax, lab in zip(axes, ("success (device)", "return (device reward)"), strict=True):
        ax.set(xlabel="calibration episodes k", ylabel=lab)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    png = _save(fig, sdir / "calibration_vs_k.png")
    timing = ["| bundle | adaptation time, K = 3 (median) | max |", "|---|---:|---:|"]
    times = {n: b["adapt_time_k3"] for n, b in data["bundles"].items()}
    times |= {n: b for n, b in data.get("adapt_time_only", {}).items()}
    for name, t in times.items():
        timing.append(f"| {name} | {t['median_s'] * 1e3:.1f} ms | {t['max_s'] * 1e3:.1f} ms |")
    return [
        _table(rec, "calibration", "Calibration on the virtual robot vs sim env", md, [png]),
        _table(
            rec,
            "calibration",
            "Device-side adaptation compute time (target <= 1 s for K = 3)",
            timing,
        ),
        *render_wrist_rate(sdir, rec),
    ]


def render_wrist_rate(sdir: Path, rec: dict[str, Any]) -> list[Table]:
    """The sim protocol with the wrist roll rate-limited (``benchmarks/wrist_rate.py``)."""
    path = sdir / "wrist-rate.json"
    if not path.exists():
        return []
    data = json.loads(path.read_text())
    first = next(iter(next(iter(data["splits"].values())).values()))
    ks = " / ".join(first["success"])
    md = [
        f"| split | wrist-roll rate limit | success at k = {ks} | steps limited | largest lag |",
        "|---|---|---|---:|---:|",
    ]
    for split, cells in data["splits"].items():
        for rate, c in cells.items():
            succ = " / ".join(f"{v:.2f}" for v in c["success"].values())
            limited = c["limited_steps"] / c["steps"] if c["steps"] else 0.0
            label = "none (the sim)" if rate == "none" else f"{rate} rad/s"
            md.append(
                f"| {split} | {label} | {succ} (± {max(c['success_ci95'].values()):.2f}) | "
                f"{limited:.0%} | {c['max_lag_rad']:.2f} rad |"
            )
    flip = data["sim_flip"]
    note = (
        f"The sim's own wrist roll peaks at {flip['peak_rad_s']:.1f} rad/s on a 180-degree flip; "
        "the servos turn at most about 4.7 rad/s without load."
    )
    title = "The robot's slower wrist roll, in sim (shipped grip bundle)"
    return [_table(rec, "wrist_rate", title, md, note=note)]


# --- Ray scale-out ----------------------------------------------------------------------


def render_judging(sdir: Path, rec: dict[str, Any]) -> list[Table]:
    tables = []
    for split in ("test", "hard"):
        path = sdir / f"device-reward-{split}.json"
        if not path.exists():
            continue
        res = json.loads(path.read_text())
        md = [
            "| judge | episodes | success sim / device | agreement | return gap device − sim, "
            "mean [p5, p95] |",
            "|---|---:|---:|---:|---:|",
        ]
        for judge, label in (
            ("blind", "blind"),
            ("known_limit", "limit known (--max-grip)"),
            ("collapse", "object gives way (--detect-crush)"),
        ):
            for subset in ("all", "crushed", "intact"):
                c = res[judge][subset]
                if not c["episodes"]:
                    continue
                lo, hi = c["return_gap_p5_p95"]
                md.append(
                    f"| {label}, {subset} | {c['episodes']} | {c['success_sim']:.2f} / "
                    f"{c['success_device']:.2f} | {c['success_agreement']:.2f} | "
                    f"{c['return_gap_mean']:+.1f} [{lo:+.1f}, {hi:+.1f}] |"
                )
        c = res["collapse"]
        note = (
            f"--detect-crush found {_fmt(c['crushes_found'])} of the crushes and called "
            f"{_fmt(c['false_crushes'])} of the intact episodes crushed."
        )
        title = f"Device judgement of scripted grasps, `{split}` (3 / 8 / 15 N)"
        tables.append(_table(rec, f"device_reward-{split}", title, md, note=note))
    lines = (
        ("adaptive", "bisection, the sim's flags (an operator)"),
        ("adaptive_prior", "prior search, the sim's flags"),
        ("adaptive_device", "bisection, the device's judgement (--detect-crush)"),
    )
    for split in ("test", "hard"):
        path = sdir / f"scripted-grip-{split}.json"
        if not path.exists():
            continue
        res = json.loads(path.read_text())
        rules, best, lift = res["rules"], res["best_fixed"], res["best_lift_only"]
        md = ["| grip rule | success k = 0 / 1 / 2 / 3 | gap closure k = 3 |", "|---|---|---:|"]
        md.append(f"| privileged (oracle) | {rules['privileged']['success']:.3f} | 1 |")
        md.append(f"| best fixed: {best} (DR) | {rules[best]['success']:.3f} | 0 |")
        md.append(
            f"| blind to the crush limit, best: {lift} | {rules[lift]['success']:.3f} | "
            f"{_fmt(res['lift_only_gap_closure'])} |"
        )
        fig, ax = plt.subplots(figsize=(6, 3.5))
        for key, label in lines:
            a = res[key]
            md.append(
                f"| {label} | {' / '.join(f'{x:.3f}' for x in a['success'])} | "
                f"{_fmt(a['gap_closure_k3'])} |"
            )
            ax.plot(range(len(a["success"])), a["success"], marker="o", label=label)
        ax.axhline(rules["privileged"]["success"], color="black", ls="--", label="privileged")
        ax.axhline(rules[best]["success"], color="grey", ls=":", label=f"best fixed ({best})")
        ax.set(xlabel="calibration episodes k", ylabel="success", title=f"scripted grasp, {split}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        png = _save(fig, sdir / f"scripted_grip_{split}.png")
        title = (
            f"Scripted grasp, `{split}`: {res['tasks']} tasks x {len(res['seeds'])} seeds, "
            f"gap {res['gap_points']:.1f} points"
        )
        tables.append(_table(rec, f"scripted_grip-{split}", title, md, [png]))
    return tables


def render_ray(sdir: Path, rec: dict[str, Any]) -> list[Table]:
    data = json.loads((sdir / "ray_scaling.json").read_text())
    rows = data["results"]
    one = next(
        (r["samples_per_s"] for r in rows if r["sampler"] == "ray" and r["workers"] == 1), None
    )
    md = [
        "| sampler | workers | samples/s | vs 1 Ray worker | start-up |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        ratio = r["samples_per_s"] / one if one else float("nan")
        start = f"{r['startup_s']:.1f} s" if "startup_s" in r else "—"
        md.append(
            f"| {r['sampler']} | {r['workers']} | {r['samples_per_s']:,.0f} | {_fmt(ratio)} "
            f"| {start} |"
        )
    lr = data["learner"]
    note = (
        f"Learner ({lr['algo']}): update {lr['update_s_median']:.3f} s per iteration of "
        f"{lr['iteration_env_steps']:,.0f} samples; rollout {lr['rollout_pickle_bytes']:,} "
        f"bytes, `ray.put` {lr.get('ray_put_s', float('nan')) * 1e3:.2f} ms."
    )
    if "ray_2_vs_1" in data:
        met = "met" if data["target_met"] else "**not met**"
        note = f"2 workers / 1 worker: {data['ray_2_vs_1']:.2f}x (target >= 1.7x: {met}). " + note
    fig, ax = plt.subplots(figsize=(6, 3.5))
    labels = [f"{r['sampler']}\n{r['workers']} workers" for r in rows]
    ax.bar(labels, [r["samples_per_s"] for r in rows], color="tab:blue")
    ax.set_ylabel("env samples / s")
    ax.set_title(f"{data['config']['task']}, {data['config']['num_envs']} envs")
    png = _save(fig, sdir / "ray_scaling.png")
    title = "Episode collection: local sampler vs Ray workers"
    return [_table(rec, "ray_scaling", title, md, [png], note)]


# --- REPORT.md --------------------------------------------------------------------------


def write_report(
    out: Path, order: list[str], invocation: str, machine_line: Callable[[dict], str]
) -> Path:
    """Write ``out/REPORT.md`` from every ``out/*/section.json`` (atomic)."""
    recs = []
    for name in order:
        path = out / name / "section.json"
        if path.exists():
            recs.append(json.loads(path.read_text()))
    lines = [
        "# metagrasp benchmark report",
        "",
        f"Generated by `{invocation}` (last section finished "
        f"{max((r.get('finished', '') for r in recs), default='')}). Each table is stamped "
        "with the machine, the exact command, the date (UTC) and the commit it was measured "
        "at; the reference tables with their discussion are in `docs/BENCHMARKS.md`.",
        "",
        "| section | status | wall-clock | started | reproduces (docs/BENCHMARKS.md) |",
        "|---|---|---:|---|---|",
    ]
    for r in recs:
        status = r["status"] + (" (quick budgets)" if r.get("quick") else "")
        lines.append(
            f"| [{r['name']}](#{r['name']}) | {status} | {r.get('wall_s', 0) / 60:.1f} min "
            f"| {r['started']} | {r['benchmarks_md']} |"
        )
    for r in recs:
        lines += ["", f'## {r["title"]} <a id="{r["name"]}"></a>', ""]
        if r.get("quick"):
            lines += [
                "**Quick budgets (`--quick`): a smoke check; not comparable with "
                "docs/BENCHMARKS.md.**",
                "",
            ]
        stamp_machine = machine_line(r["machine"])
        if r["status"] != "ok":
            head = f"**{r['status'].upper()}** at commit {r['commit']}, {r['started']}, "
            lines += [head + f"on {stamp_machine}:", "", "```", r.get("error", ""), "```", ""]
            for s in r["steps"]:
                lines.append(f"- `{s['command']}`: {s['status']} (log {r['name']}/{s['log']})")
            continue
        for t in r["tables"]:
            lines += [
                f"### {t['title']}",
                "",
                f"*Machine:* {stamp_machine}  ",
                f"*Command:* `{t['command']}`  ",
                f"*Date:* {t['date']} · *Commit:* {r['commit']}",
                "",
                t["markdown"],
                "",
            ]
            if t.get("note"):
                lines += [t["note"], ""]
            lines += [f"![{Path(p).stem}]({p})" for p in t["plots"]]
            lines += [""] if t["plots"] else []
        reused = [s["command"] for s in r["steps"] if s["status"] == "reused"]
        if reused:
            lines += ["", "Reused (already finished): " + "; ".join(f"`{c}`" for c in reused)]
    path = out / "REPORT.md"
    tmp = out / "REPORT.md.tmp"
    tmp.write_text("\n".join(lines) + "\n")
    tmp.replace(path)
    return path
