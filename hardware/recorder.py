"""Episode recordings: an open format, written atomically, never overwritten.

Contract: a recording directory holds

* ``episode_NNNNNN.npz``: one per episode, numpy arrays (observations, actions, shielded
  commands, joint readings, cycle timings, ...; see :class:`EpisodeBuffer`), written to a
  temporary file, fsynced, then *linked* to its final name, which fails rather than
  replace an existing file;
* ``episodes.jsonl``: one JSON line per episode, appended and fsynced after its ``.npz``
  (index, file, status, error, steps, timing summary, session id);
* ``sessions.jsonl``: one JSON line per deploy session (robot file, policy, settings).

A crash loses at most the episode in flight (an aborted episode is still written, with
its error, whenever the process lives long enough to run its exit path). New sessions
append to an existing directory, numbering episodes after the last one there.
:func:`load_recording` reads everything back and tolerates a torn last line.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from metagrasp.actions import OBS_NAMES
from metagrasp.errors import MetagraspError

__all__ = ["EpisodeBuffer", "EpisodeRecorder", "RecordingError", "load_recording"]

_EPISODE = "episode_{:06d}.npz"


class RecordingError(MetagraspError):
    """A recording cannot be written or read (disk full, permissions, corrupt file)."""


@dataclass
class EpisodeBuffer:
    """Preallocated per-step arrays of one episode (the loop fills row ``n``)."""

    capacity: int
    """Most steps the episode may have."""
    n: int = 0
    """Steps recorded so far."""
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    """Name -> array with ``capacity`` rows."""

    SPEC = {
        "t": ((), np.float64),  # cycle start, s since the episode's first scheduled start
        "scheduled": ((), np.float64),  # when the cycle was due, same clock
        "period": ((), np.float64),  # actual start minus previous actual start (s)
        "read_s": ((), np.float64),  # servo read duration
        "compute_s": ((), np.float64),  # read + policy + write duration
        "missed": ((), np.bool_),  # the cycle's work ran past the next cycle's start
        "obs": ((len(OBS_NAMES),), np.float32),
        "next_obs": ((len(OBS_NAMES),), np.float32),  # the observation after the step
        "action": ((6,), np.float32),  # as the policy returned it
        "target": ((6,), np.float64),  # the action map's servo targets (sim units)
        "command": ((6,), np.float64),  # after the safety shield: what was sent
        "force_fraction": ((), np.float64),  # gripper current limit (fraction of full)
        "shield_flags": ((), np.uint8),  # bit 0 position, 1 step, 2 velocity limit acted
        "q": ((6,), np.float64),
        "dq": ((6,), np.float64),
        "effort": ((6,), np.float64),
        "pose_age_s": ((), np.float64),  # age of the object pose used
    }

    def __post_init__(self) -> None:
        if not self.arrays:
            self.arrays = {
                k: np.zeros((self.capacity, *shape), dtype)
                for k, (shape, dtype) in self.SPEC.items()
            }

    def row(self, **values: Any) -> None:
        """Store one step's values (missing names keep zeros) and advance."""
        if self.n >= self.capacity:
            raise RecordingError(f"episode buffer full ({self.capacity} steps)")
        for k, v in values.items():
            self.arrays[k][self.n] = v
        self.n += 1

    def trimmed(self) -> dict[str, np.ndarray]:
        """The recorded rows only."""
        return {k: v[: self.n] for k, v in self.arrays.items()}


def _fsync_dir(path: pathlib.Path) -> None:
    with contextlib.suppress(OSError):  # not every filesystem lets a directory be fsynced
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class EpisodeRecorder:
    """Writes episodes into a recording directory. See the module docstring.

    Args:
        directory: Where to record (created if missing; existing episodes are kept).
        session: Session description (robot file, policy, settings), stored once.
    """

    def __init__(self, directory: str | os.PathLike, session: dict[str, Any]) -> None:
        self.dir = pathlib.Path(directory)
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RecordingError(f"cannot create recording directory {self.dir}: {exc}") from exc
        self.session_id = uuid.uuid4().hex[:12]
        existing = sorted(self.dir.glob("episode_*.npz"))
        self.next_index = 1 + max((int(p.stem.split("_")[1]) for p in existing), default=-1)
        self.written: list[pathlib.Path] = []
        self._append(
            "sessions.jsonl",
            {
                "session": self.session_id,
                "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                **session,
            },
        )

    def _append(self, name: str, record: dict[str, Any]) -> None:
        line = json.dumps(record, default=_jsonable) + "\n"
        try:
            with open(self.dir / name, "a", encoding="utf-8") as fh:
                fh.write(line)
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as exc:
            raise RecordingError(f"cannot append to {self.dir / name}: {exc}") from exc

    def write_episode(self, buffer: EpisodeBuffer, meta: dict[str, Any]) -> pathlib.Path:
        """Write one episode (``.npz`` then its index line); returns the ``.npz`` path.

        Raises:
            RecordingError: The episode cannot be written; nothing existing was touched.
        """
        while (self.dir / _EPISODE.format(self.next_index)).exists():
            self.next_index += 1  # another session wrote meanwhile: never replace its file
        index = self.next_index
        final = self.dir / _EPISODE.format(index)
        fd, tmp = tempfile.mkstemp(prefix=".episode.", suffix=".tmp", dir=self.dir)
        try:
            with os.fdopen(fd, "wb") as fh:
                np.savez(fh, **buffer.trimmed())
                fh.flush()
                os.fsync(fh.fileno())
            os.link(tmp, final)  # atomic, and fails instead of overwriting
        except OSError as exc:
            raise RecordingError(f"cannot write episode {final}: {exc}") from exc
        finally:
            pathlib.Path(tmp).unlink(missing_ok=True)
        _fsync_dir(self.dir)
        self.next_index = index + 1
        self.written.append(final)
        self._append(
            "episodes.jsonl",
            {
                "index": index,
                "file": final.name,
                "session": self.session_id,
                "steps": buffer.n,
                **meta,
            },
        )
        return final


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, pathlib.Path):
        return str(value)
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")


def _read_jsonl(path: pathlib.Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    out = []
    lines = path.read_text(encoding="utf-8").splitlines()
    for k, line in enumerate(lines):
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            if k == len(lines) - 1:
                break  # torn by a crash mid-append: the episode's .npz is still complete
            raise RecordingError(f"{path}: line {k + 1} is not JSON") from None
    return out


def load_recording(directory: str | os.PathLike) -> dict[str, Any]:
    """Read a recording directory back.

    Returns:
        ``{"sessions": [...], "episodes": [{**index line, "data": {name: array}}, ...]}``.
        Episodes whose ``.npz`` exists without an index line (a crash between the two)
        are included with ``status = "unindexed"``.
    """
    d = pathlib.Path(directory)
    if not d.is_dir():
        raise RecordingError(f"no recording directory {d}")
    index = {e["file"]: e for e in _read_jsonl(d / "episodes.jsonl")}
    episodes = []
    for path in sorted(d.glob("episode_*.npz")):
        meta = index.get(path.name, {"file": path.name, "status": "unindexed"})
        try:
            with np.load(path) as z:
                data = {k: z[k] for k in z.files}
        except (OSError, ValueError) as exc:
            raise RecordingError(f"{path} is unreadable: {exc}") from exc
        episodes.append({**meta, "data": data})
    return {"sessions": _read_jsonl(d / "sessions.jsonl"), "episodes": episodes}
