"""``metagrasp export``: a trained run -> a checked, sealed deployment bundle.

Steps: load the run's checkpoint; ask the algorithm for its export plan
(``export_modules()``, :mod:`metagrasp.export.plan`); trace every graph; check each on
random inputs against its training-side reference; write the fp32 bundle and check it
end to end through the device runtime on real sim rollouts; for ``fp16``/``int8``,
measure the success-rate change on the test split against the fp32 bundle and refuse
beyond :data:`MAX_SUCCESS_DROP`. Nothing is written at the output path unless every
check passes.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from metagrasp import __version__
from metagrasp.export.inspect import parity_line
from metagrasp.export.metadata import env_facts
from metagrasp.export.parity import TOLERANCE, graph_parity, rollout_parity
from metagrasp.export.plan import ExportPlan
from metagrasp.export.writer import PRECISIONS, ExportError, sibling_path, trace, write_bundle

MAX_SUCCESS_DROP = 0.02
"""Largest allowed success-rate change (absolute, 2 points) of an fp16/int8 policy."""


@dataclass
class ExportReport:
    """What ``export_run`` did and measured."""

    files: dict[str, Path]
    """Written files by graph role."""
    metadata: dict[str, Any]
    """The bundle metadata (as written)."""
    checks: dict[str, Any] = field(default_factory=dict)
    """Parity and quality results."""


def _plan(algo: Any) -> ExportPlan:
    method = getattr(algo, "export_modules", None)
    if method is None:
        raise ExportError(
            f"algorithm {algo.name!r} cannot be exported yet: it has no export_modules() "
            "method (the seam described in metagrasp.export.plan)"
        )
    # An inherited export_modules describes the parent's acting: a subclass that acts or
    # adapts differently (RMA is a PPO) must define its own, or the bundle would be wrong.
    mro = type(algo).__mro__
    owner = next(i for i, c in enumerate(mro) if "export_modules" in c.__dict__)
    changed = [
        f"{c.__name__}.{m}"
        for c in mro[:owner]
        for m in ("act", "init_state", "adapt", "observe")
        if m in c.__dict__
    ]
    if changed:
        raise ExportError(
            f"algorithm {algo.name!r} inherits export_modules() from {mro[owner].__name__} "
            f"but overrides {changed}; it needs its own export_modules() "
            "(see metagrasp.export.plan)"
        )
    plan = method()
    if plan.algorithm != algo.name:
        raise ExportError(f"export plan is for {plan.algorithm!r}, not {algo.name!r}")
    return plan


def bundle_metadata(
    plan: ExportPlan, spec: Any, resolved: dict[str, Any], run_dir: Path, ckpt: Path
) -> dict[str, Any]:
    """Metadata stamped into the policy file (see the runtime's docstring)."""
    from metagrasp.policies.config import config_hash
    from metagrasp.policies.runner import load_checkpoint

    facts = env_facts(spec)
    progress = load_checkpoint(ckpt, resolved["run"]["algo"])["progress"]
    task_names = facts["task_names"] if plan.uses_task else []
    if plan.uses_task and len(task_names) != spec.task_dim:
        task_names = [f"task_{i}" for i in range(spec.task_dim)]
    adaptation = {"reward_free": True, "restart": False, **plan.adaptation}
    chash = config_hash(resolved)
    return {
        "algorithm": plan.algorithm,
        "obs_names": list(spec.obs_names) or [f"obs_{i}" for i in range(spec.obs_dim)],
        "obs_units": facts["obs_units"],
        "action_names": list(spec.action_names) or [f"act_{i}" for i in range(spec.act_dim)],
        "action_units": facts["action_units"],
        "action_low": facts["action_low"],
        "action_high": facts["action_high"],
        "action_scale": facts["action_scale"],
        "task_names": task_names,
        "control_hz": facts["control_hz"],
        "episode_seconds": facts["episode_seconds"],
        "episode_length": facts["episode_length"],
        "joint_names": facts["joint_names"],
        "joint_lower": facts["joint_lower"],
        "joint_upper": facts["joint_upper"],
        "env": facts["env"],
        "run_id": f"{run_dir.name}@{chash}",
        "config_hash": chash,
        "run": {
            "dir": str(run_dir.resolve()),
            "checkpoint": str(ckpt.resolve()),
            "checkpoint_sha256": hashlib.sha256(ckpt.read_bytes()).hexdigest(),
            "iteration": int(progress.get("iteration", 0)),
            "env_steps": int(progress.get("env_steps", 0)),
            "seed": resolved["run"].get("seed"),
            "task": resolved["run"].get("task"),
        },
        "adaptation": adaptation,
        "state": {k: list(v.shape) for k, v in plan.init_state.items()},
        "exploration": plan.exploration,
        "exported": {
            "metagrasp": __version__,
            "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        },
    }


def export_run(
    run_dir: str | Path,
    out: str | Path,
    checkpoint: str | Path | None = None,
    precision: str = "fp32",
    random_inputs: int = 1000,
    real_episodes: int = 100,
    quality_seeds: tuple[int, ...] = (0, 1, 2, 3, 4),
    log: Any = print,
    algo_overrides: dict[str, Any] | None = None,
) -> ExportReport:
    """Export a trained run (see the module docstring).

    Args:
        run_dir: the training run directory.
        out: path of the policy file to write (``.onnx``).
        checkpoint: checkpoint to export (default: the run's ``checkpoints/last.pt``).
        precision: ``fp32``, ``fp16`` or ``int8`` (the policy graph only).
        random_inputs: random inputs per graph for the parity check.
        real_episodes: sim episodes for the end-to-end parity check (0 = skip).
        quality_seeds: seeds of the fp16/int8 success check (one episode per test task
            and seed, deterministic, unadapted).
        log: progress printer.
        algo_overrides: acting-time algorithm settings (as ``eval --set``), validated by
            the algorithm's config; they change the bundle's config hash.

    Raises:
        ExportError: the algorithm is not exportable, a check fails, or the quantised
            policy loses more than 2 points of success.
        CheckpointError: not a run, or a bad checkpoint.
    """
    from metagrasp.policies.runner import load_trained

    if precision not in PRECISIONS:
        raise ExportError(f"unknown precision {precision!r}; allowed: {list(PRECISIONS)}")
    run_dir, out = Path(run_dir), Path(out)
    if out.suffix != ".onnx":
        raise ExportError(f"output {out} must end in .onnx")
    algo, resolved, spec = load_trained(run_dir, checkpoint, algo_overrides)
    ckpt = Path(checkpoint) if checkpoint else run_dir / "checkpoints" / "last.pt"
    plan = _plan(algo)
    meta = bundle_metadata(plan, spec, resolved, run_dir, ckpt)
    models = {g.role: trace(g) for g in plan.graphs}
    checks: dict[str, Any] = {"tolerance": TOLERANCE, "random": {}}
    for g in plan.graphs:
        res = graph_parity(g, models[g.role], random_inputs)
        checks["random"][g.role] = res
        log(parity_line(g.role, res))
        if res["max_scaled_diff"] > TOLERANCE:
            raise ExportError(
                f"the {g.role} graph differs from training by {res['max_abs_diff']:.3g} "
                f"(relative beyond 1: {res['max_scaled_diff']:.3g} > {TOLERANCE}) on random "
                "inputs; not exported"
            )
    with tempfile.TemporaryDirectory() as tmp:
        ref_path = Path(tmp, "fp32", out.name)
        write_bundle(plan, {**meta, "checks": checks}, ref_path, "fp32", models)
        if real_episodes > 0:
            res = rollout_parity(algo, spec, ref_path, real_episodes)
            checks["rollout"] = res
            log(
                f"parity runtime vs {plan.algorithm} on {res['episodes']} sim episodes "
                f"({res['observations']} observations): max |diff| {res['max_abs_diff']:.2e}"
            )
            if res["max_abs_diff"] > TOLERANCE:
                raise ExportError(
                    f"the bundle's actions differ from the trained policy by "
                    f"{res['max_abs_diff']:.3g} (> {TOLERANCE}) on sim rollouts; not exported"
                )
        if precision != "fp32":
            checks["quality"] = _quality(
                plan,
                meta,
                checks,
                models,
                ref_path,
                Path(tmp, precision, out.name),
                spec,
                precision,
                quality_seeds,
                log,
            )
        files = write_bundle(plan, {**meta, "checks": checks}, out, precision, models)
    for role, path in files.items():
        log(f"wrote {role:7s} {path}")
    return ExportReport(files, {**meta, "checks": checks}, checks)


def _quality(
    plan: ExportPlan,
    meta: dict[str, Any],
    checks: dict[str, Any],
    models: dict[str, Any],
    ref_path: Path,
    q_path: Path,
    spec: Any,
    precision: str,
    seeds: tuple[int, ...],
    log: Any,
) -> dict[str, Any]:
    """Success rate of the quantised bundle vs the fp32 one on the test split (paired)."""
    from metagrasp.export.quality import success_rate

    write_bundle(plan, {**meta, "checks": checks}, q_path, precision, models)
    policy = plan.graph("policy")
    q_diff = graph_parity(policy, _load(q_path), 1000)["max_abs_diff"]
    base = success_rate(ref_path, spec, 0, seeds)
    quant = success_rate(q_path, spec, 0, seeds)
    res = {
        "precision": precision,
        "split": "test",
        "episodes": base["episodes"],
        "success_fp32": base["success"],
        f"success_{precision}": quant["success"],
        "success_change": quant["success"] - base["success"],
        "return_fp32": base["return"],
        f"return_{precision}": quant["return"],
        "max_abs_action_diff_random": q_diff,
        "max_allowed_drop": MAX_SUCCESS_DROP,
    }
    log(
        f"{precision}: success {quant['success']:.3f} vs fp32 {base['success']:.3f} on "
        f"{base['episodes']} test episodes (change {res['success_change']:+.3f}; mean return "
        f"{quant['return']:.3f} vs {base['return']:.3f}); "
        f"max |action diff| on random inputs {q_diff:.2e}"
    )
    if abs(res["success_change"]) > MAX_SUCCESS_DROP:
        shutil.rmtree(q_path.parent, ignore_errors=True)
        raise ExportError(
            f"--{precision} changes the test-split success rate by "
            f"{100 * res['success_change']:+.1f} points (more than "
            f"{100 * MAX_SUCCESS_DROP:.0f}): refusing; export in fp32"
        )
    return res


def _load(path: Path) -> Any:
    import onnx

    return onnx.load(path)


__all__ = ["MAX_SUCCESS_DROP", "ExportReport", "export_run", "sibling_path"]
