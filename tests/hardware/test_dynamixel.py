"""Dynamixel Protocol 2.0: vectors from the ROBOTIS e-manual, stuffing, round trips.

Every hex vector below is copied from the e-manual page "DYNAMIXEL Protocol 2.0"
(emanual.robotis.com/docs/en/dxl/protocol2/), section "Instruction Details"; the section
and example are named next to each one.
"""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from metagrasp.errors import UnknownNameError
from metagrasp.hardware import dynamixel as dxl
from metagrasp.hardware.errors import EncodingError, MalformedPacketError, ServoStatusError
from metagrasp.hardware.protocol import StatusPacket


def h(text: str) -> bytes:
    return bytes.fromhex(text)


# (section, instruction packet built by our encoder, expected bytes from the e-manual)
INSTRUCTION_VECTORS = [
    ("Ping, Example 1", lambda: dxl.ping_packet(1), "FF FF FD 00 01 03 00 01 19 4E"),
    ("Ping, Example 2 (broadcast)", lambda: dxl.ping_packet(0xFE), "FF FF FD 00 FE 03 00 01 31 42"),
    (
        "Read, Example: Present Position(132), 4 bytes",
        lambda: dxl.read_packet(1, 132, 4),
        "FF FF FD 00 01 07 00 02 84 00 04 00 1D 15",
    ),
    (
        "Write, Example: 512 to Goal Position(116)",
        lambda: dxl.write_packet(1, 116, (512).to_bytes(4, "little")),
        "FF FF FD 00 01 09 00 03 74 00 00 02 00 00 CA 89",
    ),
    (
        "Reg Write, Example: 200 to Goal Velocity(104)",
        lambda: dxl.encode_instruction(1, dxl.Instruction.REG_WRITE, h("68 00 C8 00 00 00")),
        "FF FF FD 00 01 09 00 04 68 00 C8 00 00 00 AE 8E",
    ),
    (
        "Action, Example",
        lambda: dxl.encode_instruction(1, dxl.Instruction.ACTION),
        "FF FF FD 00 01 03 00 05 02 CE",
    ),
    (
        "Factory Reset, Example (0x01: all except ID)",
        lambda: dxl.encode_instruction(1, dxl.Instruction.FACTORY_RESET, b"\x01"),
        "FF FF FD 00 01 04 00 06 01 A1 E6",
    ),
    ("Reboot, Example", lambda: dxl.reboot_packet(1), "FF FF FD 00 01 03 00 08 2F 4E"),
    (
        "Clear, Example",
        lambda: dxl.encode_instruction(1, dxl.Instruction.CLEAR, h("01 44 58 4C 22")),
        "FF FF FD 00 01 08 00 10 01 44 58 4C 22 B1 DC",
    ),
    (
        "Sync Read, Example: Present Position of ids 1 and 2",
        lambda: dxl.sync_read_packet([1, 2], 132, 4),
        "FF FF FD 00 FE 09 00 82 84 00 04 00 01 02 CE FA",
    ),
    (
        "Sync Write, Example: Goal Position 150 -> id 1, 170 -> id 2",
        lambda: dxl.sync_write_packet(
            116, 4, {1: (150).to_bytes(4, "little"), 2: (170).to_bytes(4, "little")}
        ),
        "FF FF FD 00 FE 11 00 83 74 00 04 00 01 96 00 00 00 02 AA 00 00 00 82 87",
    ),
    (
        "Bulk Read, Example",
        lambda: dxl.encode_instruction(
            0xFE, dxl.Instruction.BULK_READ, h("01 90 00 02 00 02 92 00 01 00")
        ),
        "FF FF FD 00 FE 0D 00 92 01 90 00 02 00 02 92 00 01 00 1A 05",
    ),
]

# (section, status packet from the e-manual, id, error, params)
STATUS_VECTORS = [
    ("Ping, Example 1: ID 1", "FF FF FD 00 01 07 00 55 00 06 04 26 65 5D", 1, 0, "06 04 26"),
    ("Ping, Example 2: ID 2", "FF FF FD 00 02 07 00 55 00 06 04 26 6F 6D", 2, 0, "06 04 26"),
    ("Read, Example", "FF FF FD 00 01 08 00 55 00 A6 00 00 00 8C C0", 1, 0, "A6 00 00 00"),
    ("Write/Reg Write/Action/Reboot", "FF FF FD 00 01 04 00 55 00 A1 0C", 1, 0, ""),
    (
        "Sync Read, Example: ID 2",
        "FF FF FD 00 02 08 00 55 00 1F 08 00 00 BA BE",
        2,
        0,
        "1F 08 00 00",
    ),
    ("Bulk Read, Example: ID 1", "FF FF FD 00 01 06 00 55 00 77 00 C3 69", 1, 0, "77 00"),
    ("Bulk Read, Example: ID 2", "FF FF FD 00 02 05 00 55 00 24 8B A9", 2, 0, "24"),
]


