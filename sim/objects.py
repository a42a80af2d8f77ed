"""The parametric object family: primitive shapes plus seeded irregular convex meshes.

Every shape is one candidate geom inside the single free-floating ``object`` body of the
scene; a task switches the active one on (collisions + visibility) and the rest off, so a
new object never needs a model recompile. Primitive sizes are set at run time; mesh sizes
are fixed when the mesh is generated (MuJoCo meshes cannot be rescaled after compiling).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PRIMITIVES: tuple[str, ...] = ("box", "cylinder", "sphere", "capsule", "ellipsoid")
"""Primitive shapes whose size is a task parameter."""

NUM_MESHES = 6
"""Number of irregular convex meshes generated from seeded points."""

MESH_SEED = 20_261_125
"""Base seed of the mesh point clouds: mesh i uses ``MESH_SEED + i`` (fixed forever)."""

SHAPES: tuple[str, ...] = PRIMITIVES + tuple(f"mesh_{i}" for i in range(NUM_MESHES))
"""Every shape in the family, in candidate-geom order."""

# Graspable half-width (m): between the fingers' smallest useful bite and the gripper's
# 8 cm opening minus clearance for the approach.
MIN_HALF_WIDTH = 0.010
MAX_HALF_WIDTH = 0.032
# Half-height (m): tall enough to pinch above the table, short enough to lift clear.
MIN_HALF_HEIGHT = 0.010
MAX_HALF_HEIGHT = 0.045

FAMILY_VERSION = 4
"""Version of the grasp family's physics, stamped into cached evaluations so that a change
re-runs them: 1 up to 2026-12-01 05:00 UTC; 2 adds the collapse of crushed objects (the
same success and crush flags, other observations after a crush); 3 (2026-12-01 07:05 UTC)
gives the meshes a base as wide as the object, so that all six stand upright (in 1-2, four
toppled and ``mesh_1`` lay 10 mm tall, where no grip lifts it); 4 (2026-12-01 11:25 UTC)
starts an opening gripper target from the fingers, not from past-closed where a squeeze
left it (:meth:`metagrasp.actions.ActionMap.step`; before, letting go crushed fragile
objects at full current)."""

CRUSH_COLLAPSE = 0.6
"""Size of a crushed object relative to the intact one, about its centre. A real object
crushed in a pinch gives way (a paper cup folds, an egg caves in), so the fingers close
further on it under the same load; the collapse is that trace, which the robot's computer
can see in the gripper's opening (``metagrasp.adapt.reward``). 0.6 closes the fingers by
40 % of the width they held: at least 8 mm on the thinnest object, above the opening's
noise after a few steps' median."""
CRUSH_COLLAPSE_SECONDS = 0.2
"""How long a crushed object takes to shrink to ``CRUSH_COLLAPSE``, as a cup buckles. The
shrink is applied every physics step, so the pads follow the giving surface: a sudden
collapse lets the current-limited fingers, which then meet no resistance, hit the object
fast enough to tunnel through it."""
CRUSH_MESH_STAGES = 20
"""Pre-built collapsed copies of each mesh (a compiled mesh cannot be rescaled): the
shrink of a mesh object goes in 20 steps of 2 % of its size, small enough for the pads to
follow."""
CRUSH_COLLAPSE_DELAY = 0.32
"""Seconds between the squeeze that crushes an object and its collapse. A squeezed cup
holds for a moment before it buckles; on the robot that moment is a few control steps of
fingers stopped on the intact object, the reference its collapse is measured from. The
crush itself (the ``crushed`` flag, the penalty, the end of success) counts at once."""

TORSIONAL_FRICTION = 0.005
"""Object torsional friction (m): resists spinning in a pinch."""
ROLLING_FRICTION = 0.002
"""Object rolling friction (m). Real objects stop rolling; without it spheres, capsules and
toppled ellipsoids roll off the table at the lightest touch (MuJoCo applies it with
``condim=6``)."""


def mesh_collapse_scales() -> np.ndarray:
    """Size of each collapsed copy of a mesh, ending at ``CRUSH_COLLAPSE``."""
    steps = np.arange(1, CRUSH_MESH_STAGES + 1) / CRUSH_MESH_STAGES
    return 1.0 - (1.0 - CRUSH_COLLAPSE) * steps


