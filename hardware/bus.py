"""Protocol-agnostic servo bus client over a pyserial-like port.

Contract:

* :class:`PacketReader` turns an arbitrary byte stream (garbage, truncated or split reads,
  corrupted frames, echoes) into verified :class:`~metagrasp.hardware.protocol.StatusPacket`
  objects. It never raises on bad input: it drops bytes, resynchronises on the next header,
  and counts what it dropped in :class:`BusStats`.
* :class:`ServoBus` sends one instruction at a time and waits for the replies, with a
  deadline on :func:`time.monotonic` per attempt and a bounded number of retries for
  retryable failures (lost/corrupted/implausible replies, a servo-side CRC error). Every
  failure is a typed :class:`~metagrasp.hardware.errors.ProtocolError`; an OS or pyserial
  error on the port (adapter unplugged) becomes :class:`~metagrasp.hardware.errors.PortError`.
* The wire format is a strategy object (:data:`metagrasp.hardware.dynamixel.DYNAMIXEL` or
  :data:`metagrasp.hardware.feetech.FEETECH`), so no code here branches on the protocol.
* The port only needs ``read(n)``, ``write(b)``, ``reset_input_buffer()`` and a settable
  ``timeout``: a ``serial.Serial`` (see :func:`open_port`) or a test double.

Servos must answer reads and writes (Status Return Level 2 on Dynamixel, Response Status
Level 1 on Feetech: the factory settings); broadcast writes and sync writes get no reply.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

import serial

from metagrasp.hardware.errors import (
    EncodingError,
    ImplausibleValueError,
    MalformedPacketError,
    PacketTimeoutError,
    PortError,
    ProtocolError,
    WrongIdError,
)
from metagrasp.hardware.port import open_port
from metagrasp.hardware.protocol import PingInfo, ServoProtocol, StatusPacket

try:  # termios.error (e.g. tcflush on a vanished tty) is not an OSError subclass
    import termios

    _PORT_FAILURES: tuple[type[BaseException], ...] = (
        OSError,
        serial.SerialException,
        termios.error,
    )
except ImportError:  # pragma: no cover - Windows
    _PORT_FAILURES = (OSError, serial.SerialException)

__all__ = ["BusStats", "PacketReader", "SerialLike", "ServoBus", "open_port"]


class SerialLike(Protocol):
    """The subset of ``serial.Serial`` the bus uses."""

    timeout: float | None

    def read(self, size: int = 1) -> bytes: ...

    def write(self, data: bytes) -> int | None: ...

    def reset_input_buffer(self) -> None: ...


@dataclasses.dataclass
class BusStats:
    """Counters of what happened on the bus; cheap enough to keep always on.

    Attributes:
        packets_sent: Instruction packets written.
        packets_ok: Status packets accepted as replies.
        crc_errors: Frames dropped because their CRC/checksum failed.
        timeouts: Attempts that ended without all expected replies.
        resyncs: Times the reader skipped bytes to find the next frame start.
        bytes_dropped: Bytes skipped while resynchronising.
        retries: Instructions sent again after a retryable failure.
        wrong_ids: Valid replies from ids that were not asked.
        echoes: Frames recognised as the adapter echoing our instruction.
        status_errors: Replies whose status byte reported an error.
        malformed: Verified frames with impossible contents (e.g. wrong data size).
        implausible: Replies with values no working servo reports (Feetech).
    """

    packets_sent: int = 0
    packets_ok: int = 0
    crc_errors: int = 0
    timeouts: int = 0
    resyncs: int = 0
    bytes_dropped: int = 0
    retries: int = 0
    wrong_ids: int = 0
    echoes: int = 0
    status_errors: int = 0
    malformed: int = 0
    implausible: int = 0

    def as_dict(self) -> dict[str, int]:
        """The counters as a plain dict (for logs and benchmarks)."""
        return dataclasses.asdict(self)

    def reset(self) -> None:
        """Zero every counter."""
        for field in dataclasses.fields(self):
            setattr(self, field.name, 0)


class PacketReader:
    """Streaming extractor of status packets from a byte stream.

    Feed it whatever the port returned; it keeps the unconsumed tail between calls.

    Resynchronisation rules: bytes before a header are garbage; a header whose id or
    length is impossible, or whose frame fails its CRC/checksum, is a false start, so only
    its first byte is dropped (the real frame may begin inside it). While a frame is
    incomplete, a complete valid frame further on proves it was a false start too; this
    keeps a garbage length field from stalling the reader until the timeout.

    Args:
        protocol: Wire protocol strategy.
        stats: Counters to update; a private :class:`BusStats` if None.
        max_buffer: Bytes kept while waiting for a frame before giving up on its start.
        decode: Frame decoder; default ``protocol.decode_status``. Simulated servos pass
            ``protocol.decode_instruction`` to read instructions (frames it maps to None
            are skipped and counted as echoes).
    """

    def __init__(
        self,
        protocol: ServoProtocol,
        stats: BusStats | None = None,
        max_buffer: int = 4096,
        *,
        decode: Callable[[bytes], object | None] | None = None,
    ) -> None:
        self.protocol = protocol
        self.stats = stats if stats is not None else BusStats()
        self.max_buffer = max_buffer
        # The servo side (simulated servos) reads instructions with the same resync rules.
        self._decode = decode if decode is not None else protocol.decode_status
        self._buf = bytearray()

    def __len__(self) -> int:
        """Number of buffered, not yet consumed bytes."""
        return len(self._buf)

    def bytes_wanted(self) -> int:
        """How many bytes to ask the port for next without waiting on bytes never sent.

        The rest of the frame at the head of the buffer if its length is known, else
        enough for the smallest status packet. Asking for more would make a blocking read
        sit until its timeout whenever a reply is shorter than hoped (an error reply
        without data), so a whole multi-servo reply is read frame by frame instead.
        """
        buf, proto = self._buf, self.protocol
        total = None
        if buf.startswith(proto.header):
            try:
                total = proto.frame_length(buf)
            except MalformedPacketError:
                total = None
        if total is None:
            total = proto.status_frame_size(0)
        return max(1, total - len(buf))

    def clear(self) -> None:
        """Forget buffered bytes (before a new instruction, stale bytes are noise)."""
        self._buf.clear()

    def feed(self, data: bytes | bytearray = b"") -> list[StatusPacket]:
        """Append ``data`` and return every complete, verified status packet, in order."""
        if data:
            self._buf += data
        packets = []
        while (packet := self._next()) is not None:
            packets.append(packet)
        return packets

    def _discard(self, n: int) -> None:
        if n > 0:
            del self._buf[:n]
            self.stats.resyncs += 1
            self.stats.bytes_dropped += n

    def _next(self) -> StatusPacket | None:
        buf, proto = self._buf, self.protocol
        while buf:
            start = buf.find(proto.header)
            if start < 0:
                # Keep a trailing partial header: its remaining bytes may arrive next read.
                self._discard(len(buf) - _partial_suffix(buf, proto.header))
                return None
            self._discard(start)
            try:
                total = proto.frame_length(buf)
            except MalformedPacketError:
                self._discard(1)
                continue
            if total is None:
                return None
            if len(buf) < total:
                later = self._complete_frame_after(1)
                if later is not None:
                    self._discard(later)
                    continue
                if len(buf) > self.max_buffer:
                    self._discard(1)
                    continue
                return None
            frame = bytes(buf[:total])
            if not proto.verify_frame(frame):
                self.stats.crc_errors += 1
                self._discard(1)
                continue
            del buf[:total]
            try:
                packet = self._decode(frame)
            except MalformedPacketError:
                self.stats.malformed += 1
                continue
            if packet is None:  # an instruction on the wire: the adapter echoing ours
                self.stats.echoes += 1
                continue
            return packet
        return None

    def _complete_frame_after(self, pos: int) -> int | None:
        buf, proto = self._buf, self.protocol
        while (j := buf.find(proto.header, pos)) >= 0:
            pos = j + 1
            try:
                total = proto.frame_length(buf[j:])
            except MalformedPacketError:
                continue
            if total is None or len(buf) - j < total:
                continue
            if proto.verify_frame(buf[j : j + total]):
                return j
        return None


def _partial_suffix(buf: bytearray, header: bytes) -> int:
    for k in range(min(len(header) - 1, len(buf)), 0, -1):
        if buf.endswith(header[:k]):
            return k
    return 0


class ServoBus:
    """Client for one half-duplex servo bus; thread-safe (one transaction at a time).

    Args:
        port: An open pyserial-like port.
        protocol: Wire protocol strategy (``DYNAMIXEL`` or ``FEETECH``).
        timeout_s: Deadline for all replies to one attempt. USB adapters add latency
            (FTDI's default latency timer is 16 ms), so keep it well above that.
        retries: Extra attempts after a retryable failure (so ``retries + 1`` in all).
        port_name: Name used in error messages; defaults to ``port.port`` if present.

    Example:
        >>> bus = ServoBus(open_port("/dev/ttyUSB0", 1_000_000), FEETECH)  # doctest: +SKIP
        >>> bus.read_register(1, "present_position")  # doctest: +SKIP
        2048
    """

    def __init__(
        self,
        port: SerialLike,
        protocol: ServoProtocol,
        *,
        timeout_s: float = 0.1,
        retries: int = 2,
        port_name: str | None = None,
    ) -> None:
        if timeout_s <= 0 or retries < 0:
            raise EncodingError(f"need timeout_s > 0 and retries >= 0, got {timeout_s}, {retries}")
        self.port = port
        self.protocol = protocol
        self.timeout_s = float(timeout_s)
        self.retries = int(retries)
        self.port_name = port_name or str(getattr(port, "port", None) or "<port>")
        self.stats = BusStats()
        self._reader = PacketReader(protocol, self.stats)
        self._lock = threading.RLock()

    # ---------------------------------------------------------------------- raw instructions
    def ping(self, servo_id: int, *, allow_alert: bool = False) -> PingInfo:
        """Check that ``servo_id`` answers; Dynamixel replies carry model and firmware."""
        if servo_id == self.protocol.broadcast_id:
            raise EncodingError("ping one id at a time; several replies would collide here")
        replies = self._transact(
            self.protocol.encode_ping(servo_id), [servo_id], None, allow_alert=allow_alert
        )
        return self.protocol.parse_ping(replies[servo_id])

    def read(self, servo_id: int, address: int, length: int, *, allow_alert: bool = False) -> bytes:
        """Read ``length`` raw bytes from ``address`` of one servo."""
        packet = self.protocol.encode_read(servo_id, address, length)
        replies = self._transact(packet, [servo_id], length, allow_alert=allow_alert)
        return replies[servo_id].params

    def write(self, servo_id: int, address: int, data: bytes, *, allow_alert: bool = False) -> None:
        """Write raw bytes; to the broadcast id nobody answers, so nothing is awaited.

        ``allow_alert`` accepts a reply flagging a hardware fault (the write was executed),
        e.g. to switch torque off on a servo that reports overheating.
        """
        packet = self.protocol.encode_write(servo_id, address, bytes(data))
        if servo_id == self.protocol.broadcast_id:
            self._send_only(packet)
        else:
            self._transact(packet, [servo_id], 0, allow_alert=allow_alert)

    def sync_read(
        self, servo_ids: Sequence[int], address: int, length: int, *, allow_alert: bool = False
    ) -> dict[int, bytes]:
        """Read the same ``length`` bytes from every id with one instruction.

        Each servo answers with its own status packet; the result keeps the order of ids.
        """
        ids = list(servo_ids)
        packet = self.protocol.encode_sync_read(ids, address, length)
        replies = self._transact(packet, ids, length, allow_alert=allow_alert)
        return {i: replies[i].params for i in ids}

    def sync_write(self, address: int, length: int, data: Mapping[int, bytes]) -> None:
        """Write ``data[id]`` to every id with one broadcast instruction (no replies)."""
        self._send_only(self.protocol.encode_sync_write(address, length, data))

    def reboot(self, servo_id: int) -> None:
        """Reboot a servo (clears Dynamixel hardware errors; torque comes back off)."""
        packet = self.protocol.encode_reboot(servo_id)
        if servo_id == self.protocol.broadcast_id or not self.protocol.reboot_replies:
            self._send_only(packet)
        else:
            self._transact(packet, [servo_id], 0, allow_alert=True)

    # -------------------------------------------------------------------- named registers
    def read_register(self, servo_id: int, name: str, *, allow_alert: bool = False) -> int:
        """Read one control-table register by name, decoded and plausibility-checked."""
        reg = self.protocol.register(name)
        packet = self.protocol.encode_read(servo_id, reg.address, reg.size)
        return self._read_named(packet, [servo_id], name, allow_alert)[servo_id]

    def write_register(
        self, servo_id: int, name: str, value: int, *, allow_alert: bool = False
    ) -> None:
        """Encode ``value`` with the register's size and sign convention and write it."""
        reg = self.protocol.register(name)
        data = self.protocol.encode_value(name, value)
        self.write(servo_id, reg.address, data, allow_alert=allow_alert)

    def sync_read_register(
        self, servo_ids: Sequence[int], name: str, *, allow_alert: bool = False
    ) -> dict[int, int]:
        """Read one register from several servos with a single sync read."""
        reg = self.protocol.register(name)
        ids = list(servo_ids)
        packet = self.protocol.encode_sync_read(ids, reg.address, reg.size)
        return self._read_named(packet, ids, name, allow_alert)

    def sync_read_registers(
        self, servo_ids: Sequence[int], names: Sequence[str], *, allow_alert: bool = False
    ) -> dict[int, dict[str, int]]:
        """Read several registers from several servos with one sync read of their span.

        The registers need not be adjacent: the read covers the lowest to the highest
        address (one transaction per control cycle instead of one per register).

        Returns:
            ``{id: {name: value}}`` in the order of ``servo_ids``.
        """
        proto = self.protocol
        regs = {n: proto.register(n) for n in names}
        start = min(r.address for r in regs.values())
        length = max(r.address + r.size for r in regs.values()) - start
        ids = list(servo_ids)

        def decode(reply: StatusPacket) -> dict[str, int]:
            out = {}
            for n, r in regs.items():
                lo = r.address - start
                value = proto.decode_value(n, reply.params[lo : lo + r.size])
                proto.check_plausible(reply.servo_id, n, value)
                out[n] = value
            return out

        decoded: dict[int, dict[str, int]] = {}

        def validate(reply: StatusPacket) -> None:
            # Inside the retry loop, so an implausible (corrupted) value triggers a re-read.
            decoded[reply.servo_id] = decode(reply)

        packet = proto.encode_sync_read(ids, start, length)
        self._transact(packet, ids, length, allow_alert=allow_alert, validate=validate)
        return {i: decoded[i] for i in ids}

    def _read_named(
        self, packet: bytes, ids: Sequence[int], name: str, allow_alert: bool
    ) -> dict[int, int]:
        proto = self.protocol

        # Inside the retry loop, so an implausible (corrupted) value triggers a re-read.
        def validate(reply: StatusPacket) -> None:
            proto.check_plausible(reply.servo_id, name, proto.decode_value(name, reply.params))

        size = proto.register(name).size
        replies = self._transact(packet, ids, size, allow_alert=allow_alert, validate=validate)
        return {i: proto.decode_value(name, replies[i].params) for i in ids}

    def sync_write_register(self, name: str, values: Mapping[int, int]) -> None:
        """Write one register on several servos with a single sync write (no replies)."""
        reg = self.protocol.register(name)
        data = {i: self.protocol.encode_value(name, v) for i, v in values.items()}
        self.sync_write(reg.address, reg.size, data)

    # -------------------------------------------------------------------------- lifecycle
    def close(self) -> None:
        """Close the port (errors while closing a vanished port are ignored)."""
        close = getattr(self.port, "close", None)
        if close is not None:
            with contextlib.suppress(*_PORT_FAILURES):
                close()

    def __enter__(self) -> ServoBus:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---------------------------------------------------------------------------- engine
    def _transact(
        self,
        packet: bytes,
        ids: Sequence[int],
        n_params: int | None,
        *,
        allow_alert: bool = False,
        validate: Callable[[StatusPacket], None] | None = None,
    ) -> dict[int, StatusPacket]:
        attempts = self.retries + 1
        with self._lock:
            for attempt in range(1, attempts + 1):
                try:
                    self._send(packet)
                    replies = self._receive(packet, ids, n_params, attempt)
                    for servo_id in ids:
                        self._check_reply(replies[servo_id], n_params, allow_alert, validate)
                    return replies
                except ProtocolError as exc:
                    if isinstance(exc, ImplausibleValueError):
                        self.stats.implausible += 1
                    elif isinstance(exc, MalformedPacketError):
                        self.stats.malformed += 1
                    if not exc.retryable or attempt == attempts:
                        raise
                    self.stats.retries += 1
        raise AssertionError("unreachable")  # pragma: no cover

    def _check_reply(
        self,
        reply: StatusPacket,
        n_params: int | None,
        allow_alert: bool,
        validate: Callable[[StatusPacket], None] | None,
    ) -> None:
        error = self.protocol.status_error(reply, allow_alert=allow_alert)
        if error is not None:
            self.stats.status_errors += 1
            raise error
        if n_params is not None and len(reply.params) != n_params:
            raise MalformedPacketError(
                f"servo {reply.servo_id} sent {len(reply.params)} data bytes, expected "
                f"{n_params}: probably a late reply to an earlier instruction"
            )
        if validate is not None:
            validate(reply)

    def _send_only(self, packet: bytes) -> None:
        with self._lock:
            self._send(packet)

    def _send(self, packet: bytes) -> None:
        try:
            # A late reply to an earlier, timed-out instruction would pass for this one's.
            self.port.reset_input_buffer()
            written = self.port.write(packet)
        except _PORT_FAILURES as exc:
            raise self._port_error("write failed", exc) from exc
        if written is not None and written != len(packet):
            raise PortError(self.port_name, f"only {written} of {len(packet)} bytes were sent")
        self._reader.clear()
        self.stats.packets_sent += 1

    def _receive(
        self, sent: bytes, ids: Sequence[int], n_params: int | None, attempt: int
    ) -> dict[int, StatusPacket]:
        pending = list(ids)
        replies: dict[int, StatusPacket] = {}
        strangers: list[int] = []
        first = True
        deadline = time.monotonic() + self.timeout_s
        while pending:
            remaining = deadline - time.monotonic()
            if remaining > 0:
                data = self._read(self._reader.bytes_wanted(), remaining)
            else:
                # Past the deadline (this thread may simply not have been scheduled in
                # time): replies already received still count, so take what is buffered
                # without waiting before declaring a timeout.
                data = self._read(4096, 0.0)
                if not data:
                    break
            for reply in self._reader.feed(data):
                if first and reply.raw == sent:
                    self.stats.echoes += 1  # Feetech echoes look like replies; drop ours
                elif reply.servo_id in pending:
                    pending.remove(reply.servo_id)
                    replies[reply.servo_id] = reply
                    self.stats.packets_ok += 1
                else:
                    self.stats.wrong_ids += 1
                    strangers.append(reply.servo_id)
                first = False
        if not pending:
            return replies
        self.stats.timeouts += 1
        if strangers:
            raise WrongIdError(pending, strangers, self.timeout_s, attempts=attempt)
        raise PacketTimeoutError(pending, self.timeout_s, attempts=attempt)

    def _read(self, n: int, timeout: float) -> bytes:
        try:
            self.port.timeout = timeout
            return bytes(self.port.read(n) or b"")
        except _PORT_FAILURES as exc:
            raise self._port_error("read failed", exc) from exc

    def _port_error(self, what: str, exc: BaseException) -> PortError:
        return PortError(
            self.port_name, f"{what} ({_describe(exc)}); the adapter was probably unplugged"
        )


def _describe(exc: BaseException) -> str:
    # termios.error carries (errno, text) as a bare tuple; print it like an OSError.
    args = exc.args
    if len(args) == 2 and isinstance(args[0], int):
        return f"errno {args[0]}: {args[1]}"
    return str(exc) or type(exc).__name__
