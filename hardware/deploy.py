"""``metagrasp deploy`` and ``metagrasp calibrate-joints``: the robot's whole session.

Contract of :func:`deploy`: open the port, connect, configure, activate, run N episodes
(each: park, settle, run, record), and on *every* exit path (normal end, exception, Ctrl-C
or SIGTERM/SIGHUP, lost port) stop commanding, optionally park, then switch torque off
servo by servo, carrying on past individual errors, and close the port. Every episode,
complete or aborted, is written to the recording before the exit path runs. Signals
become an e-stop request the loop honours within one cycle; a second signal skips
parking. Nothing here imports torch or mujoco.
"""

from __future__ import annotations

import contextlib
import dataclasses
import shutil
import signal
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from metagrasp.errors import MetagraspError
from metagrasp.hardware.control_loop import ControlLoop, LoopConfig, timing_summary
from metagrasp.hardware.errors import EmergencyStopError, PortError, ProtocolError, RobotError
from metagrasp.hardware.policies import Policy, load_policy
from metagrasp.hardware.pose import PoseSource, open_pose_source
from metagrasp.hardware.recorder import EpisodeBuffer, EpisodeRecorder
from metagrasp.hardware.robot import Robot, RobotPhase
from metagrasp.hardware.robot_config import RobotConfig, load_robot_file, save_robot_file
from metagrasp.kinematics import ARM

__all__ = [
    "DeploySummary",
    "EpisodeResult",
    "RobotSession",
    "calibrate_joints",
    "deploy",
    "estop_on_signals",
]


@dataclass
class DeploySummary:
    """What a deploy session did."""

    episodes: list[dict[str, Any]] = field(default_factory=list)
    """Index line of every recorded episode (status, error, steps, timing)."""
    timing: dict[str, float] = field(default_factory=dict)
    """Timing over every episode cycle (see :func:`timing_summary`)."""
    shield: dict[str, list[int]] = field(default_factory=dict)
    """Per-joint counts of commands each shield limit changed."""
    bus: dict[str, int] = field(default_factory=dict)
    """Bus counters (retries, CRC errors, timeouts...)."""
    torque_off_failures: list[str] = field(default_factory=list)
    """Servos that could not be switched off (empty when the robot is safe)."""
    error: str | None = None
    """Why the session ended early, if it did."""
    recording: str | None = None
    """Recording directory."""


@contextlib.contextmanager
def estop_on_signals(stop: threading.Event) -> Iterator[list[int]]:
    """Turn SIGINT/SIGTERM/SIGHUP into ``stop.set()`` while inside (main thread only).

    Yields the list of signals received so far (a second one means 'skip parking').
    """
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return

    def handler(signum: int, frame: object) -> None:
        received.append(signum)
        stop.set()

    sigs = [signal.SIGINT, signal.SIGTERM] + ([signal.SIGHUP] if hasattr(signal, "SIGHUP") else [])
    previous = {s: signal.signal(s, handler) for s in sigs}
    try:
        yield received
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def _status_of(exc: BaseException | None) -> str:
    if exc is None:
        return "ok"
    if isinstance(exc, EmergencyStopError | KeyboardInterrupt):
        return "estop"
    if isinstance(exc, PortError):
        return "port_lost"
    return "aborted"


@dataclass
class EpisodeResult:
    """One finished (or aborted) episode of a session."""

    index: int
    """Episode number within the session (0, 1, ...)."""
    data: dict[str, np.ndarray]
    """Per-step arrays (see :class:`~metagrasp.hardware.recorder.EpisodeBuffer`)."""
    meta: dict[str, Any]
    """Status, error, timing summary, bus counters, skipped cycles, recording file."""


