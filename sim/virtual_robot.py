"""The virtual robot: the MuJoCo grasp scene behind a pseudo-terminal, as a chain of servos.

Contract: :class:`VirtualRobot` opens a pty whose slave side (:attr:`VirtualRobot.path`)
a deploy run opens exactly like a USB serial adapter. The master side is served by a
:class:`~metagrasp.hardware.emulator.ServoChain` (the real Dynamixel X-series or Feetech
STS control table per servo, real instruction and status packets), coupled to the grasp
env's MuJoCo model stepped in real time:

* goal positions (ticks, converted with the robot file) become the position actuators'
  targets; torque off removes the actuator's force and leaves gear friction holding the
  joint (as an unpowered geared servo does);
* the gripper's force-limit register (Goal Current on Dynamixel, Torque Limit on STS)
  sets its actuator's force range, as the env's current limit does;
* present position/velocity/current (load) come from the simulation at read time.

The object's pose is served as the line stream of :mod:`metagrasp.hardware.pose` on a
local TCP socket (:attr:`VirtualRobot.pose_address`); an ``episode N`` line from the
client re-places the object (the arm is left where it is), as a person would between
episodes. Faults are injected by a :class:`~metagrasp.hardware.emulator.FaultSpec` or on
demand (:meth:`VirtualRobot.command`, also fed from stdin by ``metagrasp virtual-robot``).
Nothing on the deploy side knows the robot is virtual.
"""

from __future__ import annotations

import contextlib
import gc
import os
import select
import socket
import threading
import time
import tty

import mujoco
import numpy as np

from metagrasp.errors import ConfigError, UnknownNameError
from metagrasp.hardware.emulator import FaultSpec, ServoChain
from metagrasp.hardware.pose import format_pose_line
from metagrasp.hardware.robot_config import RobotConfig
from metagrasp.kinematics import ARM
from metagrasp.sim import scene
from metagrasp.sim.grasp_env import EnvConfig, GraspEnv
from metagrasp.sim.objects import SHAPES
from metagrasp.sim.tasks import TaskParams, sample_task

__all__ = ["VirtualRobot", "draw_task"]

_OFF_FRICTION = (1.5, 1.5, 1.0, 0.5, 0.3, 20.0)  # N m (N for the gripper): unpowered gears


def draw_task(seed: int, shape: str | None = None, split: str = "train") -> TaskParams:
    """The task of ``seed`` (its first draw of ``shape`` if one is named)."""
    if shape is not None and shape not in SHAPES:
        raise UnknownNameError(f"unknown object {shape!r}; known: {', '.join(SHAPES)}")
    rng = np.random.default_rng(seed)
    for _ in range(2000):
        task = sample_task(rng, split)
        if shape is None or task.shape == shape:
            return task
    raise ConfigError(f"split {split!r} has no task with object {shape!r}")


