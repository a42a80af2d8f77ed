"""The tabletop grasp scene: an SO-101-style arm, a table, one object, built with PyMJCF.

The scene is built once per process with ``dm_control.mjcf`` (readable, composable), then
compiled to a raw ``mujoco.MjModel`` which the env steps directly for speed. Every env
gets its own copy of the compiled model because tasks write their hidden parameters into
it (see :mod:`metagrasp.sim.tasks`).
"""

from __future__ import annotations

import copy
import functools
from dataclasses import dataclass

import mujoco
import numpy as np
from dm_control import mjcf

from metagrasp.kinematics import ARM, ArmGeometry
from metagrasp.sim.objects import (
    CRUSH_MESH_STAGES,
    MESHES,
    ROLLING_FRICTION,
    SHAPES,
    TORSIONAL_FRICTION,
    mesh_collapse_scales,
)

# Collision bits: an object collides with the table and the robot; the robot with the
# table and the object; the robot never with itself (its links are too close to matter
# for grasping and self-contacts cost solver time).
_OBJECT, _TABLE, _ROBOT = 1, 2, 4

TABLE_TOP = 0.0
"""Height of the table top (m); the arm's base stands on it at the origin."""
PAD_HALF_HEIGHT = 0.022
"""Half-height of the finger pads (m); they are centred on the TCP."""
WORKSPACE_X = (0.10, 0.26)
"""Object initial x range in the base frame (m): a 16 cm deep patch in front of the arm,
all of it reachable with the gripper vertical."""
WORKSPACE_Y = (-0.10, 0.10)
"""Object initial y range (m): 20 cm wide."""

PHYSICS_DT = 0.004
"""Physics time step (s). Grasp contacts stay stable with the implicitfast integrator."""

# Servo models. Arm joints: STS3215-class servos, about 3 N m stall torque; kp/kv give a
# stiff, well-damped position loop like a servo's internal controller. Gripper: the
# servo drives a rack, so its actuator works in newtons on one finger's slide.
ARM_KP = (40.0, 40.0, 30.0, 20.0, 10.0)
ARM_KV = (1.5, 1.5, 1.0, 0.5, 0.3)
ARM_FORCE = 3.0
ARM_ARMATURE = 0.01
ARM_DAMPING = 0.3
GRIPPER_KP = 2000.0
GRIPPER_KV = 50.0
"""Gripper velocity gain: about critical damping of the fingers. It must stay small: the
implicit integrator keeps this damping even while the force limit clamps the actuator,
so a large value would make a current-limited finger creep at (limit / kv) m/s."""
GRIPPER_SPEED = 0.2
"""Finger speed (m/s) of the gripper servo's profile velocity: the position target moves
towards open or closed at this rate (the full 4 cm stroke in 0.2 s, 5 control steps, like a
hobby servo's gripper), so the fingers meet the object without a blow. Slower fingers (7 cm/s
was tried) made closing on an object take ~9 steps of consistent action, which policies
never explored: they learned to approach wide open and stay that way."""
GRIPPER_FORCE = 40.0
"""Largest force of the gripper servo on the finger tendon (N); each pad gets half, so the
largest squeeze on an object is 20 N."""
GRIPPER_CTRL_MIN = -0.02
"""Finger target below the closed stop (m), where a closing command aims: far enough that
the position loop (kp x error) always exceeds the current limit on the thinnest object, so
the limit alone sets the squeeze."""
GRIPPER_ARMATURE = 0.05
GRIPPER_DAMPING = 2.0


@dataclass(frozen=True)
class SceneHandles:
    """Indices into a compiled scene model, looked up once by name."""

    arm_qpos: np.ndarray
    """qpos addresses of the 5 arm joints and the (driven) gripper finger."""
    arm_dof: np.ndarray
    """dof addresses of the same 6 joints."""
    actuators: np.ndarray
    """Actuator ids in servo order (5 arm joints, gripper)."""
    mirror_qpos: int
    """qpos address of the coupled second finger."""
    mirror_dof: int
    """dof address of the coupled second finger."""
    object_body: int
    object_qpos: int
    """qpos address of the object's free joint (xyz + quaternion)."""
    object_dof: int
    object_geoms: dict[str, int]
    """Candidate geom id per shape name."""
    crushed_geoms: dict[str, tuple[int, ...]]
    """Per mesh shape, the geom ids of its collapse stages (primitives shrink their own)."""
    finger_pads: tuple[int, int]
    """Geom ids of the left and right finger pads."""
    touch_adr: tuple[int, int]
    """sensordata addresses of the left and right pad touch sensors."""
    tcp_site: int
    goal_site: int
    arm_dofs_all: np.ndarray
    """dof addresses of every robot joint (arm, gripper, mirror) for damping/armature."""


