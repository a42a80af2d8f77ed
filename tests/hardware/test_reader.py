"""PacketReader: resynchronisation after garbage, split reads, corruption and echoes."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from metagrasp.hardware import dynamixel as dxl
from metagrasp.hardware import feetech as ft
from metagrasp.hardware.bus import PacketReader
from metagrasp.hardware.protocol import StatusPacket

STRATEGIES = {"dynamixel": (dxl, dxl.DYNAMIXEL), "feetech": (ft, ft.FEETECH)}


def feed_in_pieces(reader: PacketReader, stream: bytes, cuts: list[int]) -> list[StatusPacket]:
    points = sorted({c % (len(stream) + 1) for c in cuts})
    packets, last = [], 0
    for p in [*points, len(stream)]:
        packets += reader.feed(stream[last:p])
        last = p
    return packets


def fields(p: StatusPacket) -> tuple[int, int, bytes]:
    return p.servo_id, p.error, p.params


# Garbage rich in header fragments, so false starts are exercised, not just noise.
dxl_garbage = st.lists(
    st.one_of(
        st.binary(max_size=8),
        st.sampled_from([b"\xff", b"\xff\xff", b"\xff\xff\xfd", dxl.HEADER, dxl.HEADER + b"\x01"]),
        st.builds(lambda n: dxl.HEADER + bytes((1, n & 0xFF, n >> 8)), st.integers(0, 0xFFFF)),
    ),
    max_size=8,
).map(b"".join)


@given(
    garbage=dxl_garbage,
    sid=st.integers(0, dxl.MAX_ID),
    err=st.integers(0, 255),
    params=st.binary(max_size=24),
    cuts=st.lists(st.integers(0, 200), max_size=6),
)
def test_dynamixel_reader_resyncs_after_garbage_and_splits(garbage, sid, err, params, cuts):
    reader = PacketReader(dxl.DYNAMIXEL)
    packets = feed_in_pieces(reader, garbage + dxl.encode_status(sid, err, params), cuts)
    assert packets and fields(packets[-1]) == (sid, err, params)
    assert len(reader) == 0


# Feetech's 8-bit checksum cannot tell every false start from a frame (1 in 256 pass), so
# random garbage here avoids 0xFF; false headers get their own deterministic test below.
ft_garbage = st.lists(st.integers(0, 0xFE), max_size=40).map(bytes)


@given(
    garbage=ft_garbage,
    sid=st.integers(0, ft.MAX_ID),
    err=st.integers(0, 255),
    params=st.binary(max_size=24),
    cuts=st.lists(st.integers(0, 120), max_size=6),
)
def test_feetech_reader_resyncs_after_garbage_and_splits(garbage, sid, err, params, cuts):
    reader = PacketReader(ft.FEETECH)
    packets = feed_in_pieces(reader, garbage + ft.encode_status(sid, err, params), cuts)
    assert [fields(p) for p in packets] == [(sid, err, params)]


@pytest.mark.parametrize(
    "garbage",
    [
        b"\xff\xff\xff",  # a run of 0xFF: id 0xFF is impossible, so the header moves on
        b"\xff\xff\x01\x04\x00\x18",  # truncated reply, then the real one
        b"\xff\xff\x01\x02\x00\x00",  # complete frame with a wrong checksum
        b"\xff\xff\x01\xf0\x00",  # length claims 240 bytes: the real frame ends the wait
        b"\xff",
    ],
)
def test_feetech_false_headers(garbage):
    reader = PacketReader(ft.FEETECH)
    good = ft.encode_status(1, 0, b"\x18\x05")
    assert [fields(p) for p in reader.feed(garbage + good)] == [(1, 0, b"\x18\x05")]


@pytest.mark.parametrize("name", ["dynamixel", "feetech"])
def test_corrupted_copy_is_dropped_and_counted(name):
    mod, proto = STRATEGIES[name]
    good = mod.encode_status(3, 0, b"\x10\x20\x30\x40")
    bad = bytearray(good)
    bad[-3] ^= 0x01  # a data byte
    reader = PacketReader(proto)
    assert [fields(p) for p in reader.feed(bytes(bad) + good)] == [(3, 0, b"\x10\x20\x30\x40")]
    assert reader.stats.crc_errors == 1 and reader.stats.resyncs >= 1


@pytest.mark.parametrize("name", ["dynamixel", "feetech"])
def test_several_packets_in_one_read_and_byte_by_byte(name):
    mod, proto = STRATEGIES[name]
    stream = b"".join(mod.encode_status(i, 0, bytes([i, i])) for i in (1, 2, 3))
    assert [p.servo_id for p in PacketReader(proto).feed(stream)] == [1, 2, 3]
    reader = PacketReader(proto)
    got = [p.servo_id for b in stream for p in reader.feed(bytes([b]))]
    assert got == [1, 2, 3] and reader.stats.resyncs == 0


def test_partial_header_is_kept_between_reads():
    reader = PacketReader(dxl.DYNAMIXEL)
    frame = dxl.encode_status(1, 0, b"")
    assert reader.feed(b"\x00\x13" + frame[:2]) == []
    assert len(reader) == 2  # the garbage went, the "FF FF" stayed
    assert [p.servo_id for p in reader.feed(frame[2:])] == [1]


def test_dynamixel_echo_of_the_instruction_is_skipped():
    reader = PacketReader(dxl.DYNAMIXEL)
    stream = dxl.read_packet(1, 132, 4) + dxl.encode_status(1, 0, b"\xa6\x00\x00\x00")
    assert [fields(p) for p in reader.feed(stream)] == [(1, 0, b"\xa6\x00\x00\x00")]
    assert reader.stats.echoes == 1 and reader.stats.crc_errors == 0


def test_stuffed_payload_survives_the_reader():
    params = b"\xff\xff\xfd\x00\xff\xff\xfd"  # contains the header once unstuffed
    frame = dxl.encode_status(2, 0, params)
    reader = PacketReader(dxl.DYNAMIXEL)
    assert [fields(p) for p in reader.feed(frame[:9])] == []
    assert [fields(p) for p in reader.feed(frame[9:])] == [(2, 0, params)]


def test_buffer_is_bounded_by_max_buffer():
    reader = PacketReader(dxl.DYNAMIXEL, max_buffer=64)
    reader.feed(dxl.HEADER + b"\x01\x00\x04" + bytes(200))  # claims 1024 bytes, never ends
    assert len(reader) <= 64


@pytest.mark.parametrize("name", ["dynamixel", "feetech"])
def test_bytes_wanted_never_asks_past_the_current_frame(name):
    mod, proto = STRATEGIES[name]
    frame = mod.encode_status(1, 0, bytes(10))
    reader = PacketReader(proto)
    assert reader.bytes_wanted() == proto.status_frame_size(0)  # smallest possible reply
    reader.feed(frame[:8])
    assert reader.bytes_wanted() == len(frame) - 8  # the length field is known now
    reader.feed(frame[8:])
    assert reader.bytes_wanted() == proto.status_frame_size(0)
