"""Simulated servos and ports for the bus tests.

``SimServos`` answers instruction packets the way real servos would (memory-backed control
table, ping, read, write, sync read/write, reboot) with knobs to inject faults. ``FakePort``
is an in-memory pyserial stand-in; the ``pty_bus`` fixture runs the same simulation behind a
real pseudo-terminal so the client is exercised through a tty.
"""

from __future__ import annotations

import os
import select
import threading
import time
from collections.abc import Callable
from types import ModuleType

import pytest
import serial

from metagrasp.hardware import dynamixel, feetech
from metagrasp.hardware.bus import ServoBus
from metagrasp.hardware.errors import MalformedPacketError


class SimServos:
    """Servos on one bus, answering instructions from a byte stream.

    Args:
        proto: The protocol module (``dynamixel`` or ``feetech``).
        ids: Ids of the simulated servos.

    Fault knobs (all default off): ``silent`` ids never answer; ``reply_id`` makes a servo
    answer under another id; ``error`` sets a servo's status byte; ``corrupt_next`` flips a
    byte in that many upcoming replies; ``echo`` prepends the instruction itself (adapters
    that hear their own transmission); ``garbage`` is prepended to every answer;
    ``short_error_replies`` drops the data from replies that carry an error.
    """

    MODEL = 1030  # XM430-W210 in the e-manual's ping example

    def __init__(self, proto: ModuleType, ids: tuple[int, ...] = (1, 2, 3)) -> None:
        self.proto = proto
        self.addr_size = 2 if proto is dynamixel else 1
        self.memory = {i: bytearray(1024) for i in ids}
        self.silent: set[int] = set()
        self.reply_id: dict[int, int] = {}
        self.error: dict[int, int] = {}
        self.corrupt_next = 0
        self.echo = False
        self.garbage = b""
        self.short_error_replies = False
        self.frames: list[bytes] = []  # raw instruction frames, as they crossed the wire
        self.received: list[tuple[int, int, bytes]] = []
        self.reboots: list[int] = []
        self._buf = bytearray()

    def set(self, servo_id: int, address: int, data: bytes) -> None:
        self.memory[servo_id][address : address + len(data)] = data

    def feed(self, data: bytes) -> bytes:
        """Consume instruction bytes, return everything the servos send back."""
        self._buf += data
        out = bytearray()
        while True:
            start = self._buf.find(self.proto.HEADER)
            if start < 0:
                return bytes(out)
            del self._buf[:start]
            try:
                total = self.proto.frame_length(self._buf)
            except MalformedPacketError:
                del self._buf[:1]
                continue
            if total is None or len(self._buf) < total:
                return bytes(out)
            frame = bytes(self._buf[:total])
            del self._buf[:total]
            if not self.proto.verify_frame(frame):
                continue
            inst = self.proto.decode_instruction(frame)
            if inst is None:
                continue
            self.frames.append(frame)
            answer = self._answer(inst.servo_id, inst.instruction, inst.params)
            if self.echo:
                out += frame
            if answer:
                out += self.garbage + answer

    def _u(self, data: bytes) -> int:
        return int.from_bytes(data, "little")

    def _status(self, servo_id: int, params: bytes = b"") -> bytes:
        if servo_id in self.silent:
            return b""
        if self.short_error_replies and self.error.get(servo_id, 0):
            params = b""
        pkt = bytearray(
            self.proto.encode_status(
                self.reply_id.get(servo_id, servo_id), self.error.get(servo_id, 0), params
            )
        )
        if self.corrupt_next > 0:
            self.corrupt_next -= 1
            pkt[-2] ^= 0x5A  # inside the checksummed region (never the header)
        return bytes(pkt)

    def _answer(self, servo_id: int, inst: int, params: bytes) -> bytes:
        self.received.append((servo_id, inst, params))
        a = self.addr_size
        ids = [servo_id] if servo_id in self.memory else []
        if inst == 0x01:
            body = (self.MODEL.to_bytes(2, "little") + b"\x26") if a == 2 else b""
            return b"".join(self._status(i, body) for i in ids)
        if inst == 0x02:
            addr, n = self._u(params[:a]), self._u(params[a : 2 * a])
            return b"".join(self._status(i, bytes(self.memory[i][addr : addr + n])) for i in ids)
        if inst == 0x03:
            addr = self._u(params[:a])
            targets = list(self.memory) if servo_id == self.proto.BROADCAST_ID else ids
            for i in targets:
                self.set(i, addr, params[a:])
            return b"".join(self._status(i) for i in ids)
        if inst == 0x08:
            self.reboots.append(servo_id)
            return b"".join(self._status(i) for i in ids) if a == 2 else b""
        if inst == 0x82:
            addr, n = self._u(params[:a]), self._u(params[a : 2 * a])
            want = [i for i in params[2 * a :] if i in self.memory]
            return b"".join(self._status(i, bytes(self.memory[i][addr : addr + n])) for i in want)
        if inst == 0x83:
            addr, n = self._u(params[:a]), self._u(params[a : 2 * a])
            rest = params[2 * a :]
            for k in range(0, len(rest), n + 1):
                if rest[k] in self.memory:
                    self.set(rest[k], addr, rest[k + 1 : k + 1 + n])
            return b""
        return b""


