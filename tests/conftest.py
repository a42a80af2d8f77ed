"""Shared pytest set-up: headless rendering and a fixed hypothesis profile."""

import os

os.environ.setdefault("MUJOCO_GL", "osmesa")
os.environ.setdefault("PYOPENGL_PLATFORM", "osmesa")

from hypothesis import settings  # noqa: E402

# CI runs on 2 shared cores: bounded, deterministic property tests.
settings.register_profile("ci", max_examples=60, deadline=None, derandomize=True)
settings.load_profile("ci")
