"""Typed errors of the servo bus layer.

Contract: every failure on the bus (a port that vanished, a reply that never came, a
corrupted or implausible reply, a servo that reports an error) raises a subclass of
:class:`ProtocolError`, itself a :class:`metagrasp.errors.MetagraspError`, so the CLI prints
the message without a traceback. Each message names the problem and the fix.

``retryable`` tells the bus client whether sending the same instruction again can help:
a lost or corrupted reply can, a servo refusing the instruction cannot.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from metagrasp.errors import MetagraspError

__all__ = [
    "ActivationRefusedError",
    "ChecksumError",
    "EmergencyStopError",
    "PoseSourceError",
    "RobotError",
    "UnsafeCommandError",
    "WatchdogError",
    "EncodingError",
    "ImplausibleValueError",
    "MalformedPacketError",
    "PacketTimeoutError",
    "PortError",
    "ProtocolError",
    "ServoStatusError",
    "WrongIdError",
]


class ProtocolError(MetagraspError):
    """Base class of every error raised by ``metagrasp.hardware``'s bus layer."""

    #: Whether repeating the same instruction may succeed (lost/corrupted replies).
    retryable: bool = False


class EncodingError(ProtocolError, ValueError):
    """An instruction cannot be encoded: id, address, length or value out of range.

    This is a caller bug (or a bad config value), never a bus fault, so it is not retryable.
    """


class MalformedPacketError(ProtocolError):
    """A reply passed framing but its fields make no sense (bad length, wrong size of data).

    Usually a stale reply to an earlier instruction or line noise; retrying helps.
    """

    retryable = True


class ChecksumError(MalformedPacketError):
    """A reply's CRC (Dynamixel) or checksum (Feetech) does not match its bytes."""

    def __init__(self, expected: int, got: int, *, protocol: str = "") -> None:
        self.expected = expected
        self.got = got
        what = f"{protocol} " if protocol else ""
        super().__init__(
            f"{what}reply failed its checksum (computed 0x{expected:04X}, received "
            f"0x{got:04X}): the line is noisy. Check the bus cable and connectors, keep the "
            "servo power supply separate from the signal ground loop, or lower the baud rate."
        )


class PacketTimeoutError(ProtocolError):
    """No valid reply arrived from one or more servos within the timeout."""

    retryable = True

    def __init__(
        self,
        missing_ids: Iterable[int],
        timeout_s: float,
        *,
        attempts: int = 1,
        detail: str = "",
    ) -> None:
        self.missing_ids = tuple(sorted(missing_ids))
        self.timeout_s = timeout_s
        self.attempts = attempts
        ids = ", ".join(str(i) for i in self.missing_ids)
        extra = f" ({detail})" if detail else ""
        super().__init__(
            f"no reply from servo id(s) {ids} within {timeout_s * 1e3:.0f} ms "
            f"after {attempts} attempt(s){extra}. Check that the servos are powered, the id(s) "
            "and baud rate match the servos' settings (scan the bus to list them), and the data "
            "cable is seated; a USB adapter with a high latency timer may need a longer timeout."
        )


class WrongIdError(PacketTimeoutError):
    """Valid replies arrived, but only from ids that were not asked.

    Typical causes: two servos share an id, or the config names the wrong id.
    """

    def __init__(
        self,
        missing_ids: Iterable[int],
        seen_ids: Iterable[int],
        timeout_s: float,
        *,
        attempts: int = 1,
    ) -> None:
        self.seen_ids = tuple(sorted(set(seen_ids)))
        seen = ", ".join(str(i) for i in self.seen_ids)
        super().__init__(
            missing_ids,
            timeout_s,
            attempts=attempts,
            detail=f"replies came from unexpected id(s) {seen}: two servos may share an id, or "
            "the configured id is wrong; connect servos one at a time to re-number them",
        )


