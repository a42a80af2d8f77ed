"""Calibration files: a bundle's adapted state for one object, with its provenance.

Format (JSON, UTF-8, written atomically: temp file, fsync, rename)::

    {
      "format": "metagrasp-calibration",
      "version": 1,
      "object": "red-mug",                    # the name given to `calibrate --object`
      "created": "2026-11-25T12:00:00+0000",
      "bundle": {"file": "policy.onnx", "sha256": "...", "algorithm": "rma",
                 "run_id": "...", "config_hash": "..."},
      "state": {"latent": {"shape": [1, 8], "data": [...]}},   # float32 values
      "episodes": [{"file": "/abs/rec/episode_000003.npz", "sha256": "...",
                    "success": false, "return": 12.3, ...}],   # what was adapted on
      "settings": {...},                      # K, seed, reward settings, loop, robot...
      "results": {...},                       # before/after table, adaptation time
      "sha256": "..."                         # of this object without this key
    }

``sha256`` is over the canonical JSON (sorted keys, no spaces) of everything else, so an
edited or damaged file is refused (this catches accidents, not an attacker: whoever can
edit the file can recompute the digest). ``bundle.sha256`` is the policy file's own
SHA-256 (``bundle.metadata["sha256"]``); :func:`check_bundle` refuses a calibration made
for another bundle. Float32 values survive the JSON round trip exactly.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from metagrasp.errors import MetagraspError

__all__ = [
    "FORMAT",
    "VERSION",
    "Calibration",
    "CalibrationFileError",
    "check_bundle",
    "file_sha256",
    "load_calibration",
    "save_calibration",
]

FORMAT = "metagrasp-calibration"
"""Value of the file's ``format`` key."""
VERSION = 1
"""Format version this code reads and writes."""


class CalibrationFileError(MetagraspError):
    """A calibration file is missing, damaged, edited, or made for another bundle."""


@dataclass
class Calibration:
    """An adapted state for one object and where it came from."""

    object: str
    """Object name (free text given by the user)."""
    bundle: dict[str, Any]
    """The bundle it was made with: file, sha256, algorithm, run_id, config_hash."""
    state: dict[str, np.ndarray]
    """The adapted state (name -> float32 array), as ``bundle.adapt`` returned it."""
    episodes: list[dict[str, Any]] = field(default_factory=list)
    """The adaptation episodes: file, sha256 and the device's judgement of each."""
    settings: dict[str, Any] = field(default_factory=dict)
    """How it was made (episodes, seed, reward settings, robot, loop)."""
    results: dict[str, Any] = field(default_factory=dict)
    """Before/after evaluation and adaptation compute time, if measured."""
    created: str = ""
    """Creation time (ISO 8601, local zone); set when saved if empty."""

    def __post_init__(self) -> None:
        if not self.object or not isinstance(self.object, str):
            raise CalibrationFileError("a calibration needs an object name")
        if not isinstance(self.bundle.get("sha256"), str):
            raise CalibrationFileError("a calibration must record its bundle's sha256")
        self.state = {k: np.asarray(v, np.float32) for k, v in self.state.items()}

    def to_json(self) -> dict[str, Any]:
        """The file's content without its digest."""
        return {
            "format": FORMAT,
            "version": VERSION,
            "object": self.object,
            "created": self.created,
            "bundle": self.bundle,
            "state": {
                k: {"shape": list(v.shape), "data": [float(x) for x in v.reshape(-1)]}
                for k, v in self.state.items()
            },
            "episodes": self.episodes,
            "settings": self.settings,
            "results": self.results,
        }


def _digest(content: dict[str, Any]) -> str:
    text = json.dumps(content, sort_keys=True, separators=(",", ":"), allow_nan=True)
    return hashlib.sha256(text.encode()).hexdigest()


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes (episode recordings)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save_calibration(cal: Calibration, path: str | os.PathLike) -> Path:
    """Write ``cal`` atomically (an existing file is replaced only once the new one is
    complete on disk). Returns the path.

    Raises:
        CalibrationFileError: the file cannot be written (nothing existing was touched).
    """
    p = Path(path)
    if not cal.created:
        cal.created = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    content = cal.to_json()
    content["sha256"] = _digest(content)
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    except OSError as exc:
        raise CalibrationFileError(f"cannot write calibration {p}: {exc}") from exc
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(content, fh, indent=1)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, p)
    except (OSError, TypeError, ValueError) as exc:
        raise CalibrationFileError(f"cannot write calibration {p}: {exc}") from exc
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
    return p


def load_calibration(path: str | os.PathLike) -> Calibration:
    """Read and verify a calibration file.

    Raises:
        CalibrationFileError: missing, not JSON, another format/version, or its content
            does not match its digest (edited or damaged).
    """
    p = Path(path)
    try:
        content = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CalibrationFileError(
            f"calibration file {p} does not exist; make one with `metagrasp calibrate`"
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CalibrationFileError(f"calibration file {p} is unreadable ({exc})") from None
    if not isinstance(content, dict) or content.get("format") != FORMAT:
        raise CalibrationFileError(f"{p} is not a metagrasp calibration file")
    if content.get("version") != VERSION:
        raise CalibrationFileError(
            f"{p} is calibration format {content.get('version')!r}; this metagrasp reads "
            f"{VERSION}: calibrate again"
        )
    claimed = content.pop("sha256", None)
    if claimed != _digest(content):
        raise CalibrationFileError(
            f"{p} fails its integrity check: it was edited or damaged after it was "
            "written; calibrate again (or restore the file)"
        )
    try:
        state = {
            k: np.asarray(v["data"], np.float32).reshape(v["shape"])
            for k, v in content["state"].items()
        }
        return Calibration(
            object=content["object"],
            bundle=content["bundle"],
            state=state,
            episodes=content.get("episodes", []),
            settings=content.get("settings", {}),
            results=content.get("results", {}),
            created=content.get("created", ""),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise CalibrationFileError(f"{p}: malformed calibration content ({exc})") from None


def check_bundle(cal: Calibration, bundle: Any, path: str | os.PathLike = "") -> None:
    """Refuse a calibration made for another bundle, or whose state does not fit it.

    Raises:
        CalibrationFileError: the bundle's SHA-256 differs, or the state's entries/shapes
            are not the bundle's.
    """
    sha = bundle.metadata.get("sha256")
    if cal.bundle.get("sha256") != sha:
        raise CalibrationFileError(
            f"calibration {path or cal.object!r} was made for bundle "
            f"{str(cal.bundle.get('sha256'))[:12]}... ({cal.bundle.get('file')}), not this "
            f"one ({str(sha)[:12]}...): calibrate this bundle on the object again"
        )
    init = bundle.init_state()
    for name, value in (init or {}).items():
        got = cal.state.get(name)
        if got is None or got.shape != value.shape:
            raise CalibrationFileError(
                f"calibration state {name!r} is missing or has the wrong shape for this bundle"
            )
