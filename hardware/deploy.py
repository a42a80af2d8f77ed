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

__all__ = ["DeploySummary", "calibrate_joints", "deploy", "estop_on_signals"]


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
    """
    cfg = robot_file if isinstance(robot_file, RobotConfig) else load_robot_file(robot_file)
    pol = load_policy(policy) if isinstance(policy, str) else policy
    if loop is None:
        rate = pol.spec.control_hz
        loop = LoopConfig(rate_hz=rate, episode_steps=round((episode_seconds or 4.0) * rate))
    if abs(loop.rate_hz - pol.spec.control_hz) > 1e-9:
        log(
            f"note: loop rate {loop.rate_hz:g} Hz differs from the policy's "
            f"{pol.spec.control_hz:g} Hz: its actions act per cycle, so motions run "
            f"{loop.rate_hz / pol.spec.control_hz:.2f}x as fast as in training"
        )
    summary = DeploySummary(recording=record_dir)
    stop = threading.Event()
    pose = open_pose_source(pose_source) if isinstance(pose_source, str) else pose_source
    robot: Robot | None = None
    ctl: ControlLoop | None = None
    stopped_by: BaseException | None = None
    all_periods: list[np.ndarray] = []
    all_missed: list[np.ndarray] = []
    with estop_on_signals(stop) as signals:
        try:
            robot = Robot.open(cfg, port)
            robot.connect()
            robot.configure()
            recorder = None
            if record_dir is not None:
                recorder = EpisodeRecorder(
                    record_dir,
                    {
                        "robot": cfg.to_dict(),
                        "port": port,
                        "policy": policy if isinstance(policy, str) else type(pol).__name__,
                        "policy_spec": dataclasses.asdict(pol.spec),
                        "loop": dataclasses.asdict(loop),
                    },
                )
            robot.activate()
            log(f"robot {cfg.name!r} active on {port}: {len(cfg.ids)} servos, {loop.rate_hz:g} Hz")
            ctl = ControlLoop(robot, pol, pose, loop, stop=stop)
            ctl.start()
            if ctl.realtime_note:
                log(ctl.realtime_note)
            for k in range(episodes):
                ctl.prepare_episode(k)
                buffer = EpisodeBuffer(loop.episode_steps)
                failure: BaseException | None = None
                try:
                    ctl.run_episode(buffer)
                except BaseException as exc:
                    failure = exc
                    raise
                finally:
                    data = buffer.trimmed()
                    all_periods.append(data["period"])
                    all_missed.append(data["missed"])
                    meta = {
                        "status": _status_of(failure),
                        "error": None
                        if failure is None
                        else f"{type(failure).__name__}: {failure}",
                        "timing": timing_summary(data["period"], data["missed"], loop.period_s),
                        "bus": robot.bus.stats.as_dict(),
                        "skipped_cycles": ctl.skipped_cycles,
                    }
                    if recorder is not None:
                        path = recorder.write_episode(buffer, meta)
                        meta["file"] = str(path)
                    summary.episodes.append(meta)
                    t = meta["timing"]
                    p50, p99 = t.get("period_p50_ms", 0.0), t.get("period_p99_ms", 0.0)
                    log(
                        f"episode {k}: {meta['status']}, {buffer.n} steps, period p50 "
                        f"{p50:.2f} ms p99 {p99:.2f} ms, {t['missed']} missed"
                    )
        except (MetagraspError, KeyboardInterrupt) as exc:
            summary.error = f"{type(exc).__name__}: {exc}"
            stopped_by = exc
            log(f"stopping: {summary.error}")
        finally:
            if ctl is not None:
                ctl.close()
            if robot is not None:
                summary.torque_off_failures = _shutdown(
                    robot,
                    ctl,
                    # Parking needs a healthy bus, and a second signal means "off, now".
                    park=park_on_exit
                    and len(signals) < 2
                    and not isinstance(stopped_by, ProtocolError),
                    log=log,
                )
                summary.bus = robot.bus.stats.as_dict()
            pose.close()
    if all_periods:
        summary.timing = timing_summary(
            np.concatenate(all_periods), np.concatenate(all_missed), loop.period_s
        )
    if ctl is not None:
        summary.shield = {k: v.tolist() for k, v in ctl.shield.counts.items()}
    return summary


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
