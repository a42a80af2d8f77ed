"""Types shared by the servo wire protocols and the bus client.

Contract: ``metagrasp.hardware.dynamixel`` and ``metagrasp.hardware.feetech`` each expose a
stateless strategy object satisfying :class:`ServoProtocol` (pure encode/decode, no I/O);
``metagrasp.hardware.bus`` drives either one over a serial port without knowing which it
is. Everything here is plain data; nothing touches a port.
"""

from __future__ import annotations

import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol

from metagrasp.hardware.errors import EncodingError, ServoStatusError

__all__ = [
    "InstructionPacket",
    "PingInfo",
    "Register",
    "ServoProtocol",
    "StatusPacket",
    "check_range",
    "int_from_le",
    "int_to_le",
]


class Register(NamedTuple):
    """One control-table entry: where it lives and how many bytes it spans."""

    address: int
    size: int


@dataclass(frozen=True)
class StatusPacket:
    """A reply from one servo, after framing, checksum and (Dynamixel) unstuffing.

    Attributes:
        servo_id: Id the reply came from.
        error: The raw error/status byte.
        params: The data bytes (empty for replies to write/reboot).
        raw: The frame exactly as received, used to recognise an adapter's echo.
    """

    servo_id: int
    error: int
    params: bytes
    raw: bytes = b""


@dataclass(frozen=True)
class InstructionPacket:
    """An instruction decoded from the wire (used by simulated servos and tests)."""

    servo_id: int
    instruction: int
    params: bytes


@dataclass(frozen=True)
class PingInfo:
    """What a ping reveals. Feetech pings carry no data, so both fields may be None."""

    servo_id: int
    model_number: int | None = None
    firmware_version: int | None = None


class ServoProtocol(Protocol):
    """Strategy interface: one implementation per wire protocol, all methods pure.

    Framing is split in three steps so the bus can resynchronise generically: find
    :attr:`header`, ask :meth:`frame_length` how long the frame claims to be, check it with
    :meth:`verify_frame`, then :meth:`decode_status` it.
    """

    name: str
    header: bytes
    broadcast_id: int
    control_table: Mapping[str, Register]
    #: Whether the servo answers a reboot instruction with a status packet.
    reboot_replies: bool

    def frame_length(self, buf: bytes | bytearray) -> int | None:
        """Total frame length announced by a buffer that starts with :attr:`header`.

        Returns None while too few bytes are buffered to tell. Raises
        MalformedPacketError if the announced id or length is impossible.
        """
        ...

    def verify_frame(self, frame: bytes) -> bool:
        """True if the frame's CRC/checksum matches its bytes."""
        ...

    def decode_status(self, frame: bytes) -> StatusPacket | None:
        """Decode a verified frame; None if it is an instruction (an adapter's echo)."""
        ...

    def status_frame_size(self, n_params: int) -> int:
        """Wire size of a status packet carrying ``n_params`` data bytes (before stuffing)."""
        ...

    def encode_ping(self, servo_id: int) -> bytes: ...

    def encode_read(self, servo_id: int, address: int, length: int) -> bytes: ...

    def encode_write(self, servo_id: int, address: int, data: bytes) -> bytes: ...

    def encode_sync_read(self, servo_ids: Sequence[int], address: int, length: int) -> bytes: ...

    def encode_sync_write(self, address: int, length: int, data: Mapping[int, bytes]) -> bytes: ...

    def encode_reboot(self, servo_id: int) -> bytes: ...

    def decode_instruction(self, frame: bytes) -> InstructionPacket | None:
        """Servo side: decode a verified frame as an instruction (None: a status packet)."""
        ...

    def encode_status(self, servo_id: int, error: int = 0, params: bytes = b"") -> bytes:
        """Servo side: build the status packet a servo sends."""
        ...

    def parse_ping(self, packet: StatusPacket) -> PingInfo: ...

    def status_error(self, packet: StatusPacket, *, allow_alert: bool) -> ServoStatusError | None:
        """The error a status packet reports, or None if it may be used as is."""
        ...

    def register(self, name: str) -> Register:
        """Look a register up by name; raises UnknownNameError for unknown names."""
        ...

    def encode_value(self, name: str, value: int) -> bytes:
        """Encode a register value to its wire bytes (sign convention per protocol)."""
        ...

    def decode_value(self, name: str, data: bytes) -> int:
        """Decode a register's wire bytes to an integer."""
        ...

    def check_plausible(self, servo_id: int, name: str, value: int) -> None:
        """Raise ImplausibleValueError if ``value`` cannot come from a working servo."""
        ...


def int_to_le(value: object, size: int, *, signed: bool = False, what: str = "value") -> bytes:
    """Little-endian bytes of ``value``, refusing values that do not fit.

    Raises:
        EncodingError: If ``value`` is outside the range of a ``size``-byte integer.
    """
    value = _as_int(value, what)
    lo, hi = (-(1 << (8 * size - 1)), (1 << (8 * size - 1)) - 1) if signed else (0, 256**size - 1)
    if not lo <= value <= hi:
        kind = "signed" if signed else "unsigned"
        raise EncodingError(
            f"{what} = {value} does not fit a {size}-byte {kind} field ({lo}..{hi}); "
            "clamp it to that range before writing"
        )
    return value.to_bytes(size, "little", signed=signed)


def int_from_le(data: bytes, *, signed: bool = False) -> int:
    """Integer from little-endian bytes (two's complement when ``signed``)."""
    return int.from_bytes(data, "little", signed=signed)


def check_range(value: object, lo: int, hi: int, what: str) -> int:
    """``value`` as an int if ``lo <= value <= hi``, else EncodingError naming ``what``."""
    number = _as_int(value, what)
    if not lo <= number <= hi:
        raise EncodingError(f"{what} must be an integer in {lo}..{hi}, got {value!r}")
    return number


def _as_int(value: object, what: str) -> int:
    # operator.index accepts Python and numpy integers but refuses floats: a float goal
    # position is a units bug upstream, so it must not be truncated silently here.
    try:
        return operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise EncodingError(
            f"{what} must be an integer, got {value!r} ({type(value).__name__}); "
            "convert to servo units and round before writing"
        ) from None
