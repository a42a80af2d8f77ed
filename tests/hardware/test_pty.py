"""The bus client through a real tty: a pseudo-terminal with simulated servos on its master.

Exercises what the in-memory port cannot: pyserial's termios set-up, its blocking reads
with per-call timeouts, replies split across reads by the kernel, and the errors pyserial
raises when the other end disappears (an unplugged USB adapter).
"""

import sys
import time

import pytest

from metagrasp.hardware import dynamixel as dxl
from metagrasp.hardware import feetech as ft
from metagrasp.hardware.bus import ServoBus, open_port
from metagrasp.hardware.errors import PacketTimeoutError, PortError, ServoStatusError

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="needs os.openpty")

STRATEGY = {dxl: dxl.DYNAMIXEL, ft: ft.FEETECH}


def test_ping_over_a_pty_answers_with_the_emanual_status_packet(pty_servos):
    servos = pty_servos(dxl)
    bus = ServoBus(servos.serial, dxl.DYNAMIXEL, timeout_s=0.5)
    info = bus.ping(1)
    assert (info.servo_id, info.model_number, info.firmware_version) == (1, 1030, 0x26)
    # What crossed the tty is byte-for-byte the e-manual's ping example (Ping, Example 1).
    assert servos.sim.frames == [bytes.fromhex("FF FF FD 00 01 03 00 01 19 4E")]
    assert bus.stats.packets_ok == 1


@pytest.mark.parametrize("proto", [dxl, ft], ids=["dynamixel", "feetech"])
def test_registers_over_a_pty_with_split_replies(pty_servos, proto):
    servos = pty_servos(proto)
    servos.split_delay = 0.005  # each reply reaches the tty in two writes
    servos.sim.garbage = b"\x00\x55"
    bus = ServoBus(servos.serial, STRATEGY[proto], timeout_s=0.5)
    bus.write_register(2, "goal_position", 1234)
    assert bus.read_register(2, "goal_position") == 1234
    bus.sync_write_register("goal_position", {1: 10, 2: 20, 3: 30})
    assert bus.sync_read_register([1, 2, 3], "goal_position") == {1: 10, 2: 20, 3: 30}
    assert bus.stats.timeouts == 0 and bus.stats.resyncs > 0


def test_silent_servo_times_out_in_bounded_time_over_a_pty(pty_servos):
    servos = pty_servos(ft)
    servos.sim.silent.add(1)
    bus = ServoBus(servos.serial, ft.FEETECH, timeout_s=0.05, retries=1)
    start = time.monotonic()
    with pytest.raises(PacketTimeoutError):
        bus.ping(1)
    assert time.monotonic() - start < 2 * 0.05 + 0.2


def test_short_error_reply_does_not_wait_for_the_timeout(pty_servos):
    # A refused read comes back without data; a read sized for the data would block.
    servos = pty_servos(dxl)
    servos.sim.error[1] = 0x07
    servos.sim.short_error_replies = True
    bus = ServoBus(servos.serial, dxl.DYNAMIXEL, timeout_s=1.0)
    start = time.monotonic()
    with pytest.raises(ServoStatusError, match="access_error"):
        bus.read_register(1, "present_position")
    assert time.monotonic() - start < 0.3


def test_unplugged_adapter_becomes_port_error(pty_servos):
    servos = pty_servos(dxl)
    bus = ServoBus(servos.serial, dxl.DYNAMIXEL, timeout_s=0.2)
    assert bus.ping(1).servo_id == 1
    servos.unplug()
    with pytest.raises(PortError, match="unplugged"):
        bus.ping(1)


def test_open_port_on_a_pty(pty_servos):
    servos = pty_servos(ft)
    servos.serial.close()  # open_port locks the port exclusively; release the fixture's
    port = open_port(servos.path, 1_000_000)
    try:
        assert ServoBus(port, ft.FEETECH, timeout_s=0.5).ping(3).servo_id == 3
    finally:
        port.close()
