"""The servo-chain emulator behind a real pseudo-terminal: the host bus talks to it as to
servos, including their protective behaviour (watchdog, overload, limits, EEPROM)."""

import os
import select
import sys
import threading
import time

import pytest
import serial
from hypothesis import given, settings
from hypothesis import strategies as st

from metagrasp.errors import ConfigError
from metagrasp.hardware import dynamixel as dxl
from metagrasp.hardware import feetech as ft
from metagrasp.hardware.bus import ServoBus
from metagrasp.hardware.emulator import FaultSpec, ServoChain
from metagrasp.hardware.errors import PacketTimeoutError, ServoStatusError

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="needs os.openpty")

STRATEGY = {"dynamixel": dxl.DYNAMIXEL, "feetech": ft.FEETECH}


class PtyChain:
    """A ServoChain answering on a pty's master; replies go out when due."""

    def __init__(self, protocol, faults=None):
        self.chain = ServoChain(STRATEGY[protocol], (1, 2, 3), 1020, faults=faults)
        self.master, self._slave = os.openpty()
        self.port = serial.Serial(os.ttyname(self._slave), 1_000_000, timeout=0.1)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        pending = []
        while not self._stop.is_set():
            ready, _, _ = select.select([self.master], [], [], 0.002)
            now = time.monotonic()
            if ready:
                try:
                    pending += self.chain.feed(os.read(self.master, 4096), now)
                except OSError:
                    return
            self.chain.tick(now)
            while pending and pending[0][0] <= time.monotonic():
                os.write(self.master, pending.pop(0)[1])

    def close(self):
        self._stop.set()
        self._thread.join(1)
        self.port.close()
        os.close(self._slave)
        os.close(self.master)


@pytest.fixture
def pty_chain():
    made = []

    def factory(protocol, faults=None):
        made.append(PtyChain(protocol, faults))
        return made[-1]

    yield factory
    for p in made:
        p.close()


@pytest.mark.parametrize("protocol", ["dynamixel", "feetech"])
def test_round_trips(pty_chain, protocol):
    pc = pty_chain(protocol)
    bus = ServoBus(pc.port, STRATEGY[protocol], timeout_s=0.2)
    info = bus.ping(2)
    assert info.servo_id == 2
    assert bus.read_register(3, "model_number") == 1020
    bus.write_register(1, "goal_position", 1500)
    assert pc.chain.get(1, "goal_position") == 1500
    bus.sync_write_register("goal_position", {1: 100, 2: 200, 3: 4000})
    assert bus.sync_read_register([1, 2, 3], "goal_position") == {1: 100, 2: 200, 3: 4000}
    values = bus.sync_read_registers([3, 1], ["goal_position", "torque_enable"])
    assert values == {
        3: {"goal_position": 4000, "torque_enable": 0},
        1: {"goal_position": 100, "torque_enable": 0},
    }


def test_dynamixel_protective_behaviour(pty_chain):
    pc = pty_chain("dynamixel")
    bus = ServoBus(pc.port, dxl.DYNAMIXEL, timeout_s=0.2)
    bus.write_register(1, "max_position_limit", 3000)
    with pytest.raises(ServoStatusError, match="data_limit_error"):
        bus.write_register(1, "goal_position", 3500)
    bus.write_register(1, "torque_enable", 1)
    with pytest.raises(ServoStatusError, match="access_error"):
        bus.write_register(1, "operating_mode", 5)  # EEPROM while torque is on
    # Bus watchdog: 2 x 20 ms without an instruction freezes the goal and latches -1.
    bus.write_register(1, "bus_watchdog", 2)
    time.sleep(0.1)
    assert bus.read_register(1, "bus_watchdog") == -1
    with pytest.raises(ServoStatusError, match="data_range_error"):
        bus.write_register(1, "goal_position", 2000)
    bus.write_register(1, "bus_watchdog", 0)  # the host clears it
    bus.write_register(1, "goal_position", 2000)
    # Overload: torque off, Alert bit on every reply until a reboot.
    pc.chain.trip_overload(2)
    with pytest.raises(ServoStatusError) as info:
        bus.read_register(2, "present_position")
    assert info.value.alert
    assert bus.read_register(2, "hardware_error_status", allow_alert=True) == 1 << 5
    bus.write_register(2, "torque_enable", 1, allow_alert=True)
    assert pc.chain.get(2, "torque_enable") == 0  # a faulted servo stays off
    bus.reboot(2)
    assert bus.read_register(2, "hardware_error_status") == 0


def test_feetech_overload_sets_status_bits_and_clamps_goals(pty_chain):
    pc = pty_chain("feetech")
    bus = ServoBus(pc.port, ft.FEETECH, timeout_s=0.2)
    bus.write_register(3, "max_position_limit", 3000)
    bus.write_register(3, "goal_position", 3500)
    assert bus.read_register(3, "goal_position") == 3000  # STS firmware clamps
    pc.chain.trip_overload(3)
    with pytest.raises(ServoStatusError, match="overload"):
        bus.read_register(3, "present_position")


def test_faults_slow_silent_and_corrupt(pty_chain):
    faults = FaultSpec.parse("slow=2:30,silent=3,corrupt=1.0,seed=1")
    pc = pty_chain("dynamixel", faults)
    bus = ServoBus(pc.port, dxl.DYNAMIXEL, timeout_s=0.02, retries=1)
    with pytest.raises(PacketTimeoutError):
        bus.ping(1)  # every reply corrupted: retried, then a typed timeout
    assert bus.stats.crc_errors >= 1 and bus.stats.retries == 1
    pc.chain.faults.corrupt = 0.0
    bus.retries = 0
    with pytest.raises(PacketTimeoutError):
        bus.ping(2)  # 30 ms late, past the 20 ms deadline
    time.sleep(0.03)
    bus.timeout_s = 0.1
    assert bus.ping(2).servo_id == 2
    pc.chain.torque_on_since = time.monotonic() - 1  # timed faults start at torque-on
    pc.chain.tick(time.monotonic())
    with pytest.raises(PacketTimeoutError) as info:
        bus.sync_read_register([1, 3], "present_position")
    assert info.value.missing_ids == (3,)


@settings(max_examples=25)
@given(st.binary(max_size=40), st.integers(1, 3))
def test_emulator_resyncs_after_arbitrary_garbage(garbage, sid):
    """Whatever noise precedes it, a valid instruction is still found and answered."""
    chain = ServoChain(dxl.DYNAMIXEL, (1, 2, 3), 1020)
    out = chain.feed(garbage, 0.0)
    out += chain.feed(dxl.ping_packet(sid), 0.0)
    replies = [r for _, r in out if dxl.decode_status(r) is not None]
    assert any(dxl.decode_status(r).servo_id == sid for r in replies)


def test_fault_spec_grammar():
    f = FaultSpec.parse(
        "corrupt=0.01, drop=0.02, slow=3:20, silent=4@2.5, overload=6@3, disconnect@5"
    )
    assert (f.corrupt, f.drop, f.slow, f.silent, f.overload, f.disconnect) == (
        0.01,
        0.02,
        {3: 0.02},
        {4: 2.5},
        {6: 3.0},
        5.0,
    )
    assert FaultSpec.parse("") == FaultSpec()
    for bad in ("explode=1", "corrupt=2", "slow=3", "silent=x"):
        with pytest.raises(ConfigError):
            FaultSpec.parse(bad)