def _arm_mjcf(root: mjcf.RootElement, arm: ArmGeometry) -> None:
    """Add the arm's kinematic tree, servos and sensors to ``root``."""
    lo, hi = arm.joint_lower, arm.joint_upper
    link = dict(
        type="capsule", rgba=(0.95, 0.55, 0.15, 1), contype=_ROBOT, conaffinity=_TABLE, group=1
    )
    dark = dict(rgba=(0.15, 0.15, 0.18, 1), contype=_ROBOT, conaffinity=_TABLE, group=1)
    wb = root.worldbody
    base = wb.add("body", name="base")
    base.add(
        "geom",
        name="base",
        type="cylinder",
        size=(0.045, arm.pan_height / 2),
        pos=(0, 0, arm.pan_height / 2),
        **dark,
    )
    shoulder = base.add("body", name="shoulder", pos=(0, 0, arm.pan_height))
    shoulder.add("joint", name="shoulder_pan", axis=(0, 0, 1), range=(lo[0], hi[0]))
    shoulder.add(
        "geom",
        type="box",
        size=(0.03, 0.025, arm.shoulder_offset[1] / 2),
        pos=(0.01, 0, arm.shoulder_offset[1] / 2),
        **dark,
    )
    sx, sz = arm.shoulder_offset
    upper = shoulder.add("body", name="upper_arm", pos=(sx, 0, sz))
    upper.add("joint", name="shoulder_lift", axis=(0, 1, 0), range=(lo[1], hi[1]))
    upper.add("geom", fromto=(0, 0, 0, 0, 0, arm.upper_arm), size=(0.018,), **link)
    fore = upper.add("body", name="forearm", pos=(0, 0, arm.upper_arm))
    fore.add("joint", name="elbow_flex", axis=(0, 1, 0), range=(lo[2], hi[2]))
    fore.add("geom", fromto=(0, 0, 0, arm.forearm, 0, 0), size=(0.016,), **link)
    wrist = fore.add("body", name="wrist", pos=(arm.forearm, 0, 0))
    wrist.add("joint", name="wrist_flex", axis=(0, 1, 0), range=(lo[3], hi[3]))
    wrist.add("geom", fromto=(0, 0, 0, 0, 0, -arm.wrist_to_roll), size=(0.015,), **link)
    hand = wrist.add("body", name="hand", pos=(0, 0, -arm.wrist_to_roll))
    hand.add("joint", name="wrist_roll", axis=(0, 0, 1), range=(lo[4], hi[4]))
    palm_h = 0.012
    hand.add(
        "geom",
        name="palm",
        type="box",
        size=(0.018, 0.045, palm_h / 2),
        pos=(0, 0, -palm_h / 2),
        **dark,
    )
    tcp_z = -(arm.wrist_to_tcp - arm.wrist_to_roll)
    hand.add("site", name="tcp", pos=(0, 0, tcp_z), size=(0.004,), rgba=(1, 0, 0, 0.6), group=3)
    pad_half = (0.011, 0.004, PAD_HALF_HEIGHT)
    finger_len = -tcp_z - palm_h + pad_half[2]
    for side, sign in (("left", 1.0), ("right", -1.0)):
        finger = hand.add("body", name=f"finger_{side}", pos=(0, 0, -palm_h))
        jname = "gripper" if side == "left" else "gripper_mirror"
        finger.add("joint", name=jname, type="slide", axis=(0, sign, 0), range=(lo[5], hi[5]))
        finger.add(
            "geom",
            name=f"finger_{side}",
            type="box",
            size=(0.008, 0.003, finger_len / 2 - pad_half[2]),
            pos=(0, sign * 0.009, -(finger_len / 2 - pad_half[2])),
            **dark,
        )
        pad_pos = (0, sign * pad_half[1], tcp_z + palm_h)
        finger.add(
            "geom",
            name=f"pad_{side}",
            type="box",
            size=pad_half,
            pos=pad_pos,
            rgba=(0.2, 0.2, 0.2, 1),
            contype=_ROBOT,
            conaffinity=_TABLE,
            group=1,
            friction=(0.3, 0.005, 0.0001),
        )
        # The touch zone covers the pad's inner face: the sensor sums normal forces of
        # contacts inside it, i.e. the squeeze on the object (and any press on the table).
        finger.add(
            "site",
            name=f"touch_{side}",
            type="box",
            size=(pad_half[0] + 0.002, pad_half[1] + 0.003, pad_half[2] + 0.002),
            pos=pad_pos,
            rgba=(0, 1, 0, 0.2),
            group=4,
        )
        root.sensor.add("touch", name=f"touch_{side}", site=f"touch_{side}")
    # One servo drives both fingers: the mirror finger follows through a joint equality.
    root.equality.add(
        "joint",
        joint1="gripper_mirror",
        joint2="gripper",
        polycoef=(0, 1, 0, 0, 0),
        solref=(0.005, 1),
    )
    arm_joints = arm.joint_names[:5]
    for name, kp, kv in zip(arm_joints, ARM_KP, ARM_KV, strict=True):
        i = arm.joint_names.index(name)
        root.actuator.add(
            "position",
            name=name,
            joint=name,
            kp=kp,
            kv=kv,
            ctrlrange=(lo[i], hi[i]),
            forcerange=(-ARM_FORCE, ARM_FORCE),
        )
    # The servo pulls both fingers through one rack: a tendon averaging the two slides,
    # so the squeeze acts on both fingers equally (the equality only keeps them in step).
    tendon = root.tendon.add("fixed", name="grip")
    tendon.add("joint", joint="gripper", coef=0.5)
    tendon.add("joint", joint="gripper_mirror", coef=0.5)
    root.actuator.add(
        "position",
        name="gripper",
        tendon="grip",
        kp=GRIPPER_KP,
        kv=GRIPPER_KV,
        ctrlrange=(GRIPPER_CTRL_MIN, hi[5]),
        forcerange=(-GRIPPER_FORCE, GRIPPER_FORCE),
    )


