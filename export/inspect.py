"""``metagrasp inspect``: print a bundle's metadata, graphs, inputs and outputs.

Device-side: imports only :mod:`metagrasp.adapt.runtime` (numpy + onnxruntime), so it
runs on the robot to check what was copied there. Loading verifies the bundle (hashes,
format version) first, so a damaged bundle is reported, not described.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from metagrasp.adapt.runtime import PolicyBundle, load_bundle


def _io(session: Any) -> list[str]:
    rows = []
    for kind, items in (("in ", session.get_inputs()), ("out", session.get_outputs())):
        for v in items:
            shape = ", ".join(str(d) for d in v.shape)
            rows.append(f"    {kind} {v.name:14s} {v.type:16s} ({shape})")
    return rows


def parity_line(role: str, res: dict[str, Any]) -> str:
    """One graph's random-input parity, as ``metagrasp export`` logs it and ``inspect``
    shows it (``res`` is :func:`~metagrasp.export.parity.graph_parity`'s result)."""
    scaled = res.get("max_scaled_diff")  # bundles from before 2026-12-07 lack it
    return (
        f"parity {role:7s} {res['inputs']} random inputs: max |diff| {res['max_abs_diff']:.2e}"
        + ("" if scaled is None else f" (relative beyond 1: {scaled:.2e})")
    )


def describe(bundle: PolicyBundle) -> str:
    """A human-readable summary of a verified bundle."""
    m = bundle.metadata
    run = m.get("run", {})
    ad = bundle.adaptation
    # Long lists (a grip-search prior's windows) as their length, not a thousand numbers.
    settings = {
        k: f"<{len(v)} entries>" if isinstance(v, list) and len(v) > 8 else v
        for k, v in ad.get("settings", {}).items()
    }
    needs = ad.get("episode_fields")
    lines = [
        f"bundle      {bundle.path}",
        f"format      {m['format_version']} (opset {m.get('opset')}, {m.get('precision')})",
        f"algorithm   {m['algorithm']}",
        f"run         {m.get('run_id')} (iteration {run.get('iteration')}, "
        f"{run.get('env_steps')} env steps)",
        f"config hash {m.get('config_hash')}",
        f"control     {m.get('control_hz')} Hz, episodes of {m.get('episode_length')} steps",
        f"adaptation  {ad.get('kind')} (reward_free={bundle.reward_free}, "
        f"restart={ad.get('restart')}) {json.dumps(settings)}"
        + (f"; per episode it needs {', '.join(needs)}" if needs else ""),
        f"exploration {m.get('exploration')}",
        f"state       {json.dumps(m.get('state', {}))}",
        f"joints      {', '.join(m.get('joint_names', [])) or '-'}",
        "observation:",
    ]
    for name, unit in zip(bundle.obs_names, m.get("obs_units", []), strict=False):
        lines.append(f"    {name:18s} {unit}")
    lines.append("action (limits, scale to units):")
    for i, name in enumerate(bundle.action_names):
        lines.append(
            f"    {name:18s} [{m['action_low'][i]:g}, {m['action_high'][i]:g}] x "
            f"{m['action_scale'][i]:g} {m['action_units'][i]}"
        )
    if bundle.task_names:
        lines.append(f"task input  {', '.join(bundle.task_names)}")
    lines.append("graphs:")
    for role, graph in bundle.graphs.items():
        entry = m["graphs"].get(role, {})
        digest = m.get("sha256", "") if role == "policy" else entry.get("sha256", "")
        lines.append(f"  {role:7s} {entry.get('file', '')}  sha256 {digest[:16]}...")
        lines += _io(graph.session)
    checks = m.get("checks", {})
    if checks:
        lines.append("checks:")
        for role, res in checks.get("random", {}).items():
            lines.append(f"    {parity_line(role, res)}")
        if "rollout" in checks:
            r = checks["rollout"]
            lines.append(
                f"    parity runtime vs training, {r['episodes']} sim episodes "
                f"({r['observations']} obs): max |diff| {r['max_abs_diff']:.2e}"
            )
        if "quality" in checks:
            q = checks["quality"]
            prec = q["precision"]
            lines.append(
                f"    {prec}: test success {q['success_' + prec]:.3f} vs "
                f"fp32 {q['success_fp32']:.3f} ({q['episodes']} episodes)"
            )
    return "\n".join(lines)


def run_inspect(args: argparse.Namespace) -> int:
    """CLI handler of ``metagrasp inspect``."""
    bundle = load_bundle(args.bundle)
    if args.json:
        print(json.dumps(bundle.metadata, indent=1))
    else:
        print(describe(bundle))
    return 0
