"""Simulated servos on a bus: a chain of control tables answering real instruction packets.

Contract: :class:`ServoChain` consumes the bytes a host sends and returns the bytes the
servos would answer, each with the time it is due (no I/O here: the virtual robot owns the
pseudo-terminal and the clock). It implements, for either wire protocol, ping, read,
write, sync read, sync write and reboot on a byte-addressed control table per servo, plus
the servo-side behaviour the host relies on:

* torque enable, EEPROM writes refused while torque is on (Dynamixel access error);
* goal positions outside the stored position limits refused (Dynamixel data limit error)
  or clamped (Feetech, as the STS firmware does);
* hardware faults: the overload shutdown (torque off, Alert bit / status bit 5 on every
  reply until a reboot);
* the Dynamixel bus watchdog: with torque on and no instruction for longer than
  ``bus_watchdog`` x 20 ms, goals freeze at the present position, the register reads -1
  and goal writes are refused with a data range error until 0 is written to it.

Faults for tests and the virtual robot (:class:`FaultSpec`): corrupted or dropped reply
bytes, slow or silent servos, an overload on a servo, and a disconnect time (the owner of
the port acts on :meth:`ServoChain.disconnect_due`). This module is protocol-level and
device-safe (no numpy/mujoco); the physics behind the registers is the owner's business
(``on_read``/``on_write`` hooks).
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from metagrasp.errors import ConfigError
from metagrasp.hardware.bus import BusStats, PacketReader
from metagrasp.hardware.protocol import ServoProtocol

__all__ = ["FaultSpec", "ServoChain"]

_PING, _READ, _WRITE, _REBOOT, _SYNC_READ, _SYNC_WRITE = 0x01, 0x02, 0x03, 0x08, 0x82, 0x83
_ALERT = 0x80
_OVERLOAD_HW_BIT = 1 << 5  # Dynamixel Hardware Error Status bit 5; Feetech status bit 5
_DXL_ACCESS, _DXL_RANGE, _DXL_LIMIT = 7, 4, 6
_EEPROM_END = {"dynamixel": 64, "feetech": 40}  # first RAM address of each control table


@dataclass
class FaultSpec:
    """Faults to inject; timed ones start ``at`` seconds after torque is first enabled.

    Grammar of :meth:`parse` (comma-separated): ``corrupt=P`` and ``drop=P`` (probability
    per reply of one flipped / one missing byte), ``slow=ID:MS`` (servo ID answers MS ms
    late), ``silent=ID[@T]`` (servo ID stops answering), ``overload=ID[@T]`` (servo ID
    shuts down with an overload error), ``disconnect@T`` (the port vanishes), ``seed=N``.
    """

    corrupt: float = 0.0
    """Probability that a reply gets one byte flipped."""
    drop: float = 0.0
    """Probability that a reply loses one byte."""
    slow: dict[int, float] = field(default_factory=dict)
    """Servo id -> extra reply delay (s)."""
    silent: dict[int, float] = field(default_factory=dict)
    """Servo id -> time (s after first torque-on) from which it never answers."""
    overload: dict[int, float] = field(default_factory=dict)
    """Servo id -> time (s after first torque-on) of its overload shutdown."""
    disconnect: float | None = None
    """Time (s after first torque-on) at which the port disappears; None: never."""
    seed: int = 0
    """Seed of the corruption/drop draws."""

    def __post_init__(self) -> None:
        for name in ("corrupt", "drop"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"fault {name}={getattr(self, name)} must be in [0, 1]")

    @classmethod
    def parse(cls, spec: str | None) -> FaultSpec:
        """Parse ``--faults``; an empty spec means no faults."""
        out = cls()
        for item in filter(None, (s.strip() for s in (spec or "").split(","))):
            m = re.fullmatch(r"([a-z]+)(?:=([0-9.:]+))?(?:@([0-9.]+))?", item)
            if m is None:
                raise ConfigError(f"bad fault {item!r}; see `metagrasp virtual-robot --help`")
            kind, value, at = m.group(1), m.group(2), float(m.group(3) or 0.0)
            try:
                if kind in ("corrupt", "drop"):
                    setattr(out, kind, float(value))
                elif kind == "slow":
                    sid, ms = value.split(":")
                    out.slow[int(sid)] = float(ms) / 1e3
                elif kind in ("silent", "overload"):
                    getattr(out, kind)[int(value)] = at
                elif kind == "disconnect":
                    out.disconnect = at
                elif kind == "seed":
                    out.seed = int(value)
                else:
                    raise ConfigError(
                        f"unknown fault {kind!r}; known: corrupt, drop, slow, silent, "
                        "overload, disconnect, seed"
                    )
            except (TypeError, ValueError):
                raise ConfigError(f"bad value in fault {item!r}") from None
        out.__post_init__()
        return out


class ServoChain:
    """Servos with control tables behind one bus (see the module docstring).

    Args:
        protocol: Wire protocol strategy of the bus.
        ids: Servo ids on the chain.
        model_number: Value of every servo's Model Number register (and ping reply).
        faults: Faults to inject.
        on_read: Called with a servo id before its registers are read (refresh present
            values from the physics).
        on_write: Called with ``(servo id, register names written)`` after a write.
    """

    def __init__(
        self,
        protocol: ServoProtocol,
        ids: Iterable[int],
        model_number: int,
        *,
        faults: FaultSpec | None = None,
        on_read: Callable[[int], None] | None = None,
        on_write: Callable[[int, set[str]], None] | None = None,
    ) -> None:
        self.protocol = protocol
        self.dxl = protocol.name == "dynamixel"
        self.ids = tuple(ids)
        self.memory = {i: bytearray(256) for i in self.ids}
        self.faults = faults if faults is not None else FaultSpec()
        self.on_read = on_read
        self.on_write = on_write
        self.stats = BusStats()
        self.instructions = 0
        """Instruction packets received (for tests and the virtual robot's log)."""
        self.torque_on_since: float | None = None
        """Time torque was first enabled on any servo (the origin of timed faults)."""
        self.watchdog_tripped: set[int] = set()
        self._reader = PacketReader(protocol, self.stats, decode=protocol.decode_instruction)
        self._rng = random.Random(self.faults.seed)
        self._hw_error: dict[int, int] = {}
        self._silent: set[int] = set()
        self._last_instruction = 0.0
        self._addr = 2 if self.dxl else 1
        self._by_address = {reg.address: n for n, reg in protocol.control_table.items()}
        for i in self.ids:
            self.set(i, "model_number", model_number)
            self.set(i, "id", i)
            self.set(i, "min_position_limit", 0)
            self.set(i, "max_position_limit", 4095)
            self.set(i, "torque_enable", 0)
            if self.dxl:
                self.set(i, "operating_mode", 3)
                self.set(i, "firmware_version", 0x2E)
                if "current_limit" in protocol.control_table:
                    self.set(i, "current_limit", 1193)
                self.set(i, "velocity_limit", 265)
            else:
                self.set(i, "max_torque_limit", 1000)
                self.set(i, "torque_limit", 1000)
                self.set(i, "lock", 1)
                self.set(i, "present_voltage", 74)
                self.set(i, "present_temperature", 30)

    # ------------------------------------------------------------------ register access
    def get(self, servo_id: int, name: str) -> int:
        """Decoded value of register ``name`` of one servo."""
        reg = self.protocol.register(name)
        data = bytes(self.memory[servo_id][reg.address : reg.address + reg.size])
        return self.protocol.decode_value(name, data)

    def set(self, servo_id: int, name: str, value: int) -> None:
        """Store ``value`` in register ``name`` (the servo's own updates, not the host's)."""
        reg = self.protocol.register(name)
        self.memory[servo_id][reg.address : reg.address + reg.size] = self.protocol.encode_value(
            name, int(value)
        )

    def hardware_error(self, servo_id: int) -> int:
        """Latched hardware-error bits of a servo (0 when healthy)."""
        return self._hw_error.get(servo_id, 0)

    # ---------------------------------------------------------------------- fault control
    def trip_overload(self, servo_id: int) -> None:
        """Overload shutdown: torque off, fault latched until a reboot."""
        self._hw_error[servo_id] = self._hw_error.get(servo_id, 0) | _OVERLOAD_HW_BIT
        self.set(servo_id, "torque_enable", 0)
        self.set(servo_id, "hardware_error_status" if self.dxl else "status", _OVERLOAD_HW_BIT)

    def make_silent(self, servo_id: int, silent: bool = True) -> None:
        """Stop (or resume) answering from one servo."""
        (self._silent.add if silent else self._silent.discard)(servo_id)

    def disconnect_due(self, now: float) -> bool:
        """Whether the fault spec's disconnect time has come."""
        at = self.faults.disconnect
        return (
            at is not None and self.torque_on_since is not None and now >= self.torque_on_since + at
        )

    def tick(self, now: float) -> None:
        """Advance time-based behaviour: scheduled faults and the bus watchdog."""
        t0 = self.torque_on_since
        if t0 is not None:
            for sid, at in self.faults.silent.items():
                if now >= t0 + at:
                    self._silent.add(sid)
            for sid, at in list(self.faults.overload.items()):
                if now >= t0 + at and sid in self.memory:
                    self.trip_overload(sid)
                    del self.faults.overload[sid]
        if not self.dxl:
            return
        idle = now - self._last_instruction
        for i in self.ids:
            wd = self.get(i, "bus_watchdog")
            if wd > 0 and self.get(i, "torque_enable") and idle > wd * 0.020:
                # Watchdog error: stop where it is; goals read-only until the host clears it.
                self.set(i, "bus_watchdog", -1)
                self.set(i, "goal_position", self.get(i, "present_position"))
                self.watchdog_tripped.add(i)
                if self.on_write is not None:
                    self.on_write(i, {"goal_position"})

    # -------------------------------------------------------------------------- the wire
    def feed(self, data: bytes, now: float) -> list[tuple[float, bytes]]:
        """Consume host bytes; return ``(due time, bytes)`` of every reply, in order."""
        out: list[tuple[float, bytes]] = []
        for inst in self._reader.feed(data):
            self.tick(now)
            self.instructions += 1
            self._last_instruction = now
            replies = self._execute(inst.servo_id, inst.instruction, inst.params, now)
            due = now
            for sid, packet in replies:
                if sid in self._silent:
                    continue
                due = max(due, now + self.faults.slow.get(sid, 0.0))
                out.append((due, self._damage(packet)))
        return out

    def _damage(self, packet: bytes) -> bytes:
        f = self.faults
        if f.corrupt and self._rng.random() < f.corrupt:
            b = bytearray(packet)
            pos = self._rng.randrange(len(self.protocol.header), len(b))
            b[pos] ^= 1 << self._rng.randrange(8)
            packet = bytes(b)
        if f.drop and self._rng.random() < f.drop:
            pos = self._rng.randrange(len(packet))
            packet = packet[:pos] + packet[pos + 1 :]
        return packet

    def _status(self, sid: int, code: int = 0, params: bytes = b"") -> tuple[int, bytes]:
        hw = self._hw_error.get(sid, 0)
        # Dynamixel: Alert bit 7 plus a result code; Feetech: the status bits themselves.
        err = (code | (_ALERT if hw else 0)) if self.dxl else (hw & 0xFF)
        return sid, self.protocol.encode_status(sid, err, params)

    def _u(self, data: bytes) -> int:
        return int.from_bytes(data, "little")

    def _execute(self, target: int, inst: int, p: bytes, now: float) -> list[tuple[int, bytes]]:
        a = self._addr
        broadcast = target == self.protocol.broadcast_id
        mine = [target] if target in self.memory else []
        if inst == _PING:
            replies = []
            for i in mine:
                fw = bytes((self.get(i, "firmware_version"),)) if self.dxl else b""
                replies.append(
                    self._status(i, 0, bytes(self.memory[i][0:2]) + fw if self.dxl else b"")
                )
            return replies
        if inst == _READ:
            addr, n = self._u(p[:a]), self._u(p[a : 2 * a])
            return [self._read(i, addr, n) for i in mine]
        if inst == _WRITE:
            addr, data = self._u(p[:a]), p[a:]
            targets = list(self.memory) if broadcast else mine
            codes = {i: self._write(i, addr, data, now) for i in targets}
            return [self._status(i, codes[i]) for i in mine]
        if inst == _REBOOT:
            for i in list(self.memory) if broadcast else mine:
                self._hw_error.pop(i, None)
                self.set(i, "torque_enable", 0)
                self.set(i, "hardware_error_status" if self.dxl else "status", 0)
                if self.dxl:
                    self.set(i, "bus_watchdog", 0)
                self.watchdog_tripped.discard(i)
            return [self._status(i) for i in mine] if self.dxl else []
        if inst == _SYNC_READ:
            addr, n = self._u(p[:a]), self._u(p[a : 2 * a])
            return [self._read(i, addr, n) for i in p[2 * a :] if i in self.memory]
        if inst == _SYNC_WRITE:
            addr, n = self._u(p[:a]), self._u(p[a : 2 * a])
            rest = p[2 * a :]
            for k in range(0, len(rest) - n, n + 1):
                if rest[k] in self.memory:
                    self._write(rest[k], addr, rest[k + 1 : k + 1 + n], now)
            return []
        # Other instructions (reg write, action, factory reset...) are not emulated.
        return [self._status(i, 2) for i in mine] if self.dxl else []

    def _read(self, sid: int, addr: int, n: int) -> tuple[int, bytes]:
        if self.on_read is not None:
            self.on_read(sid)
        return self._status(sid, 0, bytes(self.memory[sid][addr : addr + n]))

    def _write(self, sid: int, addr: int, data: bytes, now: float) -> int:
        """Apply a host write; returns the Dynamixel result code (0 = done)."""
        mem = self.memory[sid]
        names = {
            self._by_address[k] for k in range(addr, addr + len(data)) if k in self._by_address
        }
        torque_on = self.get(sid, "torque_enable")
        if self.dxl and torque_on and addr < _EEPROM_END["dynamixel"]:
            return _DXL_ACCESS
        if self.dxl and "goal_position" in names and self.get(sid, "bus_watchdog") == -1:
            return _DXL_RANGE
        old = bytes(mem[addr : addr + len(data)])
        mem[addr : addr + len(data)] = data
        if "goal_position" in names:
            goal = self.get(sid, "goal_position")
            lo, hi = self.get(sid, "min_position_limit"), self.get(sid, "max_position_limit")
            if not lo <= goal <= hi:
                if self.dxl:
                    mem[addr : addr + len(data)] = old
                    return _DXL_LIMIT
                self.set(sid, "goal_position", min(max(goal, lo), hi))
        if "torque_enable" in names:
            if self._hw_error.get(sid):
                self.set(sid, "torque_enable", 0)  # a faulted servo stays off until rebooted
            elif self.get(sid, "torque_enable") and self.torque_on_since is None:
                self.torque_on_since = now
        if self.on_write is not None:
            self.on_write(sid, names)
        return 0