class ServoStatusError(ProtocolError):
    """A servo answered, and its status byte reports an error.

    Attributes:
        servo_id: Id of the servo that reported the error.
        error_byte: The raw error/status byte of the status packet.
        flags: Names of the conditions decoded from ``error_byte``.
        alert: True if the byte reports a hardware fault (Dynamixel Alert bit 7; any
            Feetech status bit). The instruction itself was executed; the servo needs care.
        instruction_error: Name of the Dynamixel result code (bits 0..6) if the servo
            refused the instruction, else None.
        packet: The full status packet, so a caller can still use its data after an alert.
    """

    def __init__(
        self,
        servo_id: int,
        error_byte: int,
        flags: Sequence[str],
        *,
        alert: bool,
        instruction_error: str | None = None,
        hint: str = "",
        retryable: bool = False,
        packet: Any = None,
    ) -> None:
        self.servo_id = servo_id
        self.error_byte = error_byte
        self.flags = tuple(flags)
        self.alert = alert
        self.instruction_error = instruction_error
        self.packet = packet
        self.retryable = retryable
        names = ", ".join(self.flags) if self.flags else "unknown"
        msg = f"servo {servo_id} reported error 0x{error_byte:02X} ({names})"
        if hint:
            msg += f": {hint}"
        super().__init__(msg)


class ImplausibleValueError(ProtocolError):
    """A reply decoded to a value no working servo can report.

    Feetech's 8-bit checksum lets roughly one corrupted reply in 256 through, so values are
    range-checked as a second line of defence; retrying usually gets a clean reply.
    """

    retryable = True

    def __init__(
        self, servo_id: int, register: str, value: float, valid: str, *, unit: str = ""
    ) -> None:
        self.servo_id = servo_id
        self.register = register
        self.value = value
        self.valid = valid
        unit_s = f" {unit}" if unit else ""
        super().__init__(
            f"servo {servo_id} reported {register} = {value}{unit_s}, outside the plausible "
            f"range {valid}{unit_s}: the reply was probably corrupted (the 8-bit checksum is "
            "weak). Retry the read; if it persists check the supply voltage, the bus wiring, "
            "and the servo's operating mode (multi-turn modes report positions outside 0..4095)."
        )


class PortError(ProtocolError):
    """The serial port cannot be opened, or failed mid-use (adapter unplugged).

    Not retryable at the packet level: the port must be reopened.
    """

    def __init__(self, port: str, problem: str, fix: str = "") -> None:
        self.port = port
        self.problem = problem
        fix = fix or (
            "check the USB cable and that the adapter is plugged in, that you may access it "
            "(on Linux: add yourself to the 'dialout' group), and pass the right --port "
            "(list candidates with `ls /dev/ttyUSB* /dev/ttyACM*`)"
        )
        super().__init__(f"serial port {port!r}: {problem}. Fix: {fix}.")


# ------------------------------------------------------------------- robot and control loop
class RobotError(MetagraspError):
    """The robot cannot be brought up as its robot file describes (wrong model, a servo
    reporting a fault, a lifecycle step called out of order)."""


class ActivationRefusedError(RobotError):
    """Torque was not enabled: the servos' stored limits or positions disagree with the
    robot file. ``problems`` lists each disagreement."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = tuple(problems)
        lines = "\n  - ".join(self.problems)
        super().__init__(
            f"refusing to enable torque:\n  - {lines}\nFix: run `metagrasp calibrate-joints` "
            "with the arm in its zero pose (and --write-limits to store the file's limits in "
            "the servos), or move the arm by hand into its limits with torque off."
        )


class UnsafeCommandError(MetagraspError):
    """The policy produced a command the shield cannot repair (NaN or inf)."""


class WatchdogError(MetagraspError):
    """The host-side deadline watchdog tripped: a control cycle took far too long."""


class EmergencyStopError(MetagraspError):
    """The run was stopped by Ctrl-C or a signal; the robot was made safe."""


class PoseSourceError(MetagraspError):
    """The object-pose source failed: stream closed, malformed line, or pose too old."""
