"""A hand-written grasp controller: a sanity check that the tasks are solvable.

It sees what a policy sees (the observation) plus the object's visible geometry (shape
and size, to align the fingers with the narrow side). It knows nothing of the hidden
parameters: its one grip level cannot suit heavy, slippery and fragile objects at once,
which is exactly the gap meta-learning must close. It is used by ``metagrasp rollout``,
by the tests, and as a reference line in task-family checks.

:func:`privileged_grip` picks the grip from the hidden parameters instead (an oracle's
choice), and :func:`expert_episodes` records scripted grasps as demonstrations for
off-policy learners (``algo.demo_episodes`` of SAC).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from metagrasp.actions import grip_action
from metagrasp.kinematics import ARM, forward_tcp, top_down_ik, wrist_roll
from metagrasp.sim import scene
from metagrasp.sim.grasp_env import OBS_NAMES, TCP_HI, TCP_LO, EnvConfig, auto_pitch
from metagrasp.sim.objects import half_extents
from metagrasp.sim.tasks import GRIP_FORCE_MAX, TaskParams, grip_window

_I = {n: i for i, n in enumerate(OBS_NAMES)}


def _yaw(qw: float, qz: float) -> float:
    return 2.0 * math.atan2(qz, qw)


class ScriptedGrasp:
    """Approach from above, descend, squeeze at a fixed level, then lift or carry.

    The controller integrates its own command (a TCP target in ``ee`` mode, joint targets
    in ``joint`` mode) exactly as the env does, instead of feeding back measured positions:
    with 1-2 steps of servo latency a feedback law at this rate oscillates.

    Args:
        task: the episode's task (only its shape and size are used).
        kind: ``reach``, ``grasp-lift`` or ``place``.
        grip_force: squeeze per pad to command (N), as the gripper's current limit.
        config: the env's configuration (action mode and action scales).
    """

    def __init__(
        self,
        task: TaskParams,
        kind: str = "grasp-lift",
        grip_force: float = 8.0,
        config: EnvConfig | None = None,
    ) -> None:
        self.cfg = config if config is not None else EnvConfig(task=kind)
        self.ext = half_extents(task.shape, task.size)
        self.kind = kind
        # Current-based gripper: the action sets the squeeze limit on a log scale of the
        # most each pad gets (nominal gain; the hidden gain makes the real squeeze differ).
        self.grip = grip_action(grip_force / GRIP_FORCE_MAX)
        self.phase = "approach"
        self.t = 0
        self.t_close = 0
        self._cmd: np.ndarray | None = None  # integrated command, set from the first obs
        self._lo = np.array(ARM.joint_lower[:5])
        self._hi = np.array(ARM.joint_upper[:5])

    def _waypoint(self, obs: np.ndarray) -> tuple[np.ndarray, float, float]:
        """(TCP target, finger yaw in the base frame, gripper action) for this step."""
        obj = obs[_I["obj_x"] : _I["obj_z"] + 1].astype(float)
        goal = obs[_I["goal_x"] : _I["goal_z"] + 1].astype(float)
        yaw = _yaw(obs[_I["obj_qw"]], obs[_I["obj_qz"]])
        # Close across the object's narrow horizontal side.
        finger_yaw = yaw + (math.pi / 2 if self.ext[1] < self.ext[0] else 0.0)
        gripper = -1.0  # open
        self.t += 1
        # Grasp at the object's centre, but keep the pads' lower edge clear of the table:
        # pads dragging on the table stall the closing fingers.
        grasp_z = max(obj[2], scene.PAD_HALF_HEIGHT + 0.003)
        above = obj + (0, 0, 0.06)
        if self.phase == "approach":
            target = above
            if np.linalg.norm(self._tcp() - above) < 0.004 or self.t > 40:
                self.phase = "descend"
        if self.phase == "descend":
            target = np.array([obj[0], obj[1], grasp_z])
            if np.linalg.norm(self._tcp() - target) < 0.003 or self.t > 60:
                self.phase, self.t_close = "settle", self.t
        if self.phase == "settle":  # let the servos catch up with the command
            target = np.array([obj[0], obj[1], grasp_z])
            if self.t - self.t_close > 4:
                self.phase, self.t_close = "close", self.t
        if self.phase == "close":
            # The current limit caps the squeeze from the first contact on; wait for the
            # fingers to close and the squeeze to build before lifting.
            target = np.array([obj[0], obj[1], grasp_z])
            gripper = self.grip
            if self.t - self.t_close > 15:
                self.phase = "lift" if self.kind != "reach" else "hold"
        if self.phase in ("lift", "hold"):
            gripper = self.grip
            target = (
                goal + (0, 0, 0.03)
                if self.kind == "grasp-lift"
                else np.array([goal[0], goal[1], goal[2] + 0.04])
            )
        if self.phase == "hold":
            target = np.array([obj[0], obj[1], grasp_z])
        return target, finger_yaw, gripper

    def _tcp(self) -> np.ndarray:
        """The commanded TCP position."""
        if self.cfg.action_mode == "ee":
            return self._cmd.copy()
        return forward_tcp(self._cmd)

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        q = obs[_I["q_shoulder_pan"] : _I["q_wrist_roll"] + 1].astype(float)
        if self._cmd is None:
            self._cmd = forward_tcp(q) if self.cfg.action_mode == "ee" else q.copy()
        target, finger_yaw, gripper = self._waypoint(obs)
        if self.cfg.action_mode == "ee":
            step = np.clip((target - self._cmd) / self.cfg.max_tcp_delta, -1.0, 1.0)
            self._cmd = np.clip(self._cmd + step * self.cfg.max_tcp_delta, TCP_LO, TCP_HI)
            roll = wrist_roll(finger_yaw, math.atan2(self._cmd[1], self._cmd[0]))
            act = [*step, roll / (math.pi / 2), 0.0, gripper]
        else:
            pitch = auto_pitch(target[0], target[1])
            sol = top_down_ik(target, finger_yaw=finger_yaw, pitch=pitch)
            step = np.clip((sol.q - self._cmd) / self.cfg.max_joint_delta, -1.0, 1.0)
            self._cmd = np.clip(self._cmd + step * self.cfg.max_joint_delta, self._lo, self._hi)
            act = [*step, gripper]
        return np.clip(np.asarray(act, np.float32), -1.0, 1.0)


def run_episode(
    env,
    policy=None,
    seed: int | None = None,
    options: dict | None = None,
    frames: list | None = None,
) -> dict:
    """Run one episode; ``policy`` defaults to :class:`ScriptedGrasp` for the env's task.

    Returns a summary: return, success, crushed, peak grip force, steps, reward terms.
    """
    obs, info = env.reset(seed=seed, options=options)
    base = env.unwrapped
    if policy is None:
        policy = ScriptedGrasp(base.task, base.config.task, config=base.config)
    total, peak, steps = 0.0, 0.0, 0
    sums: dict[str, float] = {}
    while True:
        if frames is not None:
            frames.append(env.render())
        obs, r, term, trunc, info = env.step(policy(obs))
        total += r
        steps += 1
        peak = max(peak, info["grip_force"])
        for k, v in info["reward_terms"].items():
            sums[k] = sums.get(k, 0.0) + v
        if term or trunc:
            break
    if frames is not None:
        frames.append(env.render())
    return {
        "return": total,
        "success": bool(info["success"]),
        "crushed": info["crushed"],
        "peak_grip_force": peak,
        "steps": steps,
        "reward_terms": sums,
        "task": base.task.to_dict(),
    }


GRIP_FORCE_MIN = 0.5
"""The gripper's smallest squeeze per pad (N) (:func:`metagrasp.actions.grip_fraction`)."""
BEST_FIXED_GRIP_N = 4.0
"""The single grip (N per pad) with which the scripted grasp lifts most ``test`` objects
(0.49; ``benchmarks/scripted_grip.py``): the best a controller blind to the hidden
parameters does with this motion."""


