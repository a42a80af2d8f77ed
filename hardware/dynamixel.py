"""ROBOTIS Dynamixel Protocol 2.0: packets, CRC, byte stuffing and the X-series control table.

Contract: pure functions and small immutable objects, no I/O. Written from the ROBOTIS
e-manual (emanual.robotis.com/docs/en/dxl/protocol2/ and /docs/en/dxl/x/xm430-w350/):

* Instruction packet: ``FF FF FD 00 | ID | LEN_L LEN_H | INST | params | CRC_L CRC_H``;
  status packet: the same with ``INST = 0x55`` followed by an ERROR byte.
* ``LEN`` counts INST + params (+ ERROR) + the 2 CRC bytes, *after* byte stuffing.
* Byte stuffing: inside INST..params, every ``FF FF FD`` gets an extra ``FD`` so the header
  never appears inside a packet; the CRC covers the stuffed packet from the first header
  byte; the receiver checks the CRC first, then unstuffs.
* CRC-16: polynomial 0x8005 (x^16 + x^15 + x^2 + 1), initial value 0, no reflection.
* ERROR byte: bit 7 is the Alert bit (hardware fault, see Hardware Error Status (70));
  bits 0..6 are a result code 1..7 (result fail ... access error).

:data:`DYNAMIXEL` is the :class:`~metagrasp.hardware.protocol.ServoProtocol` strategy the bus
client uses; it defaults to the XM430 control table (:data:`X_SERIES_CONTROL_TABLE`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from enum import IntEnum
from types import MappingProxyType

from metagrasp.errors import UnknownNameError
from metagrasp.hardware.errors import (
    EncodingError,
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
    "ALERT_BIT",
    "BROADCAST_ID",
    "DYNAMIXEL",
    "HARDWARE_ERROR_BITS",
    "HEADER",
    "MAX_ID",
    "RESULT_ERRORS",
    "SIGNED_REGISTERS",
    "X_SERIES_CONTROL_TABLE",
    "XL430_CONTROL_TABLE",
    "DynamixelProtocol",
    "Instruction",
    "OperatingMode",
    "crc16",
    "decode_error",
    "decode_hardware_error",
    "decode_instruction",
    "decode_status",
    "encode_instruction",
    "encode_status",
    "frame_length",
    "ping_packet",
    "read_packet",
    "reboot_packet",
    "stuff",
    "sync_read_packet",
    "sync_write_packet",
    "unstuff",
    "verify_frame",
    "write_packet",
]

HEADER = b"\xff\xff\xfd\x00"  # 3 header bytes + the reserved 0x00 (never 0xFD)
BROADCAST_ID = 0xFE
MAX_ID = 252  # 253 (0xFD) and 255 (0xFF) are unused so an id can never mimic the header
STATUS = 0x55
ALERT_BIT = 0x80
# The e-manual fixes no upper bound; replies on an X-series bus stay well below this. A
# cap lets the reader reject a garbage length quickly instead of waiting for 64 KiB.
MAX_LENGTH_FIELD = 1024
_PREFIX = 7  # header(4) + id(1) + length(2)


class Instruction(IntEnum):
    """Instruction codes (e-manual, Protocol 2.0 > Instruction)."""

    PING = 0x01
    READ = 0x02
    WRITE = 0x03
    REG_WRITE = 0x04
    ACTION = 0x05
    FACTORY_RESET = 0x06
    REBOOT = 0x08
    CLEAR = 0x10
    STATUS = 0x55
    SYNC_READ = 0x82
    SYNC_WRITE = 0x83
    BULK_READ = 0x92
    BULK_WRITE = 0x93


class OperatingMode(IntEnum):
    """Values of Operating Mode (11) on X-series servos (e-manual, Operating Mode)."""

    CURRENT = 0
    VELOCITY = 1
    POSITION = 3
    EXTENDED_POSITION = 4
    CURRENT_BASED_POSITION = 5
    PWM = 16


#: Result codes in bits 0..6 of the status ERROR byte: code -> (name, how to fix).
RESULT_ERRORS: Mapping[int, tuple[str, str]] = MappingProxyType(
    {
        1: ("result_fail", "the servo could not process the instruction in its current state"),
        2: (
            "instruction_error",
            "undefined instruction, or Action without Reg Write; check the firmware supports it",
        ),
        3: (
            "crc_error",
            "the servo received a corrupted instruction; check the wiring or lower the baud rate",
        ),
        4: (
            "data_range_error",
            "value outside the register's range; clamp it (after a Bus Watchdog timeout goal "
            "registers are read-only until bus_watchdog is written 0)",
        ),
        5: ("data_length_error", "data shorter than the register; write all of its bytes"),
        6: (
            "data_limit_error",
            "value beyond a limit register (e.g. goal outside min/max_position_limit); clamp it",
        ),
        7: (
            "access_error",
            "read-only or undefined address, or an EEPROM write while torque is on; write "
            "torque_enable = 0 before changing EEPROM registers",
        ),
    }
)

#: Bits of Hardware Error Status (70) on X-series servos (e-manual, Shutdown (63)).
HARDWARE_ERROR_BITS: Mapping[int, str] = MappingProxyType(
    {
        0: "input_voltage",
        2: "overheating",
        3: "motor_encoder",
        4: "electrical_shock",
        5: "overload",
    }
)

_R = Register
#: XM430-W350 control table (e-manual, Control Table of EEPROM/RAM Area): name -> (address, size).
X_SERIES_CONTROL_TABLE: Mapping[str, Register] = MappingProxyType(
    {
        # EEPROM: writable only while torque is off.
        "model_number": _R(0, 2),
        "model_information": _R(2, 4),
        "firmware_version": _R(6, 1),
        "id": _R(7, 1),
        "baud_rate": _R(8, 1),
        "return_delay_time": _R(9, 1),
        "drive_mode": _R(10, 1),
        "operating_mode": _R(11, 1),
        "secondary_id": _R(12, 1),
        "protocol_type": _R(13, 1),
        "homing_offset": _R(20, 4),
        "moving_threshold": _R(24, 4),
        "temperature_limit": _R(31, 1),
        "max_voltage_limit": _R(32, 2),
        "min_voltage_limit": _R(34, 2),
        "pwm_limit": _R(36, 2),
        "current_limit": _R(38, 2),
        "velocity_limit": _R(44, 4),
        "max_position_limit": _R(48, 4),
        "min_position_limit": _R(52, 4),
        "shutdown": _R(63, 1),
        # RAM.
        "torque_enable": _R(64, 1),
        "led": _R(65, 1),
        "status_return_level": _R(68, 1),
        "registered_instruction": _R(69, 1),
        "hardware_error_status": _R(70, 1),
        "velocity_i_gain": _R(76, 2),
        "velocity_p_gain": _R(78, 2),
        "position_d_gain": _R(80, 2),
        "position_i_gain": _R(82, 2),
        "position_p_gain": _R(84, 2),
        "feedforward_2nd_gain": _R(88, 2),
        "feedforward_1st_gain": _R(90, 2),
        "bus_watchdog": _R(98, 1),
        "goal_pwm": _R(100, 2),
        "goal_current": _R(102, 2),
        "goal_velocity": _R(104, 4),
        "profile_acceleration": _R(108, 4),
        "profile_velocity": _R(112, 4),
        "goal_position": _R(116, 4),
        "realtime_tick": _R(120, 2),
        "moving": _R(122, 1),
        "moving_status": _R(123, 1),
        "present_pwm": _R(124, 2),
        "present_current": _R(126, 2),
        "present_velocity": _R(128, 4),
        "present_position": _R(132, 4),
        "velocity_trajectory": _R(136, 4),
        "position_trajectory": _R(140, 4),
        "present_input_voltage": _R(144, 2),
        "present_temperature": _R(146, 1),
    }
)

# The XL430-W250 has no current sensing: no Current Limit (38) nor Goal Current (102), and
# address 126 is Present Load (0.1 % units) instead of Present Current (e-manual, XL430-W250).
_xl430 = {
    k: v
    for k, v in X_SERIES_CONTROL_TABLE.items()
    if k not in ("current_limit", "goal_current", "present_current")
}
_xl430["present_load"] = _R(126, 2)
XL430_CONTROL_TABLE: Mapping[str, Register] = MappingProxyType(_xl430)

#: Registers holding two's-complement signed values (negative ranges in the e-manual;
#: Bus Watchdog reads -1 after a watchdog timeout).
SIGNED_REGISTERS = frozenset(
    {
        "homing_offset",
        "bus_watchdog",
        "goal_pwm",
        "goal_current",
        "goal_velocity",
        "goal_position",  # negative in extended-position modes
        "present_pwm",
        "present_current",
        "present_load",
        "present_velocity",
        "present_position",
        "velocity_trajectory",
        "position_trajectory",
    }
)


# ----------------------------------------------------------------------------- CRC-16
def _make_crc_table(poly: int = 0x8005) -> tuple[int, ...]:
    # MSB-first table for a non-reflected CRC: entry i is the CRC of byte i alone.
    table = []
    for byte in range(256):
        crc = byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ poly) if crc & 0x8000 else (crc << 1)
        table.append(crc & 0xFFFF)
    return tuple(table)


_CRC_TABLE = _make_crc_table()


def crc16(data: bytes | bytearray, crc: int = 0) -> int:
    """CRC-16 of Protocol 2.0 (poly 0x8005, init 0), table-driven.

    Args:
        data: Bytes from the first header byte up to the last parameter.
        crc: Running value, to continue a CRC over several chunks.
    """
    table = _CRC_TABLE
    for byte in data:
        crc = ((crc << 8) ^ table[((crc >> 8) ^ byte) & 0xFF]) & 0xFFFF
    return crc


# ------------------------------------------------------------------------ byte stuffing
def stuff(data: bytes | bytearray) -> bytes:
    """Insert 0xFD after every ``FF FF FD`` so a payload can never contain the header."""
    out = bytearray()
    for byte in data:
        out.append(byte)
        # A stuffed 0xFD is never 0xFF, so testing the output equals testing the input.
        if byte == 0xFD and len(out) >= 3 and out[-2] == 0xFF and out[-3] == 0xFF:
            out.append(0xFD)
    return bytes(out)


def unstuff(data: bytes | bytearray) -> bytes:
    """Remove the 0xFD that :func:`stuff` inserted after each ``FF FF FD``."""
    out = bytearray()
    i, n = 0, len(data)
    while i < n:
        byte = data[i]
        out.append(byte)
        if (
            byte == 0xFD
            and i >= 2
            and data[i - 1] == 0xFF
            and data[i - 2] == 0xFF
            and i + 1 < n
            and data[i + 1] == 0xFD
        ):
            i += 2  # skip the stuffing byte; the byte after it starts a fresh pattern
            continue
        i += 1
    return bytes(out)


# ------------------------------------------------------------------------------ encoding
def _check_id(servo_id: int, *, broadcast: bool) -> int:
    if broadcast and servo_id == BROADCAST_ID:
        return servo_id
    hint = f" or {BROADCAST_ID} (broadcast)" if broadcast else ""
    return check_range(servo_id, 0, MAX_ID, f"Dynamixel id (0..{MAX_ID}{hint})")


def _frame(servo_id: int, body: bytes) -> bytes:
    region = stuff(body)
    length = len(region) + 2
    if length > 0xFFFF:
        raise EncodingError(f"packet too long ({length} bytes); split the transfer")
    head = HEADER + bytes((servo_id, length & 0xFF, length >> 8))
    packet = head + region
    return packet + crc16(packet).to_bytes(2, "little")


def encode_instruction(servo_id: int, instruction: int, params: bytes = b"") -> bytes:
    """Build a complete, stuffed instruction packet with its CRC."""
    _check_id(servo_id, broadcast=True)
    check_range(instruction, 0, 0xFF, "instruction")
    return _frame(servo_id, bytes((instruction,)) + bytes(params))


def encode_status(servo_id: int, error: int = 0, params: bytes = b"") -> bytes:
    """Build a status packet, as a servo would send it (simulators and tests)."""
    _check_id(servo_id, broadcast=False)
    check_range(error, 0, 0xFF, "error byte")
    return _frame(servo_id, bytes((STATUS, error)) + bytes(params))


def _u16(value: int, what: str) -> bytes:
    return check_range(value, 0, 0xFFFF, what).to_bytes(2, "little")


def ping_packet(servo_id: int) -> bytes:
    """Ping (0x01); the broadcast id makes every servo answer in turn."""
    return encode_instruction(servo_id, Instruction.PING)


def read_packet(servo_id: int, address: int, length: int) -> bytes:
    """Read (0x02) ``length`` bytes from ``address``."""
    _check_id(servo_id, broadcast=False)
    check_range(length, 1, 0xFFFF, "read length")
    params = _u16(address, "address") + _u16(length, "length")
    return encode_instruction(servo_id, Instruction.READ, params)


def write_packet(servo_id: int, address: int, data: bytes) -> bytes:
    """Write (0x03) ``data`` starting at ``address``."""
    if not data:
        raise EncodingError("write needs at least one data byte")
    return encode_instruction(servo_id, Instruction.WRITE, _u16(address, "address") + bytes(data))


def sync_read_packet(servo_ids: Sequence[int], address: int, length: int) -> bytes:
    """Sync Read (0x82): the same ``length`` bytes at ``address`` from each id, in order."""
    ids = _unique_ids(servo_ids)
    check_range(length, 1, 0xFFFF, "read length")
    params = _u16(address, "address") + _u16(length, "length") + bytes(ids)
    return encode_instruction(BROADCAST_ID, Instruction.SYNC_READ, params)


def sync_write_packet(address: int, length: int, data: Mapping[int, bytes]) -> bytes:
    """Sync Write (0x83): ``data[id]`` (``length`` bytes each) to ``address`` on every id."""
    ids = _unique_ids(list(data))
    check_range(length, 1, 0xFFFF, "data length")
    params = bytearray(_u16(address, "address") + _u16(length, "length"))
    for servo_id in ids:
        chunk = bytes(data[servo_id])
        if len(chunk) != length:
            raise EncodingError(
                f"sync write to id {servo_id}: {len(chunk)} data bytes, expected {length}"
            )
        params += bytes((servo_id,)) + chunk
    return encode_instruction(BROADCAST_ID, Instruction.SYNC_WRITE, bytes(params))


def reboot_packet(servo_id: int) -> bytes:
    """Reboot (0x08): the only way to clear a hardware error (Alert) besides power-cycling."""
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
    """Length of the frame starting at ``buf[0]`` (which must be the header), or None.

    Raises:
        MalformedPacketError: If the id or the length field is impossible, so the reader
            knows this header was a false match and resynchronises.
    """
    if len(buf) < _PREFIX:
        return None
    servo_id = buf[4]
    if servo_id > MAX_ID and servo_id != BROADCAST_ID:
        raise MalformedPacketError(f"impossible Dynamixel id 0x{servo_id:02X}")
    length = buf[5] | (buf[6] << 8)
    if not 3 <= length <= MAX_LENGTH_FIELD:
        raise MalformedPacketError(f"impossible Dynamixel length field {length}")
    return _PREFIX + length


def verify_frame(frame: bytes | bytearray) -> bool:
    """True if the last two bytes are the CRC of everything before them."""
    return len(frame) >= _PREFIX + 3 and crc16(frame[:-2]) == (frame[-2] | (frame[-1] << 8))


def decode_status(frame: bytes) -> StatusPacket | None:
    """Decode a CRC-verified frame into a status packet.

    Returns:
        The status packet, or None if the frame is an instruction (an adapter echoing what
        was sent, or another controller on the bus).

    Raises:
        MalformedPacketError: If a status frame is too short to hold its ERROR byte.
    """
    body = unstuff(frame[_PREFIX:-2])
    if body[0] != STATUS:
        return None
    if len(body) < 2:
        raise MalformedPacketError("Dynamixel status packet without an ERROR byte")
    return StatusPacket(frame[4], body[1], bytes(body[2:]), bytes(frame))


def decode_instruction(frame: bytes) -> InstructionPacket | None:
    """Decode a CRC-verified frame as an instruction; None if it is a status packet."""
    body = unstuff(frame[_PREFIX:-2])
    if body[0] == STATUS:
        return None
    return InstructionPacket(frame[4], body[0], bytes(body[1:]))


def decode_error(error: int) -> tuple[list[str], bool, str | None]:
    """Split a status ERROR byte into (flag names, alert bit, result-code name or None)."""
    alert = bool(error & ALERT_BIT)
    code = error & 0x7F
    flags = ["alert"] if alert else []
    name = None
    if code:
        name = RESULT_ERRORS[code][0] if code in RESULT_ERRORS else f"unknown_error_{code}"
        flags.append(name)
    return flags, alert, name


def decode_hardware_error(value: int) -> list[str]:
    """Names of the bits set in Hardware Error Status (70)."""
    return [name for bit, name in HARDWARE_ERROR_BITS.items() if value & (1 << bit)]


# ------------------------------------------------------------------------------ strategy
class DynamixelProtocol:
    """Protocol 2.0 strategy for :class:`metagrasp.hardware.bus.ServoBus` (stateless).

    Args:
        control_table: Register table to use; the default suits XM430/XM540/XH430 servos,
            pass :data:`XL430_CONTROL_TABLE` for XL430s.
        signed_registers: Names whose values are two's-complement signed.
    """

    name = "dynamixel"
    header = HEADER
    broadcast_id = BROADCAST_ID
    reboot_replies = True

    def __init__(
        self,
        control_table: Mapping[str, Register] = X_SERIES_CONTROL_TABLE,
        signed_registers: frozenset[str] = SIGNED_REGISTERS,
    ) -> None:
        self.control_table = control_table
        self.signed_registers = signed_registers

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
        return _PREFIX + 4 + n_params  # INST + ERROR + params + CRC(2)

    @staticmethod
    def parse_ping(packet: StatusPacket) -> PingInfo:
        p = packet.params
        if len(p) < 3:
            return PingInfo(packet.servo_id)
        return PingInfo(packet.servo_id, p[0] | (p[1] << 8), p[2])

    @staticmethod
    def status_error(packet: StatusPacket, *, allow_alert: bool) -> ServoStatusError | None:
        flags, alert, name = decode_error(packet.error)
        if name is not None:
            code = packet.error & 0x7F
            hint = RESULT_ERRORS.get(code, (name, "see the servo's e-manual"))[1]
            return ServoStatusError(
                packet.servo_id,
                packet.error,
                flags,
                alert=alert,
                instruction_error=name,
                hint=hint,
                retryable=code == 3,  # our instruction was corrupted on the way: resend it
                packet=packet,
            )
        if alert and not allow_alert:
            return ServoStatusError(
                packet.servo_id,
                packet.error,
                flags,
                alert=True,
                hint="hardware fault (Alert bit); read 'hardware_error_status' (70) with "
                "allow_alert=True to see which (input voltage, overheating, encoder, electrical "
                "shock, overload), remove the cause, then reboot the servo to clear it",
                packet=packet,
            )
        return None

    def register(self, name: str) -> Register:
        try:
            return self.control_table[name]
        except KeyError:
            raise UnknownNameError(
                f"unknown Dynamixel register {name!r}; known: {', '.join(self.control_table)}"
            ) from None

    def encode_value(self, name: str, value: int) -> bytes:
        reg = self.register(name)
        return int_to_le(value, reg.size, signed=name in self.signed_registers, what=name)

    def decode_value(self, name: str, data: bytes) -> int:
        reg = self.register(name)
        if len(data) != reg.size:
            raise MalformedPacketError(f"{name}: got {len(data)} bytes, expected {reg.size}")
        return int_from_le(data, signed=name in self.signed_registers)

    @staticmethod
    def check_plausible(servo_id: int, name: str, value: int) -> None:
        """No-op: CRC-16 already rejects corrupted replies with near certainty."""


#: The default Dynamixel strategy (X-series control table).
DYNAMIXEL = DynamixelProtocol()
