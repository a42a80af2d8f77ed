"""Trace an algorithm's export plan to ONNX and write a sealed bundle.

``-o policy.onnx`` writes the policy graph at that path and every other graph beside it
as ``policy.<role>.onnx``. The policy file's ``metadata_props`` describe the bundle
(format version, algorithm, names, units, limits, control rate, joints, run id, config
hash, adaptation settings) and list each sibling with its SHA-256; the policy file seals
itself with a SHA-256 of its own bytes (:mod:`metagrasp.adapt.integrity`). Every model
passes ``onnx.checker.check_model(full_check=True)`` at opset :data:`OPSET`.
"""

from __future__ import annotations

import io
import json
import logging
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper

from metagrasp.adapt.integrity import PLACEHOLDER, SELF_HASH_KEY, seal, sha256_file
from metagrasp.adapt.runtime import FORMAT_VERSION, PREFIX
from metagrasp.errors import MetagraspError
from metagrasp.export.plan import ExportPlan, GraphSpec

OPSET = 17
"""ONNX opset of every exported graph (onnxruntime >= 1.14 runs it)."""
IR_VERSION = 8
"""ONNX IR version matching :data:`OPSET`."""
PRECISIONS = ("fp32", "fp16", "int8")
"""Numeric formats of the policy graph (adaptation graphs are always fp32)."""


class ExportError(MetagraspError):
    """An algorithm cannot be exported, or an exported graph fails its checks."""


def trace(graph: GraphSpec) -> onnx.ModelProto:
    """Trace one graph with torch's TorchScript-based exporter (no onnxscript needed)."""
    names = set(graph.inputs) | set(graph.outputs)
    dyn = {k: v for k, v in graph.dynamic_axes.items() if k in names}
    buf = io.BytesIO()
    with warnings.catch_warnings():
        # The legacy exporter warns that it is legacy; the dynamo one needs onnxscript and
        # yields larger graphs for these small MLPs.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            graph.module.eval(),
            tuple(graph.inputs.values()),
            buf,
            dynamo=False,
            opset_version=OPSET,
            input_names=list(graph.inputs),
            output_names=list(graph.outputs),
            dynamic_axes=dyn,
            do_constant_folding=True,
        )
    model = onnx.load_from_string(buf.getvalue())
    model.ir_version = IR_VERSION
    return model


