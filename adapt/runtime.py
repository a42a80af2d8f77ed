"""Device-side loader of exported policy bundles: act and adapt with onnxruntime alone.

This module imports numpy and onnxruntime only (never torch, mujoco or onnx): it is
what runs on the robot's small computer.

Bundle layout (written by ``metagrasp export RUN -o policy.onnx``)::

    policy.onnx           the policy graph; its metadata_props describe the whole bundle
    policy.<role>.onnx    sibling graphs (e.g. ``policy.adapt.onnx``, ``policy.critic.onnx``,
                          ``policy.init.onnx``), listed with their SHA-256 in policy.onnx

``policy.onnx`` carries a SHA-256 of itself (see :mod:`metagrasp.adapt.integrity`), so a
modified, truncated or swapped file of the bundle is refused before anything runs.

API (the contract other device code is written against)::

    bundle = load_bundle("policy.onnx")          # BundleError on a bad bundle
    bundle.metadata                              # dict: names, units, limits, control_hz...
    state = bundle.init_state()                  # dict name -> array (1, ...); {} if none
    action, state = bundle.act(obs, state)       # obs (obs_dim,) -> action (act_dim,)
    action, sample, state = bundle.explore(obs, state, rng)   # Gaussian exploration
    state = bundle.observe(state, reward, done)  # per-step feedback (recurrent policies)
    state = bundle.adapt(state, episodes)        # after each finished episode of a task
    bundle.reward_free                           # True: adapt() needs no rewards
    bundle.to_units(action)                      # action in physical units (m, rad, N)

* ``act`` returns the deterministic action, already clipped to the action limits: what
  the servo layer commands (in ``ee`` mode after the device's IK). It raises
  :class:`BundleInputError` on an observation of the wrong shape or with NaN/inf, and
  :class:`ActionError` if the graph ever produced a non-finite action; never a silent
  wrong action. A batch ``(n, obs_dim)`` with a state of ``n`` members works too.
* ``explore`` is for collecting adaptation episodes of algorithms that adapt from their
  own exploration (the MAML family): ``sample`` is the raw Gaussian draw to record as the
  episode's ``actions``; ``action`` is that draw clipped, to command.
* ``adapt(state, episodes)``: ``episodes`` lists the finished episodes of the current
  task, oldest first; each is a dict of numpy arrays ``obs (T, obs_dim)``,
  ``actions (T, act_dim)``, ``rewards (T,)``, ``next_obs (T, obs_dim)``, ``dones (T,)``
  (1 where the episode terminated) and optionally ``mask (T,)``; ``T`` at most the
  bundle's episode length. Which fields are required is ``metadata["adaptation"]
  ["episode_fields"]``. Non-adapting bundles return the state unchanged.
* ``grip_search`` bundles (sac-grip) have no adapt graph: ``adapt`` runs the grip search
  in numpy on each episode's outcome flags ``lifted``, ``crushed`` and, for bundles
  with ``keep_raised``, ``raised`` (the object got to the lift height at some step),
  True/False per member (see ``metadata["adaptation"]``), and sets the state's ``grip``
  (N per pad), which the policy graph applies to every squeeze. No rewards, no
  observations.
* ``observe(state, reward, done)`` writes the last step's reward and done flag into
  state entries named ``prev_reward`` / ``prev_done`` when the bundle has them (RL²);
  otherwise it returns the state unchanged. Call it after every step; it costs nothing.

The seam for algorithms (graph roles and their inputs and outputs), which the exporter
in :mod:`metagrasp.export` writes and this loader follows without knowing algorithms:

``policy`` (required)
    inputs ``obs (N, obs_dim)``, ``task (N, task_dim)`` for oracles, and any state
    entries by name; outputs ``action (N, act_dim)`` (deterministic, clipped), then
    optionally ``mean`` and ``log_std`` (Gaussian exploration) and ``next.<name>`` for
    state entries the step updates (a recurrent hidden state, a history buffer).
``init``
    no inputs; one output per state entry, ``(1, ...)``: the unadapted state.
``adapt``
    inputs: state entries (the unadapted state if ``adaptation.restart``, else the
    current one) and episode fields concatenated over episodes along time, each padded
    to the episode length, with a member dim ``(M, k*T, ...)``: ``obs``, ``actions``,
    ``rewards``, ``next_obs``, ``dones``, ``mask``, ``advantages``; outputs
    ``next.<name>``: the new values of state entries.
``critic``
    used when the adapt graph takes ``advantages``: inputs ``obs (M, T, obs_dim)`` and
    state entries; output ``value (M, T)``. Advantages are GAE per episode under the
    unadapted state's critic (``adaptation.advantages``: gamma, lambda), normalised per
    member over valid steps: the same arithmetic as training.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from metagrasp.adapt.integrity import (
    SELF_HASH_KEY,
    BundleError,
    check_sealed,
    read_bytes,
    sha256_file,
)
from metagrasp.errors import MetagraspError
from metagrasp.grip_search import next_grip, next_grip_prior

FORMAT_VERSION = 1
"""Bundle format this loader reads (``metagrasp.format_version`` in the policy file)."""
PREFIX = "metagrasp."
"""Prefix of every metadata key the exporter writes."""
EPISODE_FIELDS = ("obs", "actions", "rewards", "next_obs", "dones", "mask")
"""Episode fields an adapt graph may consume (plus ``advantages``, computed here)."""

State = dict[str, np.ndarray]
"""Adaptation state: named arrays with a leading member dim (1 on a robot)."""

__all__ = [
    "FORMAT_VERSION",
    "ActionError",
    "BundleError",
    "BundleInputError",
    "PolicyBundle",
    "load_bundle",
    "read_metadata",
]


class BundleInputError(MetagraspError, ValueError):
    """An observation, task vector, state or episode given to a bundle is malformed."""


class ActionError(MetagraspError, FloatingPointError):
    """The policy graph produced a non-finite action (never sent to a servo)."""


@dataclass
class _Graph:
    session: ort.InferenceSession
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


def _session(data: bytes, path: Path, threads: int) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    try:
        return ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own (Fail, InvalidGraph, ...) types
        raise BundleError(f"{path} is not a loadable ONNX model ({exc}); export again") from exc


def _parse_metadata(raw: dict[str, str], path: Path) -> dict[str, Any]:
    meta: dict[str, Any] = {}
    for key, value in raw.items():
        if key == SELF_HASH_KEY:
            meta["sha256"] = value  # a bare hex digest, not JSON
            continue
        if not key.startswith(PREFIX):
            continue
        try:
            meta[key[len(PREFIX) :]] = json.loads(value)
        except json.JSONDecodeError as exc:
            raise BundleError(f"{path}: metadata {key!r} is not valid JSON ({exc})") from exc
    return meta


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The checked metadata of a bundle's policy file (what ``metagrasp inspect`` shows).

    Raises:
        BundleError: missing, truncated or tampered file, or another format version.
    """
    return load_bundle(path).metadata


