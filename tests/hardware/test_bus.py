"""ServoBus over an in-memory port: transactions, retries, typed failures, bounded time."""

import time

import pytest
import serial

from metagrasp.errors import MetagraspError
from metagrasp.hardware import dynamixel as dxl
from metagrasp.hardware import feetech as ft
from metagrasp.hardware.bus import open_port
from metagrasp.hardware.errors import (
    EncodingError,
    ImplausibleValueError,
    PacketTimeoutError,
    PortError,
    ServoStatusError,
    WrongIdError,
)


def test_ping_read_write_round_trip(make_bus, proto_module):
    bus, sim, _ = make_bus(proto_module)
    info = bus.ping(2)
    assert info.servo_id == 2
    assert info.model_number == (1030 if proto_module is dxl else None)
    bus.write_register(2, "goal_position", 2048)
    assert bus.read_register(2, "goal_position") == 2048
    assert bus.read(2, bus.protocol.register("goal_position").address, 2)[:2] == b"\x00\x08"
    assert bus.stats.packets_ok == 4 and bus.stats.retries == 0


def test_sync_read_and_sync_write(make_bus, proto_module):
    bus, sim, _ = make_bus(proto_module)
    bus.sync_write_register("goal_position", {1: 100, 2: 200, 3: 300})
    assert bus.sync_read_register([3, 1, 2], "goal_position") == {3: 300, 1: 100, 2: 200}
    assert list(bus.sync_read([2, 1], 0, 1)) == [2, 1]
    assert bus.stats.packets_sent == 3


def test_signed_values_use_each_protocols_convention(make_bus, proto_module):
    bus, sim, _ = make_bus(proto_module)
    bus.write_register(1, "goal_velocity", -300)
    reg = bus.protocol.register("goal_velocity")
    raw = bytes(sim.memory[1][reg.address : reg.address + reg.size])
    assert raw == (
        (-300).to_bytes(4, "little", signed=True) if proto_module is dxl else b"\x2c\x81"
    )
    assert bus.read_register(1, "goal_velocity") == -300


def test_broadcast_write_and_reboot(make_bus, proto_module):
    bus, sim, port = make_bus(proto_module)
    bus.write_register(proto_module.BROADCAST_ID, "led" if proto_module is dxl else "lock", 1)
    addr = bus.protocol.register("led" if proto_module is dxl else "lock").address
    assert all(sim.memory[i][addr] == 1 for i in (1, 2, 3))
    bus.reboot(3)
    assert sim.reboots == [3]
    assert bus.stats.timeouts == 0


def test_timeout_is_typed_and_bounded(make_bus, proto_module):
    bus, sim, _ = make_bus(proto_module, timeout_s=0.03, retries=2)
    sim.silent.add(2)
    start = time.monotonic()
    with pytest.raises(PacketTimeoutError, match="no reply from servo id") as info:
        bus.ping(2)
    elapsed = time.monotonic() - start
    assert elapsed < 3 * 0.03 + 0.15
    assert info.value.missing_ids == (2,) and info.value.attempts == 3
    assert isinstance(info.value, MetagraspError)
    assert bus.stats.timeouts == 3 and bus.stats.retries == 2


def test_sync_read_names_the_missing_servo(make_bus, proto_module):
    bus, sim, _ = make_bus(proto_module, retries=0)
    sim.silent.add(3)
    with pytest.raises(PacketTimeoutError) as info:
        bus.sync_read_register([1, 2, 3], "present_temperature")
    assert info.value.missing_ids == (3,)


def test_wrong_id_reply(make_bus, proto_module):
    bus, sim, _ = make_bus(proto_module, retries=1)
    sim.reply_id[2] = 7  # servo 2 answers as 7: a mis-numbered servo
    with pytest.raises(WrongIdError, match="unexpected id") as info:
        bus.ping(2)
    assert info.value.seen_ids == (7,)
    assert bus.stats.wrong_ids == 2


def test_corrupted_reply_is_retried(make_bus, proto_module):
    bus, sim, _ = make_bus(proto_module, retries=2)
    sim.set(1, 56 if proto_module is ft else 132, b"\x10\x02")
    sim.corrupt_next = 2
    name = "present_position"
    assert bus.read_register(1, name) == 0x0210
    assert bus.stats.crc_errors == 2 and bus.stats.retries == 2 and bus.stats.timeouts == 2


