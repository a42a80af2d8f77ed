"""The fixed-rate control loop: read servos and pose, run the policy, shield, write.

Contract: :class:`ControlLoop` runs one policy on one :class:`~metagrasp.hardware.robot.Robot`
at a fixed rate on :func:`time.monotonic`. Each cycle::

    wait for the cycle's scheduled start (sleep, then spin the last fraction of a ms)
    check the e-stop flag and the host-side deadline watchdog
    reading = robot.read(); pose = pose_source.read()
    obs = the sim's observation (ObservationBuilder); action = policy.act(obs)
    targets = ActionMap (the env's mapping); command = SafetyShield(targets, present)
    robot.write(command, gripper force fraction); record the step

A cycle *misses its deadline* when its work ends after the next cycle's scheduled start;
the schedule then re-anchors at the present instead of bursting to catch up. A cycle whose
servo read fails after the bus's retries is skipped (the servos keep their last goal) in
every phase; more than ``max_bus_failures`` in a row end the run. The
:class:`DeadlineWatchdog` thread trips when no cycle completed for ``watchdog_s``: it
commands the robot to hold still (the bus is thread-safe) and the loop stops with a
:class:`~metagrasp.hardware.errors.WatchdogError` at its next check. Between episodes the
loop keeps cycling (park, settle) so the servo-side bus watchdog stays fed.

Every step is stored in an :class:`~metagrasp.hardware.recorder.EpisodeBuffer` passed in by
the caller, who writes it out whatever way the episode ends.
"""

from __future__ import annotations

import gc
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from metagrasp.actions import ActionMap, ActionMapConfig
from metagrasp.errors import ConfigError
from metagrasp.hardware.errors import (
    EmergencyStopError,
    ProtocolError,
    UnsafeCommandError,
    WatchdogError,
)
from metagrasp.hardware.observation import ObservationBuilder
from metagrasp.hardware.policies import Policy
from metagrasp.hardware.pose import PoseSource
from metagrasp.hardware.recorder import EpisodeBuffer
from metagrasp.hardware.robot import JointReading, Robot
from metagrasp.hardware.shield import SafetyShield, ShieldLimits
from metagrasp.kinematics import ARM

__all__ = [
    "ControlLoop",
    "DeadlineWatchdog",
    "LoopConfig",
    "set_realtime_priority",
    "timing_summary",
]


@dataclass
class LoopConfig:
    """Settings of the control loop."""

    rate_hz: float = 25.0
    """Cycle rate (Hz); normally the rate the policy was trained at."""
    episode_steps: int = 100
    """Policy steps per episode."""
    watchdog_s: float = 0.0
    """Host deadline watchdog: trip after this long without a completed cycle (s);
    0 means 5 periods, at least 0.1 s."""
    park_s: float = 1.5
    """Time to move to the park pose before an episode (s); 0 skips parking."""
    settle_s: float = 0.5
    """Time to hold still after parking, before the episode (s): the object is placed."""
    park_pose: tuple[float, ...] = ARM.home
    """Joint positions of the park pose (sim units)."""
    spin_s: float = 0.0008
    """Final stretch of each wait spent spinning instead of sleeping (s): sleep overshoot
    on a busy machine is what makes periods jitter."""
    place_goal: tuple[float, float, float] | None = None
    """Goal position for the ``place`` task (m)."""
    max_bus_failures: int = 2
    """Consecutive cycles whose servo read failed (after the bus's retries) that are
    skipped, parking and settling included, before the run is aborted; faults retrying
    cannot fix abort at once."""
    realtime_priority: int = 0
    """If > 0, run the loop's process under SCHED_FIFO at this priority (Linux; needs
    root or CAP_SYS_NICE, else a note is logged and the loop runs at normal priority)."""

    def __post_init__(self) -> None:
        if not 1.0 <= self.rate_hz <= 500.0:
            raise ConfigError(f"rate_hz={self.rate_hz} outside [1, 500] Hz")
        if self.episode_steps < 1:
            raise ConfigError(f"episode_steps must be >= 1, got {self.episode_steps}")
        if self.watchdog_s <= 0:
            self.watchdog_s = max(5.0 / self.rate_hz, 0.1)
        if len(self.park_pose) != 6:
            raise ConfigError("park_pose needs 6 joint values (sim order)")

    @property
    def period_s(self) -> float:
        """Cycle period (s)."""
        return 1.0 / self.rate_hz


