"""Object-pose sources: where the policy's view of the object comes from on the device.

Contract: a source has ``read() -> ObjectPose`` (the latest pose; raises
:class:`~metagrasp.hardware.errors.PoseSourceError` if there is none, it is older than
``max_age_s``, or the stream ended), ``mark_episode(index)`` (tells a tracker an episode
starts; a no-op where nobody listens) and ``close()``. Implementations:

* :class:`FixedPose`: a pose given on the command line (``fixed:X,Y,Z[,YAW]``);
* :class:`StreamPose`: a line-based stream from an external tracker over a local socket
  (``tcp://HOST:PORT``, ``unix:///PATH``) or stdin (``-``). The virtual robot serves its
  simulated object this way, so the deploy path is the same as with a real tracker.

Line protocol (UTF-8, one pose per line, base frame of the robot)::

    X Y Z QW QX QY QZ        # metres and a unit quaternion; commas also separate
    # comment                # ignored, as are blank lines

The device writes ``episode N`` lines on a socket at each episode start; a tracker may
ignore them (the virtual robot resets its scene on them, as a person would between
episodes).
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import socket
import sys
import threading
import time
from dataclasses import dataclass
from typing import BinaryIO, Protocol

import numpy as np

from metagrasp.actions import canonical_quat
from metagrasp.errors import ConfigError
from metagrasp.hardware.errors import PoseSourceError

__all__ = [
    "FixedPose",
    "ObjectPose",
    "PoseSource",
    "StreamPose",
    "format_pose_line",
    "open_pose_source",
    "parse_pose_line",
]


@dataclass(frozen=True)
class ObjectPose:
    """One object pose in the robot's base frame."""

    position: np.ndarray
    """(x, y, z) in metres."""
    quaternion: np.ndarray
    """(w, x, y, z), unit length, w >= 0."""
    t: float
    """time.monotonic() when the pose was received."""


class PoseSource(Protocol):
    """What the control loop needs from an object-pose source."""

    def read(self) -> ObjectPose: ...

    def mark_episode(self, index: int) -> None: ...

    def close(self) -> None: ...


def parse_pose_line(line: str) -> tuple[np.ndarray, np.ndarray] | None:
    """Parse one stream line; None for blank lines, comments and markers.

    Raises:
        PoseSourceError: Wrong number of values, non-numbers, NaN/inf, or a quaternion
            far from unit length.
    """
    text = line.strip()
    if not text or text.startswith("#") or text.startswith("episode"):
        return None
    parts = [p for p in re.split(r"[\s,]+", text) if p]
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise PoseSourceError(
            f"pose line {text[:80]!r} is not numbers; expected 'X Y Z QW QX QY QZ'"
        ) from None
    if len(values) != 7 or not all(math.isfinite(v) for v in values):
        raise PoseSourceError(f"pose line {text[:80]!r} needs 7 finite numbers (X Y Z QW QX QY QZ)")
    q = np.array(values[3:])
    norm = float(np.linalg.norm(q))
    if not 0.9 < norm < 1.1:
        raise PoseSourceError(f"pose quaternion {values[3:]} is not unit length (|q| = {norm:.3f})")
    return np.array(values[:3]), canonical_quat(q / norm)


def format_pose_line(position: np.ndarray, quaternion: np.ndarray) -> str:
    """A stream line for a pose (what a tracker, or the virtual robot, sends)."""
    return " ".join(f"{float(v):.6f}" for v in (*position, *quaternion)) + "\n"


class FixedPose:
    """A pose that never changes: ``fixed:X,Y,Z[,YAW]`` (yaw in rad about +z)."""

    def __init__(self, position: np.ndarray, quaternion: np.ndarray | None = None) -> None:
        self._position = np.asarray(position, float).reshape(3)
        q = np.array([1.0, 0, 0, 0]) if quaternion is None else np.asarray(quaternion, float)
        self._quat = canonical_quat(q / np.linalg.norm(q))

    @classmethod
    def parse(cls, text: str) -> FixedPose:
        """From ``X,Y,Z[,YAW]``."""
        try:
            values = [float(v) for v in text.split(",")]
        except ValueError:
            values = []
        if len(values) not in (3, 4) or not all(math.isfinite(v) for v in values):
            raise ConfigError(f"fixed pose {text!r}: expected X,Y,Z[,YAW] in metres/radians")
        yaw = values[3] if len(values) == 4 else 0.0
        quat = np.array([math.cos(yaw / 2), 0.0, 0.0, math.sin(yaw / 2)])
        return cls(np.array(values[:3]), quat)

    def read(self) -> ObjectPose:
        return ObjectPose(self._position.copy(), self._quat.copy(), time.monotonic())

    def mark_episode(self, index: int) -> None:
        """Nobody to tell."""

    def close(self) -> None:
        """Nothing to close."""