class RobotSession:
    """An activated robot running one policy, episode by episode, made safe on exit.

    ``with RobotSession(...) as session:`` opens the port, connects, configures, starts
    the recording, activates and starts the loop (Ctrl-C/SIGTERM/SIGHUP become an e-stop
    while inside); :meth:`run_episode` parks, settles, runs and records one episode; on
    leaving (normally or by any exception) the robot parks unless the bus failed or the
    user signalled twice, torque goes off servo by servo and the port closes. Between
    episodes the caller may change the policy's state (e.g. after on-device adaptation).
    Arguments are those of :func:`deploy`.
    """

    def __init__(
        self,
        policy: Policy | str,
        robot_file: str | RobotConfig,
        port: str,
        *,
        pose_source: PoseSource | str = "fixed:0.18,0,0.02",
        loop: LoopConfig | None = None,
        episode_seconds: float | None = None,
        record_dir: str | None = None,
        park_on_exit: bool = True,
        log: Callable[[str], None] = print,
    ) -> None:
        self.config = (
            robot_file if isinstance(robot_file, RobotConfig) else load_robot_file(robot_file)
        )
        self.policy = load_policy(policy) if isinstance(policy, str) else policy
        self._policy_name = policy if isinstance(policy, str) else type(self.policy).__name__
        rate = self.policy.spec.control_hz
        self.loop = loop or LoopConfig(
            rate_hz=rate, episode_steps=round((episode_seconds or 4.0) * rate)
        )
        if abs(self.loop.rate_hz - rate) > 1e-9:
            log(
                f"note: loop rate {self.loop.rate_hz:g} Hz differs from the policy's "
                f"{rate:g} Hz: its actions act per cycle, so motions run "
                f"{self.loop.rate_hz / rate:.2f}x as fast as in training"
            )
        self.port = port
        self._pose_spec = pose_source
        self.record_dir = record_dir
        self.park_on_exit = park_on_exit
        self.log = log
        self.summary = DeploySummary(recording=record_dir)
        self.stop = threading.Event()
        self.robot: Robot | None = None
        self.ctl: ControlLoop | None = None
        self.recorder: EpisodeRecorder | None = None
        self.pose: PoseSource | None = None
        self._stack = contextlib.ExitStack()
        self._signals: list[int] = []
        self._periods: list[np.ndarray] = []
        self._missed: list[np.ndarray] = []
        self._index = 0

    def __enter__(self) -> RobotSession:
        self._signals = self._stack.enter_context(estop_on_signals(self.stop))
        try:
            spec = self._pose_spec
            self.pose = open_pose_source(spec) if isinstance(spec, str) else spec
            cfg = self.config
            self.robot = Robot.open(cfg, self.port)
            self.robot.connect()
            self.robot.configure()
            if self.record_dir is not None:
                self.recorder = EpisodeRecorder(
                    self.record_dir,
                    {
                        "robot": cfg.to_dict(),
                        "port": self.port,
                        "policy": self._policy_name,
                        "policy_spec": dataclasses.asdict(self.policy.spec),
                        "loop": dataclasses.asdict(self.loop),
                    },
                )
            self.robot.activate()
            self.log(
                f"robot {cfg.name!r} active on {self.port}: {len(cfg.ids)} servos, "
                f"{self.loop.rate_hz:g} Hz"
            )
            self.ctl = ControlLoop(self.robot, self.policy, self.pose, self.loop, stop=self.stop)
            self.ctl.start()
            if self.ctl.realtime_note:
                self.log(self.ctl.realtime_note)
        except BaseException as exc:
            self.__exit__(type(exc), exc, exc.__traceback__)
            raise
        return self

    def run_episode(self, extra_meta: dict[str, Any] | None = None) -> EpisodeResult:
        """Park, settle, run one episode and record it (also when it fails, then re-raise).

        Args:
            extra_meta: Added to the episode's index line (e.g. calibration round, reward).
        """
        if self.ctl is None or self.robot is None:
            raise RobotError("the session is not active: use it in a `with` block")
        ctl, k = self.ctl, self._index
        self._index += 1
        ctl.prepare_episode(k)
        buffer = EpisodeBuffer(self.loop.episode_steps)
        failure: BaseException | None = None
        try:
            ctl.run_episode(buffer)
        except BaseException as exc:
            failure = exc
            raise
        finally:
            data = buffer.trimmed()
            self._periods.append(data["period"])
            self._missed.append(data["missed"])
            meta = {
                "status": _status_of(failure),
                "error": None if failure is None else f"{type(failure).__name__}: {failure}",
                "timing": timing_summary(data["period"], data["missed"], self.loop.period_s),
                "bus": self.robot.bus.stats.as_dict(),
                "skipped_cycles": ctl.skipped_cycles,
                **(extra_meta or {}),
            }
            if self.recorder is not None:
                meta["file"] = str(self.recorder.write_episode(buffer, meta))
            self.summary.episodes.append(meta)
            t = meta["timing"]
            p50, p99 = t.get("period_p50_ms", 0.0), t.get("period_p99_ms", 0.0)
            self.log(
                f"episode {k}: {meta['status']}, {buffer.n} steps, period p50 "
                f"{p50:.2f} ms p99 {p99:.2f} ms, {t['missed']} missed"
            )
        return EpisodeResult(k, data, meta)

    def hold_during(self, fn: Callable[[], Any], *, park: bool = False) -> Any:
        """Run ``fn()`` between episodes while the loop keeps the arm still; its result.

        Work between episodes (on-device adaptation, an operator prompt) may take longer
        than the deadline watchdog (or the servos' bus watchdog) allows without a cycle:
        ``fn`` runs in a worker thread while this thread keeps cycling, holding the arm
        where it is (or parked first, with ``park``). An e-stop (signal) stops holding
        and is raised; ``fn``'s own exception is re-raised here.
        """
        if self.ctl is None:
            raise RobotError("the session is not active: use it in a `with` block")
        ctl = self.ctl
        box: dict[str, Any] = {}

        def work() -> None:
            try:
                box["value"] = fn()
            except BaseException as exc:  # noqa: BLE001 (re-raised in the caller's thread)
                box["error"] = exc

        if park and self.loop.park_s > 0:
            ctl.move_to(np.array(self.loop.park_pose), self.loop.park_s)
        worker = threading.Thread(target=work, name="between-episodes", daemon=True)
        worker.start()
        while worker.is_alive():
            ctl.hold_for(2.0 / self.loop.rate_hz)
        if "error" in box:
            raise box["error"]
        return box.get("value")

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        if exc is not None:
            self.log(f"stopping: {type(exc).__name__}: {exc}")
        try:
            if self.ctl is not None:
                self.ctl.close()
            if self.robot is not None:
                self.summary.torque_off_failures = _shutdown(
                    self.robot,
                    self.ctl,
                    # Parking needs a healthy bus, and a second signal means "off, now".
                    park=self.park_on_exit
                    and len(self._signals) < 2
                    and not isinstance(exc, ProtocolError),
                    log=self.log,
                )
                self.summary.bus = self.robot.bus.stats.as_dict()
                self.robot = None
            if self.pose is not None:
                self.pose.close()
                self.pose = None
        finally:
            self._stack.close()
        if self._periods:
            self.summary.timing = timing_summary(
                np.concatenate(self._periods), np.concatenate(self._missed), self.loop.period_s
            )
        if self.ctl is not None:
            self.summary.shield = {k: v.tolist() for k, v in self.ctl.shield.counts.items()}


