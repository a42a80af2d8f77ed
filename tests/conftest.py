"""Shared pytest set-up: headless rendering, a fixed hypothesis profile, fixtures."""

import os

os.environ.setdefault("MUJOCO_GL", "osmesa")
os.environ.setdefault("PYOPENGL_PLATFORM", "osmesa")

import pytest  # noqa: E402
from hypothesis import settings  # noqa: E402

# CI runs on 2 shared cores: bounded, deterministic property tests.
settings.register_profile("ci", max_examples=60, deadline=None, derandomize=True)
settings.load_profile("ci")


@pytest.fixture
def one_torch_thread():
    """Run a test with one torch thread (used by the training test modules).

    Tiny networks on a loaded 2-core machine are ~100x slower with 2 torch threads.
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
