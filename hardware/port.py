"""Opening a servo bus's serial port with errors that say how to fix them.

Contract: :func:`open_port` returns an open ``serial.Serial`` (or a pyserial URL port) or
raises :class:`~metagrasp.hardware.errors.PortError` naming the problem (missing device,
permissions, busy, bad settings) and the fix. Re-exported by :mod:`metagrasp.hardware.bus`.
"""

from __future__ import annotations

import errno
import os

import serial

from metagrasp.hardware.errors import PortError

__all__ = ["open_port"]


def open_port(path: str, baudrate: int = 1_000_000, *, timeout_s: float = 0.1) -> serial.Serial:
    """Open a serial port for a servo bus, turning failures into a :class:`PortError`.

    Args:
        path: Device path (``/dev/ttyUSB0``, ``COM3``) or a pyserial URL (``loop://``).
        baudrate: Bus speed; the servos' factory setting is 1 Mbps for STS3215 and for
            most X-series set-ups (57600 on a fresh Dynamixel).
        timeout_s: Initial read timeout (the bus sets its own per read).

    Raises:
        PortError: If the path does not exist, access is denied, the port is busy, or
            the settings are rejected; the message says how to fix it.
    """
    is_url = "://" in path
    if not is_url and os.name == "posix" and not os.path.exists(path):
        raise PortError(
            path,
            "no such device",
            "plug the USB adapter in, find its name with `ls /dev/ttyUSB* /dev/ttyACM*` "
            "(or `dmesg | tail` right after plugging it), and pass it with --port",
        )
    kwargs: dict[str, object] = {"baudrate": baudrate, "timeout": timeout_s, "write_timeout": 1.0}
    if os.name == "posix" and not is_url:
        kwargs["exclusive"] = True  # two programs on one bus corrupt each other's replies
    try:
        return serial.serial_for_url(path, **kwargs)
    except serial.SerialException as exc:
        raise _open_error(path, exc) from exc
    except ValueError as exc:
        raise PortError(
            path, f"settings rejected ({exc})", "use a supported baud rate such as 1000000"
        ) from exc


def _open_error(path: str, exc: serial.SerialException) -> PortError:
    code = getattr(exc, "errno", None)
    text = str(exc)
    if code in (errno.EACCES, errno.EPERM) or "Permission denied" in text:
        return PortError(
            path,
            "permission denied",
            "add your user to the 'dialout' group (`sudo usermod -aG dialout $USER`, then log "
            f"out and in), or for this session `sudo chmod a+rw {path}`",
        )
    if code == errno.EBUSY or "lock" in text.lower() or "busy" in text.lower():
        return PortError(
            path,
            "port is busy",
            "close the other program using it (another run, lerobot, a serial monitor, "
            "ModemManager) and try again",
        )
    if code == errno.ENOENT:
        return PortError(path, "no such device")
    return PortError(path, f"cannot open ({text})")