@dataclass(frozen=True)
class MeshSpec:
    """An irregular convex object: MuJoCo takes the convex hull of ``vertices``."""

    name: str
    vertices: np.ndarray
    """(N, 3) points, centred on their bounding box (m)."""

    @property
    def half_extents(self) -> np.ndarray:
        """Half sizes of the axis-aligned bounding box (m)."""
        return 0.5 * (self.vertices.max(axis=0) - self.vertices.min(axis=0))


def make_mesh(index: int) -> MeshSpec:
    """Generate irregular convex mesh ``index`` from its fixed seed.

    Points are drawn on a jittered ellipsoid so the hull is a lumpy, clearly non-primitive
    solid whose horizontal half-width stays inside the gripper's capacity.
    """
    rng = np.random.default_rng(MESH_SEED + index)
    radii = np.array(
        [
            rng.uniform(0.014, 0.026),
            rng.uniform(0.014, 0.026),
            rng.uniform(0.016, 0.035),
        ]
    )
    n = int(rng.integers(10, 18))
    directions = rng.normal(size=(n, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    points = directions * radii * rng.uniform(0.75, 1.0, size=(n, 1))
    # A flat base as wide as the object, so it stands where it is put: every point also
    # drops onto the base plane, so the object stands on its own shadow (as a tub or a box
    # does) under a lumpy top, its outline as irregular as before. Squashing only the lowest
    # points (family versions 1-2) left bases of four or five points: four of the six
    # meshes toppled, and mesh_1 came to rest 10 mm tall, below the family's pinchable
    # height, where no grip lifts it.
    base = points.copy()
    base[:, 2] = points[:, 2].min()
    points = np.concatenate([points, base])
    centre = 0.5 * (points.max(axis=0) + points.min(axis=0))
    return MeshSpec(name=f"mesh_{index}", vertices=points - centre)


MESHES: tuple[MeshSpec, ...] = tuple(make_mesh(i) for i in range(NUM_MESHES))
"""The fixed irregular meshes, generated once at import (deterministic)."""


def half_extents(shape: str, size: tuple[float, float, float]) -> np.ndarray:
    """Axis-aligned half extents (x, y, z) of a shape in the object frame (m).

    ``size`` follows MuJoCo's geom size semantics: box (hx, hy, hz); cylinder (radius,
    half-height, -); sphere (radius, -, -); capsule lying along x (radius, half-length, -);
    ellipsoid (rx, ry, rz). Meshes ignore ``size``.
    """
    s0, s1, s2 = size
    if shape == "box" or shape == "ellipsoid":
        return np.array([s0, s1, s2])
    if shape == "cylinder":
        return np.array([s0, s0, s1])
    if shape == "sphere":
        return np.array([s0, s0, s0])
    if shape == "capsule":
        return np.array([s0 + s1, s0, s0])
    if shape.startswith("mesh_"):
        return MESHES[int(shape[5:])].half_extents.copy()
    raise KeyError(shape)


def solid_inertia(shape: str, size: tuple[float, float, float], mass: float) -> np.ndarray:
    """Diagonal inertia (kg m^2) of a uniform solid of the shape, about its centre.

    Meshes use their bounding box: the hidden centre-of-mass offset perturbs the true
    inertia far more than this approximation does.
    """
    hx, hy, hz = half_extents(shape, size)
    if shape == "sphere":
        i = 0.4 * mass * hx * hx
        return np.array([i, i, i])
    if shape == "cylinder":
        r, h = hx, 2 * hz
        ixy = mass * (3 * r * r + h * h) / 12.0
        return np.array([ixy, ixy, 0.5 * mass * r * r])
    if shape == "ellipsoid":
        return 0.2 * mass * np.array([hy**2 + hz**2, hx**2 + hz**2, hx**2 + hy**2])
    # Box, capsule (close enough to its bounding box) and meshes.
    return mass / 3.0 * np.array([hy**2 + hz**2, hx**2 + hz**2, hx**2 + hy**2])
