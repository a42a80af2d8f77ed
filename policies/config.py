"""Typed dataclass configs: strict loading from dicts/JSON, presets, hashing.

Every algorithm declares its hyper-parameters as a dataclass with a docstring per field
(CleanRL's ``Args``); the run-level settings are :class:`RunConfig`. A user config file
is JSON ``{"run": {...}, "algo": {...}}``; a preset is the same shape, applied first. The
loader refuses unknown fields (suggesting the closest name) and mistyped values, so a
typo in a config never trains silently with a default.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import re
import types
import typing
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, TypeVar

from metagrasp.errors import ConfigError

T = TypeVar("T")

PRESETS: tuple[str, ...] = ("quick", "default")


@dataclass
class RunConfig:
    """Run-level settings shared by every algorithm."""

    algo: str = "ppo"
    """Algorithm name (see ``metagrasp train --help``)."""
    task: str = "grasp-lift"
    """Task family to meta-train on (see ``metagrasp envs``)."""
    preset: str = "default"
    """Budget preset the config started from: ``quick`` or ``default``."""
    seed: int = 0
    """Seed of the networks, the task sampler and the envs."""
    total_env_steps: int = 2_000_000
    """Training budget in environment (control) steps, all members counted."""
    num_envs: int = 32
    """Batched env members (one task per member)."""
    workers: int | None = None
    """Env worker processes (``None`` = all cores, 0 = in-process)."""
    torch_threads: int = 1
    """Threads torch may use; 1 leaves the other cores to the env workers."""
    log_every: int = 1
    """Log metrics every this many training iterations."""
    checkpoint_every: int = 20
    """Write ``checkpoints/last.pt`` every this many iterations (and at the end)."""
    keep_every: int = 0
    """Also keep a copy ``checkpoints/step_<env steps>.pt`` every this many iterations
    (0 keeps only ``last.pt``), to compare a run at several budgets without retraining
    (``metagrasp eval RUN --checkpoint RUN/checkpoints/step_....pt``)."""
    eval_split: str = "test"
    """Split used by ``metagrasp eval`` when none is given."""
    eval_episodes_per_task: int = 3
    """Adaptation episodes K of the meta-test protocol by default."""
    ray: str | None = None
    """Collect episodes on Ray rollout workers: ``None`` = the vector env of this
    machine; ``local`` = start Ray here; ``auto``, ``HOST:PORT`` or ``ray://HOST:PORT``
    = join that cluster (``metagrasp train --ray [ADDRESS]``; docs/SCALING.md)."""
    ray_workers: int = 2
    """Ray rollout workers (actors of one CPU each) when ``ray`` is set."""
    device: str = "cpu"
    """Where the learner (networks, update) runs: ``cpu``, ``cuda``, ``cuda:N`` or
    ``auto`` (a GPU when torch sees one). The envs and Ray workers stay on CPUs; eval
    and export always run on the CPU (:mod:`metagrasp.policies.device`; docs/SCALING.md;
    the GPU path is not yet measured on a GPU)."""

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise ConfigError(f"run.preset={self.preset!r}; allowed: {list(PRESETS)}")
        for name in ("total_env_steps", "num_envs", "torch_threads", "log_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"run.{name}={getattr(self, name)} must be >= 1")
        if self.checkpoint_every < 1:
            raise ConfigError(f"run.checkpoint_every={self.checkpoint_every} must be >= 1")
        if self.keep_every < 0:
            raise ConfigError(f"run.keep_every={self.keep_every} must be >= 0 (0: keep none)")
        if self.workers is not None and self.workers < 0:
            raise ConfigError(f"run.workers={self.workers} must be >= 0 or null")
        if self.ray_workers < 1:
            raise ConfigError(f"run.ray_workers={self.ray_workers} must be >= 1")
        if self.ray is not None and not self.ray.strip():
            raise ConfigError("run.ray is empty; use 'local', 'auto', HOST:PORT or null")
        check_device_name(self.device)


DEVICE_PATTERN = re.compile(r"^(cpu|auto|cuda(:\d+)?)$")
"""Accepted values of ``run.device``."""


def check_device_name(name: str) -> None:
    """Validate a ``run.device`` value without touching the hardware (see
    :func:`metagrasp.policies.device.resolve_device` for the machine's side).

    Raises:
        ConfigError: not ``cpu``, ``auto``, ``cuda`` or ``cuda:N``.
    """
    if not isinstance(name, str) or not DEVICE_PATTERN.match(name):
        raise ConfigError(
            f"run.device={name!r} is not a device; use 'cpu', 'cuda', 'cuda:N' (the N-th "
            "GPU) or 'auto' (a GPU when torch sees one, else the CPU)"
        )


def _type_ok(value: Any, tp: Any) -> bool:
    """Whether ``value`` (parsed JSON) fits the annotation ``tp``."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, a) for a in typing.get_args(tp))
    if tp is type(None):
        return value is None
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is str:
        return isinstance(value, str)
    if origin in (tuple, list):
        args = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            return False
        if origin is tuple and args and args[-1] is not Ellipsis:
            return len(value) == len(args) and all(map(_type_ok, value, args))
        return all(_type_ok(v, args[0]) for v in value) if args else True
    if origin is dict:
        kt, vt = typing.get_args(tp) or (Any, Any)
        return isinstance(value, dict) and all(
            _type_ok(k, kt) and _type_ok(v, vt) for k, v in value.items()
        )
    return isinstance(value, tp)


def from_dict(cls: type[T], data: dict[str, Any], where: str) -> T:
    """Build dataclass ``cls`` from ``data``, refusing unknown or mistyped fields.

    Args:
        cls: the config dataclass.
        data: field values (e.g. parsed JSON); missing fields keep their defaults.
        where: prefix for error messages (``run``, ``algo``...).

    Raises:
        ConfigError: naming the field, what was given and what is allowed.
    """
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected an object of fields, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in fields(cls) if f.init}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key not in known:
            close = difflib.get_close_matches(key, sorted(known), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(
                f"{where}: unknown field {key!r}{hint}; allowed fields: {sorted(known)}"
            )
        if not _type_ok(value, hints[key]):
            raise ConfigError(
                f"{where}.{key}={value!r} has the wrong type; expected {_type_name(hints[key])}"
            )
        kwargs[key] = tuple(value) if typing.get_origin(hints[key]) is tuple else value
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}") from exc


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def to_dict(cfg: Any) -> dict[str, Any]:
    """A JSON-ready dict of a config dataclass (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def config_hash(resolved: dict[str, Any]) -> str:
    """Short stable hash of a resolved config (stamped into checkpoints and exports)."""
    blob = json.dumps(resolved, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a user config file: JSON ``{"run": {...}, "algo": {...}}``.

    Raises:
        ConfigError: missing file, invalid JSON (with line/column) or wrong top level.
    """
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {p}: {exc.strerror}") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"config file {p} is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}"
        ) from exc
    if not isinstance(data, dict) or set(data) - {"run", "algo"}:
        raise ConfigError(
            f"config file {p} must be a JSON object with the keys 'run' and/or 'algo'"
            + (f"; found {sorted(data)}" if isinstance(data, dict) else "")
        )
    return data


def merge(*layers: dict[str, Any]) -> dict[str, Any]:
    """Merge ``{"run": ..., "algo": ...}`` layers; later layers win field by field."""
    out: dict[str, dict[str, Any]] = {"run": {}, "algo": {}}
    for layer in layers:
        for section in ("run", "algo"):
            out[section].update(layer.get(section) or {})
    return out
