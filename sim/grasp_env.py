"""The grasp task family as Gymnasium environments: reach, grasp-and-lift, place.

Contract:
    * Observation (float32, :data:`OBS_NAMES`): only what a real arm gives — servo
      positions and velocities, gripper opening and effort (servo load), the previous
      action, and the object's pose from an object-pose source. Hidden task parameters are
      never in it; they are in ``info["task"]`` (privileged vector) and ``env.task``.
    * Action (6 values in [-1, 1]), in one of two modes (``EnvConfig.action_mode``):

      - ``"ee"`` (default, :data:`EE_ACTION_NAMES`): bounded deltas of a tool-centre-point
        target (``max_tcp_delta`` m per step at full scale, the target clipped to
        :data:`TCP_BOX`), an absolute finger yaw relative to the arm's pointing direction
        (+-1 = +-90 degrees, i.e. the wrist roll), an absolute wrist pitch offset, and an
        absolute gripper target. The env turns the target into servo targets with the
        numpy inverse kinematics of :mod:`metagrasp.kinematics`, which the device runs too.
      - ``"joint"`` (:data:`JOINT_ACTION_NAMES`): bounded joint-position deltas for the 5
        arm servos (``max_joint_delta`` rad per step at full scale) and the gripper target.

      The gripper action is absolute in both modes and runs the gripper servo in
      current-based position control (Dynamixel operating mode 5; a torque limit on
      Feetech STS): a value g > 0 closes the fingers at the servo's speed and squeezes
      with at most 0.5 N x 40^g per pad (log scale: 0.5 N at g -> 0+, 20 N at g = 1;
      :func:`metagrasp.actions.grip_fraction`); g <= 0 is position control of the
      opening at full current (g = -1 fully open, g = 0 closed). The arm servos get position
      targets, exactly what a servo bus accepts.
    * ``reset(seed=, options={"task": TaskParams | dict, "object_pose": (x, y, yaw)})``
      sets the task; without a task one is drawn from the env's split. The object is put
      down at ``object_pose`` and allowed to come to rest (``settle_seconds``) before the
      episode starts: a lumpy mesh may topple a little on the way.
    * ``info``: ``success`` (bool), ``reward_terms`` (named dense terms that sum to the
      reward), ``grip_force`` (N), ``crushed``, ``task`` (privileged vector).
    * An episode lasts ``episode_seconds``; it ends early (terminated) when the object falls
      off the table. Squeezing harder than the object's crush limit crushes it: a one-off
      penalty, and the episode runs on without grasp rewards or success. Grasp-lift
      succeeds when, at the episode's end, the object is at least 5 cm above its start,
      held by both fingers, and was never crushed.
"""

from __future__ import annotations

import dataclasses
import math
from collections import deque
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import mujoco
import numpy as np

# The observation layout and the action -> servo-target mapping live in one numpy-only
# module shared with the device's control loop; they are re-exported here.
from metagrasp.actions import (  # noqa: F401 (re-exported)
    ACTION_MODES,
    ACTION_NAMES,
    EE_ACTION_NAMES,
    JOINT_ACTION_NAMES,
    OBS_NAMES,
    PITCH_OFFSET,
    TCP_BOX,
    TCP_HI,
    TCP_LO,
    ActionMap,
    ActionMapConfig,
    auto_pitch,
)
from metagrasp.errors import ConfigError, TaskParamError, UnknownNameError
from metagrasp.kinematics import ARM
from metagrasp.sim import scene
from metagrasp.sim.objects import CRUSH_COLLAPSE_DELAY, CRUSH_COLLAPSE_SECONDS, half_extents
from metagrasp.sim.tasks import (
    PRIVILEGED_NAMES,
    NominalDynamics,
    TaskParams,
    apply_task,
    check_reset_options,
    check_split,
    collapse_object,
    sample_task,
)

KINDS: tuple[str, ...] = ("reach", "grasp-lift", "place")

LIFT_HEIGHT = 0.05
"""Grasp-lift success height above the object's start (m)."""
CONTACT_FORCE = 0.2
"""Pad force (N) above which a pad counts as touching the object."""
CLOSE_RADIUS = 0.02
"""TCP-to-object distance (m) within which closing the fingers earns the ``close`` term."""