def set_realtime_priority(priority: int) -> str:
    """Put this process under SCHED_FIFO at ``priority``; returns what happened (a note).

    Sleep overshoot under load is what makes a Python loop's period jitter; a real-time
    class lets the kernel wake the loop ahead of ordinary processes.
    """
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
    except (AttributeError, OSError) as exc:
        return f"real-time priority {priority} not granted ({exc}); running at normal priority"
    return f"running under SCHED_FIFO priority {priority}"


class DeadlineWatchdog:
    """Trips when :meth:`beat` was not called for ``limit_s``; runs ``on_trip`` once."""

    def __init__(self, limit_s: float, on_trip: Callable[[], None]) -> None:
        self.limit_s = float(limit_s)
        self.on_trip = on_trip
        self.tripped = threading.Event()
        self.trip_error: str | None = None
        self._last = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="deadline-watchdog", daemon=True)

    def start(self) -> None:
        self._last = time.monotonic()
        self._thread.start()

    def beat(self) -> None:
        """A cycle completed."""
        self._last = time.monotonic()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=1.0)

    def _run(self) -> None:
        while not self._stop.wait(self.limit_s / 4):
            late = time.monotonic() - self._last
            if late > self.limit_s:
                self.tripped.set()
                try:
                    self.on_trip()
                except Exception as exc:  # noqa: BLE001 (reported by the loop)
                    self.trip_error = str(exc)
                return


def timing_summary(periods: np.ndarray, missed: np.ndarray, period_s: float) -> dict[str, float]:
    """p50/p99/max of the cycle period, p99 of |period - nominal|, missed deadlines (ms)."""
    p = np.asarray(periods, float)
    p = p[p > 0]  # the first cycle of each episode has no previous start
    n = int(np.asarray(missed).size)
    out = {"cycles": n, "missed": int(np.sum(missed)), "missed_fraction": 0.0}
    if n:
        out["missed_fraction"] = out["missed"] / n
    if p.size:
        err = np.abs(p - period_s)
        out |= {
            "period_p50_ms": float(np.percentile(p, 50) * 1e3),
            "period_p99_ms": float(np.percentile(p, 99) * 1e3),
            "period_max_ms": float(p.max() * 1e3),
            "period_error_p99_ms": float(np.percentile(err, 99) * 1e3),
        }
    return out


