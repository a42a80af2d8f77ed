"""Feetech SCS/STS serial-bus servo protocol (STS3215: the servos of SO-100/SO-101 arms).

Contract: pure functions and small immutable objects, no I/O. Written from Feetech's
FT-SCS protocol description, its STS memory table and its SCServo SDK (read, not copied):

* Packet: ``FF FF | ID | LEN | INST-or-ERROR | params | CHECKSUM`` with ``LEN = N + 2``
  and ``CHECKSUM = ~(ID + LEN + INST + params) & 0xFF``. No byte stuffing, so a header can
  appear inside a payload; the reader only resynchronises there after a bad checksum.
* Instructions: ping 0x01, read 0x02 (address, length), write 0x03 (address, data...),
  reg write 0x04, action 0x05, restore factory parameters 0x06, reboot 0x08 (newer firmware,
  no reply), reset 0x0A, sync read 0x82, sync write 0x83.
* Status byte bits: 0 voltage, 1 angle sensor, 2 overheat, 3 overcurrent, 5 overload.
  They mirror Status (65): the instruction was executed, the servo is unwell.
* STS/SMS values are little-endian. Signed registers use *sign-magnitude* with a
  per-register direction bit (bit 15 for speeds and positions, bit 11 for the homing
  offset, bit 10 for the load), never two's complement. (Potentiometer SCS servos such as
  the SCS0009 frame packets the same way but store values big-endian in a different
  table; :data:`FEETECH` targets the STS/SMS family only.)
* The 8-bit checksum lets about 1 in 256 corrupted replies through, so decoded values get a
  plausibility check (:class:`PlausibilityLimits`) on top.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import IntEnum
from types import MappingProxyType

from metagrasp.errors import UnknownNameError
from metagrasp.hardware.errors import (
    EncodingError,
    ImplausibleValueError,
    MalformedPacketError,
    ServoStatusError,
)
from metagrasp.hardware.protocol import (
    InstructionPacket,
    PingInfo,
    Register,
    StatusPacket,
    check_range,
    int_from_le,
    int_to_le,
)

__all__ = [
    "BROADCAST_ID",
    "FEETECH",
    "HEADER",
    "MAX_ID",
    "SIGN_BITS",
    "STATUS_BITS",
    "STS_CONTROL_TABLE",
    "FeetechProtocol",
    "Instruction",
    "OperatingMode",
    "PlausibilityLimits",
    "checksum",
    "decode_instruction",
    "decode_sign_magnitude",
    "decode_status",
    "decode_status_bits",
    "encode_instruction",
    "encode_sign_magnitude",
    "encode_status",
    "frame_length",
    "ping_packet",
    "read_packet",
    "reboot_packet",
    "sync_read_packet",
    "sync_write_packet",
    "verify_frame",
    "write_packet",
]

HEADER = b"\xff\xff"
BROADCAST_ID = 0xFE
MAX_ID = 253
MAX_PACKET = 250  # the SCServo SDK's TX/RX buffer size; servos never send more
_PREFIX = 4  # header(2) + id + length


class Instruction(IntEnum):
    """Instruction codes of the FT-SCS protocol."""

    PING = 0x01
    READ = 0x02
    WRITE = 0x03
    REG_WRITE = 0x04
    ACTION = 0x05
    RESTORE = 0x06  # factory parameters, except the id
    REBOOT = 0x08
    RESET = 0x0A  # clears status such as the multi-turn count
    SYNC_READ = 0x82
    SYNC_WRITE = 0x83


class OperatingMode(IntEnum):
    """Values of Operating Mode (33) on STS servos."""

    POSITION = 0  # single-turn position servo, clamped to min/max_position_limit
    VELOCITY = 1  # constant speed from goal_velocity (46)
    PWM = 2  # open loop, duty in goal_time (44), direction bit 10
    STEP = 3  # multi-turn: goal_position counts steps, direction bit 15


#: Status byte bits -> (name, what to do).
STATUS_BITS: Mapping[int, tuple[str, str]] = MappingProxyType(
    {
        0: ("voltage", "supply voltage outside the servo's limits; check the power supply"),
        1: (
            "angle_sensor",
            "magnetic encoder fault (or, on SCS servos, a goal outside the angle limits)",
        ),
        2: ("overheat", "temperature above max_temperature_limit; let it cool, reduce load"),
        3: ("overcurrent", "current above protection_current; check for a jam or stall"),
        5: ("overload", "sustained load above overload_torque; reduce load or goal speed"),
    }
)

_R = Register
#: STS/SMS memory table (STS3215): name -> (address, size). Little-endian.
STS_CONTROL_TABLE: Mapping[str, Register] = MappingProxyType(
    {
        # Version information (read-only).
        "firmware_major_version": _R(0, 1),
        "firmware_minor_version": _R(1, 1),
        "model_number": _R(3, 2),
        # EEPROM: written only after lock (55) is set to 0, torque off.
        "id": _R(5, 1),
        "baud_rate": _R(6, 1),
        "return_delay_time": _R(7, 1),
        "response_status_level": _R(8, 1),
        "min_position_limit": _R(9, 2),
        "max_position_limit": _R(11, 2),
        "max_temperature_limit": _R(13, 1),
        "max_voltage_limit": _R(14, 1),
        "min_voltage_limit": _R(15, 1),
        "max_torque_limit": _R(16, 2),
        "phase": _R(18, 1),
        "unloading_condition": _R(19, 1),
        "led_alarm_condition": _R(20, 1),
        "p_coefficient": _R(21, 1),
        "d_coefficient": _R(22, 1),
        "i_coefficient": _R(23, 1),
        "minimum_startup_force": _R(24, 2),
        "cw_dead_zone": _R(26, 1),
        "ccw_dead_zone": _R(27, 1),
        "protection_current": _R(28, 2),
        "angular_resolution": _R(30, 1),
        "homing_offset": _R(31, 2),
        "operating_mode": _R(33, 1),
        "protective_torque": _R(34, 1),
        "protection_time": _R(35, 1),
        "overload_torque": _R(36, 1),
        # SRAM control.
        "torque_enable": _R(40, 1),
        "acceleration": _R(41, 1),
        "goal_position": _R(42, 2),
        "goal_time": _R(44, 2),
        "goal_velocity": _R(46, 2),
        "goal_speed": _R(46, 2),  # the SDK's name for goal_velocity
        "torque_limit": _R(48, 2),
        "lock": _R(55, 1),
        # SRAM feedback (read-only).
        "present_position": _R(56, 2),
        "present_velocity": _R(58, 2),
        "present_speed": _R(58, 2),  # the SDK's name for present_velocity
        "present_load": _R(60, 2),
        "present_voltage": _R(62, 1),
        "present_temperature": _R(63, 1),
        "status": _R(65, 1),
        "moving": _R(66, 1),
        "present_current": _R(69, 2),
    }
)

#: Sign-magnitude registers -> index of their direction (sign) bit.
SIGN_BITS: Mapping[str, int] = MappingProxyType(
    {
        "homing_offset": 11,
        "goal_position": 15,  # negative only in step mode
        "goal_velocity": 15,
        "goal_speed": 15,
        "present_position": 15,
        "present_velocity": 15,
        "present_speed": 15,
        "present_load": 10,
        "present_current": 15,
    }
)


# ------------------------------------------------------------------------ sign-magnitude
def encode_sign_magnitude(value: int, sign_bit: int) -> int:
    """Raw register value for ``value``: magnitude in the low bits, sign in ``sign_bit``.

    Raises:
        EncodingError: If ``|value|`` needs ``sign_bit`` bits or more.
    """
    limit = (1 << sign_bit) - 1
    value = check_range(value, -limit, limit, f"sign-magnitude value (bit {sign_bit})")
    return (-value | (1 << sign_bit)) if value < 0 else value


def decode_sign_magnitude(raw: int, sign_bit: int) -> int:
    """Signed value of a raw register word whose direction bit is ``sign_bit``."""
    magnitude = raw & ~(1 << sign_bit)
    return -magnitude if raw & (1 << sign_bit) else magnitude


# ------------------------------------------------------------------------------ encoding
def checksum(body: bytes | bytearray) -> int:
    """``~(ID + LEN + INST/ERROR + params) & 0xFF`` over ``body`` (the bytes after the header)."""
    return ~sum(body) & 0xFF


def _check_id(servo_id: int, *, broadcast: bool) -> int:
    if broadcast and servo_id == BROADCAST_ID:
        return servo_id
    hint = f" or {BROADCAST_ID} (broadcast)" if broadcast else ""
    return check_range(servo_id, 0, MAX_ID, f"Feetech id (0..{MAX_ID}{hint})")


def _frame(servo_id: int, code: int, params: bytes) -> bytes:
    size = len(params) + 6  # header(2) + id + length + code + checksum
    if size > MAX_PACKET:
        raise EncodingError(
            f"Feetech packet of {size} bytes exceeds {MAX_PACKET}; split the transfer"
        )
    body = bytes((servo_id, len(params) + 2, code)) + bytes(params)
    return HEADER + body + bytes((checksum(body),))


def encode_instruction(servo_id: int, instruction: int, params: bytes = b"") -> bytes:
    """Build a complete instruction packet with its checksum."""
    _check_id(servo_id, broadcast=True)
    return _frame(servo_id, check_range(instruction, 0, 0xFF, "instruction"), params)


def encode_status(servo_id: int, error: int = 0, params: bytes = b"") -> bytes:
    """Build a status (response) packet, as a servo would send it (simulators and tests)."""
    _check_id(servo_id, broadcast=False)
    return _frame(servo_id, check_range(error, 0, 0xFF, "status byte"), params)


def _u8(value: int, what: str) -> int:
    return check_range(value, 0, 0xFF, what)


def ping_packet(servo_id: int) -> bytes:
    """Ping (0x01); e.g. id 1 gives ``FF FF 01 02 01 FB``."""
    return encode_instruction(servo_id, Instruction.PING)


def read_packet(servo_id: int, address: int, length: int) -> bytes:
    """Read (0x02) ``length`` bytes from ``address``."""
    _check_id(servo_id, broadcast=False)
    check_range(length, 1, MAX_PACKET - 6, "read length")
    return encode_instruction(servo_id, Instruction.READ, bytes((_u8(address, "address"), length)))


def write_packet(servo_id: int, address: int, data: bytes) -> bytes:
    """Write (0x03) ``data`` starting at ``address``."""
    if not data:
        raise EncodingError("write needs at least one data byte")
    return encode_instruction(
        servo_id, Instruction.WRITE, bytes((_u8(address, "address"),)) + bytes(data)
    )


def sync_read_packet(servo_ids: Sequence[int], address: int, length: int) -> bytes:
    """Sync Read (0x82): each id answers with its own status packet, in the order given."""
    ids = _unique_ids(servo_ids)
    check_range(length, 1, MAX_PACKET - 6, "read length")
    params = bytes((_u8(address, "address"), length)) + bytes(ids)
    return encode_instruction(BROADCAST_ID, Instruction.SYNC_READ, params)


def sync_write_packet(address: int, length: int, data: Mapping[int, bytes]) -> bytes:
    """Sync Write (0x83): ``data[id]`` (``length`` bytes each) to ``address`` on every id."""
    ids = _unique_ids(list(data))
    params = bytearray((_u8(address, "address"), _u8(length, "data length")))
    for servo_id in ids:
        chunk = bytes(data[servo_id])
        if len(chunk) != length:
            raise EncodingError(
                f"sync write to id {servo_id}: {len(chunk)} data bytes, expected {length}"
            )
        params += bytes((servo_id,)) + chunk
    return encode_instruction(BROADCAST_ID, Instruction.SYNC_WRITE, bytes(params))


def reboot_packet(servo_id: int) -> bytes:
    """Reboot (0x08). Supported by recent STS firmware only; the servo sends no reply."""
    return encode_instruction(servo_id, Instruction.REBOOT)


def _unique_ids(servo_ids: Sequence[int]) -> list[int]:
    ids = [_check_id(i, broadcast=False) for i in servo_ids]
    if not ids:
        raise EncodingError("sync read/write needs at least one servo id")
    if len(set(ids)) != len(ids):
        raise EncodingError(f"duplicate servo ids in {ids}; each id may appear once")
    return ids


# ------------------------------------------------------------------------------ decoding
def frame_length(buf: bytes | bytearray) -> int | None:
    """Length of the frame starting at ``buf[0]`` (the header), or None if undecidable yet.

    Raises:
        MalformedPacketError: For an id of 0xFF (a run of 0xFF bytes: the real header comes
            later) or a length field no servo sends.
    """
    if len(buf) < _PREFIX:
        return None
    if buf[2] > BROADCAST_ID:
        raise MalformedPacketError(f"impossible Feetech id 0x{buf[2]:02X}")
    length = buf[3]
    if not 2 <= length <= MAX_PACKET - _PREFIX:
        raise MalformedPacketError(f"impossible Feetech length field {length}")
    return _PREFIX + length


def verify_frame(frame: bytes | bytearray) -> bool:
    """True if the last byte is the checksum of the bytes between header and checksum."""
    return len(frame) >= _PREFIX + 2 and checksum(frame[2:-1]) == frame[-1]


def decode_status(frame: bytes) -> StatusPacket:
    """Decode a checksum-verified frame as a status packet.

    Feetech instructions and replies share one layout, so an adapter's echo of the
    instruction is told apart by the bus client (it compares with what it sent).
    """
    return StatusPacket(frame[2], frame[4], bytes(frame[5:-1]), bytes(frame))


def decode_instruction(frame: bytes) -> InstructionPacket:
    """Decode a checksum-verified frame as an instruction (simulators and tests)."""
    return InstructionPacket(frame[2], frame[4], bytes(frame[5:-1]))


def decode_status_bits(status: int) -> list[str]:
    """Names of the conditions set in a status byte (or in Status (65))."""
    names = [name for bit, (name, _) in STATUS_BITS.items() if status & (1 << bit)]
    names += [f"bit{bit}" for bit in (4, 6, 7) if status & (1 << bit)]
    return names


# --------------------------------------------------------------------------- plausibility
@dataclass(frozen=True)
class PlausibilityLimits:
    """Ranges a working servo's readings stay in; None disables a check.

    Attributes:
        position: Raw position range (0..4095 in position mode; pass None for step mode,
            where positions count whole turns).
        max_temperature_c: Hottest believable reading (the STS shuts down well below).
        voltage_v: Believable supply range in volts (STS3215 variants run on 6..12.6 V).
        max_load: Largest believable load magnitude, in 0.1 % units.
    """

    position: tuple[int, int] | None = (0, 4095)
    max_temperature_c: int | None = 100
    voltage_v: tuple[float, float] | None = (4.5, 14.0)
    max_load: int | None = 1000

    def check(self, servo_id: int, name: str, value: int) -> None:
        """Raise ImplausibleValueError if ``value`` of register ``name`` is impossible."""
        shown: float = value
        unit = ""
        if name in ("present_position", "goal_position") and self.position is not None:
            lo, hi = self.position
            bad, valid = not lo <= value <= hi, f"{lo}..{hi}"
        elif name == "present_temperature" and self.max_temperature_c is not None:
            bad, valid, unit = value > self.max_temperature_c, f"0..{self.max_temperature_c}", "C"
        elif name == "present_voltage" and self.voltage_v is not None:
            lo_v, hi_v = self.voltage_v
            shown = value / 10.0  # register unit is 0.1 V
            bad, valid, unit = not lo_v <= shown <= hi_v, f"{lo_v}..{hi_v}", "V"
        elif name == "present_load" and self.max_load is not None:
            bad, valid = abs(value) > self.max_load, f"-{self.max_load}..{self.max_load}"
            unit = "x0.1 %"
        else:
            return
        if bad:
            raise ImplausibleValueError(servo_id, name, shown, valid, unit=unit)


# ------------------------------------------------------------------------------ strategy
class FeetechProtocol:
    """FT-SCS (STS) strategy for :class:`metagrasp.hardware.bus.ServoBus` (stateless).

    Args:
        control_table: Register table; defaults to the STS/SMS table.
        sign_bits: Sign-magnitude registers and their direction bits.
        plausibility: Limits applied to decoded register values; None disables them.
    """

    name = "feetech"
    header = HEADER
    broadcast_id = BROADCAST_ID
    reboot_replies = False

    def __init__(
        self,
        control_table: Mapping[str, Register] = STS_CONTROL_TABLE,
        sign_bits: Mapping[str, int] = SIGN_BITS,
        plausibility: PlausibilityLimits | None = PlausibilityLimits(),  # noqa: B008 (frozen)
    ) -> None:
        self.control_table = control_table
        self.sign_bits = sign_bits
        self.plausibility = plausibility

    frame_length = staticmethod(frame_length)
    verify_frame = staticmethod(verify_frame)
    decode_status = staticmethod(decode_status)
    encode_ping = staticmethod(ping_packet)
    encode_read = staticmethod(read_packet)
    encode_write = staticmethod(write_packet)
    encode_sync_read = staticmethod(sync_read_packet)
    encode_sync_write = staticmethod(sync_write_packet)
    encode_reboot = staticmethod(reboot_packet)
    # Servo side (simulated servos): read instructions, answer with status packets.
    decode_instruction = staticmethod(decode_instruction)
    encode_status = staticmethod(encode_status)

    @staticmethod
    def status_frame_size(n_params: int) -> int:
        return _PREFIX + 2 + n_params  # ERROR + params + CHECKSUM

    @staticmethod
    def parse_ping(packet: StatusPacket) -> PingInfo:
        return PingInfo(packet.servo_id)  # Feetech pings carry no model number

    @staticmethod
    def status_error(packet: StatusPacket, *, allow_alert: bool) -> ServoStatusError | None:
        if packet.error == 0 or allow_alert:
            return None
        names = decode_status_bits(packet.error)
        hints = [STATUS_BITS[b][1] for b in STATUS_BITS if packet.error & (1 << b)]
        return ServoStatusError(
            packet.servo_id,
            packet.error,
            names,
            alert=True,
            hint="; ".join(hints) or "undocumented status bits; read 'status' (65)",
            packet=packet,
        )

    def register(self, name: str) -> Register:
        try:
            return self.control_table[name]
        except KeyError:
            raise UnknownNameError(
                f"unknown Feetech register {name!r}; known: {', '.join(self.control_table)}"
            ) from None

    def encode_value(self, name: str, value: int) -> bytes:
        reg = self.register(name)
        bit = self.sign_bits.get(name)
        if bit is not None:
            value = encode_sign_magnitude(value, bit)
        return int_to_le(value, reg.size, what=name)

    def decode_value(self, name: str, data: bytes) -> int:
        reg = self.register(name)
        if len(data) != reg.size:
            raise MalformedPacketError(f"{name}: got {len(data)} bytes, expected {reg.size}")
        raw = int_from_le(data)
        bit = self.sign_bits.get(name)
        return raw if bit is None else decode_sign_magnitude(raw, bit)

    def check_plausible(self, servo_id: int, name: str, value: int) -> None:
        if self.plausibility is not None:
            self.plausibility.check(servo_id, name, value)


#: The default Feetech strategy (STS control table, default plausibility limits).
FEETECH = FeetechProtocol()
