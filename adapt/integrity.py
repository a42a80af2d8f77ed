"""Integrity of exported ONNX files: a SHA-256 a file carries of itself, without onnx.

An ONNX model keeps its metadata inside the file it describes, so a file cannot simply
list its own hash. The policy file of a bundle therefore carries the SHA-256 of its own
bytes *as they were with the digest field set to 64 zeros*: the writer serialises the
model with the placeholder, hashes those bytes, and writes the digest over the
placeholder (same length, so every protobuf length prefix stays valid). The reader finds
the one ``metadata_props`` entry with key :data:`SELF_HASH_KEY` in the raw bytes, zeroes
its value and hashes again. Nothing here parses protobuf, so the device needs neither
the ``onnx`` package nor torch; sibling files are checked by the plain SHA-256 of their
bytes, which the (self-checked) policy file lists.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from metagrasp.errors import MetagraspError

SELF_HASH_KEY = "metagrasp.sha256"
"""``metadata_props`` key whose value is the file's own (placeholder-zeroed) SHA-256."""
PLACEHOLDER = b"0" * 64
"""What the digest field holds while the file is hashed."""


class BundleError(MetagraspError):
    """An exported bundle is missing, truncated, tampered with or of another format."""


def _entry_prefix(key: str) -> bytes:
    # StringStringEntryProto: field 1 (key, wire type 2) then field 2 (value, 64 bytes).
    raw = key.encode()
    if len(raw) > 127:
        raise ValueError("metadata key too long for a one-byte length")
    return b"\x0a" + bytes([len(raw)]) + raw + b"\x12\x40"


def _digest_span(data: bytes, path: str | Path) -> tuple[int, int]:
    prefix = _entry_prefix(SELF_HASH_KEY)
    at = data.find(prefix)
    if at < 0 or data.find(prefix, at + 1) >= 0:
        raise BundleError(
            f"{path} carries no (or more than one) {SELF_HASH_KEY} entry: it is truncated, "
            "not a metagrasp export, or was re-saved by another tool; export it again"
        )
    start = at + len(prefix)
    if start + 64 > len(data):
        raise BundleError(f"{path} is truncated (it ends inside its hash field); export again")
    return start, start + 64


def seal(data: bytes, path: str | Path = "<model>") -> bytes:
    """Write the self-hash into serialised model bytes holding the placeholder digest."""
    start, end = _digest_span(data, path)
    if data[start:end] != PLACEHOLDER:
        raise ValueError("the model must be serialised with the placeholder digest")
    digest = hashlib.sha256(data).hexdigest().encode()
    return data[:start] + digest + data[end:]


def check_sealed(data: bytes, path: str | Path) -> str:
    """Verify a sealed file's self-hash; returns the digest.

    Raises:
        BundleError: no hash field, or the bytes do not match it (tampered or damaged).
    """
    start, end = _digest_span(data, path)
    claimed = data[start:end].decode("ascii", errors="replace")
    actual = hashlib.sha256(data[:start] + PLACEHOLDER + data[end:]).hexdigest()
    if claimed != actual:
        raise BundleError(
            f"{path} fails its integrity check (sha256 {actual[:16]}... != recorded "
            f"{claimed[:16]}...): the file was modified or damaged; export it again"
        )
    return claimed


def sha256_file(data: bytes) -> str:
    """Plain SHA-256 of a sibling file's bytes (listed in the policy file)."""
    return hashlib.sha256(data).hexdigest()


def read_bytes(path: str | Path, what: str = "bundle file") -> bytes:
    """Read a file, turning a missing or unreadable file into a :class:`BundleError`."""
    p = Path(path)
    if not p.is_file():
        raise BundleError(f"{what} {p} does not exist; export it with `metagrasp export`")
    try:
        return p.read_bytes()
    except OSError as exc:
        raise BundleError(f"{what} {p} cannot be read: {exc}") from exc
