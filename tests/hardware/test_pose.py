"""Object-pose sources: fixed poses, line streams (socket and pipe), staleness, bad lines."""

import math
import os
import socket
import time

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from metagrasp.errors import ConfigError
from metagrasp.hardware.errors import PoseSourceError
from metagrasp.hardware.pose import (
    FixedPose,
    StreamPose,
    format_pose_line,
    open_pose_source,
    parse_pose_line,
)

finite = st.floats(-2.0, 2.0, allow_nan=False)


@given(st.tuples(finite, finite, finite), st.tuples(finite, finite, finite, finite))
def test_format_parse_round_trip(pos, quat):
    q = np.array(quat)
    if np.linalg.norm(q) < 1e-3:
        q = np.array([1.0, 0, 0, 0])
    q = q / np.linalg.norm(q)
    parsed = parse_pose_line(format_pose_line(np.array(pos), q))
    assert parsed is not None
    np.testing.assert_allclose(parsed[0], pos, atol=1e-6)
    # The observation's convention: w >= 0 (q and -q are the same rotation).
    assert parsed[1][0] >= 0
    np.testing.assert_allclose(np.abs(parsed[1] @ q), 1.0, atol=1e-5)


@pytest.mark.parametrize("line", ["", "# tracker v2", "episode 3", "   "])
def test_ignored_lines(line):
    assert parse_pose_line(line) is None


@pytest.mark.parametrize("line", ["1 2 3", "a b c d e f g", "0 0 0 nan 0 0 0", "0 0 0 2 0 0 0"])
def test_bad_lines_are_typed_errors(line):
    with pytest.raises(PoseSourceError):
        parse_pose_line(line)


def test_fixed_pose():
    src = open_pose_source("fixed:0.2,0.05,0.02,1.5707963")
    pose = src.read()
    np.testing.assert_allclose(pose.position, (0.2, 0.05, 0.02))
    np.testing.assert_allclose(pose.quaternion, (math.sqrt(0.5), 0, 0, math.sqrt(0.5)), atol=1e-6)
    src.mark_episode(0)
    with pytest.raises(ConfigError):
        FixedPose.parse("1,2")
    with pytest.raises(ConfigError, match="unknown object-pose source"):
        open_pose_source("camera:0")


def test_stream_over_a_socket_keeps_the_latest_and_sends_markers():
    ours, theirs = socket.socketpair()
    src = StreamPose(ours.makefile("rb"), "pair", max_age_s=0.3, sock=ours)
    with pytest.raises(PoseSourceError, match="no object pose"):
        src.read()
    theirs.sendall(b"# hello\n0.1 0.2 0.03 1 0 0 0\nnot a pose\n0.15 0.2 0.03 0 0 0 -1\n")
    pose = src.wait(1.0)
    for _ in range(100):
        if src.lines >= 4:
            break
        time.sleep(0.01)
    pose = src.read()
    np.testing.assert_allclose(pose.position, (0.15, 0.2, 0.03))
    np.testing.assert_allclose(pose.quaternion, (0, 0, 0, -1))  # w = 0 stays, as in the env
    assert src.bad_lines == 1
    src.mark_episode(7)
    assert theirs.recv(100) == b"episode 7\n"
    time.sleep(0.35)
    with pytest.raises(PoseSourceError, match="ms old"):
        src.read()
    theirs.close()
    time.sleep(0.05)
    with pytest.raises(PoseSourceError, match="ended"):
        src.read()
    src.close()


def test_stream_over_a_pipe_like_stdin():
    r, w = os.pipe()
    src = StreamPose(os.fdopen(r, "rb"), "stdin")
    os.write(w, b"0 0 0.01 1 0 0 0\n")
    assert src.wait(1.0).position[2] == pytest.approx(0.01)
    src.mark_episode(1)  # nobody to tell on a pipe: a no-op
    os.close(w)


def test_connecting_to_nothing_is_a_clear_error():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    with pytest.raises(PoseSourceError, match="cannot connect"):
        open_pose_source(f"tcp://127.0.0.1:{port}")
    with pytest.raises(ConfigError, match="port"):
        open_pose_source("tcp://localhost:http")