@dataclass
class EnvConfig:
    """Configuration of one grasp-family environment."""

    task: str = "grasp-lift"
    """Task kind: ``reach``, ``grasp-lift`` or ``place``."""
    split: str = "train"
    """Task split drawn from when reset() gets no task: ``train``, ``test`` or ``hard``."""
    control_hz: float = 25.0
    """Policy/servo command rate (Hz); must divide into whole physics steps."""
    episode_seconds: float = 4.0
    """Episode duration (s)."""
    action_mode: str = "ee"
    """``ee`` (TCP target deltas through IK) or ``joint`` (joint target deltas)."""
    max_joint_delta: float = 0.06
    """Largest arm joint target change per control step at action = +-1 (rad), joint mode."""
    max_tcp_delta: float = 0.012
    """Largest TCP target change per control step and axis at action = +-1 (m), ee mode."""
    settle_seconds: float = 1.5
    """Longest time the object may settle on the table at reset before the episode starts
    (it stops early once at rest): toppling meshes and rocking round objects come to rest
    first, so the episode starts from a still object whose pose the policy sees."""
    home_noise: float = 0.02
    """Uniform noise on the initial arm joint positions (rad)."""
    reward_weights: dict[str, float] = dataclasses.field(
        default_factory=lambda: {
            "reach": 0.5,
            "close": 0.5,
            "grasp": 0.5,
            "lift": 2.0,
            "hold": 2.0,
            "place": 2.0,
            "crush": -10.0,
            "drop": -5.0,
            "action_rate": -0.02,
        }
    )
    """Weight of each named reward term (the reward is their weighted sum)."""
    n_substeps: int = 0
    """Derived: physics steps per control step."""
    max_steps: int = 0
    """Derived: control steps per episode."""

    def __post_init__(self) -> None:
        if self.task not in KINDS:
            raise UnknownNameError(f"unknown task {self.task!r}; allowed: {list(KINDS)}")
        check_split(self.split)
        if not 1.0 <= self.control_hz <= 250.0:
            raise ConfigError(f"control_hz={self.control_hz} outside [1, 250] Hz")
        sub = 1.0 / (self.control_hz * scene.PHYSICS_DT)
        if abs(sub - round(sub)) > 1e-6:
            raise ConfigError(
                f"control_hz={self.control_hz} does not divide into whole physics steps of "
                f"{scene.PHYSICS_DT} s; use e.g. 25, 50 or 125 Hz"
            )
        if not 0.2 <= self.episode_seconds <= 60.0:
            raise ConfigError(f"episode_seconds={self.episode_seconds} outside [0.2, 60] s")
        if self.action_mode not in ACTION_MODES:
            raise UnknownNameError(
                f"unknown action_mode {self.action_mode!r}; allowed: {list(ACTION_MODES)}"
            )
        if not 0.0 <= self.settle_seconds <= 2.0:
            raise ConfigError(f"settle_seconds={self.settle_seconds} outside [0, 2] s")
        if not 0.0 < self.max_tcp_delta <= 0.05:
            raise ConfigError(f"max_tcp_delta={self.max_tcp_delta} outside (0, 0.05] m")
        if not 0.0 < self.max_joint_delta <= 0.5:
            raise ConfigError(f"max_joint_delta={self.max_joint_delta} outside (0, 0.5] rad")
        self.n_substeps = int(round(sub))
        self.max_steps = int(round(self.episode_seconds * self.control_hz))
        unknown = set(self.reward_weights) - set(REWARD_TERMS)
        if unknown:
            raise ConfigError(f"unknown reward term(s) {sorted(unknown)}; allowed: {REWARD_TERMS}")


_SETTLE_INTERVALS = (25, 50, 90)
"""Physics steps between the velocity resets of the quasi-static settle at reset."""
_GRIP_CLOSED, _GRIP_OPEN = scene.GRIPPER_CTRL_MIN, ARM.joint_upper[5]
_GRIP_SPAN = ARM.joint_upper[5] - ARM.joint_lower[5]
_NOISY = np.r_[0:13, 23:26]
_NOISE_SCALE = np.r_[np.ones(6), 5 * np.ones(6), 1.0, 0.5 * np.ones(3)]
REWARD_TERMS = (
    "reach",
    "close",
    "grasp",
    "lift",
    "hold",
    "place",
    "crush",
    "drop",
    "action_rate",
)


