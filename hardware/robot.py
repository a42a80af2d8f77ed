"""The robot: a chain of servos behind a robot file, with a safe lifecycle.

Contract::

    robot = Robot.open(config, "/dev/ttyUSB0")   # open the port (or Robot(config, bus))
    robot.connect()       # ping every servo, check its model, refuse latched faults
    robot.configure()     # torque off; operating modes; gripper force limit at full
    robot.activate()      # check stored limits + positions against the file; goal =
                          # present; torque on servo by servo; Dynamixel bus watchdog on
    reading = robot.read()                    # positions, velocities, efforts (sim units)
    robot.write(targets, force_fraction)      # goal positions + the gripper's force limit
    robot.deactivate()    # torque off servo by servo, carrying on past individual errors
    robot.disconnect()

Every quantity crossing this API is in the sim's joint units and order
(:data:`metagrasp.kinematics.ARM`): rad for the arm, metres of finger travel for the
gripper. Steps called out of order raise :class:`~metagrasp.hardware.errors.RobotError`.
"""

from __future__ import annotations

import contextlib
import enum
import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from metagrasp.hardware.bus import ServoBus, open_port
from metagrasp.hardware.errors import (
    ActivationRefusedError,
    ProtocolError,
    RobotError,
)
from metagrasp.hardware.robot_config import RobotConfig

__all__ = ["SETUP_RETRIES", "JointReading", "Robot", "RobotPhase"]

SETUP_RETRIES = 5
"""Bus retries during connect/configure/activate (the loop uses the robot file's)."""


class RobotPhase(enum.Enum):
    """Where the robot is in its lifecycle."""

    DISCONNECTED = "disconnected"
    CONNECTED = "connected"
    CONFIGURED = "configured"
    ACTIVE = "active"


@dataclass(frozen=True)
class JointReading:
    """One read of every servo, converted to the sim's joint units."""

    t: float
    """time.monotonic() when the read completed (s)."""
    q: np.ndarray
    """Joint positions (rad; gripper: m per finger)."""
    dq: np.ndarray
    """Joint velocities (units/s)."""
    effort: np.ndarray
    """Efforts in [-1, 1] of full force, positive while squeezing (the gripper's is observed)."""
    raw_position: np.ndarray
    """Raw present positions (ticks)."""


