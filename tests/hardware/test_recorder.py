"""Episode recordings: atomic, append-only, never overwritten, readable after a crash."""

import json
import os

import numpy as np
import pytest

from metagrasp.hardware.recorder import (
    EpisodeBuffer,
    EpisodeRecorder,
    RecordingError,
    load_recording,
)


def _buffer(n, value=1.0):
    b = EpisodeBuffer(capacity=10)
    for k in range(n):
        b.row(
            t=k * 0.02, period=0.02, obs=np.full(33, value), action=np.full(6, value), missed=k == 1
        )
    return b


def test_write_and_read_back(tmp_path):
    rec = EpisodeRecorder(tmp_path / "rec", {"policy": "builtin:hold"})
    rec.write_episode(_buffer(3), {"status": "ok"})
    rec.write_episode(_buffer(2, 2.0), {"status": "aborted", "error": "PortError: gone"})
    out = load_recording(tmp_path / "rec")
    assert [e["status"] for e in out["episodes"]] == ["ok", "aborted"]
    first = out["episodes"][0]["data"]
    assert first["obs"].shape == (3, 33) and first["obs"].dtype == np.float32
    assert first["missed"].tolist() == [False, True, False]
    assert out["episodes"][1]["data"]["action"][0, 0] == 2.0
    assert out["sessions"][0]["policy"] == "builtin:hold"
    assert not list((tmp_path / "rec").glob(".episode*"))  # no temp files left


def test_a_new_session_appends_and_never_overwrites(tmp_path):
    d = tmp_path / "rec"
    EpisodeRecorder(d, {}).write_episode(_buffer(3), {"status": "ok"})
    before = (d / "episode_000000.npz").read_bytes()
    rec2 = EpisodeRecorder(d, {})
    path = rec2.write_episode(_buffer(1, 5.0), {"status": "ok"})
    assert path.name == "episode_000001.npz"
    assert (d / "episode_000000.npz").read_bytes() == before
    # Another writer took the next name meanwhile: the recorder moves on, never replaces.
    (d / "episode_000002.npz").write_bytes(b"someone else's")
    assert rec2.write_episode(_buffer(1), {"status": "ok"}).name == "episode_000003.npz"
    assert (d / "episode_000002.npz").read_bytes() == b"someone else's"
    with pytest.raises(RecordingError, match="unreadable"):
        load_recording(d)  # the foreign file is reported, not silently skipped
    (d / "episode_000002.npz").unlink()
    assert len(load_recording(d)["sessions"]) == 2


def test_crash_leftovers_are_tolerated(tmp_path):
    d = tmp_path / "rec"
    rec = EpisodeRecorder(d, {})
    rec.write_episode(_buffer(2), {"status": "ok"})
    rec.write_episode(_buffer(2), {"status": "ok"})
    # A crash mid-append tears the last index line; a crash between the .npz and its
    # line leaves an unindexed episode; a crash mid-write leaves a temp file.
    lines = (d / "episodes.jsonl").read_text().splitlines()
    (d / "episodes.jsonl").write_text(lines[0] + "\n" + lines[1][: len(lines[1]) // 2])
    (d / ".episode.abc.tmp").write_bytes(b"partial")
    out = load_recording(d)
    assert [e["status"] for e in out["episodes"]] == ["ok", "unindexed"]
    assert out["episodes"][1]["data"]["obs"].shape == (2, 33)
    assert json.loads(lines[0])["steps"] == 2


def test_errors_are_typed(tmp_path):
    with pytest.raises(RecordingError, match="no recording"):
        load_recording(tmp_path / "none")
    (tmp_path / "file").write_text("x")
    with pytest.raises(RecordingError, match="cannot create"):
        EpisodeRecorder(tmp_path / "file" / "sub", {})
    b = _buffer(10)
    with pytest.raises(RecordingError, match="full"):
        b.row(t=0.0)
    d = tmp_path / "ro"
    rec = EpisodeRecorder(d, {})
    if os.geteuid() != 0:  # root ignores directory permissions
        d.chmod(0o500)
        try:
            with pytest.raises(RecordingError):
                rec.write_episode(_buffer(1), {"status": "ok"})
        finally:
            d.chmod(0o700)