def deploy(
    policy: Policy | str,
    robot_file: str | RobotConfig,
    port: str,
    *,
    pose_source: PoseSource | str = "fixed:0.18,0,0.02",
    episodes: int = 1,
    loop: LoopConfig | None = None,
    episode_seconds: float | None = None,
    record_dir: str | None = None,
    park_on_exit: bool = True,
    log: Callable[[str], None] = print,
) -> DeploySummary:
    """Run ``episodes`` episodes of ``policy`` on the robot at ``port``.

    Args:
        policy: A :class:`~metagrasp.hardware.policies.Policy` or a spec for
            :func:`~metagrasp.hardware.policies.load_policy` (``.onnx`` or ``builtin:NAME``).
        robot_file: Path of the robot file, or a parsed one.
        port: Serial device of the servo bus.
        pose_source: Object-pose source or its spec (see :func:`open_pose_source`).
        episodes: Number of episodes.
        loop: Loop settings; default: the policy's rate.
        episode_seconds: Episode length (s), if ``loop`` is not given (default 4 s).
        record_dir: Recording directory (None: no recording).
        park_on_exit: Move to the park pose before torque off (skipped after bus faults
            and after a second signal).
        log: Where progress lines go.

    Returns:
        The summary; ``summary.error`` says why the session stopped early, if it did.
        Errors that are not metagrasp's (bugs) propagate after the robot was made safe.
    """
    session = RobotSession(
        policy,
        robot_file,
        port,
        pose_source=pose_source,
        loop=loop,
        episode_seconds=episode_seconds,
        record_dir=record_dir,
        park_on_exit=park_on_exit,
        log=log,
    )
    try:
        with session:
            for _ in range(episodes):
                session.run_episode()
    except (MetagraspError, KeyboardInterrupt) as exc:
        session.summary.error = f"{type(exc).__name__}: {exc}"
    return session.summary