def test_crc_table_matches_the_emanual_first_row():
    # e-manual "CRC Calculation": the table begins with these eight entries.
    assert dxl._CRC_TABLE[:8] == (0x0000, 0x8005, 0x800F, 0x000A, 0x801B, 0x001E, 0x0014, 0x8011)


@pytest.mark.parametrize(("section", "build", "expected"), INSTRUCTION_VECTORS)
def test_instruction_packets_match_emanual(section, build, expected):
    assert build() == h(expected), section


@pytest.mark.parametrize(("section", "raw", "sid", "err", "params"), STATUS_VECTORS)
def test_status_packets_match_emanual(section, raw, sid, err, params):
    frame = h(raw)
    assert dxl.frame_length(frame) == len(frame)
    assert dxl.verify_frame(frame), section
    assert dxl.decode_status(frame) == StatusPacket(sid, err, h(params), frame)
    assert dxl.encode_status(sid, err, h(params)) == frame


def test_crc_continues_across_chunks():
    data = h("FF FF FD 00 01 03 00 01")
    assert dxl.crc16(data[4:], dxl.crc16(data[:4])) == dxl.crc16(data) == 0x4E19


def test_instruction_frames_are_not_status_packets():
    frame = dxl.ping_packet(1)
    assert dxl.decode_status(frame) is None
    assert dxl.decode_instruction(frame).instruction == dxl.Instruction.PING
    assert dxl.decode_instruction(h("FF FF FD 00 01 04 00 55 00 A1 0C")) is None


def test_stuffing_examples():
    assert dxl.stuff(h("FF FF FD")) == h("FF FF FD FD")
    assert dxl.stuff(h("01 FF FF FD 02")) == h("01 FF FF FD FD 02")
    assert dxl.stuff(h("FF FF FF FD")) == h("FF FF FF FD FD")
    assert dxl.stuff(h("FF FD FF FF")) == h("FF FD FF FF")
    assert dxl.unstuff(h("FF FF FD FD FD")) == h("FF FF FD FD")


def test_stuffed_packet_length_and_crc_cover_the_stuffed_bytes():
    # Writing FF FF FD to an address: the payload gains one 0xFD, LEN counts it.
    pkt = dxl.write_packet(1, 0x0168, h("FF FF FD"))
    assert pkt[7:13] == h("03 68 01 FF FF FD")
    assert pkt[13] == 0xFD and pkt[5] | pkt[6] << 8 == len(pkt) - 7
    assert dxl.verify_frame(pkt)
    assert dxl.decode_instruction(pkt).params == h("68 01 FF FF FD")


@given(st.binary(max_size=64))
def test_stuffing_round_trips_and_hides_the_header(data):
    stuffed = dxl.stuff(data)
    assert dxl.unstuff(stuffed) == data
    i = stuffed.find(h("FF FF FD"))
    while i >= 0:
        assert stuffed[i + 3 : i + 4] == b"\xfd"
        i = stuffed.find(h("FF FF FD"), i + 4)


@given(
    sid=st.integers(0, dxl.MAX_ID),
    err=st.integers(0, 255),
    params=st.binary(max_size=80),
)
def test_status_encode_decode_round_trip(sid, err, params):
    frame = dxl.encode_status(sid, err, params)
    assert dxl.frame_length(frame) == len(frame) and dxl.verify_frame(frame)
    assert dxl.HEADER not in frame[4:]  # stuffing keeps the header unique
    assert dxl.decode_status(frame) == StatusPacket(sid, err, params, frame)


@given(
    sid=st.one_of(st.integers(0, dxl.MAX_ID), st.just(dxl.BROADCAST_ID)),
    inst=st.sampled_from(list(dxl.Instruction)).filter(lambda i: i != dxl.Instruction.STATUS),
    params=st.binary(max_size=80),
)
def test_instruction_encode_decode_round_trip(sid, inst, params):
    frame = dxl.encode_instruction(sid, inst, params)
    assert dxl.verify_frame(frame)
    got = dxl.decode_instruction(frame)
    assert (got.servo_id, got.instruction, got.params) == (sid, inst, params)


@given(st.binary(min_size=10, max_size=40), st.integers(0, 39), st.integers(1, 255))
def test_any_single_byte_corruption_fails_the_crc(params, pos, flip):
    frame = bytearray(dxl.encode_status(1, 0, params))
    pos = 4 + pos % (len(frame) - 4)
    frame[pos] ^= flip
    try:
        total = dxl.frame_length(frame)
    except MalformedPacketError:
        return
    assert total != len(frame) or not dxl.verify_frame(frame)