def test_garbage_split_and_echo_on_the_line(make_bus, proto_module):
    bus, sim, port = make_bus(proto_module)
    sim.echo = True
    sim.garbage = b"\x00\xff\x13\xff\xff"
    port.chunk = 3
    assert bus.ping(1).servo_id == 1
    assert bus.sync_read_register([1, 2], "id") == {1: 0, 2: 0}
    assert bus.stats.echoes == 2 and bus.stats.resyncs > 0 and bus.stats.timeouts == 0


def test_dynamixel_alert_and_instruction_errors(make_bus):
    bus, sim, _ = make_bus(dxl)
    sim.error[1] = 0x80
    with pytest.raises(ServoStatusError, match="hardware_error_status") as info:
        bus.read_register(1, "present_position")
    assert info.value.alert and info.value.packet.servo_id == 1
    sim.set(1, 70, b"\x04")
    assert dxl.decode_hardware_error(
        bus.read_register(1, "hardware_error_status", allow_alert=True)
    ) == ["overheating"]
    bus.write_register(1, "torque_enable", 0, allow_alert=True)  # executed despite the alert
    sim.error[1] = 0x07
    with pytest.raises(ServoStatusError, match="access_error"):
        bus.write_register(1, "operating_mode", 4)
    assert bus.stats.retries == 0  # a refusal is not retried
    sim.error[1] = 0x03  # the servo saw a corrupted instruction: resent, then reported
    with pytest.raises(ServoStatusError, match="crc_error"):
        bus.ping(1)
    assert bus.stats.retries == 2


def test_feetech_status_bits_raise(make_bus):
    bus, sim, _ = make_bus(ft)
    sim.error[2] = 0x04
    with pytest.raises(ServoStatusError, match="overheat"):
        bus.read_register(2, "present_temperature")
    sim.set(2, 63, b"\x41")
    assert bus.read_register(2, "present_temperature", allow_alert=True) == 65


def test_implausible_values_are_reread_then_reported(make_bus):
    bus, sim, _ = make_bus(ft, retries=1)
    sim.set(1, 62, b"\xfa")  # 25.0 V on a 12 V servo
    with pytest.raises(ImplausibleValueError, match="present_voltage"):
        bus.read_register(1, "present_voltage")
    assert bus.stats.implausible == 2 and bus.stats.retries == 1
    sim.set(1, 62, b"\x78")
    assert bus.read_register(1, "present_voltage") == 120


def test_port_failure_becomes_port_error(make_bus, proto_module):
    bus, sim, port = make_bus(proto_module)
    port.fail = True
    with pytest.raises(PortError, match="unplugged") as info:
        bus.ping(1)
    assert "--port" in str(info.value) and not info.value.retryable
    bus.close()


def test_bad_arguments_are_encoding_errors(make_bus, proto_module):
    bus, _, _ = make_bus(proto_module)
    with pytest.raises(EncodingError):
        bus.ping(proto_module.BROADCAST_ID)
    with pytest.raises(EncodingError):
        bus.write_register(1, "torque_enable", 300)
    with pytest.raises(EncodingError):
        bus.sync_read([], 0, 1)
    assert bus.stats.packets_sent == 0


def test_open_port_missing_device():
    with pytest.raises(PortError, match="no such device") as info:
        open_port("/dev/ttyDOES_NOT_EXIST")
    assert "--port" in str(info.value)


def test_open_port_permission_and_busy(monkeypatch, tmp_path):
    path = tmp_path / "ttyFAKE"
    path.touch()

    def denied(*args, **kwargs):
        raise serial.SerialException(13, f"could not open port {path}: Permission denied")

    monkeypatch.setattr(serial, "serial_for_url", denied)
    with pytest.raises(PortError, match="dialout"):
        open_port(str(path))

    def busy(*args, **kwargs):
        raise serial.SerialException("Could not exclusively lock port: Resource unavailable")

    monkeypatch.setattr(serial, "serial_for_url", busy)
    with pytest.raises(PortError, match="busy"):
        open_port(str(path))


def test_open_port_loopback_url():
    port = open_port("loop://", 115200)
    try:
        port.write(b"\x01")
        assert port.read(1) == b"\x01"
    finally:
        port.close()