class StreamPose:
    """Latest pose from a line stream, read by a background thread.

    Args:
        stream: A binary readable file object (socket file, stdin buffer).
        name: Where the stream comes from (for messages).
        max_age_s: Oldest pose :meth:`read` returns.
        sock: The socket behind ``stream``, if any (episode markers are sent on it).
    """

    def __init__(
        self,
        stream: BinaryIO,
        name: str,
        *,
        max_age_s: float = 0.5,
        sock: socket.socket | None = None,
    ) -> None:
        self.name = name
        self.max_age_s = float(max_age_s)
        self.lines = 0
        self.bad_lines = 0
        self._stream = stream
        self._sock = sock
        self._lock = threading.Lock()
        self._latest: ObjectPose | None = None
        self._error: str | None = None
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="pose-stream", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for raw in self._stream:
                self.lines += 1
                try:
                    parsed = parse_pose_line(raw.decode("utf-8", "replace"))
                except PoseSourceError as exc:
                    self.bad_lines += 1  # one bad line is noise; staleness catches a dead one
                    with self._lock:
                        self._error = str(exc)
                    continue
                if parsed is not None:
                    pose = ObjectPose(parsed[0], parsed[1], time.monotonic())
                    with self._lock:
                        self._latest = pose
            reason = "the stream ended (tracker stopped?)"
        except (OSError, ValueError) as exc:
            reason = f"the stream failed ({exc})"
        with self._lock:
            self._error = reason
            self._closed = True

    def wait(self, timeout_s: float = 2.0) -> ObjectPose:
        """Block until a first pose arrives (or raise after ``timeout_s``)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                if self._latest is not None or self._closed:
                    break
            time.sleep(0.005)
        return self.read()

    def read(self) -> ObjectPose:
        with self._lock:
            pose, error, closed = self._latest, self._error, self._closed
        if closed:
            raise PoseSourceError(f"object pose from {self.name}: {error}")
        if pose is None:
            extra = f" (last problem: {error})" if error else ""
            raise PoseSourceError(
                f"no object pose received from {self.name} yet{extra}; is the tracker running?"
            )
        age = time.monotonic() - pose.t
        if age > self.max_age_s:
            raise PoseSourceError(
                f"object pose from {self.name} is {age * 1e3:.0f} ms old (limit "
                f"{self.max_age_s * 1e3:.0f} ms): the tracker stalled or lost the object"
            )
        return pose

    def mark_episode(self, index: int) -> None:
        if self._sock is not None:
            try:
                self._sock.sendall(f"episode {index}\n".encode())
            except OSError as exc:
                raise PoseSourceError(f"object pose stream {self.name}: {exc}") from exc

    def close(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)
            self._sock.close()


def open_pose_source(
    spec: str, *, max_age_s: float = 0.5, connect_timeout_s: float = 5.0
) -> PoseSource:
    """Open a pose source from its command-line spec.

    ``fixed:X,Y,Z[,YAW]``, ``tcp://HOST:PORT``, ``unix:///PATH`` or ``-`` (stdin).

    Raises:
        ConfigError: Unknown spec. PoseSourceError: the socket cannot be reached.
    """
    if spec.startswith("fixed:"):
        return FixedPose.parse(spec[len("fixed:") :])
    if spec in ("-", "stdin"):
        return StreamPose(sys.stdin.buffer, "stdin", max_age_s=max_age_s)
    if spec.startswith("tcp://"):
        host, _, port = spec[len("tcp://") :].rpartition(":")
        family, address = socket.AF_INET, (host or "127.0.0.1", _port(port, spec))
    elif spec.startswith("unix://"):
        family, address = socket.AF_UNIX, spec[len("unix://") :]
    else:
        raise ConfigError(
            f"unknown object-pose source {spec!r}; use fixed:X,Y,Z[,YAW], tcp://HOST:PORT, "
            "unix:///PATH or - (stdin)"
        )
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.settimeout(connect_timeout_s)
    try:
        sock.connect(address)
    except OSError as exc:
        sock.close()
        raise PoseSourceError(
            f"cannot connect to the object-pose stream {spec}: "
            f"{os.strerror(exc.errno) if exc.errno else exc}; "
            "start the tracker (or `metagrasp virtual-robot`, which prints its address) first"
        ) from None
    sock.settimeout(None)
    if family == socket.AF_INET:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return StreamPose(sock.makefile("rb"), spec, max_age_s=max_age_s, sock=sock)


def _port(text: str, spec: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ConfigError(f"object-pose source {spec!r}: port must be a number") from None