def _object_mjcf(root: mjcf.RootElement) -> None:
    """Add the free object body with one candidate geom per shape (all but one disabled)."""
    for mesh in MESHES:
        root.asset.add("mesh", name=mesh.name, vertex=mesh.vertices.ravel())
        # The same mesh collapsed about its centre: MuJoCo cannot rescale a compiled mesh,
        # so a crushed mesh object swaps through these copies (``tasks.collapse_object``).
        for i, scale in enumerate(mesh_collapse_scales(), 1):
            root.asset.add(
                "mesh", name=f"{mesh.name}_crushed{i}", vertex=(scale * mesh.vertices).ravel()
            )
    obj = root.worldbody.add("body", name="object", pos=(0.2, 0, 0.03))
    obj.add("freejoint", name="object")
    # Explicit inertial: tasks overwrite mass, inertia and centre of mass at run time.
    obj.add("inertial", pos=(0, 0, 0), mass=0.1, diaginertia=(1e-4, 1e-4, 1e-4))
    common = dict(
        contype=0,
        conaffinity=0,
        condim=6,
        priority=1,
        friction=(0.8, TORSIONAL_FRICTION, ROLLING_FRICTION),
        rgba=(0.2, 0.5, 0.9, 0),
        group=2,
        mass=0,
    )
    for shape in SHAPES:
        if shape.startswith("mesh_"):
            obj.add("geom", name=f"obj_{shape}", type="mesh", mesh=shape, **common)
            for i in range(1, CRUSH_MESH_STAGES + 1):
                name = f"{shape}_crushed{i}"
                obj.add("geom", name=f"obj_{name}", type="mesh", mesh=name, **common)
        elif shape == "capsule":
            # Lying along x: an upright capsule would topple.
            obj.add(
                "geom",
                name=f"obj_{shape}",
                type="capsule",
                size=(0.015, 0.02),
                quat=(0.7071068, 0, 0.7071068, 0),
                **common,
            )
        else:
            size = {
                "box": (0.02, 0.02, 0.02),
                "cylinder": (0.02, 0.02),
                "sphere": (0.02,),
                "ellipsoid": (0.02, 0.02, 0.02),
            }[shape]
            obj.add("geom", name=f"obj_{shape}", type=shape, size=size, **common)