def load_bundle(path: str | Path, threads: int = 1) -> PolicyBundle:
    """Open and verify an exported bundle (the policy file and every sibling graph).

    Args:
        path: the policy file written by ``metagrasp export -o``.
        threads: onnxruntime intra-op threads per graph (1: lowest latency for an MLP).

    Raises:
        BundleError: a file is missing, truncated or modified (hash mismatch), or the
            bundle is of a format version this loader does not read.
    """
    return PolicyBundle(Path(path), threads)


class PolicyBundle:
    """A verified bundle: see the module docstring for the API and its contract."""

    def __init__(self, path: Path, threads: int = 1) -> None:
        self.path = path
        data = read_bytes(path, "policy file")
        check_sealed(data, path)
        policy = _session(data, path, threads)
        meta = _parse_metadata(policy.get_modelmeta().custom_metadata_map, path)
        version = meta.get("format_version")
        if version != FORMAT_VERSION:
            raise BundleError(
                f"{path} is bundle format {version!r}; this loader reads format "
                f"{FORMAT_VERSION}. Re-export with the metagrasp version on this device"
            )
        if meta.get("role") != "policy":
            raise BundleError(f"{path} is a {meta.get('role')!r} graph, not a bundle's policy")
        self.metadata = meta
        self.graphs: dict[str, _Graph] = {"policy": self._wrap(policy)}
        for role, entry in meta.get("graphs", {}).items():
            if role == "policy":
                continue
            sib = path.parent / entry["file"]
            sib_data = read_bytes(sib, f"{role} graph of {path.name}")
            if sha256_file(sib_data) != entry["sha256"]:
                raise BundleError(
                    f"{sib} does not match the SHA-256 recorded in {path.name}: it was "
                    "modified or belongs to another export; export the bundle again"
                )
            self.graphs[role] = self._wrap(_session(sib_data, sib, threads))
        self.obs_names: tuple[str, ...] = tuple(meta["obs_names"])
        self.action_names: tuple[str, ...] = tuple(meta["action_names"])
        self.task_names: tuple[str, ...] = tuple(meta.get("task_names", ()))
        self.obs_dim, self.act_dim = len(self.obs_names), len(self.action_names)
        self._low = np.asarray(meta["action_low"], np.float32)
        self._high = np.asarray(meta["action_high"], np.float32)
        self._scale = np.asarray(meta["action_scale"], np.float32)
        self.adaptation: dict[str, Any] = meta.get("adaptation", {"kind": "none"})
        self.reward_free: bool = bool(self.adaptation.get("reward_free", True))
        self.episode_length = int(meta["episode_length"])
        pol = self.graphs["policy"]
        self._state_in = tuple(n for n in pol.inputs if n not in ("obs", "task"))
        self._next = tuple(n for n in pol.outputs if n.startswith("next."))
        self._act_outputs = ["action", *self._next]
        self._explore_outputs = ["action", "mean", "log_std", *self._next]
        self._has_task = "task" in pol.inputs

    @staticmethod
    def _wrap(session: ort.InferenceSession) -> _Graph:
        return _Graph(
            session,
            tuple(i.name for i in session.get_inputs()),
            tuple(o.name for o in session.get_outputs()),
        )

    # --- state ---------------------------------------------------------------------------

    @property
    def adapts(self) -> bool:
        """Whether :meth:`adapt` changes anything (an adapt graph, or the grip search)."""
        return "adapt" in self.graphs or self.adaptation.get("kind") == "grip_search"

    @property
    def needs_crush_judgement(self) -> bool:
        """Whether :meth:`adapt` needs each episode's ``crushed`` flag (a grip search):
        something the device sees when told the object's limit (``--max-grip``), when the
        object gives way as it is crushed (``--detect-crush``), or from an operator."""
        return "crushed" in self.adaptation.get("episode_fields", ())

    def init_state(self, n: int = 1) -> State:
        """The unadapted state for ``n`` members (a fresh task)."""
        if "init" not in self.graphs:
            return {}
        g = self.graphs["init"]
        outs = g.session.run(None, {})
        return {
            name: np.repeat(v, n, axis=0) if n != 1 else v
            for name, v in zip(g.outputs, outs, strict=True)
        }

    # --- acting --------------------------------------------------------------------------

    def _feed(self, obs: Any, state: State | None, task: Any) -> tuple[dict[str, np.ndarray], bool]:
        x = np.asarray(obs, dtype=np.float32)
        single = x.ndim == 1
        if x.ndim not in (1, 2) or x.shape[-1] != self.obs_dim:
            raise BundleInputError(
                f"observation has shape {x.shape}; this policy takes ({self.obs_dim},) "
                f"or (n, {self.obs_dim}) in the order of metadata['obs_names']"
            )
        if not np.isfinite(x).all():
            bad = sorted({self.obs_names[i] for i in np.nonzero(~np.isfinite(x))[-1]})
            raise BundleInputError(
                f"observation has NaN/inf in {bad}; check the sensors (no action computed)"
            )
        if single:
            x = x.reshape(1, -1)
        feed = {"obs": x}
        if self._has_task:
            feed["task"] = self._task(task, x.shape[0])
        if self._state_in:
            if state is None:
                raise BundleInputError(
                    f"this policy needs its adaptation state {list(self._state_in)}; "
                    "pass bundle.init_state() (or the state adapt() returned)"
                )
            for name in self._state_in:
                if name not in state:
                    raise BundleInputError(f"state lacks {name!r}; use bundle.init_state()")
                feed[name] = state[name]
        return feed, single

    def _task(self, task: Any, n: int) -> np.ndarray:
        if task is None:
            raise BundleInputError(
                f"this is an oracle policy: pass task= with {list(self.task_names)}"
            )
        t = np.asarray(task, np.float32).reshape(-1, len(self.task_names))
        if t.shape[0] != n or not np.isfinite(t).all():
            raise BundleInputError(f"task vector has shape {t.shape} or NaN; need ({n}, k)")
        return t

    def _next_state(self, state: State | None, outs: list[np.ndarray], first: int) -> Any:
        if not self._next:
            return state
        new = dict(state or {})
        for name, v in zip(self._next, outs[first:], strict=True):
            new[name[len("next.") :]] = v
        return new

    def act(
        self, obs: Any, state: State | None = None, task: Any = None
    ) -> tuple[np.ndarray, State | None]:
        """Deterministic action for an observation, clipped to the action limits.

        Args:
            obs: ``(obs_dim,)`` (or ``(n, obs_dim)``), channels as ``metadata["obs_names"]``.
            state: adaptation state (from :meth:`init_state` / :meth:`adapt`), if any.
            task: privileged task vector, oracle bundles only.

        Returns:
            ``(action, state)``; ``action`` is ``(act_dim,)`` (or ``(n, act_dim)``).

        Raises:
            BundleInputError: wrong shape or NaN/inf in the observation; missing state.
            ActionError: the graph produced a non-finite action.
        """
        feed, single = self._feed(obs, state, task)
        outs = self.graphs["policy"].session.run(self._act_outputs, feed)
        a = outs[0]
        if not np.isfinite(a).all():
            raise ActionError("the policy produced a non-finite action; hold the arm still")
        return (a[0] if single else a), self._next_state(state, outs, 1)

    def explore(
        self, obs: Any, state: State | None, rng: np.random.Generator, task: Any = None
    ) -> tuple[np.ndarray, np.ndarray, State | None]:
        """Exploration action (Gaussian around the mean), as during meta-training.

        Returns:
            ``(action, sample, state)``: ``sample`` (the raw draw) is what to record as
            the episode's ``actions`` for :meth:`adapt`; ``action`` is it clipped, to send.

        Raises:
            BundleInputError: as :meth:`act`, or the bundle has no exploration distribution.
        """
        if self.metadata.get("exploration") != "gaussian":
            raise BundleInputError(
                f"the {self.metadata.get('algorithm')} bundle has no Gaussian exploration "
                "head (it does not adapt from its own exploration); use act()"
            )
        feed, single = self._feed(obs, state, task)
        outs = self.graphs["policy"].session.run(self._explore_outputs, feed)
        mean, log_std = outs[1], outs[2]
        sample = (mean + np.exp(log_std) * rng.standard_normal(mean.shape)).astype(np.float32)
        if not np.isfinite(sample).all():
            raise ActionError("the policy produced a non-finite action; hold the arm still")
        action = np.minimum(np.maximum(sample, self._low), self._high)
        if single:
            action, sample = action[0], sample[0]
        return action, sample, self._next_state(state, outs, 3)

    def observe(self, state: State | None, reward: Any, done: Any) -> State | None:
        """Feed the last step's reward and done flag into the state (RL²-style bundles)."""
        if not state or ("prev_reward" not in state and "prev_done" not in state):
            return state
        new = dict(state)
        for name, value in (("prev_reward", reward), ("prev_done", done)):
            if name in new:
                # One value per member (a scalar on a robot), broadcast over the entry.
                v = np.asarray(value, np.float32).reshape(-1, *[1] * (new[name].ndim - 1))
                new[name] = np.broadcast_to(v, new[name].shape).astype(np.float32)
        return new

    def to_units(self, action: Any) -> np.ndarray:
        """Action in physical units (``metadata["action_units"]``): action x scale."""
        return np.asarray(action, np.float32) * self._scale

    # --- adapting ------------------------------------------------------------------------

    def adapt(self, state: State | None, episodes: list[dict[str, Any]]) -> State | None:
        """New state after the finished episodes (oldest first) of the current task.

        Raises:
            BundleInputError: no episodes, a missing field, wrong shapes, NaN, too long.
        """
        if not self.adapts:
            return state
        if not episodes:
            raise BundleInputError("adapt() needs at least one finished episode")
        if "adapt" not in self.graphs:
            return self._grip_search(state, episodes)
        g = self.graphs["adapt"]
        eps = [self._episode(ep, i) for i, ep in enumerate(episodes)]
        members = eps[0]["obs"].shape[0]
        if any(e["obs"].shape[0] != members for e in eps):
            raise BundleInputError("every episode must have the same number of members")
        base = self.init_state(members) if self.adaptation.get("restart") else state
        if base is None:
            raise BundleInputError("pass the state from init_state() or a previous adapt()")
        feed: dict[str, np.ndarray] = {}
        for name in g.inputs:
            if name == "advantages":
                feed[name] = self._advantages(eps, base)
            elif name in EPISODE_FIELDS:
                if name not in eps[0]:
                    raise BundleInputError(f"adapt() needs the episodes' {name!r}")
                feed[name] = np.concatenate([e[name] for e in eps], axis=1)
            elif name in base:
                feed[name] = base[name]
            else:
                raise BundleError(f"adapt graph input {name!r} is neither a field nor state")
        outs = g.session.run(None, feed)
        new = dict(state or base)
        for name, v in zip(g.outputs, outs, strict=True):
            if not np.isfinite(v).all():
                raise ActionError(f"adaptation produced non-finite {name!r}; state kept")
            new[name.removeprefix("next.")] = v
        return new

    def _grip_search(self, state: State | None, episodes: list[dict[str, Any]]) -> State:
        """The ``grip_search`` adaptation: the next squeeze per member from each episode's
        outcome flags (``lifted``, ``crushed`` and, with ``retry_misses``, ``gripped``;
        with ``keep_raised``, ``raised``: the object got to the lift height),
        replayed from the start grip (:func:`metagrasp.grip_search.next_grip`; the grips
        tried are a function of the outcomes, so only these are needed)."""
        fields = self.adaptation["episode_fields"]
        flags = []
        for i, ep in enumerate(episodes):
            missing = [k for k in fields if k not in ep]
            if missing:
                raise BundleInputError(
                    f"episode {i} lacks {missing}: this bundle searches the grip from each "
                    f"episode's {fields} outcome (True/False per member)"
                )
            row = []
            for k in fields:
                v = np.asarray(ep[k], np.float64).reshape(-1)
                if not np.isin(v, (0.0, 1.0)).all():
                    raise BundleInputError(f"episode {i}: {k} must be True/False, got {v}")
                row.append(v.astype(bool))
            flags.append(row)
        members = len(flags[0][0])
        if any(len(f) != members for row in flags for f in row):
            raise BundleInputError("every episode must have the same number of members")
        s = self.adaptation["settings"]
        start, lo, hi = float(s["start_n"]), float(s["low_n"]), float(s["high_n"])
        kw = {
            "retry_drops": bool(s.get("retry_drops", False)),  # absent before 2026-12-02
            "keep_raised": int(s.get("keep_raised", 0)),  # absent before 2026-12-03
            "raised_nudge": float(s.get("raised_nudge", 1.0)),  # absent before 2026-12-03 21:00
        }
        # The rules read (lifted, crushed[, gripped]); ``raised`` goes beside them.
        at = fields.index("raised") if "raised" in fields else None
        if s.get("rule", "bisect") == "prior":
            windows = np.asarray(s["windows"], np.float64)
            fail = float(s["fail_rate"])

            def rule(tried: list, raised: list) -> float:
                return next_grip_prior(tried, windows, start, lo, hi, fail, raised=raised, **kw)
        else:

            def rule(tried: list, raised: list) -> float:
                return next_grip(tried, start, lo, hi, raised=raised, **kw)

        grips = np.empty(members)
        for m in range(members):
            tried: list[tuple[Any, ...]] = []
            raised: list[bool] = []
            grip = start
            for row in flags:
                tried.append((grip, *(bool(f[m]) for j, f in enumerate(row) if j != at)))
                raised.append(at is not None and bool(row[at][m]))
                grip = rule(tried, raised)
            grips[m] = grip
        new = dict(state if state is not None else self.init_state(members))
        new["grip"] = grips.reshape(members, 1).astype(np.float32)
        return new

    def _episode(self, ep: dict[str, Any], i: int) -> dict[str, np.ndarray]:
        """One episode, validated, with a member dim and padded to the episode length."""
        need = self.adaptation.get("episode_fields", ["obs", "actions", "rewards"])
        missing = [k for k in need if k not in ep]
        if missing:
            raise BundleInputError(f"episode {i} lacks {missing}; adapt() needs {need}")
        obs = np.asarray(ep["obs"], np.float32)
        lead = obs.shape[:-1]
        if obs.ndim == 2:
            lead = (1, *lead)
        if len(lead) != 2 or obs.shape[-1] != self.obs_dim:
            raise BundleInputError(
                f"episode {i}: obs has shape {obs.shape}; need (T, {self.obs_dim})"
            )
        m, t = lead
        if t > self.episode_length:
            raise BundleInputError(
                f"episode {i} has {t} steps; this bundle's episodes last at most "
                f"{self.episode_length} steps"
            )
        widths = {"obs": self.obs_dim, "next_obs": self.obs_dim, "actions": self.act_dim}
        out: dict[str, np.ndarray] = {}
        for name in EPISODE_FIELDS:
            if name not in ep:
                continue
            shape = (m, t, widths[name]) if name in widths else (m, t)
            v = np.asarray(ep[name], np.float32)
            if v.size != int(np.prod(shape)):
                raise BundleInputError(
                    f"episode {i}: {name} has shape {v.shape}; need {shape[1:]} for {t} steps"
                )
            v = v.reshape(shape)
            if not np.isfinite(v).all():
                raise BundleInputError(f"episode {i}: {name} has NaN/inf")
            pad = np.zeros((m, self.episode_length, *shape[2:]), np.float32)
            pad[:, :t] = v
            out[name] = pad
        if "mask" not in out:
            out["mask"] = np.zeros((m, self.episode_length), np.float32)
            out["mask"][:, :t] = 1.0
        return out

    def _advantages(self, eps: list[dict[str, np.ndarray]], base: State) -> np.ndarray:
        """GAE per episode under the critic at ``base``, normalised per member (float32)."""
        spec = self.adaptation["advantages"]
        critic = self.graphs["critic"]
        extra = {k: base[k] for k in critic.inputs if k != "obs"}
        parts = []
        for e in eps:
            v, nv = (
                critic.session.run(["value"], {"obs": e[k], **extra})[0]
                for k in ("obs", "next_obs")
            )
            parts.append(
                gae(e["rewards"], v, nv, e["dones"], e["mask"], spec["gamma"], spec["lambda"])
            )
        adv = np.concatenate(parts, axis=1)
        mask = np.concatenate([e["mask"] for e in eps], axis=1)
        if spec.get("normalize", "member") == "member":
            count = np.maximum(mask.sum(1, keepdims=True), np.float32(1.0))
            mean = (adv * mask).sum(1, keepdims=True) / count
            var = (((adv - mean) * mask) ** 2).sum(1, keepdims=True) / count
            adv = (adv - mean) / np.sqrt(var + np.float32(1e-8)) * mask
        return adv.astype(np.float32)


def gae(
    rewards: np.ndarray,
    values: np.ndarray,
    next_values: np.ndarray,
    dones: np.ndarray,
    mask: np.ndarray,
    gamma: float,
    lam: float,
) -> np.ndarray:
    """Generalised advantage estimation over padded episodes ``(M, T)``, float32.

    The recursion of :func:`metagrasp.policies.networks.gae`, step for step: the next
    value bootstraps unless the step terminated, and the trace stops at the episode's end.
    """
    # Constants rounded to float32 as torch rounds Python scalars (gamma * lam in double).
    g, gl = np.float32(gamma), np.float32(gamma * lam)
    m, horizon = rewards.shape
    adv = np.zeros_like(rewards)
    last = np.zeros(m, np.float32)
    zero = np.zeros(m, np.float32)
    for t in reversed(range(horizon)):
        cont = mask[:, t + 1] if t + 1 < horizon else zero
        delta = rewards[:, t] + g * next_values[:, t] * (1 - dones[:, t]) - values[:, t]
        last = delta + gl * cont * last
        adv[:, t] = last * mask[:, t]
    return adv