def _shutdown(
    robot: Robot, ctl: ControlLoop | None, *, park: bool, log: Callable[[str], None]
) -> list[str]:
    """Stop commanding, maybe park, torque off servo by servo, close the port."""
    if park and ctl is not None and robot.phase is RobotPhase.ACTIVE:
        ctl.stop.clear()  # the e-stop ended the episode; parking is the safe way down
        try:
            ctl.watchdog.stop()
            ctl.move_to(np.array(ctl.config.park_pose), ctl.config.park_s or 1.0)
        except (MetagraspError, KeyboardInterrupt) as exc:
            log(f"parking skipped: {exc}")
    failed = robot.deactivate(force=True)
    robot.disconnect()
    if failed:
        log("WARNING: torque could NOT be switched off on: " + "; ".join(failed))
        log("Switch the servo power off now.")
    else:
        log("torque off on every servo")
    return failed


# ---------------------------------------------------------------------- calibrate-joints
CALIBRATION_POSES = {
    "zero": (0.0, 0.0, 0.0, 0.0, 0.0, 0.0),
    "home": ARM.home,
}
"""Reference poses for calibration (sim units): ``zero`` is the ready pose with the
gripper closed; ``home`` the same with the gripper open as at an episode's start."""


def calibrate_joints(
    robot_file: str,
    port: str,
    *,
    pose: str = "zero",
    confirm: Callable[[str], None] | None = None,
    write_limits: bool = False,
    reboot: bool = False,
    out_file: str | None = None,
    log: Callable[[str], None] = print,
) -> RobotConfig:
    """Measure each servo's offset with the arm held in a reference pose; save the file.

    With torque off, the user puts the arm in ``pose`` (see :data:`CALIBRATION_POSES`),
    ``confirm`` returns (e.g. Enter pressed), the present positions are read and each
    offset becomes ``ticks - direction * ticks_per_unit * q_reference``. The robot file is
    written atomically (the old one kept as ``<file>.bak``); ``write_limits`` also stores
    the file's limits in the servos, which activation checks.
    """
    if pose not in CALIBRATION_POSES:
        raise MetagraspError(f"unknown pose {pose!r}; choose from {list(CALIBRATION_POSES)}")
    cfg = load_robot_file(robot_file)
    robot = Robot.open(cfg, port)
    try:
        if reboot:
            robot.reboot()
        robot.connect()
        robot.configure()  # torque off: the arm can be moved by hand
        if confirm is not None:
            confirm(
                f"Move the arm to the '{pose}' pose {CALIBRATION_POSES[pose]}, then press Enter"
            )
        reference = np.array(CALIBRATION_POSES[pose], float)
        for (name, j), q_ref in zip(cfg.joints.items(), reference, strict=True):
            ticks = robot.bus.read_register(j.id, "present_position")
            old = j.offset
            j.offset = float(ticks - j.direction * j.ticks_per_unit * q_ref)
            log(f"{name:14s} id {j.id:3d}: offset {old:8.1f} -> {j.offset:8.1f} ticks")
        new = dataclasses.replace(cfg)  # re-validated: limits must still fit the servos
        target = out_file or robot_file
        if target == robot_file:
            shutil.copy2(robot_file, f"{robot_file}.bak")
        save_robot_file(new, target)
        log(
            f"wrote {target}"
            + (f" (previous version in {robot_file}.bak)" if target == robot_file else "")
        )
        if write_limits:
            robot.config = new
            robot.write_limits()
            log("stored the file's position limits in every servo")
        return new
    except ProtocolError as exc:
        raise RobotError(f"calibration failed on the bus: {exc}") from exc
    finally:
        robot.deactivate(force=True)
        robot.disconnect()