def privileged_grip(task: TaskParams) -> float:
    """Squeeze per pad (N) chosen from the hidden parameters: inside the object's window
    (the force that lifts it .. its crush limit) on a log scale, corrected for the hidden
    actuator gain, within the gripper's 0.5-20 N."""
    return float(_grip_in(task.required_grip_force(), task.crush_limit, task.actuator_gain))


def privileged_grips(task_vectors: np.ndarray) -> np.ndarray:
    """:func:`privileged_grip` of rows of privileged task vectors (what envs report)."""
    return _grip_in(*grip_window(task_vectors))


def training_grip_windows(n: int = 2000, seed: int = 0) -> np.ndarray:
    """``(n, 2)``: per object drawn from the training distribution, the lowest commanded
    grip (N per pad) that lifts it and the highest that does not crush it, after its
    actuator gain: the prior of :func:`metagrasp.grip_search.next_grip_prior`."""
    from metagrasp.sim.tasks import sample_task

    rng = np.random.default_rng(seed)
    tasks = [sample_task(rng, "train") for _ in range(n)]
    return np.array(
        [
            (t.required_grip_force() / t.actuator_gain, t.crush_limit / t.actuator_gain)
            for t in tasks
        ]
    )


def _grip_in(required, crush, gain):
    want = np.sqrt(required * np.minimum(crush, GRIP_FORCE_MAX))
    return np.clip(want / gain, GRIP_FORCE_MIN, GRIP_FORCE_MAX)