class ControlLoop:
    """One policy driving one robot; see the module docstring.

    Args:
        robot: An activated robot.
        policy: The policy (its ``spec`` sets the action mapping and the task kind).
        pose_source: Object-pose source.
        config: Loop settings.
        stop: Event that requests an emergency stop (set by signal handlers).
    """

    def __init__(
        self,
        robot: Robot,
        policy: Policy,
        pose_source: PoseSource,
        config: LoopConfig,
        *,
        stop: threading.Event | None = None,
    ) -> None:
        self.robot = robot
        self.policy = policy
        self.pose = pose_source
        self.config = config
        self.stop = stop if stop is not None else threading.Event()
        spec = policy.spec
        self.action_map = ActionMap(
            ActionMapConfig(
                action_mode=spec.action_mode,
                control_hz=spec.control_hz,
                max_tcp_delta=spec.max_tcp_delta,
                max_joint_delta=spec.max_joint_delta,
            )
        )
        self.shield = SafetyShield(ShieldLimits.from_robot(robot.config), config.period_s)
        place = None if config.place_goal is None else np.array(config.place_goal)
        self.observer = ObservationBuilder(spec.task, place)
        self.watchdog = DeadlineWatchdog(config.watchdog_s, self._on_watchdog)
        self.realtime_note = ""
        self.skipped_cycles = 0
        """Cycles skipped after a failed servo read since the current episode was prepared
        (its parking and settling included)."""
        self._next = 0.0
        self._bus_failures = 0

    # ------------------------------------------------------------------------- timing
    def _wait(self) -> tuple[float, float]:
        """Sleep until the next scheduled start; returns (scheduled, actual)."""
        due = self._next
        spin = self.config.spin_s
        while True:
            now = time.monotonic()
            remaining = due - now
            if remaining <= 0:
                break
            if remaining > spin:
                time.sleep(remaining - spin)
        return due, now

    def _advance(self, end: float) -> bool:
        """Schedule the next cycle; True if this cycle missed its deadline."""
        self._next += self.config.period_s
        if end > self._next:
            self._next = end  # re-anchor: never burst to catch up
            return True
        return False

    def _read_or_skip(self) -> JointReading | None:
        """This cycle's servo read, or None if its reply was lost and the cycle is skipped.

        A lost or corrupted reply (after the bus's own retries) skips the cycle: the
        servos keep their last goal, as after a late cycle. Only a run of more than
        ``max_bus_failures`` of them, or a fault that retrying cannot fix, raises. Every
        phase (parking, settling, the episode) tolerates the same glitch: a robot on a
        noisy bus must not abort a run while parking when it would not while grasping.
        """
        try:
            reading = self.robot.read()
        except ProtocolError as exc:
            self._bus_failures += 1
            if not exc.retryable or self._bus_failures > self.config.max_bus_failures:
                raise
            self.skipped_cycles += 1
            self.watchdog.beat()
            self._advance(time.monotonic())
            return None
        self._bus_failures = 0
        return reading

    def _first_read(self) -> JointReading:
        """A read outside the cycle (a phase's starting pose): same tolerance, no skipping."""
        while True:
            self._check()
            reading = self._read_or_skip()
            if reading is not None:
                return reading
            self._wait()

    def _check(self) -> None:
        if self.stop.is_set():
            raise EmergencyStopError("emergency stop requested (signal or Ctrl-C)")
        if self.watchdog.tripped.is_set():
            extra = (
                f"; holding failed: {self.watchdog.trip_error}" if self.watchdog.trip_error else ""
            )
            raise WatchdogError(
                f"no control cycle completed for {self.config.watchdog_s * 1e3:.0f} ms: the "
                f"robot was told to hold still{extra}. Something blocked the loop (a slow "
                "policy, a stalled bus or machine); check the load, lower --rate"
            )

    def _on_watchdog(self) -> None:
        self.robot.hold()

    def start(self) -> None:
        """Start the clock and the watchdog (after the robot is activated)."""
        if self.config.realtime_priority > 0:
            self.realtime_note = set_realtime_priority(self.config.realtime_priority)
        # Objects allocated so far (imports, the policy) leave the collector's view: a full
        # collection would otherwise walk all of them, a pause of many milliseconds.
        gc.collect()
        gc.freeze()
        self._next = time.monotonic()
        self.watchdog.start()

    def close(self) -> None:
        self.watchdog.stop()
        gc.unfreeze()

    # ------------------------------------------------------------------- between episodes
    def move_to(self, pose: np.ndarray, seconds: float) -> JointReading:
        """Move smoothly to ``pose`` (sim units) in ``seconds``, through the shield."""
        reading = self._first_read()
        start = reading.q.copy()
        self.shield.reset(start)
        steps = max(1, int(round(seconds * self.config.rate_hz)))
        goal = np.asarray(pose, float)
        for k in range(1, steps + 1):
            self._wait()
            self._check()
            s = k / steps
            s = s * s * (3.0 - 2.0 * s)  # smoothstep: no jerk at either end
            got = self._read_or_skip()
            if got is None:
                continue
            reading = got
            command, _ = self.shield.filter(start + (goal - start) * s, reading.q)
            self.robot.write(command, 1.0)
            self.watchdog.beat()
            self._advance(time.monotonic())
        return reading

    def hold_for(self, seconds: float) -> JointReading:
        """Keep cycling without moving for ``seconds`` (feeds both watchdogs)."""
        reading = self._first_read()
        hold = reading.q.copy()
        self.shield.reset(hold)
        for _ in range(max(1, int(round(seconds * self.config.rate_hz)))):
            self._wait()
            self._check()
            got = self._read_or_skip()
            if got is None:
                continue
            reading = got
            command, _ = self.shield.filter(hold, reading.q)
            self.robot.write(command)
            self.watchdog.beat()
            self._advance(time.monotonic())
        return reading

    def prepare_episode(self, index: int) -> None:
        """Park, tell the pose source an episode starts, and let the scene settle."""
        self.skipped_cycles = 0
        if self.config.park_s > 0:
            self.move_to(np.array(self.config.park_pose), self.config.park_s)
        self.pose.mark_episode(index)  # the arm is out of the way: the scene may be reset
        if self.config.settle_s > 0:
            self.hold_for(self.config.settle_s)

    # -------------------------------------------------------------------------- episode
    def run_episode(self, buffer: EpisodeBuffer) -> None:
        """Run ``episode_steps`` policy steps, recording each into ``buffer``.

        Raises whatever stopped the episode (e-stop, watchdog, bus or pose failure, NaN);
        ``buffer`` then holds the steps completed so far.
        """
        robot = self.robot
        reading = self._first_read()
        pose = self.pose.read()
        self.observer.start_episode(pose)
        self.action_map.reset(reading.q)
        self.shield.reset(reading.q)
        self.policy.reset()
        prev = np.zeros(6, np.float32)
        t0 = self._next
        last_start = None
        while buffer.n < self.config.episode_steps:
            due, start = self._wait()
            self._check()
            got = self._read_or_skip()
            if got is None:
                continue
            reading = got
            t_read = time.monotonic()
            pose = self.pose.read()
            obs = self.observer.build(reading, pose, prev)
            if buffer.n:
                buffer.arrays["next_obs"][buffer.n - 1] = obs
            action = np.asarray(self.policy.act(obs), np.float32).reshape(-1)
            if action.shape != (6,) or not np.all(np.isfinite(action)):
                raise UnsafeCommandError(
                    f"policy returned {action!r}; expected 6 finite values in [-1, 1]. The "
                    "policy file or its inputs are broken: the robot was stopped"
                )
            applied = np.minimum(np.maximum(action, -1.0), 1.0)
            targets, force = self.action_map.step(applied, float(reading.q[5]))
            command, flags = self.shield.filter(targets, reading.q)
            robot.write(command, force)
            end = time.monotonic()
            self.watchdog.beat()
            missed = self._advance(end)
            buffer.row(
                t=start - t0,
                scheduled=due - t0,
                period=0.0 if last_start is None else start - last_start,
                read_s=t_read - start,
                compute_s=end - start,
                missed=missed,
                obs=obs,
                action=action,
                target=targets,
                command=command,
                force_fraction=force,
                shield_flags=flags,
                q=reading.q,
                dq=reading.dq,
                effort=reading.effort,
                pose_age_s=end - pose.t,
            )
            last_start = start
            prev = applied
        # One more cycle without acting: the observation the last action led to (adaptation
        # episodes need next_obs for every step).
        self._wait()
        reading = self._first_read()
        robot.write(self.shield.filter(self.action_map.targets, reading.q)[0])
        buffer.arrays["next_obs"][buffer.n - 1] = self.observer.build(
            reading, self.pose.read(), prev
        )
        self.watchdog.beat()
        self._advance(time.monotonic())
