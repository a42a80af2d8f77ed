"""``metagrasp train`` and ``metagrasp eval``: argument handling on top of the runner."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from metagrasp.errors import ConfigError


def parse_overrides(items: list[str] | None) -> dict[str, Any]:
    """``--set run.num_envs=8 --set algo.lr=1e-3`` -> ``{"run": {...}, "algo": {...}}``.

    Values are parsed as JSON when they can be (numbers, lists, null, true), else kept
    as strings.
    """
    out: dict[str, dict[str, Any]] = {"run": {}, "algo": {}}
    for item in items or []:
        key, sep, raw = item.partition("=")
        section, dot, field = key.partition(".")
        if not sep or not dot or section not in out or not field:
            raise ConfigError(
                f"--set {item!r}: expected SECTION.FIELD=VALUE with SECTION 'run' or 'algo', "
                "e.g. --set run.num_envs=8"
            )
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        out[section][field] = value
    return out


def run_train(args: argparse.Namespace) -> int:
    from metagrasp.policies.runner import Runner, resolve_config

    overrides = parse_overrides(args.set)
    if args.seed is not None:
        overrides["run"]["seed"] = args.seed
    sampler: dict[str, Any] = {}
    if args.ray is not None:
        sampler["ray"] = args.ray
    if args.ray_workers is not None:
        sampler["ray_workers"] = args.ray_workers
    if args.device is not None:
        sampler["device"] = args.device
    out = Path(args.out) if args.out else None
    extend_to = None
    if args.resume:
        if out is None:
            raise ConfigError("--resume needs --out RUN_DIR (the run to continue)")
        # A resumed run keeps its saved config; the one thing that may change is the
        # budget, so a run that has not converged can be trained on.
        extra = {f"{sec}.{k}" for sec, kv in overrides.items() for k in kv}
        extra -= {"run.total_env_steps"}
        if extra:
            raise ConfigError(
                "--resume keeps the run's saved config; only --set run.total_env_steps=N "
                f"(to train longer) may change, got {sorted(extra)}"
            )
        extend_to = overrides["run"].get("total_env_steps")
        resolved: dict[str, Any] = {}
    else:
        overrides["run"].update(sampler)
        resolved = resolve_config(args.algo, args.task, args.preset, args.config, overrides)
        if out is None:
            stamp = time.strftime("%Y%m%d-%H%M%S")
            out = Path("runs") / f"{args.algo}-{resolved['run']['task']}-{stamp}"
    runner = Runner(
        resolved,
        out,
        resume=args.resume,
        progress_bar=not args.no_progress,
        total_env_steps=extend_to,
        sampler=sampler if args.resume else None,
    )
    run = runner.resolved["run"]
    print(
        f"training {run['algo']} on {run['task']} ({run['preset']} preset, "
        f"{run['total_env_steps']:,} env steps, {run['num_envs']} envs"
        + (f", Ray {run['ray']} x{run.get('ray_workers', 2)} workers" if run.get("ray") else "")
        + f", learner on {runner.device}"
        + f") -> {out}",
        file=sys.stderr,
    )
    try:
        progress = runner.train()
    except KeyboardInterrupt:
        print(
            f"interrupted: checkpoint saved; continue with `metagrasp train --resume --out {out}`",
            file=sys.stderr,
        )
        return 130
    print(
        f"done: {progress['iteration']} iterations, {progress['env_steps']:,} env steps, "
        f"{progress['wall_s']:.0f} s; checkpoint {runner.ckpt_path}"
    )
    return 0


def oracle_settings(run: str | Path) -> dict[str, Any]:
    """The meta-test settings that make ``run`` act on the privileged task parameters
    (its algorithm's ``ORACLE_SETTINGS``: ``sac-grip`` the privileged grip, ``rma`` its
    teacher; none for ``ppo-oracle``/``sac-oracle``, which always do). An oracle reference
    is the policy given those parameters, so ``eval --oracle RUN`` acts so. Empty when the
    run's config cannot be read (loading it then raises the clear error)."""
    from metagrasp.policies.base import ALGORITHMS, algorithm_class

    try:
        name = json.loads((Path(run) / "config.json").read_text())["run"]["algo"]
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    if name not in ALGORITHMS:
        return {}
    return dict(getattr(algorithm_class(name), "ORACLE_SETTINGS", {}))


def _evaluate_run(
    run: str, args: argparse.Namespace, checkpoint: str | None, oracle: bool = False
) -> dict[str, Any]:
    from metagrasp.policies.evaluate import meta_test, summarise
    from metagrasp.policies.runner import load_trained

    overrides = parse_overrides(getattr(args, "set", None))
    if overrides["run"]:
        raise ConfigError("eval --set only takes algo.FIELD=VALUE (meta-test-time settings)")
    settings = overrides.get("algo", {})
    if oracle:  # the oracle mode wins over a --set meant for the evaluated run
        settings = {**settings, **oracle_settings(run)}
    algo, resolved, spec = load_trained(run, checkpoint, settings)
    k = args.episodes_per_task
    if k is None:
        k = resolved["run"]["eval_episodes_per_task"]
    raw = meta_test(
        algo,
        spec,
        args.split,
        k,
        tuple(args.seeds),
        args.num_envs,
        args.workers,
        args.deterministic,
    )
    summary = summarise(raw)
    summary["algo"] = resolved["run"]["algo"]
    summary["run"] = str(run)
    summary["settings"] = settings
    return summary