class Robot:
    """A robot file's servos on one bus. See the module docstring.

    Args:
        config: The parsed robot file.
        bus: An open bus speaking the file's protocol.
    """

    def __init__(self, config: RobotConfig, bus: ServoBus) -> None:
        self.config = config
        self.bus = bus
        self.phase = RobotPhase.DISCONNECTED
        self.model = config.servo_model
        self.ids = config.ids
        self.grip_id = config.joints["gripper"].id
        self._effort_reg = self.model.effort_register
        self._force_reg = self.model.force_limit_register
        self._last_force: int | None = None
        self.last_reading: JointReading | None = None
        self.watchdog_ms = config.bus_watchdog_ms if config.protocol == "dynamixel" else 0
        """Servo-side bus watchdog in use (ms; 0: none, e.g. Feetech has none)."""

    @classmethod
    def open(cls, config: RobotConfig, port: str) -> Robot:
        """Open ``port`` at the file's baud rate and wrap it in a robot (not yet connected)."""
        serial_port = open_port(port, config.baudrate, timeout_s=config.timeout_ms / 1e3)
        bus = ServoBus(
            serial_port,
            config.bus_protocol(),
            timeout_s=config.timeout_ms / 1e3,
            retries=config.retries,
            port_name=port,
        )
        return cls(config, bus)

    # ----------------------------------------------------------------------- lifecycle
    @contextlib.contextmanager
    def _patient(self) -> Iterator[None]:
        """More retries for set-up steps: they are not time-critical, and one corrupted
        reply among the dozens of set-up transactions must not abort a session."""
        retries = self.bus.retries
        self.bus.retries = max(retries, SETUP_RETRIES)
        try:
            yield
        finally:
            self.bus.retries = retries

    def _require(self, *phases: RobotPhase) -> None:
        if self.phase not in phases:
            allowed = " or ".join(p.value for p in phases)
            raise RobotError(f"robot is {self.phase.value}; this step needs it {allowed}")

    def _connect(self) -> None:
        """Ping every servo and check its model; refuse servos with latched faults."""
        self._require(RobotPhase.DISCONNECTED)
        names = list(self.config.joints)
        for name, j in self.config.joints.items():
            try:
                info = self.bus.ping(j.id, allow_alert=True)
                number = info.model_number
                if number is None:
                    number = self.bus.read_register(j.id, "model_number", allow_alert=True)
            except ProtocolError as exc:
                raise RobotError(f"joint {name} (servo id {j.id}) does not answer: {exc}") from exc
            if number != j.servo.model_number:
                raise RobotError(
                    f"joint {name}: servo id {j.id} is model number {number}, the robot file "
                    f"says {j.model} ({j.servo.model_number}); fix the id or the model"
                )
        faults = self._hardware_faults()
        if faults:
            raise RobotError(
                "servo(s) report a latched hardware fault: "
                + "; ".join(f"{names[self.ids.index(i)]} (id {i}): {f}" for i, f in faults.items())
                + ". Remove the cause (load, supply, heat), then reboot them "
                "(`metagrasp calibrate-joints --reboot` or power-cycle)."
            )
        self.phase = RobotPhase.CONNECTED

    def _hardware_faults(self) -> dict[int, str]:
        """Servo id -> description of its latched hardware fault, for faulted servos."""
        reg = "hardware_error_status" if self.config.protocol == "dynamixel" else "status"
        out = {}
        for i in self.ids:
            value = self.bus.read_register(i, reg, allow_alert=True)
            if value:
                out[i] = f"{reg} = 0x{value:02X}"
        return out

    def reboot(self) -> None:
        """Reboot every servo (clears latched faults; torque comes back off)."""
        for i in self.ids:
            self.bus.reboot(i)
        time.sleep(0.05)

    def _configure(self) -> None:
        """Torque off; operating modes (EEPROM, written only if different); full force."""
        self._require(RobotPhase.CONNECTED, RobotPhase.CONFIGURED)
        bus = self.bus
        for i in self.ids:
            bus.write_register(i, "torque_enable", 0, allow_alert=True)
        if self.watchdog_ms:
            for i in self.ids:
                bus.write_register(i, "bus_watchdog", 0)  # clear a past watchdog error
        for name, j in self.config.joints.items():
            mode = j.servo.gripper_mode if name == "gripper" else j.servo.position_mode
            if bus.read_register(j.id, "operating_mode") != mode:
                bus.write_register(j.id, "operating_mode", int(mode))
        self._write_force(1.0)
        self.phase = RobotPhase.CONFIGURED

    def _check_activation(self) -> list[str]:
        """Disagreements between the servos and the robot file (empty: safe to activate).

        The file's limits must lie within each servo's stored position limits (else the
        servo would refuse or clamp commands the shield allows), and every present
        position must lie within the file's limits, give or take ``position_tolerance``
        (else the offsets are wrong or the arm is somewhere unexpected).
        """
        problems = []
        bus, tol = self.bus, self.config.position_tolerance
        for name, j in self.config.joints.items():
            lo_t, hi_t = sorted((j.to_ticks(j.min), j.to_ticks(j.max)))
            s_lo = bus.read_register(j.id, "min_position_limit")
            s_hi = bus.read_register(j.id, "max_position_limit")
            if lo_t < s_lo or hi_t > s_hi:
                problems.append(
                    f"{name} (id {j.id}): the file's limits are ticks {lo_t}..{hi_t}, the "
                    f"servo stores {s_lo}..{s_hi}"
                )
            q = j.from_ticks(bus.read_register(j.id, "present_position"))
            if not j.min - tol <= q <= j.max + tol:
                problems.append(
                    f"{name} (id {j.id}): present position {q:+.3f} is outside the file's "
                    f"limits {j.min:+.3f}..{j.max:+.3f} (tolerance {tol})"
                )
        return problems

    def _write_limits(self) -> None:
        """Store the file's limits (in ticks) in every servo (EEPROM; torque must be off)."""
        self._require(RobotPhase.CONNECTED, RobotPhase.CONFIGURED)
        for j in self.config.joints.values():
            lo_t, hi_t = sorted((j.to_ticks(j.min), j.to_ticks(j.max)))
            if self.config.protocol == "feetech":
                self.bus.write_register(j.id, "lock", 0)
            self.bus.write_register(j.id, "min_position_limit", lo_t)
            self.bus.write_register(j.id, "max_position_limit", hi_t)
            if self.config.protocol == "feetech":
                self.bus.write_register(j.id, "lock", 1)

    def _activate(self) -> JointReading:
        """Enable torque holding the present pose, after :meth:`check_activation` passes.

        Returns:
            The reading taken just before torque came on (the start pose).

        Raises:
            ActivationRefusedError: The servos disagree with the file; torque stays off.
        """
        self._require(RobotPhase.CONFIGURED)
        problems = self._check_activation()
        if problems:
            raise ActivationRefusedError(problems)
        reading = self._read()
        # Goal = present first, so enabling torque never jumps to a stale goal.
        positions = {i: int(t) for i, t in zip(self.ids, reading.raw_position, strict=True)}
        self.bus.sync_write_register("goal_position", positions)
        try:
            for i in self.ids:
                self.bus.write_register(i, "torque_enable", 1)
            if self.watchdog_ms:
                units = max(1, round(self.watchdog_ms / 20))
                for i in self.ids:
                    self.bus.write_register(i, "bus_watchdog", units)
        except ProtocolError:
            self.deactivate(force=True)
            raise
        self.phase = RobotPhase.ACTIVE
        return reading

    def deactivate(self, *, force: bool = False) -> list[str]:
        """Torque off, servo by servo; an error on one servo does not stop the others.

        Each servo gets up to three attempts. Returns the servos that could not be
        switched off (empty on success); the caller reports them loudly.
        """
        if not force and self.phase is RobotPhase.DISCONNECTED:
            return []
        failed = []
        for name, j in self.config.joints.items():
            for attempt in range(3):
                try:
                    self.bus.write_register(j.id, "torque_enable", 0, allow_alert=True)
                    break
                except ProtocolError as exc:
                    if attempt == 2:
                        failed.append(f"{name} (id {j.id}): {exc}")
        if self.watchdog_ms:
            # Torque is what matters; a watchdog left set is cleared by the next configure.
            for i in self.ids:
                with contextlib.suppress(ProtocolError):
                    self.bus.write_register(i, "bus_watchdog", 0, allow_alert=True)
        if self.phase is RobotPhase.ACTIVE:
            self.phase = RobotPhase.CONFIGURED
        return failed

    def connect(self) -> None:
        """Ping every servo and check its model; refuse servos with latched faults."""
        with self._patient():
            self._connect()

    def configure(self) -> None:
        """Torque off; operating modes (EEPROM, written only if different); full force."""
        with self._patient():
            self._configure()

    def check_activation(self) -> list[str]:
        """Disagreements between the servos and the robot file (see :meth:`activate`)."""
        with self._patient():
            return self._check_activation()

    def write_limits(self) -> None:
        """Store the file's limits (in ticks) in every servo (EEPROM; torque must be off)."""
        with self._patient():
            self._write_limits()

    def activate(self) -> JointReading:
        """Enable torque holding the present pose (see :meth:`_activate`)."""
        with self._patient():
            return self._activate()

    def hardware_faults(self) -> dict[int, str]:
        """Servo id -> description of its latched hardware fault, for faulted servos."""
        with self._patient():
            return self._hardware_faults()

    def disconnect(self) -> None:
        """Close the port (torque should be off: call :meth:`deactivate` first)."""
        self.bus.close()
        self.phase = RobotPhase.DISCONNECTED

    # ------------------------------------------------------------------------ the loop
    def read(self) -> JointReading:
        """Positions, velocities and efforts of every servo in one sync read."""
        self._require(RobotPhase.ACTIVE, RobotPhase.CONFIGURED)
        return self._read()

    def _read(self) -> JointReading:
        names = ("present_position", "present_velocity", self._effort_reg)
        values = self.bus.sync_read_registers(self.ids, names)
        raw = np.array([[values[i][n] for n in names] for i in self.ids], float)
        cfg = self.config
        reading = JointReading(
            t=time.monotonic(),
            q=cfg.from_ticks(raw[:, 0]),
            dq=cfg.velocity_from_raw(raw[:, 1]),
            effort=cfg.effort_from_raw(raw[:, 2]),
            raw_position=raw[:, 0].astype(np.int64),
        )
        self.last_reading = reading
        return reading

    def write(self, targets: np.ndarray, force_fraction: float | None = None) -> None:
        """Send goal positions (sim units, already shielded) and the gripper force limit
        (a fraction of full; None keeps the current one)."""
        self._require(RobotPhase.ACTIVE)
        ticks = self.config.to_ticks(np.asarray(targets, float))
        self.bus.sync_write_register(
            "goal_position", {i: int(t) for i, t in zip(self.ids, ticks, strict=True)}
        )
        if force_fraction is not None:
            self._write_force(force_fraction)

    def _write_force(self, fraction: float) -> None:
        if self._force_reg is None:
            return
        full = self.config.joints["gripper"].servo.force_limit_full
        value = int(round(min(max(fraction, 0.0), 1.0) * full))
        if value != self._last_force:  # only on change: one packet less per cycle
            self.bus.sync_write_register(self._force_reg, {self.grip_id: value})
            self._last_force = value

    def hold(self) -> None:
        """Command the last read positions (stop moving); errors propagate."""
        if self.last_reading is not None and self.phase is RobotPhase.ACTIVE:
            self.write(self.config.from_ticks(self.last_reading.raw_position))