class VirtualRobot:
    """A simulated arm on a pty. See the module docstring.

    Args:
        robot: Robot file of the virtual arm (ids, models, tick conversion).
        task_seed: Seed of the task (object and hidden parameters) and of placements.
        shape: Object shape name (None: whatever the seed draws).
        faults: Faults to inject.
        pose_hz: Rate of the object-pose stream (Hz).
        pose_port: TCP port of the pose stream (0: any free port).
        task: The task itself (e.g. a held-out task of the ``test`` split); overrides
            ``task_seed``'s draw and ``shape`` (``task_seed`` still seeds placements).
    """

    def __init__(
        self,
        robot: RobotConfig,
        *,
        task_seed: int = 0,
        shape: str | None = None,
        faults: FaultSpec | None = None,
        pose_hz: float = 100.0,
        pose_port: int = 0,
        task: TaskParams | None = None,
    ) -> None:
        self.robot = robot
        self.task = task if task is not None else draw_task(task_seed, shape)
        self.task_seed = task_seed
        self.env = GraspEnv(config=EnvConfig(task="grasp-lift", home_noise=0.0))
        self.env.reset(seed=task_seed, options={"task": self.task})
        self.model, self.data, self.h = self.env.model, self.env.data, self.env.h
        self._nominal_gain = self.model.actuator_gainprm[:, 0].copy()
        self._nominal_bias = self.model.actuator_biasprm[:, 1:3].copy()
        self._full = np.array([scene.ARM_FORCE] * 5 + [scene.GRIPPER_FORCE])
        self._force_fraction = 1.0
        self.chain = ServoChain(
            robot.bus_protocol(),
            robot.ids,
            robot.servo_model.model_number,
            faults=faults,
            on_read=self._on_read,
            on_write=self._on_write,
        )
        self._joint_of = {j.id: k for k, j in enumerate(robot.joints.values())}
        for k, j in enumerate(robot.joints.values()):
            lo, hi = sorted((j.to_ticks(j.min), j.to_ticks(j.max)))
            self.chain.set(j.id, "min_position_limit", lo)  # as after calibrate --write-limits
            self.chain.set(j.id, "max_position_limit", hi)
            self.chain.set(
                j.id, "goal_position", self._ticks(k, self.data.qpos[self.h.arm_qpos[k]])
            )
            self._apply_torque(k, False)
        self.master, self._slave = os.openpty()
        tty.setraw(self._slave)
        self.path = os.ttyname(self._slave)
        """Device path to open as the servo bus."""
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", pose_port))
        self._listener.listen(4)
        self.pose_address = f"tcp://127.0.0.1:{self._listener.getsockname()[1]}"
        """Object-pose stream address (for ``deploy --object-pose``)."""
        self.pose_period = 1.0 / pose_hz
        self._clients: dict[socket.socket, bytearray] = {}
        self._pending: list[tuple[float, bytes]] = []
        self._commands: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.connected = True
        """False once the port was 'unplugged' (disconnect fault)."""
        self.episodes_started = 0
        self.physics_lag_events = 0
        """Times the physics fell more than 50 ms behind real time and skipped ahead."""
        self.steps = 0
        self._judge_every = self.env.config.n_substeps
        self._judged: dict[str, float] = {}
        self._sim_return = 0.0
        self.trace: list[np.ndarray] | None = None
        """Set to a list to collect ``qpos`` once per control period (for videos)."""

    # ------------------------------------------------------------------ sim's judgement
    def _judge(self) -> None:
        """The sim env's success and reward terms now (once per control period).

        A cross-check for device-side judging only: nothing on the deploy path sees it.
        """
        env = self.env
        terms, success, dropped = env._evaluate(env._prev_action)
        w = env.config.reward_weights
        with self._lock:
            self._sim_return += sum(w.get(k, 0.0) * v for k, v in terms.items() if v)
        judged = {
            "success": bool(success),
            "grip_force_n": float(env._grip),
            "crushed": bool(env._crushed),
            "dropped": bool(dropped),
            "return": float(self._sim_return),
        }
        with self._lock:
            judged["grip_peak_n"] = max(self._judged.get("grip_peak_n", 0.0), env._grip)
            self._judged = judged
        if self.trace is not None:
            self.trace.append(self.data.qpos.copy())

    def restart_judging(self) -> None:
        """Start summing the sim's return and grip peak afresh (at an episode's start)."""
        with self._lock:
            self._sim_return = 0.0
            self._judged = {**self._judged, "grip_peak_n": 0.0, "return": 0.0}

    def sim_outcome(self) -> dict[str, float]:
        """The sim's judgement since the object was last placed: ``success`` (now),
        ``crushed``, ``dropped``, ``grip_force_n``, ``grip_peak_n`` and ``return`` (the sim
        reward, without its action-rate term, summed once per control period since
        :meth:`restart_judging` or the object was placed)."""
        with self._lock:
            return dict(self._judged)

    def answer(self, prompt: str) -> str:
        """An operator's answer to ``metagrasp calibrate --ask``'s questions, from the
        simulator's flags: did the grasp succeed, was the object crushed (``y``/``n``);
        anything else (put the object back) is done at once, since the next episode
        re-places it."""
        seen = self.sim_outcome()
        if "crushed" in prompt:
            return "y" if seen.get("crushed") else "n"
        if "succeed" in prompt:
            return "y" if seen.get("success") else "n"
        return ""

    # ------------------------------------------------------------------ servo <-> physics
    def _ticks(self, k: int, q: float) -> int:
        lo, hi = self.robot.servo_model.position_range
        return int(min(max(self.robot.joints[ARM.joint_names[k]].to_ticks(q), lo), hi))

    def _apply_torque(self, k: int, on: bool) -> None:
        m, act = self.model, self.h.actuators[k]
        m.actuator_gainprm[act, 0] = self._nominal_gain[act] if on else 0.0
        m.actuator_biasprm[act, 1:3] = self._nominal_bias[act] if on else 0.0
        m.dof_frictionloss[self.h.arm_dof[k]] = 0.0 if on else _OFF_FRICTION[k]
        if k == 5:
            m.dof_frictionloss[self.h.mirror_dof] = 0.0 if on else _OFF_FRICTION[k]

    def _apply_force_limit(self) -> None:
        limit = scene.GRIPPER_FORCE * self.task.actuator_gain * self._force_fraction
        self.model.actuator_forcerange[self.h.actuators[5]] = (-limit, limit)

    def _on_write(self, sid: int, names: set[str]) -> None:
        k = self._joint_of[sid]
        j = self.robot.joints[ARM.joint_names[k]]
        if "goal_position" in names:
            self.data.ctrl[self.h.actuators[k]] = j.from_ticks(self.chain.get(sid, "goal_position"))
        if "torque_enable" in names:
            self._apply_torque(k, bool(self.chain.get(sid, "torque_enable")))
        reg = j.servo.force_limit_register
        if k == 5 and reg is not None and reg in names:
            self._force_fraction = min(
                max(self.chain.get(sid, reg) / j.servo.force_limit_full, 0.0), 1.0
            )
            self._apply_force_limit()

    def _on_read(self, sid: int) -> None:
        k = self._joint_of[sid]
        j = self.robot.joints[ARM.joint_names[k]]
        d, h = self.data, self.h
        ch = self.chain
        ch.set(sid, "present_position", self._ticks(k, d.qpos[h.arm_qpos[k]]))
        a = self.robot.arrays
        vel = (
            a["direction"][k]
            * d.qvel[h.arm_dof[k]]
            * a["ticks_per_unit"][k]
            / a["velocity_unit"][k]
        )
        ch.set(sid, "present_velocity", int(np.clip(round(vel), -32000, 32000)))
        # Effort as the device reads it: sign follows the joint direction, full force at
        # the file's full scale (the sim observes -force / full).
        force = float(d.actuator_force[h.actuators[k]])
        fs = j.effort_full_scale
        raw = round(min(max(j.direction * force / self._full[k], -1.0), 1.0) * fs)
        ch.set(sid, j.servo.effort_register, int(raw))

    # ----------------------------------------------------------------------- the scene
    def reset_object(self, episode: int) -> None:
        """Put the object down at a new place (the arm stays where it is)."""
        d, h = self.data, self.h
        arm_q = d.qpos[h.arm_qpos].copy()
        mirror = float(d.qpos[h.mirror_qpos])
        ctrl = d.ctrl.copy()
        self.env.reset(seed=self.task_seed * 10_000 + episode + 1, options={"task": self.task})
        d.qpos[h.arm_qpos], d.qpos[h.mirror_qpos], d.ctrl[:] = arm_q, mirror, ctrl
        d.qvel[:] = 0.0
        # The env's reset rewrote the gains and the force range: restore the servos' state.
        self._nominal_gain = self.model.actuator_gainprm[:, 0].copy()
        self._nominal_bias = self.model.actuator_biasprm[:, 1:3].copy()
        for sid, k in self._joint_of.items():
            self._apply_torque(k, bool(self.chain.get(sid, "torque_enable")))
        self._apply_force_limit()
        mujoco.mj_forward(self.model, self.data)
        self.episodes_started += 1
        with self._lock:
            self._judged, self._sim_return = {}, 0.0

    def object_pose(self) -> tuple[np.ndarray, np.ndarray]:
        """The object's (position, quaternion w x y z) in the base frame."""
        q = self.data.qpos[self.h.object_qpos : self.h.object_qpos + 7]
        quat = q[3:].copy()
        if quat[0] < 0:
            quat *= -1.0
        return q[:3].copy(), quat

    # ------------------------------------------------------------------------ control
    def command(self, line: str) -> None:
        """Queue an on-demand fault command (applied by the serving thread):
        ``overload ID``, ``silent ID``, ``speak ID``, ``slow ID MS``, ``corrupt P``,
        ``drop P``, ``disconnect``."""
        with self._lock:
            self._commands.append(line.strip())

    def _run_command(self, line: str) -> None:
        parts = line.split()
        if not parts:
            return
        f = self.chain.faults
        try:
            if parts[0] == "overload":
                self.chain.trip_overload(int(parts[1]))
                self._apply_torque(self._joint_of[int(parts[1])], False)
            elif parts[0] in ("silent", "speak"):
                self.chain.make_silent(int(parts[1]), parts[0] == "silent")
            elif parts[0] == "slow":
                f.slow[int(parts[1])] = float(parts[2]) / 1e3
            elif parts[0] in ("corrupt", "drop"):
                setattr(f, parts[0], float(parts[1]))
            elif parts[0] == "disconnect":
                self._unplug()
        except (IndexError, ValueError, KeyError):
            pass  # a mistyped command is ignored; the CLI echoes what it understood

    def start(self) -> VirtualRobot:
        """Serve in a background thread; returns self."""
        self._thread = threading.Thread(target=self.serve, name="virtual-robot", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close every descriptor."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
        for c in list(self._clients):
            c.close()
        self._listener.close()
        self._unplug()
        with contextlib.suppress(OSError):
            os.close(self._slave)

    def _unplug(self) -> None:
        if self.connected:
            self.connected = False
            with contextlib.suppress(OSError):
                os.close(self.master)

    def __enter__(self) -> VirtualRobot:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------------- serving
    def serve(self) -> None:
        """Serve the bus and the pose stream and step physics in real time until stopped."""
        dt = scene.PHYSICS_DT
        # MuJoCo, dm_control and gymnasium leave a large heap: keep the collector from
        # walking it (a full collection stalls the servos' replies for tens of ms).
        gc.collect()
        gc.freeze()
        next_step = next_pose = time.monotonic()
        m, d = self.model, self.data
        while not self._stop.is_set():
            now = time.monotonic()
            wake = min(next_step, next_pose, *(t for t, _ in self._pending[:1]))
            fds = [self._listener, *self._clients] + ([self.master] if self.connected else [])
            try:
                ready, _, _ = select.select(fds, [], [], max(0.0, min(wake - now, 0.01)))
            except (OSError, ValueError):
                ready = []
            now = time.monotonic()
            if self.connected and self.master in ready:
                try:
                    data = os.read(self.master, 4096)
                except OSError:
                    data = b""
                if data:
                    self._pending += self.chain.feed(data, now)
            self._flush(now)
            if self._listener in ready:
                client, _ = self._listener.accept()
                client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self._clients[client] = bytearray()
            for c in [c for c in ready if c in self._clients]:
                self._client_input(c)
            with self._lock:
                commands, self._commands = self._commands, []
            for line in commands:
                self._run_command(line)
            self.chain.tick(now)
            if self.connected and self.chain.disconnect_due(now):
                self._unplug()
            if now - next_step > 0.05:
                self.physics_lag_events += 1
                next_step = now  # too far behind (machine stalled): skip, don't fast-forward
            while next_step <= now:
                self.env.advance_collapse()  # a crushed object gives way (sim.objects)
                mujoco.mj_step(m, d)
                self.steps += 1
                next_step += dt
                if self.steps % self._judge_every == 0:
                    self._judge()
            if now >= next_pose:
                self._publish()
                next_pose = max(next_pose + self.pose_period, now)
        gc.unfreeze()

    def _flush(self, now: float) -> None:
        while self._pending and self._pending[0][0] <= now:
            _, payload = self._pending.pop(0)
            if self.connected and payload:
                with contextlib.suppress(OSError):
                    os.write(self.master, payload)

    def _client_input(self, client: socket.socket) -> None:
        try:
            chunk = client.recv(4096)
        except OSError:
            chunk = b""
        if not chunk:
            self._clients.pop(client, None)
            client.close()
            return
        buf = self._clients[client]
        buf += chunk
        while b"\n" in buf:
            line, _, rest = bytes(buf).partition(b"\n")
            buf[:] = rest
            words = line.decode("utf-8", "replace").split()
            if len(words) == 2 and words[0] == "episode" and words[1].isdigit():
                self.reset_object(int(words[1]))

    def _publish(self) -> None:
        if not self._clients:
            return
        line = format_pose_line(*self.object_pose()).encode()
        for c in list(self._clients):
            try:
                c.sendall(line)
            except OSError:
                self._clients.pop(c, None)
                c.close()


def serve_cli(args) -> int:  # noqa: ANN001 (argparse.Namespace)
    """``metagrasp virtual-robot``: serve until Ctrl-C (or ``--seconds``)."""
    import sys

    from metagrasp.hardware.robot_config import load_robot_file, virtual_arm_config

    robot = load_robot_file(args.robot) if args.robot else virtual_arm_config(args.protocol)
    if robot.protocol != args.protocol and args.robot:
        raise ConfigError(f"robot file {args.robot} is for {robot.protocol}, not {args.protocol}")
    vr = VirtualRobot(
        robot,
        task_seed=args.task_seed,
        shape=args.object,
        faults=FaultSpec.parse(args.faults),
        pose_port=args.pose_port,
    )
    print(f"device: {vr.path}", flush=True)
    print(f"object pose: {vr.pose_address}", flush=True)
    print(
        f"{robot.protocol} chain of ids {list(robot.ids)} ({robot.servo_model.name}); object "
        f"{vr.task.shape}, mass {vr.task.mass:.3f} kg. Ctrl-C to stop.",
        flush=True,
    )

    def read_commands() -> None:
        for line in sys.stdin:
            vr.command(line)
            print(f"fault command: {line.strip()}", flush=True)

    threading.Thread(target=read_commands, name="vr-stdin", daemon=True).start()
    if args.realtime_priority > 0:
        from metagrasp.hardware.control_loop import set_realtime_priority

        print(set_realtime_priority(args.realtime_priority), flush=True)
    vr.start()
    try:
        deadline = time.monotonic() + args.seconds if args.seconds > 0 else None
        while deadline is None or time.monotonic() < deadline:
            time.sleep(0.1)
    except KeyboardInterrupt:
        pass
    finally:
        vr.stop()
    print(
        f"served {vr.chain.instructions} instructions, {vr.steps} physics steps, "
        f"{vr.physics_lag_events} physics stalls",
        flush=True,
    )
    return 0