def init_model(state: dict[str, torch.Tensor]) -> onnx.ModelProto:
    """A graph with no inputs whose outputs are the unadapted state entries."""
    nodes, outputs = [], []
    for name, value in state.items():
        arr = value.detach().cpu().numpy().astype(np.float32)
        nodes.append(
            helper.make_node(
                "Constant", [], [name], value=numpy_helper.from_array(arr, f"{name}_0")
            )
        )
        outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, list(arr.shape)))
    graph = helper.make_graph(nodes, "init", [], outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = IR_VERSION
    return model


def quantize_policy(model: onnx.ModelProto, precision: str) -> onnx.ModelProto:
    """The policy graph in fp16 (weights and arithmetic; fp32 inputs/outputs) or int8
    (dynamic quantisation of the matrix products, onnxruntime's quantiser)."""
    if precision == "fp32":
        return model
    if precision == "fp16":
        from onnxruntime.transformers.float16 import convert_float_to_float16

        out = convert_float_to_float16(model, keep_io_types=True, disable_shape_infer=False)
        # The converter appends its input casts at the end of the node list; ONNX wants
        # nodes in topological order.
        _toposort(out.graph)
    elif precision == "int8":
        import tempfile

        from onnxruntime.quantization import QuantType, quantize_dynamic

        with tempfile.TemporaryDirectory() as tmp:
            src, dst = Path(tmp, "in.onnx"), Path(tmp, "out.onnx")
            onnx.save(model, src)
            # The quantiser logs a pre-processing hint on the root logger for every call.
            root = logging.getLogger()
            level = root.level
            root.setLevel(logging.ERROR)
            try:
                quantize_dynamic(src, dst, weight_type=QuantType.QInt8)
            finally:
                root.setLevel(level)
            out = onnx.load(dst)
    else:
        raise ExportError(f"unknown precision {precision!r}; allowed: {list(PRECISIONS)}")
    out.ir_version = IR_VERSION
    return out


def _toposort(graph: onnx.GraphProto) -> None:
    """Reorder a graph's nodes so that every node comes after its inputs' producers."""
    ready = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    pending, order = list(graph.node), []
    while pending:
        rest = []
        for node in pending:
            if all(name in ready for name in node.input):
                order.append(node)
                ready.update(node.output)
            else:
                rest.append(node)
        if len(rest) == len(pending):
            raise ExportError("the converted graph has a cycle or a dangling input")
        pending = rest
    copies = [onnx.NodeProto.FromString(n.SerializeToString()) for n in order]
    del graph.node[:]
    graph.node.extend(copies)


def _props(model: onnx.ModelProto, meta: dict[str, Any]) -> None:
    del model.metadata_props[:]
    for key, value in meta.items():
        entry = model.metadata_props.add()
        entry.key = PREFIX + key
        entry.value = json.dumps(value)
    model.producer_name = "metagrasp"


def _check(model: onnx.ModelProto, what: str) -> None:
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as exc:  # onnx raises ValidationError, InferenceError...
        raise ExportError(f"the exported {what} graph fails onnx.checker: {exc}") from exc


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def sibling_path(policy_path: Path, role: str) -> Path:
    """Where a graph of a role lives next to the policy file (``policy.<role>.onnx``)."""
    stem = policy_path.name[: -len(".onnx")] if policy_path.suffix == ".onnx" else policy_path.name
    return policy_path.with_name(f"{stem}.{role}.onnx")


def write_bundle(
    plan: ExportPlan,
    meta: dict[str, Any],
    out: str | Path,
    precision: str = "fp32",
    models: dict[str, onnx.ModelProto] | None = None,
) -> dict[str, Path]:
    """Trace (unless ``models`` are given), check and write a bundle.

    Args:
        plan: the algorithm's export plan.
        meta: bundle metadata without the format/role/graph/hash keys (added here).
        out: path of the policy file (``.onnx``).
        precision: ``fp32``, ``fp16`` or ``int8`` for the quantizable (policy) graph.
        models: already traced fp32 models by role (to avoid tracing twice).

    Returns:
        role -> written path.
    """
    out = Path(out)
    if out.suffix != ".onnx":
        raise ExportError(f"output {out} must end in .onnx")
    out.parent.mkdir(parents=True, exist_ok=True)
    models = dict(models or {g.role: trace(g) for g in plan.graphs})
    if plan.init_state:
        models["init"] = init_model(plan.init_state)
    for g in plan.graphs:
        if g.quantizable:
            models[g.role] = quantize_policy(models[g.role], precision)
    paths: dict[str, Path] = {}
    graphs: dict[str, dict[str, str]] = {}
    for role, model in models.items():
        if role == "policy":
            continue
        _props(model, {"format_version": FORMAT_VERSION, "role": role, "bundle": out.name})
        _check(model, role)
        data = model.SerializeToString()
        path = sibling_path(out, role)
        _atomic_write(path, data)
        paths[role] = path
        graphs[role] = {"file": path.name, "sha256": sha256_file(data)}
    policy = models["policy"]
    graphs = {"policy": {"file": out.name, "sha256": "self"}, **graphs}
    full = {
        "format_version": FORMAT_VERSION,
        "role": "policy",
        "precision": precision,
        "opset": OPSET,
        **meta,
        "graphs": graphs,
    }
    _props(policy, full)
    entry = policy.metadata_props.add()
    entry.key, entry.value = SELF_HASH_KEY, PLACEHOLDER.decode()
    _check(policy, "policy")
    _atomic_write(out, seal(policy.SerializeToString(), out))
    paths["policy"] = out
    return paths
