"""Feetech SCS/STS: checksum vectors, sign-magnitude values, plausibility, round trips.

Hex vectors are the examples of Feetech's "FT-SCS communication protocol" description
(section 4, Instruction Types: 4.1 PING, 4.2 READ DATA, 4.3 WRITE DATA, 4.5 ACTION,
4.6 SYNC WRITE, 4.8 RESET); sign bits follow the SCServo SDK (SMS_STS ReadPos/ReadSpeed/
ReadLoad) and the STS memory table.
"""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from metagrasp.errors import UnknownNameError
from metagrasp.hardware import feetech as ft
from metagrasp.hardware.errors import (
    EncodingError,
    ImplausibleValueError,
    MalformedPacketError,
    ServoStatusError,
)
from metagrasp.hardware.protocol import StatusPacket


def h(text: str) -> bytes:
    return bytes.fromhex(text)


SPEED_1000 = h("00 08 00 00 E8 03")  # position 2048, time 0, speed 1000 (little-endian)

INSTRUCTION_VECTORS = [
    ("4.1 PING id 1", lambda: ft.ping_packet(1), "FF FF 01 02 01 FB"),
    ("4.2 READ 2 bytes at 0x38", lambda: ft.read_packet(1, 0x38, 2), "FF FF 01 04 02 38 02 BE"),
    (
        "4.3 WRITE goal 2048 speed 1000",
        lambda: ft.write_packet(1, 0x2A, SPEED_1000),
        "FF FF 01 09 03 2A 00 08 00 00 E8 03 D5",
    ),
    ("4.5 ACTION broadcast", lambda: ft.encode_instruction(0xFE, 0x05), "FF FF FE 02 05 FA"),
    (
        "4.6 SYNC WRITE ids 1-4",
        lambda: ft.sync_write_packet(0x2A, 6, {i: SPEED_1000 for i in (1, 2, 3, 4)}),
        "FF FF FE 20 83 2A 06 01 00 08 00 00 E8 03 02 00 08 00 00 E8 03 03 00 08 00 00 E8 03"
        " 04 00 08 00 00 E8 03 58",
    ),
    ("4.8 RESET id 1", lambda: ft.encode_instruction(1, ft.Instruction.RESET), "FF FF 01 02 0A F2"),
]

STATUS_VECTORS = [
    ("4.1 PING reply", "FF FF 01 02 00 FC", 1, 0, ""),
    ("4.2 READ reply: position 0x0518", "FF FF 01 04 00 18 05 DD", 1, 0, "18 05"),
]


@pytest.mark.parametrize(("section", "build", "expected"), INSTRUCTION_VECTORS)
def test_instruction_vectors(section, build, expected):
    assert build() == h(expected), section


@pytest.mark.parametrize(("section", "raw", "sid", "err", "params"), STATUS_VECTORS)
def test_status_vectors(section, raw, sid, err, params):
    frame = h(raw)
    assert ft.frame_length(frame) == len(frame) and ft.verify_frame(frame), section
    assert ft.decode_status(frame) == StatusPacket(sid, err, h(params), frame)
    assert ft.encode_status(sid, err, h(params)) == frame


def test_read_reply_decodes_to_the_documented_position():
    reply = ft.decode_status(h("FF FF 01 04 00 18 05 DD"))
    assert ft.FEETECH.decode_value("present_position", reply.params) == 1304


def test_sync_read_packet_layout():
    # Length = N + 4 for N ids; params: address, length, ids in reply order.
    pkt = ft.sync_read_packet([1, 2, 3], 56, 2)
    assert pkt[:5] == h("FF FF FE 07 82") and pkt[5:10] == h("38 02 01 02 03")
    assert ft.verify_frame(pkt)


@given(
    sid=st.integers(0, ft.MAX_ID),
    err=st.integers(0, 255),
    params=st.binary(max_size=ft.MAX_PACKET - 6),
)
def test_status_round_trip(sid, err, params):
    frame = ft.encode_status(sid, err, params)
    assert ft.frame_length(frame) == len(frame) and ft.verify_frame(frame)
    assert ft.decode_status(frame) == StatusPacket(sid, err, params, frame)


@given(
    sid=st.one_of(st.integers(0, ft.MAX_ID), st.just(ft.BROADCAST_ID)),
    inst=st.sampled_from(list(ft.Instruction)),
    params=st.binary(max_size=100),
)
def test_instruction_round_trip(sid, inst, params):
    got = ft.decode_instruction(ft.encode_instruction(sid, inst, params))
    assert (got.servo_id, got.instruction, got.params) == (sid, inst, params)


@given(st.binary(min_size=1, max_size=30), st.integers(0, 99), st.integers(1, 255))
def test_single_byte_corruption_after_the_length_fails_the_checksum(params, pos, flip):
    frame = bytearray(ft.encode_status(7, 0, params))
    frame[4 + pos % (len(frame) - 4)] ^= flip  # error, params or checksum byte
    assert not ft.verify_frame(frame)