@functools.lru_cache(maxsize=4)
def scene_xml(arm: ArmGeometry = ARM) -> tuple[str, dict[str, bytes]]:
    """MJCF XML (and assets) of the full scene, built with PyMJCF."""
    root = mjcf.RootElement(model="metagrasp_tabletop")
    root.compiler.angle = "radian"
    root.option.timestep = PHYSICS_DT
    root.option.integrator = "implicitfast"
    root.option.cone = "elliptic"
    # A high impratio makes frictional contacts nearly hard: grasps hold without creep.
    root.option.impratio = 10
    root.option.noslip_iterations = 0
    root.default.joint.armature = ARM_ARMATURE
    root.default.joint.damping = ARM_DAMPING
    getattr(root.visual, "global").offwidth = 640
    getattr(root.visual, "global").offheight = 480
    root.visual.headlight.ambient = (0.45, 0.45, 0.45)
    root.asset.add(
        "texture",
        name="grid",
        type="2d",
        builtin="checker",
        width=256,
        height=256,
        rgb1=(0.82, 0.78, 0.7),
        rgb2=(0.76, 0.72, 0.64),
    )
    root.asset.add("material", name="table", texture="grid", texrepeat=(8, 8))
    wb = root.worldbody
    wb.add("light", pos=(0.2, -0.3, 0.8), dir=(0, 0.3, -0.8), diffuse=(0.6, 0.6, 0.6))
    wb.add(
        "geom",
        name="table",
        type="box",
        size=(0.4, 0.4, 0.02),
        pos=(0.15, 0, TABLE_TOP - 0.02),
        material="table",
        contype=_TABLE,
        conaffinity=0,
        friction=(0.5, 0.005, 0.0001),
    )
    wb.add(
        "camera", name="front", pos=(0.62, -0.38, 0.38), xyaxes=(0.53, 0.85, 0, -0.35, 0.22, 0.91)
    )
    wb.add("camera", name="side", pos=(0.2, -0.55, 0.2), xyaxes=(1, 0, 0, 0, 0.3, 0.95))
    wb.add(
        "site",
        name="goal",
        type="sphere",
        size=(0.012,),
        pos=(0.2, 0.0, 0.1),
        rgba=(0.1, 0.9, 0.2, 0.5),
        group=2,
    )
    _arm_mjcf(root, arm)
    _object_mjcf(root)
    # The two fingers touch when the gripper closes empty: that contact is never useful.
    root.contact.add("exclude", body1="finger_left", body2="finger_right")
    xml = root.to_xml_string()
    return xml, root.get_assets()


@functools.lru_cache(maxsize=4)
def _compiled(arm: ArmGeometry = ARM) -> mujoco.MjModel:
    xml, assets = scene_xml(arm)
    model = mujoco.MjModel.from_xml_string(xml, assets)
    # Tasks move the object's centre of mass off its body frame at run time, so the
    # compiler's "inertial frame == body frame" fast path must not be assumed.
    obj = model.body("object").id
    model.body_simple[obj] = 0
    model.body_sameframe[obj] = 0
    return model


def build_model(arm: ArmGeometry = ARM) -> tuple[mujoco.MjModel, SceneHandles]:
    """A fresh, private copy of the compiled scene model and its handles.

    The copy is cheap (no XML parsing or compiling after the first call per process) and
    safe to mutate with :func:`metagrasp.sim.tasks.apply_task`.
    """
    model = copy.deepcopy(_compiled(arm))
    return model, handles_for(model, arm)


def handles_for(model: mujoco.MjModel, arm: ArmGeometry = ARM) -> SceneHandles:
    """Look up every index the env and the task randomizer need, by name."""
    jid = [model.joint(n).id for n in arm.joint_names]
    mirror = model.joint("gripper_mirror").id
    obj_j = model.joint("object").id
    touch = [model.sensor(f"touch_{s}") for s in ("left", "right")]
    robot_dofs = [model.jnt_dofadr[j] for j in jid] + [model.jnt_dofadr[mirror]]
    return SceneHandles(
        arm_qpos=np.array([model.jnt_qposadr[j] for j in jid]),
        arm_dof=np.array([model.jnt_dofadr[j] for j in jid]),
        actuators=np.array([model.actuator(n).id for n in arm.joint_names]),
        mirror_qpos=int(model.jnt_qposadr[mirror]),
        mirror_dof=int(model.jnt_dofadr[mirror]),
        object_body=model.body("object").id,
        object_qpos=int(model.jnt_qposadr[obj_j]),
        object_dof=int(model.jnt_dofadr[obj_j]),
        object_geoms={s: model.geom(f"obj_{s}").id for s in SHAPES},
        crushed_geoms={
            s: tuple(model.geom(f"obj_{s}_crushed{i}").id for i in range(1, CRUSH_MESH_STAGES + 1))
            for s in SHAPES
            if s.startswith("mesh_")
        },
        finger_pads=(model.geom("pad_left").id, model.geom("pad_right").id),
        touch_adr=(int(touch[0].adr[0]), int(touch[1].adr[0])),
        tcp_site=model.site("tcp").id,
        goal_site=model.site("goal").id,
        arm_dofs_all=np.array(robot_dofs),
    )