def _quat_mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamilton product of two (w, x, y, z) quaternions."""
    aw, ax, ay, az = a
    bw, bx, by, bz = b
    return np.array(
        [
            aw * bw - ax * bx - ay * by - az * bz,
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
        ]
    )


def _resting_quat(task: TaskParams) -> np.ndarray:
    """Object orientation (before yaw) in which a round shape rests where it is put.

    A sphere, or a capsule lying on its side, placed with its centre of mass above its
    centre balances on an unstable equilibrium, and an ellipsoid standing on a long axis
    topples; either rolls away once the episode starts. Put down the way a person would
    put it down (mass low, flattest side down), it rests where it is placed.
    """
    off = np.asarray(task.com_offset, float)
    if task.shape == "sphere" and np.linalg.norm(off) > 1e-6:
        v = off / np.linalg.norm(off)
        axis = np.cross(v, (0.0, 0.0, -1.0))
        angle = math.acos(float(np.clip(-v[2], -1.0, 1.0)))
        n = np.linalg.norm(axis)
        if n < 1e-9:  # already straight down, or straight up: turn about x
            axis, n = np.array([1.0, 0.0, 0.0]), 1.0
        axis = axis / n
        return np.array([math.cos(angle / 2), *(math.sin(angle / 2) * axis)])
    if task.shape == "capsule" and math.hypot(off[1], off[2]) > 1e-6:
        # The capsule lies along x: roll about x until the (y, z) offset points down.
        phi = math.atan2(off[1], off[2]) + math.pi
        return np.array([math.cos(phi / 2), math.sin(phi / 2), 0.0, 0.0])
    if task.shape == "ellipsoid":
        # An ellipsoid only rests stably on the end of its shortest axis: turn that down.
        shortest = int(np.argmin(task.size))
        h = math.sqrt(0.5)
        if shortest == 0:
            return np.array([h, 0.0, h, 0.0])  # x down: a quarter turn about y
        if shortest == 1:
            return np.array([h, h, 0.0, 0.0])  # y down: a quarter turn about x
    return np.array([1.0, 0.0, 0.0, 0.0])


class GraspEnv(gym.Env):
    """One SO-101-style arm, one object, one task kind. See the module docstring."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 25}

    def __init__(
        self,
        task: str = "grasp-lift",
        split: str = "train",
        render_mode: str | None = None,
        config: EnvConfig | None = None,
        width: int = 320,
        height: int = 240,
    ) -> None:
        self.config = config if config is not None else EnvConfig(task=task, split=split)
        if render_mode not in (None, "rgb_array"):
            raise ConfigError(f"render_mode={render_mode!r}; allowed: None, 'rgb_array'")
        self.render_mode = render_mode
        self.metadata = {**self.metadata, "render_fps": int(self.config.control_hz)}
        self.model, self.h = scene.build_model()
        self.data = mujoco.MjData(self.model)
        self._nominal = NominalDynamics.capture(self.model)
        self._width, self._height = width, height
        self._renderer: mujoco.Renderer | None = None
        n = len(OBS_NAMES)
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (n,), np.float32)
        self.action_names: tuple[str, ...] = ACTION_MODES[self.config.action_mode]
        """Action channel names of this env's action mode."""
        self.action_space = gym.spaces.Box(-1.0, 1.0, (len(self.action_names),), np.float32)
        self._action_map = ActionMap(
            ActionMapConfig(
                action_mode=self.config.action_mode,
                control_hz=self.config.control_hz,
                max_tcp_delta=self.config.max_tcp_delta,
                max_joint_delta=self.config.max_joint_delta,
                grip_closed=_GRIP_CLOSED,
                grip_open=_GRIP_OPEN,
                grip_speed=scene.GRIPPER_SPEED,
            )
        )
        self.task: TaskParams = TaskParams()
        self._pending: deque[np.ndarray] = deque()
        self._prev_action = np.zeros(6, np.float32)
        self._steps = 0
        self._obj_start = np.zeros(3)
        self._goal = np.zeros(3)
        self._crushed = False
        self._collapse_at: float | None = None
        """Sim time at which the crushed object starts to collapse (``CRUSH_COLLAPSE_DELAY``
        after the crush); None while intact or once collapsed."""
        self._obj_geom = -1  # the object's collision geom, set by set_task
        self._grip = 0.0
        self._task_vec = np.zeros(len(PRIVILEGED_NAMES), np.float32)

    # --- lifecycle --------------------------------------------------------------------

    def reset(
        self,
        *,
        seed: int | None = None,
        options: dict[str, Any] | None = None,
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        options = check_reset_options(options, ("task", "object_pose"))
        task = options.get("task")
        if task is None:
            task = sample_task(self.np_random, self.config.split)
        elif isinstance(task, dict):
            task = TaskParams.from_dict(task)
        elif not isinstance(task, TaskParams):
            raise TaskParamError(
                f"options['task'] must be TaskParams or dict, got {type(task).__name__}"
            )
        self.set_task(task)
        m, d, h, rng = self.model, self.data, self.h, self.np_random
        mujoco.mj_resetData(m, d)
        home = np.array(ARM.home)
        home[:5] += rng.uniform(-1, 1, 5) * self.config.home_noise
        d.qpos[h.arm_qpos] = home
        d.qpos[h.mirror_qpos] = home[5]
        d.ctrl[h.actuators] = home
        self._action_map.reset(home)
        full = scene.GRIPPER_FORCE * task.actuator_gain  # not the last episode's squeeze
        m.actuator_forcerange[h.actuators[5]] = (-full, full)
        if "object_pose" in options:
            x, y, yaw = (float(v) for v in options["object_pose"])
        else:
            x = rng.uniform(*scene.WORKSPACE_X)
            y = rng.uniform(*scene.WORKSPACE_Y)
            yaw = rng.uniform(-math.pi, math.pi)
        z = scene.TABLE_TOP + float(half_extents(task.shape, task.size)[2]) + 5e-4
        a = d.qpos[h.object_qpos : h.object_qpos + 7]
        a[:3] = (x, y, z)
        a[3:] = _quat_mul(
            np.array([math.cos(yaw / 2), 0.0, 0.0, math.sin(yaw / 2)]), _resting_quat(task)
        )
        self._settle()
        x, y, z = (float(v) for v in d.qpos[h.object_qpos : h.object_qpos + 3])
        self._obj_start = np.array([x, y, z])
        if self.config.task == "place":
            # Target on the table, away from the start so placing means carrying.
            for _ in range(100):
                gx = rng.uniform(*scene.WORKSPACE_X)
                gy = rng.uniform(*scene.WORKSPACE_Y)
                if math.hypot(gx - x, gy - y) > 0.06:
                    break
            self._goal = np.array([gx, gy, z])
        elif self.config.task == "grasp-lift":
            self._goal = self._obj_start + (0, 0, LIFT_HEIGHT + 0.02)
        else:
            self._goal = self._obj_start.copy()
        m.site_pos[h.goal_site] = self._goal
        mujoco.mj_forward(m, d)
        self._pending = deque([np.zeros(6, np.float32)] * task.latency)
        self._prev_action = np.zeros(6, np.float32)
        self._steps = 0
        self._crushed = False
        self._collapse_at = None
        obs = self._observe()
        return obs, self._info(False, {k: 0.0 for k in REWARD_TERMS}, 0.0)

    def _settle(self) -> None:
        """Step physics until the object rests or time runs out; the arm is then put back
        exactly where it started, so nothing about the object (how long it took to settle)
        leaks into the robot's state."""
        m, d, h = self.model, self.data, self.h
        arm_q, arm_v = d.qpos.copy(), d.qvel.copy()
        steps = int(round(self.config.settle_seconds / scene.PHYSICS_DT))
        dof = self.h.object_dof
        obj_v = d.qvel[dof : dof + 6]
        # Quasi-static settling: let the object move from rest for a short interval, then
        # take its velocity away, and repeat. A round object with an off-centre mass is a
        # weeble that would rock for seconds; this walks it down to the same static
        # equilibrium without the rocking. Interval lengths vary so that no object's
        # rocking period can make the intervals resonate.
        done, k = 0, 0
        while done < steps:
            n = min(_SETTLE_INTERVALS[k % len(_SETTLE_INTERVALS)], steps - done)
            mujoco.mj_step(m, d, nstep=n)
            done, k = done + n, k + 1
            moving = float(np.abs(obj_v).max())
            obj_v[:] = 0.0
            # Slow enough (after moving freely from rest) that it is at equilibrium.
            if k >= 2 and moving < 3e-3:
                break
        oq = h.object_qpos
        obj_q, obj_v = d.qpos[oq : oq + 7].copy(), d.qvel[dof : dof + 6].copy()
        d.qpos[:], d.qvel[:] = arm_q, arm_v
        d.qpos[oq : oq + 7], d.qvel[dof : dof + 6] = obj_q, obj_v
        d.act[:] = 0.0
        d.time = 0.0

    def set_task(self, task: TaskParams) -> None:
        """Write ``task`` into this env's private model (takes effect now)."""
        apply_task(self.model, task, self.h, self._nominal)
        # Refresh the solver's mass-dependent constants for the new object.
        mujoco.mj_setConst(self.model, self.data)
        self.task = task
        self._task_vec = task.privileged_vector()
        self._obj_geom = self.h.object_geoms[task.shape]
        self._collapse_at = None

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        action = np.asarray(action, dtype=np.float32).reshape(-1)
        if action.shape != (6,):
            raise ValueError(
                f"action must have 6 values {self.action_names}, got shape {action.shape}"
            )
        if not np.all(np.isfinite(action)):
            raise ValueError(
                f"action contains NaN or inf: {action}; the policy is broken "
                "(check its inputs and weights)"
            )
        # np.minimum/np.maximum instead of np.clip: this is the hot path, and np.clip's
        # dispatch costs more than the arithmetic on 6 numbers.
        action = np.minimum(np.maximum(action, -1.0), 1.0)
        self._pending.append(action)
        applied = self._pending.popleft()
        cfg, m, d, h = self.config, self.model, self.data, self.h
        t, force_fraction = self._action_map.step(applied, float(d.qpos[h.arm_qpos[5]]))
        # The gripper's current limit: the hidden actuator gain scales the force a command
        # delivers, as a motor's torque constant and gear losses do on a real servo.
        limit = scene.GRIPPER_FORCE * self.task.actuator_gain * force_fraction
        m.actuator_forcerange[h.actuators[5]] = (-limit, limit)
        d.ctrl[h.actuators] = t
        if (
            self._collapse_at is None
            or d.time + cfg.n_substeps * m.opt.timestep < self._collapse_at
        ):
            mujoco.mj_step(m, d, nstep=cfg.n_substeps)
        else:
            self._collapse_steps(cfg.n_substeps)
        self._steps += 1
        terms, success, terminated = self._evaluate(action)
        self._prev_action = action
        w = cfg.reward_weights
        reward = 0.0
        for k, v in terms.items():
            if v:
                reward += w.get(k, 0.0) * v
        truncated = self._steps >= cfg.max_steps and not terminated
        return (
            self._observe(),
            reward,
            terminated,
            truncated,
            self._info(success, terms, self._grip),
        )

    def _collapse_steps(self, n: int) -> None:
        """``n`` physics steps during which the crushed object gives way under the pads, as
        a real one would: the only trace of a crush the robot can see (its fingers close
        further under the same load). Shrunk every physics step, so the pads follow."""
        m, d = self.model, self.data
        for i in range(n):
            self.advance_collapse()
            if self._collapse_at is None:
                mujoco.mj_step(m, d, nstep=n - i)  # the rest of the control step, collapsed
                return
            mujoco.mj_step(m, d)

    def advance_collapse(self) -> None:
        """Shrink a crushed object to where its collapse stands at the current sim time.

        Whoever steps this env's physics calls it before every physics step: :meth:`step`
        does, and so does the virtual robot, which steps physics in real time itself. A
        no-op unless a crushed object is collapsing.
        """
        if self._collapse_at is None:
            return
        progress = (self.data.time - self._collapse_at) / CRUSH_COLLAPSE_SECONDS
        if progress >= 0.0:
            self._obj_geom = collapse_object(self.model, self.task, self.h, progress)
        if progress >= 1.0:
            self._collapse_at = None

    @property
    def _tcp_target(self) -> np.ndarray:
        """The ee mode's integrated TCP target (held by the shared action map)."""
        return self._action_map.tcp_target

    # --- evaluation -------------------------------------------------------------------

    def _pad_contacts(self) -> tuple[bool, bool]:
        """Whether each finger pad touches the object with more than CONTACT_FORCE."""
        d, h = self.data, self.h
        obj = self._obj_geom
        left = right = False
        n = d.ncon
        if n:
            geoms = d.contact.geom[:n]
            for i in np.nonzero((geoms == obj).any(axis=1))[0]:
                other = geoms[i, 0] if geoms[i, 1] == obj else geoms[i, 1]
                if other == h.finger_pads[0]:
                    left = True
                elif other == h.finger_pads[1]:
                    right = True
        # Touch sensors say how hard: a grazing contact is not a grasp.
        left = left and d.sensordata[h.touch_adr[0]] > CONTACT_FORCE
        right = right and d.sensordata[h.touch_adr[1]] > CONTACT_FORCE
        return left, right

    def _grip_force(self, touching: bool) -> float:
        """Squeeze on the object (N): the gripper servo's load while both pads touch it.

        The servo's load, not the pads' contact force, because it is what squeezes in
        steady state, it is what a real servo reports (present load/current), and it is
        free of the impact spikes of rigid contact.
        """
        if not touching:
            return 0.0
        # The tendon splits the servo's force equally between the two pads.
        return max(0.0, -0.5 * float(self.data.actuator_force[self.h.actuators[5]]))

    def _evaluate(self, action: np.ndarray) -> tuple[dict[str, float], bool, bool]:
        d, h, kind = self.data, self.h, self.config.task
        obj = d.qpos[h.object_qpos : h.object_qpos + 3]
        tcp = d.site_xpos[h.tcp_site]
        dist = math.dist(tcp, obj)
        left, right = self._pad_contacts()
        grasped = left and right
        self._grip = self._grip_force(grasped)
        crushed_now = not self._crushed and self._grip > self.task.crush_limit
        if crushed_now:
            self._collapse_at = float(self.data.time) + CRUSH_COLLAPSE_DELAY
        self._crushed = self._crushed or crushed_now
        height = float(obj[2] - self._obj_start[2])
        dropped = bool(abs(obj[0] - 0.15) > 0.4 or abs(obj[1]) > 0.4 or obj[2] < -0.05)
        lifted = height >= LIFT_HEIGHT
        terms = {k: 0.0 for k in REWARD_TERMS}
        terms["reach"] = 1.0 - math.tanh(10.0 * dist)
        da = action - self._prev_action
        terms["action_rate"] = float(np.dot(da, da))
        # Crushing is penalised once, when it happens; the episode runs on (ending it would
        # also forfeit the reach reward, which taught policies never to close at all) but
        # a crushed object earns no more grasp rewards and can no longer succeed.
        terms["crush"] = float(crushed_now)
        terms["drop"] = float(dropped)
        grasped = grasped and not self._crushed
        if kind == "reach":
            success = dist < 0.02
        else:
            if dist < CLOSE_RADIUS and not self._crushed:
                # Closing the fingers with the object between them: without this, a policy
                # that learned to approach with the gripper wide open (fingers that are half
                # closed bump the object away) never tries to close it again.
                terms["close"] = 1.0 - float(d.qpos[h.arm_qpos[5]]) / _GRIP_SPAN
            terms["grasp"] = float(grasped)
            if kind == "grasp-lift":
                terms["lift"] = min(max(height / LIFT_HEIGHT, 0.0), 1.0) * grasped
                terms["hold"] = float(lifted and grasped)
                success = lifted and grasped
            else:
                gdist = math.dist(obj, self._goal)
                terms["lift"] = min(max(height / 0.03, 0.0), 1.0) * grasped * (gdist > 0.03)
                terms["place"] = 1.0 - math.tanh(10.0 * gdist)
                success = gdist < 0.03
        success = bool(success and not self._crushed and not dropped)
        return terms, success, dropped

    def _observe(self) -> np.ndarray:
        d, h, s = self.data, self.h, self.task.obs_noise
        o = np.empty(len(OBS_NAMES), np.float64)
        o[0:6] = d.qpos[h.arm_qpos]
        o[6:12] = d.qvel[h.arm_dof]
        o[12] = o[5] + d.qpos[h.mirror_qpos]
        o[13] = -d.actuator_force[h.actuators[5]] / scene.GRIPPER_FORCE
        o[14:20] = self._prev_action
        oq = h.object_qpos
        o[23:30] = d.qpos[oq : oq + 7]
        if o[26] < 0:  # canonical quaternion sign: w >= 0
            o[26:30] *= -1.0
        if s > 0:
            # One draw for all noisy channels: joints (s), velocities (5 s), opening (s),
            # object position (s / 2).
            o[_NOISY] += self.np_random.normal(0.0, 1.0, _NOISY.size) * (_NOISE_SCALE * s)
        o[20:23] = o[23:26] - d.site_xpos[h.tcp_site]
        o[30:33] = self._goal
        return o.astype(np.float32)

    def _info(self, success: bool, terms: dict[str, float], grip: float) -> dict[str, Any]:
        return {
            "success": success,
            "reward_terms": terms,
            "grip_force": grip,
            "crushed": self._crushed,
            "task": self._task_vec.copy(),
        }

    # --- rendering --------------------------------------------------------------------

    def render(self) -> np.ndarray | None:
        if self.render_mode != "rgb_array":
            return None
        if self._renderer is None:
            self._renderer = mujoco.Renderer(self.model, self._height, self._width)
        self._renderer.update_scene(self.data, camera="front")
        return self._renderer.render()

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None