def test_bad_ids_and_lengths_are_refused():
    with pytest.raises(EncodingError, match="0..252"):
        dxl.ping_packet(253)
    with pytest.raises(EncodingError):
        dxl.read_packet(dxl.BROADCAST_ID, 132, 4)
    with pytest.raises(EncodingError, match="duplicate"):
        dxl.sync_read_packet([1, 1], 132, 4)
    with pytest.raises(EncodingError, match="expected 4"):
        dxl.sync_write_packet(116, 4, {1: b"\x00\x00"})
    with pytest.raises(MalformedPacketError):
        dxl.frame_length(h("FF FF FD 00 FD 03 00"))
    with pytest.raises(MalformedPacketError):
        dxl.frame_length(h("FF FF FD 00 01 02 00"))
    assert dxl.frame_length(h("FF FF FD 00 01")) is None


def test_error_byte_decoding():
    assert dxl.decode_error(0x00) == ([], False, None)
    assert dxl.decode_error(0x80) == (["alert"], True, None)
    assert dxl.decode_error(0x87) == (["alert", "access_error"], True, "access_error")
    assert dxl.decode_error(0x04)[2] == "data_range_error"
    assert dxl.decode_hardware_error(0b110101) == [
        "input_voltage",
        "overheating",
        "electrical_shock",
        "overload",
    ]


def test_status_error_policy():
    proto = dxl.DYNAMIXEL
    ok = StatusPacket(3, 0x00, b"")
    assert proto.status_error(ok, allow_alert=False) is None
    alert = StatusPacket(3, 0x80, b"\x01")
    err = proto.status_error(alert, allow_alert=False)
    assert isinstance(err, ServoStatusError) and err.alert and err.servo_id == 3
    assert "hardware_error_status" in str(err) and not err.retryable
    assert proto.status_error(alert, allow_alert=True) is None
    refused = proto.status_error(StatusPacket(3, 0x07, b""), allow_alert=True)
    assert refused.instruction_error == "access_error" and "torque_enable" in str(refused)
    assert proto.status_error(StatusPacket(3, 0x03, b""), allow_alert=False).retryable


def test_control_table_addresses_from_the_xm430_page():
    t = dxl.X_SERIES_CONTROL_TABLE
    expected = {
        "homing_offset": (20, 4),
        "max_position_limit": (48, 4),
        "min_position_limit": (52, 4),
        "operating_mode": (11, 1),
        "torque_enable": (64, 1),
        "led": (65, 1),
        "hardware_error_status": (70, 1),
        "bus_watchdog": (98, 1),
        "goal_current": (102, 2),
        "goal_velocity": (104, 4),
        "profile_acceleration": (108, 4),
        "profile_velocity": (112, 4),
        "goal_position": (116, 4),
        "moving": (122, 1),
        "present_current": (126, 2),
        "present_velocity": (128, 4),
        "present_position": (132, 4),
        "present_input_voltage": (144, 2),
        "present_temperature": (146, 1),
    }
    assert {k: tuple(t[k]) for k in expected} == expected
    regs = sorted(t.values())
    assert all(a.address + a.size <= b.address for a, b in zip(regs, regs[1:], strict=False))
    assert "goal_current" not in dxl.XL430_CONTROL_TABLE
    assert dxl.XL430_CONTROL_TABLE["present_load"] == (126, 2)
    assert dxl.OperatingMode.EXTENDED_POSITION == 4 and dxl.OperatingMode.PWM == 16


@given(st.integers(-(2**31), 2**31 - 1))
def test_signed_register_values_round_trip(value):
    proto = dxl.DYNAMIXEL
    data = proto.encode_value("present_position", value)
    assert len(data) == 4 and proto.decode_value("present_position", data) == value


def test_register_values_and_names():
    proto = dxl.DYNAMIXEL
    assert proto.encode_value("goal_position", -1) == h("FF FF FF FF")
    assert proto.encode_value("torque_enable", True) == b"\x01"
    assert proto.decode_value("bus_watchdog", b"\xff") == -1
    assert proto.decode_value("present_temperature", b"\xff") == 255
    with pytest.raises(EncodingError, match="does not fit"):
        proto.encode_value("led", 256)
    with pytest.raises(EncodingError, match="integer"):
        proto.encode_value("goal_position", 1.5)
    with pytest.raises(UnknownNameError, match="goal_positon"):
        proto.register("goal_positon")
    assert proto.parse_ping(dxl.decode_status(h(STATUS_VECTORS[0][1]))).model_number == 1030