def expert_episodes(
    family: str,
    episodes: int,
    seed: int,
    privileged: bool,
    tasks: Sequence[TaskParams] | None = None,
) -> dict[str, np.ndarray]:
    """Transitions of scripted grasps on ``train`` tasks: a demonstration buffer.

    Args:
        family: a grasp task family (``grasp-lift``, ``place``, ...).
        episodes: number of episodes, each on a task drawn from the ``train`` split.
        seed: seed of episode ``i`` is ``seed + i`` (task draw, object pose, noise).
        privileged: grip from the hidden parameters (:func:`privileged_grip`, for
            oracles) or the best single grip (:data:`BEST_FIXED_GRIP_N`).
        tasks: episode ``i`` on ``tasks[i]`` instead of a drawn task (``episodes`` must
            be ``len(tasks)``): demonstrations of the very tasks a learner trains on.

    Returns:
        ``obs``, ``actions``, ``rewards``, ``next_obs``, ``dones`` (terminated) and
        ``task`` (the privileged vector), one row per env step; ``success`` and
        ``length`` per episode.

    Raises:
        UnknownNameError: the family has no grasp task (no scripted controller for it).
    """
    from metagrasp.errors import UnknownNameError
    from metagrasp.sim.registry import make_env

    if tasks is not None and len(tasks) != episodes:
        raise ValueError(f"{len(tasks)} tasks for {episodes} episodes")
    env = make_env(family, split="train")
    base = env.unwrapped
    if not isinstance(getattr(base, "config", None), EnvConfig):
        env.close()
        raise UnknownNameError(
            f"family {family!r} has no scripted grasp expert; demonstrations exist for "
            "the grasp families only (set algo.demo_episodes=0)"
        )

    def expert() -> ScriptedGrasp:  # called after the reset that drew the task
        task, cfg = base.task, base.config
        grip = privileged_grip(task) if privileged else BEST_FIXED_GRIP_N
        return ScriptedGrasp(task, cfg.task, grip_force=grip, config=cfg)

    recorded, success = [], []
    try:
        for i in range(episodes):
            options = None if tasks is None else {"task": tasks[i]}
            ep, info = record_episode(env, expert, seed=seed + i, options=options)
            ep["task"] = np.broadcast_to(info["task"], (len(ep["rewards"]), len(info["task"])))
            recorded.append(ep)
            success.append(bool(info["success"]))
    finally:
        env.close()
    out = {k: np.concatenate([e[k] for e in recorded]).astype(np.float32) for k in recorded[0]}
    length = np.array([len(e["rewards"]) for e in recorded])
    return {**out, "success": np.asarray(success), "length": length}


def record_episode(
    env, make_policy, seed: int | None = None, options: dict | None = None
) -> tuple[dict[str, np.ndarray], dict]:
    """Reset ``env``, build the policy with ``make_policy()`` (after the reset, so it can
    read the task the env drew), run one episode and keep every transition.

    Returns:
        ``({obs, actions, rewards, next_obs, dones}, final info)``: one row per step,
        ``dones`` 1.0 where the episode terminated (not truncated).
    """
    obs, _ = env.reset(seed=seed, options=options)
    policy = make_policy()
    rows: dict[str, list] = {k: [] for k in ("obs", "actions", "rewards", "next_obs", "dones")}
    while True:
        action = policy(obs)
        nxt, reward, term, trunc, info = env.step(action)
        for key, value in zip(rows, (obs, action, reward, nxt, float(term)), strict=True):
            rows[key].append(value)
        obs = nxt
        if term or trunc:
            return {k: np.asarray(v) for k, v in rows.items()}, info


__all__ = [
    "ARM",
    "BEST_FIXED_GRIP_N",
    "ScriptedGrasp",
    "expert_episodes",
    "privileged_grip",
    "privileged_grips",
    "record_episode",
    "run_episode",
]