def run_eval(args: argparse.Namespace) -> int:
    from metagrasp.policies.evaluate import gap_closure, plot, reference_level, write_results

    summary = _evaluate_run(args.run, args, args.checkpoint)
    refs: dict[str, dict[str, Any]] = {}
    for name, ref_run in (("DR", args.dr), ("oracle", args.oracle)):
        if ref_run:
            refs[name] = _evaluate_run(ref_run, args, None, oracle=name == "oracle")
            summary[f"reference_{name.lower()}"] = {
                "run": ref_run,
                "settings": refs[name]["settings"],
                "success": reference_level(refs[name]),
                "return": reference_level(refs[name], "return"),
                "per_k": refs[name]["per_k"],
            }
    if "DR" in refs and "oracle" in refs:
        summary["gap_closure_k3"] = gap_closure(summary, refs["DR"], refs["oracle"])
    out = Path(args.out) if args.out else Path(args.run) / f"eval-{args.split}"
    path = write_results(summary, out)
    plot(summary, out / "success_vs_k.png", refs)
    print(f"{summary['algo']} on {summary['family']} / {args.split}: ", end="")
    rows = summary["per_k"]
    print(", ".join(f"k={r['k']} {r['success']:.2f}±{r['success_ci95']:.2f}" for r in rows))
    print("returns: " + ", ".join(f"k={r['k']} {r['return']:.2f}" for r in summary["per_k"]))
    for name in refs:
        ref = summary[f"reference_{name.lower()}"]
        acting = ", ".join(f"{k}={v}" for k, v in ref["settings"].items())
        print(
            f"{name}: success {ref['success']:.2f}" + (f" (acting with {acting})" if acting else "")
        )
    if "gap_closure_k3" in summary:
        print(f"gap closure at k=3: {summary['gap_closure_k3']:.2f}")
    print(f"wrote {path} and {out / 'success_vs_k.png'}")
    return 0


def add_train_parser(sub: Any, handler: Any) -> None:
    """Register ``metagrasp train``."""
    from metagrasp.policies.base import ALGORITHMS

    p = sub.add_parser(
        "train",
        help="meta-train an algorithm on a task family",
        description="Meta-train with a progress bar, TensorBoard events, a CSV of every "
        "metric, periodic checkpoints and the resolved config saved beside them. "
        "Ctrl-C saves a checkpoint; --resume continues.",
    )
    p.add_argument("--algo", default="ppo", help=f"algorithm: {', '.join(sorted(ALGORITHMS))}")
    p.add_argument("--task", default="grasp-lift", help="task family (see `metagrasp envs`)")
    p.add_argument("--preset", default="default", help="budget preset: quick or default")
    p.add_argument("--config", default=None, help='JSON file {"run": {...}, "algo": {...}}')
    p.add_argument("--set", action="append", metavar="SECTION.FIELD=VALUE", help="override")
    p.add_argument("--seed", type=int, default=None, help="seed (overrides the config)")
    p.add_argument("--out", default=None, help="run directory (default runs/ALGO-TASK-TIME)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument(
        "--ray",
        nargs="?",
        const="local",
        default=None,
        metavar="ADDRESS",
        help="collect episodes on Ray rollout workers: no ADDRESS starts Ray on this "
        "machine; HOST:PORT (from `ray start --head`) or 'auto' joins a cluster "
        "(pip install 'metagrasp[ray]'; see docs/SCALING.md)",
    )
    p.add_argument(
        "--ray-workers",
        type=int,
        default=None,
        metavar="N",
        help="Ray rollout workers, one CPU each (default 2)",
    )
    p.add_argument(
        "--device",
        default=None,
        metavar="DEVICE",
        help="where the learner runs: cpu (default), cuda, cuda:N or auto (a GPU when "
        "there is one); not yet measured on a GPU (docs/SCALING.md); with --resume it moves "
        "the run",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(handler=handler)


def add_eval_parser(sub: Any, handler: Any) -> None:
    """Register ``metagrasp eval``."""
    p = sub.add_parser(
        "eval",
        help="meta-test a trained run on held-out tasks (success vs adaptation episodes)",
        description="Run the meta-test protocol: for every task of the split, success "
        "and return after k = 0..K adaptation episodes; writes results.json and a plot.",
    )
    p.add_argument("run", help="run directory written by `metagrasp train`")
    p.add_argument("--split", default="test", help="test, hard or val (train tasks)")
    p.add_argument("--episodes-per-task", type=int, default=None, help="K (default: config)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="evaluation seeds")
    p.add_argument("--checkpoint", default=None, help="checkpoint (default: last)")
    p.add_argument("--num-envs", type=int, default=None, help="tasks evaluated in parallel")
    p.add_argument("--workers", type=int, default=None, help="env worker processes")
    p.add_argument("--deterministic", action="store_true", help="act with the mean action")
    p.add_argument("--dr", default=None, help="domain-randomisation reference run")
    p.add_argument(
        "--oracle",
        default=None,
        help="oracle reference run, acting on the privileged task parameters (sac-grip "
        "with algo.act_with=oracle, rma with its teacher)",
    )
    p.add_argument("--out", default=None, help="output folder (default RUN/eval-SPLIT)")
    p.add_argument(
        "--set",
        action="append",
        metavar="algo.FIELD=VALUE",
        help="meta-test-time algorithm setting, e.g. algo.act_with=teacher (RMA)",
    )
    p.set_defaults(handler=handler)