def test_limits_on_ids_and_lengths():
    with pytest.raises(EncodingError):
        ft.ping_packet(255)
    with pytest.raises(EncodingError):
        ft.read_packet(1, 256, 2)
    with pytest.raises(EncodingError, match="exceeds"):
        ft.write_packet(1, 0, bytes(300))
    with pytest.raises(MalformedPacketError):
        ft.frame_length(h("FF FF FF 02"))
    with pytest.raises(MalformedPacketError):
        ft.frame_length(h("FF FF 01 01"))
    assert ft.frame_length(h("FF FF 01")) is None


@pytest.mark.parametrize(
    ("value", "bit", "raw"),
    [(0, 15, 0), (1000, 15, 0x03E8), (-1000, 15, 0x83E8), (-1, 15, 0x8001), (-5, 11, 0x0805)],
)
def test_sign_magnitude_known_values(value, bit, raw):
    assert ft.encode_sign_magnitude(value, bit) == raw
    assert ft.decode_sign_magnitude(raw, bit) == value


@given(
    st.sampled_from([10, 11, 15]).flatmap(
        lambda b: st.tuples(st.just(b), st.integers(-(2**b) + 1, 2**b - 1))
    )
)
def test_sign_magnitude_round_trip(bit_value):
    bit, value = bit_value
    assert ft.decode_sign_magnitude(ft.encode_sign_magnitude(value, bit), bit) == value


def test_sign_magnitude_is_not_twos_complement():
    proto = ft.FEETECH
    assert proto.encode_value("goal_velocity", -1) == h("01 80")
    assert proto.decode_value("present_velocity", h("01 80")) == -1
    assert proto.decode_value("present_load", h("64 04")) == -100  # direction bit 10
    assert proto.encode_value("homing_offset", -2047) == h("FF 0F")  # direction bit 11
    assert proto.decode_value("present_position", h("00 08")) == 2048
    # Goals often come out of numpy arrays: numpy integers are fine, floats are a units bug.
    assert proto.encode_value("goal_position", np.int64(-2048)) == h("00 88")
    with pytest.raises(EncodingError, match="round"):
        proto.encode_value("goal_position", np.float64(2048.0))
    with pytest.raises(EncodingError):
        proto.encode_value("homing_offset", 2048)
    with pytest.raises(EncodingError):
        proto.encode_value("torque_enable", -1)


def test_control_table_spot_checks():
    t = ft.STS_CONTROL_TABLE
    expected = {
        "id": (5, 1),
        "baud_rate": (6, 1),
        "min_position_limit": (9, 2),
        "max_position_limit": (11, 2),
        "homing_offset": (31, 2),
        "operating_mode": (33, 1),
        "torque_enable": (40, 1),
        "acceleration": (41, 1),
        "goal_position": (42, 2),
        "goal_time": (44, 2),
        "goal_speed": (46, 2),
        "lock": (55, 1),
        "present_position": (56, 2),
        "present_speed": (58, 2),
        "present_load": (60, 2),
        "present_voltage": (62, 1),
        "present_temperature": (63, 1),
        "moving": (66, 1),
        "present_current": (69, 2),
    }
    assert {k: tuple(t[k]) for k in expected} == expected
    assert t["goal_velocity"] == t["goal_speed"]
    with pytest.raises(UnknownNameError):
        ft.FEETECH.register("present_posiiton")


@pytest.mark.parametrize(
    ("name", "value", "ok"),
    [
        ("present_position", 4095, True),
        ("present_position", 4096, False),
        ("present_position", -3, False),
        ("present_temperature", 45, True),
        ("present_temperature", 180, False),
        ("present_voltage", 121, True),
        ("present_voltage", 30, False),
        ("present_voltage", 250, False),
        ("present_load", -1000, True),
        ("present_load", 1023, False),
        ("moving", 200, True),
    ],
)
def test_plausibility(name, value, ok):
    if ok:
        ft.FEETECH.check_plausible(4, name, value)
    else:
        with pytest.raises(ImplausibleValueError, match="servo 4") as info:
            ft.FEETECH.check_plausible(4, name, value)
        assert info.value.retryable and "Retry" in str(info.value)


def test_plausibility_can_be_relaxed_for_step_mode():
    relaxed = ft.FeetechProtocol(plausibility=ft.PlausibilityLimits(position=None))
    relaxed.check_plausible(1, "present_position", -30000)
    ft.FeetechProtocol(plausibility=None).check_plausible(1, "present_temperature", 255)


def test_status_bits():
    assert ft.decode_status_bits(0b100101) == ["voltage", "overheat", "overload"]
    err = ft.FEETECH.status_error(StatusPacket(2, 0x08, b""), allow_alert=False)
    assert isinstance(err, ServoStatusError) and err.flags == ("overcurrent",) and err.alert
    assert "jam" in str(err)
    assert ft.FEETECH.status_error(StatusPacket(2, 0x08, b""), allow_alert=True) is None
    assert ft.FEETECH.status_error(StatusPacket(2, 0, b""), allow_alert=False) is None