class FakePort:
    """In-memory pyserial stand-in wired to a :class:`SimServos`.

    ``read`` returns buffered bytes at once (``chunk`` caps how many per call, to split
    replies) or, with nothing buffered, sleeps for ``timeout`` like pyserial and returns b"".
    ``fail`` makes every call raise serial.SerialException (an unplugged adapter).
    """

    def __init__(self, sim: SimServos) -> None:
        self.sim = sim
        self.timeout: float | None = 0.1
        self.port = "fake0"
        self.chunk: int | None = None
        self.fail = False
        self.written: list[bytes] = []
        self._rx = bytearray()

    def _check(self) -> None:
        if self.fail:
            raise serial.SerialException("device reports readiness to read but returned no data")

    def write(self, data: bytes) -> int:
        self._check()
        self.written.append(bytes(data))
        self._rx += self.sim.feed(bytes(data))
        return len(data)

    def read(self, size: int = 1) -> bytes:
        self._check()
        if not self._rx:
            time.sleep(self.timeout or 0.0)
            return b""
        n = min(size, self.chunk or size, len(self._rx))
        out = bytes(self._rx[:n])
        del self._rx[:n]
        return out

    def reset_input_buffer(self) -> None:
        self._check()

    def close(self) -> None:
        pass


@pytest.fixture(params=["dynamixel", "feetech"])
def proto_module(request) -> ModuleType:
    return {"dynamixel": dynamixel, "feetech": feetech}[request.param]


@pytest.fixture
def make_bus() -> Callable[..., tuple[ServoBus, SimServos, FakePort]]:
    """Factory: ``make_bus(proto_module, **bus_kwargs) -> (bus, sim, port)``."""

    def factory(proto: ModuleType, **kwargs) -> tuple[ServoBus, SimServos, FakePort]:
        sim = SimServos(proto)
        port = FakePort(sim)
        strategy = dynamixel.DYNAMIXEL if proto is dynamixel else feetech.FEETECH
        kwargs.setdefault("timeout_s", 0.05)
        return ServoBus(port, strategy, **kwargs), sim, port

    return factory


class PtyServos:
    """A :class:`SimServos` answering on the master side of a pseudo-terminal."""

    def __init__(self, proto: ModuleType) -> None:
        self.sim = SimServos(proto)
        self.split_delay = 0.0  # >0: send each answer in two halves with a pause between
        self.master, self._slave = os.openpty()
        self.path = os.ttyname(self._slave)
        # Our own slave descriptor stays open until teardown: if every slave descriptor
        # closed (e.g. a test reopening the port), the master would see a hang-up.
        self.serial = serial.Serial(self.path, baudrate=1_000_000, timeout=0.1)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                ready, _, _ = select.select([self.master], [], [], 0.02)
                if not ready:
                    continue
                answer = self.sim.feed(os.read(self.master, 4096))
                if answer and self.split_delay > 0:
                    half = len(answer) // 2
                    os.write(self.master, answer[:half])
                    time.sleep(self.split_delay)
                    os.write(self.master, answer[half:])
                elif answer:
                    os.write(self.master, answer)
            except (OSError, ValueError):
                return  # master closed: the "adapter" is gone

    def unplug(self) -> None:
        """Close the master side, as if the USB adapter were pulled out."""
        self._stop.set()
        self._thread.join(timeout=1)
        os.close(self.master)
        self.master = -1

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=1)
        self.serial.close()
        os.close(self._slave)
        if self.master >= 0:
            os.close(self.master)


@pytest.fixture
def pty_servos():
    """Factory for :class:`PtyServos`; every one created is torn down after the test."""
    made: list[PtyServos] = []

    def factory(proto: ModuleType) -> PtyServos:
        made.append(PtyServos(proto))
        return made[-1]

    yield factory
    for p in made:
        p.close()
