"""Self-contained, traceable modules for the export of the existing algorithms.

Each module copies what it needs out of the trained networks (as float32 buffers), so
it carries the observation normaliser and the action limits with it and stays valid
whatever happens to the algorithm afterwards. The builder functions return
:class:`~metagrasp.export.plan.GraphSpec` s, with the training-side reference each graph
is checked against; the algorithms' ``export_modules`` methods assemble them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from metagrasp.export.plan import GraphSpec
from metagrasp.policies import functional as fn
from metagrasp.policies.networks import ActorCritic, RunningNorm, _expand


class Normalizer(nn.Module):
    """A frozen :class:`~metagrasp.policies.networks.RunningNorm` (same arithmetic)."""

    def __init__(self, norm: RunningNorm) -> None:
        super().__init__()
        # RunningNorm computes the std in float64 and casts; so does this copy, once.
        self.register_buffer("mean", norm.mean.detach().float().clone())
        self.register_buffer("std", torch.sqrt(norm.var.detach() + 1e-8).float())
        self.clip = float(norm.clip)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.clamp((x - self.mean) / self.std, -self.clip, self.clip)

    def sample(self, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
        """Raw inputs spread over (and a little beyond) what training saw."""
        z = rng.standard_normal((*shape, self.mean.numel())) * 2.0
        return (self.mean.numpy() + z * self.std.numpy()).astype(np.float32)


def _frozen(params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().float().clone() for k, v in params.items()}


class _Params(nn.Module):
    """A parameter dict as buffers (constants in the graph, not trainable)."""

    def __init__(self, params: dict[str, torch.Tensor]) -> None:
        super().__init__()
        self.names = list(params)
        for k, v in _frozen(params).items():
            self.register_buffer(k, v)

    def as_dict(self) -> dict[str, torch.Tensor]:
        return {k: getattr(self, k) for k in self.names}


class GaussianPolicy(nn.Module):
    """``obs`` [, ``task``] [, ``context``] -> clipped mean action, mean, log std."""

    def __init__(self, net: ActorCritic, task: bool, context: bool) -> None:
        super().__init__()
        self.norm = Normalizer(net.norm)
        self.params = _Params(net.params)
        self.task, self.context = task, context

    def forward(self, obs: torch.Tensor, *extra: torch.Tensor) -> tuple[torch.Tensor, ...]:
        rest = list(extra)
        x = torch.cat([obs, rest.pop(0)], -1) if self.task else obs
        ctx = rest.pop(0) if self.context else None
        p = self.params.as_dict()
        mu = fn.policy_mean(p, self.norm(x), ctx)
        # The env clips actions to [-1, 1]; the deployed action is what the env applies.
        return torch.clamp(mu, -1.0, 1.0), mu, p["log_std"]


class Critic(nn.Module):
    """``obs (M, T, O)`` [, ``context (M, C)``] -> ``value (M, T)``."""

    def __init__(self, net: ActorCritic, context: bool) -> None:
        super().__init__()
        self.norm = Normalizer(net.norm)
        self.critic = _copy_mlp(net.critic)
        self.context = context

    def forward(self, obs: torch.Tensor, *extra: torch.Tensor) -> torch.Tensor:
        x = self.norm(obs)
        if self.context:
            x = torch.cat([x, _expand(extra[0], x)], -1)
        return self.critic(x).squeeze(-1)


def _copy_mlp(seq: nn.Sequential) -> nn.Sequential:
    import copy

    out = copy.deepcopy(seq).float()
    for p in out.parameters():
        p.requires_grad_(False)
    return out


class ContextAdapt(nn.Module):
    """CAVIA's inner loop with the explicit backward: context + transitions -> context."""

    def __init__(self, net: ActorCritic, lr: torch.Tensor, steps: int) -> None:
        super().__init__()
        self.norm = Normalizer(net.norm)
        self.params = _Params(net.params)
        self.register_buffer("lr", lr.detach().float().clone())
        self.steps = int(steps)

    def forward(
        self,
        context: torch.Tensor,
        obs: torch.Tensor,
        actions: torch.Tensor,
        advantages: torch.Tensor,
        mask: torch.Tensor,
    ) -> torch.Tensor:
        batch = {"obs": self.norm(obs), "actions": actions, "advantages": advantages}
        batch["mask"] = mask
        ctx, _ = fn.inner_update_explicit(
            self.params.as_dict(), batch, context=context, lr=self.lr, steps=self.steps
        )
        return ctx


class SquashedPolicy(nn.Module):
    """SAC's deterministic action ``tanh(mu)`` for ``obs`` [, ``task``]."""

    def __init__(self, actor: nn.Module, norm: RunningNorm, task: bool) -> None:
        super().__init__()
        self.norm = Normalizer(norm)
        self.body = _copy_mlp(actor.body)
        self.task = task

    def forward(self, obs: torch.Tensor, *extra: torch.Tensor) -> torch.Tensor:
        x = torch.cat([obs, extra[0]], -1) if self.task else obs
        mu, _ = self.body(self.norm(x)).chunk(2, -1)
        return torch.clamp(torch.tanh(mu), -1.0, 1.0)


class GripPolicy(nn.Module):
    """sac-grip's deterministic action for ``obs`` at the squeeze ``grip`` (N per pad,
    ``(N, 1)``): ``tanh`` of the mean, with a squeezing gripper value (``g > 0``)
    replaced by the command's, as :meth:`metagrasp.policies.grip_search.GripSearch.act`
    does. The command is clamped to the gripper's range before anything uses it.

    With ``fixed_grip`` (a line that never changes its grip) the graph takes ``obs``
    only, and the command's input and gripper value are constants computed as the
    training code computes them: its normaliser saw that one value, with a variance of
    zero, and would magnify any rounding difference in it ten-thousandfold.
    """

    def __init__(
        self,
        actor: nn.Module,
        norm: RunningNorm,
        gripper: int,
        force_range: tuple[float, float],
        min_fraction: float,
        fixed_grip: tuple[np.ndarray, float, float] | None = None,
        guard: dict[str, float] | None = None,
    ) -> None:
        super().__init__()
        self.norm = Normalizer(norm)
        self.body = _copy_mlp(actor.body)
        self.gripper = gripper
        self.lo, self.hi = force_range
        # encode_grip's log scale: [lo, hi] -> [-1, 1] around the geometric mean.
        self.mid = math.sqrt(self.lo * self.hi)
        self.half = math.log(math.sqrt(self.hi / self.lo))
        self.min_fraction = min_fraction
        self.guard = guard
        """``squeeze_guard``'s constants (obs indices, gripper range, held proxy), or None."""
        self.fixed = fixed_grip is not None
        if fixed_grip is not None:  # (encoded input (1, 1), gripper action, grip in N)
            self.register_buffer("fixed_input", torch.as_tensor(fixed_grip[0]).float())
            self.fixed_action = float(fixed_grip[1])
            frac = min(max(float(fixed_grip[2]) / self.hi, self.min_fraction), 1.0)
            self.register_buffer("fixed_fraction", torch.tensor(frac))

    def _command(self, obs: torch.Tensor, grip: tuple[torch.Tensor, ...]) -> tuple:
        """The network's command input, the squeeze's gripper value and its current
        limit (fraction of full)."""
        if self.fixed:
            return self.fixed_input.expand(obs.shape[0], 1), self.fixed_action, self.fixed_fraction
        g = torch.clamp(grip[0], self.lo, self.hi)
        # grip_action(g / hi): the gripper value whose current limit squeezes with g.
        frac = torch.clamp(g / self.hi, self.min_fraction, 1.0)
        cmd = torch.clamp(1.0 - torch.log(frac) / math.log(self.min_fraction), min=1e-6)
        return torch.log(g / self.mid) / self.half, cmd, frac

    def forward(self, obs: torch.Tensor, *grip: torch.Tensor) -> torch.Tensor:
        enc, cmd, frac = self._command(obs, grip)
        mu, _ = self.body(self.norm(torch.cat([obs, enc], -1))).chunk(2, -1)
        a = torch.clamp(torch.tanh(mu), -1.0, 1.0)
        i = self.gripper
        col = a[:, i : i + 1]
        squeeze = col > 0
        if self.guard is not None:  # closes_on_held_object, in the graph
            c = self.guard
            q, load, opening = (obs[:, int(c[k]) : int(c[k]) + 1] for k in ("q", "load", "opening"))
            target = c["stop"] + (-col) * (c["open"] - c["stop"])
            min_load = c["min_load"]
            if c.get("load_ratio", 0.0) > 0:  # held from that share of the command's load
                min_load = torch.clamp(c["load_ratio"] * frac, max=min_load)
            held = (load >= min_load) & (opening >= c["min_opening"])
            squeeze = squeeze | ((col <= 0) & (target < q) & held)
        col = torch.where(squeeze, torch.full_like(col, 1.0) * cmd, col)
        return torch.cat([a[:, :i], col, a[:, i + 1 :]], -1)


# --- graph specs ----------------------------------------------------------------------


def _obs_task_sampler(norm: Normalizer, obs_dim: int, task_dim: int, state: dict[str, int]) -> Any:
    def sample(n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        x = norm.sample((n,), rng)
        out = {"obs": x[:, :obs_dim]}
        if task_dim:
            out["task"] = x[:, obs_dim:]
        for name, dim in state.items():
            out[name] = rng.standard_normal((n, dim)).astype(np.float32)
        return out

    return sample


def gaussian_policy_graph(
    net: ActorCritic, obs_dim: int, task_dim: int = 0, ctx_dim: int = 0
) -> GraphSpec:
    """The policy graph of an :class:`ActorCritic` (PPO, oracles, CAVIA)."""
    module = GaussianPolicy(net, task_dim > 0, ctx_dim > 0)
    inputs = {"obs": torch.zeros(1, obs_dim)}
    if task_dim:
        inputs["task"] = torch.zeros(1, task_dim)
    if ctx_dim:
        inputs["context"] = torch.zeros(1, ctx_dim)
    dyn = {k: {0: "n"} for k in inputs} | {"action": {0: "n"}, "mean": {0: "n"}}
    state = {"context": ctx_dim} if ctx_dim else {}
    return GraphSpec(
        role="policy",
        module=module,
        inputs=inputs,
        outputs=("action", "mean", "log_std"),
        dynamic_axes=dyn,
        sample=_obs_task_sampler(module.norm, obs_dim, task_dim, state),
        quantizable=True,
    )


def critic_graph(net: ActorCritic, obs_dim: int, ctx_dim: int, horizon: int) -> GraphSpec:
    """The value graph used for on-device GAE (context-conditioned critic)."""
    module = Critic(net, ctx_dim > 0)
    inputs = {"obs": torch.zeros(1, horizon, obs_dim)}
    if ctx_dim:
        inputs["context"] = torch.zeros(1, ctx_dim)

    def sample(n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        t = 8  # rows per member: n members x 8 steps covers n x 8 inputs
        out = {"obs": module.norm.sample((n, t), rng)}
        if ctx_dim:
            out["context"] = rng.standard_normal((n, ctx_dim)).astype(np.float32)
        return out

    def reference(obs: torch.Tensor, *extra: torch.Tensor) -> tuple[torch.Tensor]:
        with torch.no_grad():
            return (net.value(net.norm(obs), extra[0] if extra else None),)

    return GraphSpec(
        role="critic",
        module=module,
        inputs=inputs,
        outputs=("value",),
        dynamic_axes={"obs": {0: "m", 1: "t"}, "context": {0: "m"}, "value": {0: "m", 1: "t"}},
        sample=sample,
        reference=reference,
    )


def context_adapt_graph(
    net: ActorCritic, lr: torch.Tensor, steps: int, obs_dim: int, act_dim: int, horizon: int
) -> GraphSpec:
    """CAVIA's adapt graph, checked against the autograd inner loop of training."""
    ctx_dim = int(lr.numel())
    module = ContextAdapt(net, lr, steps)
    inputs = {
        "context": torch.zeros(1, ctx_dim),
        "obs": torch.zeros(1, horizon, obs_dim),
        "actions": torch.zeros(1, horizon, act_dim),
        "advantages": torch.zeros(1, horizon),
        "mask": torch.ones(1, horizon),
    }

    def sample(n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        t = horizon
        lengths = rng.integers(1, t + 1, n)
        mask = (np.arange(t)[None] < lengths[:, None]).astype(np.float32)
        return {
            "context": (0.5 * rng.standard_normal((n, ctx_dim))).astype(np.float32),
            "obs": module.norm.sample((n, t), rng),
            "actions": rng.uniform(-1.5, 1.5, (n, t, act_dim)).astype(np.float32),
            "advantages": (rng.standard_normal((n, t)) * mask).astype(np.float32),
            "mask": mask,
        }

    def reference(context, obs, actions, advantages, mask) -> tuple[torch.Tensor]:
        # Training's path: the autograd inner loop of fn.inner_update, as CAVIA runs it.
        batch = {"obs": net.norm(obs), "actions": actions, "advantages": advantages}
        batch["mask"] = mask
        ctx, _ = fn.inner_update(
            {k: v.detach() for k, v in net.params.items()},
            batch,
            context=context,
            lr=lr.detach(),
            steps=steps,
        )
        return (ctx.detach(),)

    dyn = {k: {0: "m", 1: "b"} for k in ("obs", "actions", "advantages", "mask")}
    dyn |= {"context": {0: "m"}, "next.context": {0: "m"}}
    return GraphSpec(
        role="adapt",
        module=module,
        inputs=inputs,
        outputs=("next.context",),
        dynamic_axes=dyn,
        sample=sample,
        reference=reference,
    )


def squashed_policy_graph(
    actor: nn.Module, norm: RunningNorm, obs_dim: int, task_dim: int = 0
) -> GraphSpec:
    """SAC's policy graph (deterministic ``tanh`` of the mean)."""
    module = SquashedPolicy(actor, norm, task_dim > 0)
    inputs = {"obs": torch.zeros(1, obs_dim)}
    if task_dim:
        inputs["task"] = torch.zeros(1, task_dim)
    return GraphSpec(
        role="policy",
        module=module,
        inputs=inputs,
        outputs=("action",),
        dynamic_axes={k: {0: "n"} for k in inputs} | {"action": {0: "n"}},
        sample=_obs_task_sampler(module.norm, obs_dim, task_dim, {}),
        quantizable=True,
    )


def grip_policy_graph(
    module: GripPolicy, obs_dim: int, reference: Callable[..., tuple[torch.Tensor, ...]]
) -> GraphSpec:
    """sac-grip's policy graph: ``obs, grip`` -> ``action`` (``grip`` a state entry), or
    ``obs`` -> ``action`` for a fixed grip."""
    inputs = {"obs": torch.zeros(1, obs_dim)}
    if not module.fixed:
        inputs["grip"] = torch.full((1, 1), module.mid)

    def sample(n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        out = {"obs": module.norm.sample((n,), rng)[:, :obs_dim]}
        if not module.fixed:
            # Log-uniform over the gripper's range and a factor 2 beyond it (the clamp).
            lo, hi = math.log(module.lo / 2), math.log(module.hi * 2)
            out["grip"] = np.exp(rng.uniform(lo, hi, (n, 1))).astype(np.float32)
        return out

    return GraphSpec(
        role="policy",
        module=module,
        inputs=inputs,
        outputs=("action",),
        dynamic_axes={k: {0: "n"} for k in (*inputs, "action")},
        sample=sample,
        reference=reference,
        quantizable=True,
    )


# --- RMA: the history-conditioned policy and the calibration -----------------------------


def _shifted_windows(flagged: torch.Tensor, history: int) -> torch.Tensor:
    """``(B, T, C)`` -> ``(B, T, history, C)`` windows ending at each step, zero-padded.

    Built from static slices (not ``unfold``) so it traces to plain ONNX ops.
    """
    b, t, c = flagged.shape
    padded = torch.cat([torch.zeros(b, history - 1, c, dtype=flagged.dtype), flagged], 1)
    return torch.stack([padded[:, i : i + t] for i in range(history)], 2)


class RMAPolicy(nn.Module):
    """``obs, history, z, calibrated`` -> ``action, mean, log_std, next.history``.

    The window gets the newest normalised observation (with a validity flag); the latent
    is the calibrated ``z`` where ``calibrated`` is 1, else the adaptation module's
    estimate from the window, as :meth:`metagrasp.policies.rma.RMA.act` does.
    """

    def __init__(self, net: ActorCritic, adapter: nn.Sequential) -> None:
        super().__init__()
        self.norm = Normalizer(net.norm)
        self.params = _Params(net.params)
        self.adapter = _copy_mlp(adapter)

    def forward(self, obs, history, z, calibrated) -> tuple[torch.Tensor, ...]:
        obs_n = self.norm(obs)
        new = torch.cat([obs_n, torch.ones_like(obs_n[:, :1])], -1)
        window = torch.cat([history[:, 1:], new[:, None]], 1)
        est = self.adapter(window.flatten(1))
        latent = calibrated * z + (1.0 - calibrated) * est
        p = self.params.as_dict()
        mu = fn.policy_mean(p, obs_n, latent)
        return torch.clamp(mu, -1.0, 1.0), mu, p["log_std"], window


class RMACalibrate(nn.Module):
    """Reward-free calibration: the mean latent estimate over each episode's second half.

    Inputs ``history, z, calibrated`` (the unadapted state) and ``obs (M, k*T, O)``,
    ``mask (M, k*T)`` (k episodes, each padded to ``T``); outputs a fresh window, the
    calibrated latent and the flag (1 with ``freeze``, 0 with ``continuous``).
    """

    def __init__(self, net: ActorCritic, adapter: nn.Sequential, horizon: int, freeze: bool):
        super().__init__()
        self.norm = Normalizer(net.norm)
        self.adapter = _copy_mlp(adapter)
        self.horizon, self.freeze = int(horizon), bool(freeze)

    def forward(self, history, z, calibrated, obs, mask) -> tuple[torch.Tensor, ...]:
        t, h = self.horizon, history.shape[1]
        obs_n = self.norm(obs).reshape(-1, t, obs.shape[-1])  # one row per episode
        m = mask.reshape(-1, t)
        flagged = torch.cat([obs_n, torch.ones_like(obs_n[..., :1])], -1)
        est = self.adapter(_shifted_windows(flagged, h).flatten(-2))
        steps = torch.arange(t, dtype=m.dtype)[None]
        late = (steps >= 0.5 * m.sum(1, keepdim=True)).to(m.dtype) * m
        num = (est * late[..., None]).sum(1).reshape(z.shape[0], -1, z.shape[1]).sum(1)
        den = late.sum(1).reshape(z.shape[0], -1).sum(1, keepdim=True)
        flag = torch.full_like(calibrated, 1.0 if self.freeze else 0.0)
        return torch.zeros_like(history), num / torch.clamp(den, min=1.0), flag


def rma_graphs(algo: Any) -> list[GraphSpec]:
    """RMA's policy and calibration graphs, checked against the algorithm's own code."""
    from types import SimpleNamespace

    net, c, s = algo.net.ac, algo.config, algo.spec
    h, lat, o, t = c.history, c.latent_dim, s.obs_dim, s.max_steps
    policy = RMAPolicy(net, algo.adapter)
    state = {
        "history": torch.zeros(1, h, o + 1),
        "z": torch.zeros(1, lat),
        "calibrated": torch.zeros(1, 1),
    }

    def sample_state(n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        hist = rng.standard_normal((n, h, o + 1)).astype(np.float32)
        hist[..., -1] = 1.0
        return {
            "history": hist,
            "z": rng.standard_normal((n, lat)).astype(np.float32),
            "calibrated": (rng.random((n, 1)) < 0.5).astype(np.float32),
        }

    def sample_policy(n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        return {"obs": policy.norm.sample((n,), rng), **sample_state(n, rng)}

    def ref_policy(obs, history, z, calibrated) -> tuple[torch.Tensor, ...]:
        with torch.no_grad():
            window = algo._push(history, obs.numpy())
            latent = torch.where(calibrated > 0, z, algo.estimate(window))
            mu = net.mean(net.norm(obs), latent)
            return torch.clamp(mu, -1.0, 1.0), mu, net.actor["log_std"].detach(), window

    calib = RMACalibrate(net, algo.adapter, t, c.calibration == "freeze")

    def sample_calib(n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        k = int(rng.integers(1, 4))
        lengths = rng.integers(1, t + 1, (n, k))
        mask = (np.arange(t)[None, None] < lengths[..., None]).astype(np.float32)
        obs = calib.norm.sample((n, k * t), rng) * mask.reshape(n, k * t, 1)
        return {**sample_state(n, rng), "obs": obs, "mask": mask.reshape(n, k * t)}

    def ref_calib(history, z, calibrated, obs, mask) -> tuple[torch.Tensor, ...]:
        n = obs.shape[0]
        per_ep = zip(
            obs.reshape(n, -1, t, o).unbind(1), mask.reshape(n, -1, t).unbind(1), strict=True
        )
        eps = [SimpleNamespace(obs=e.numpy(), mask=mk.numpy()) for e, mk in per_ep]
        new = algo.adapt({"window": history, "z": None}, eps)
        flag = torch.full_like(calibrated, 1.0 if c.calibration == "freeze" else 0.0)
        return new["window"], new["z"], flag

    members = {"history": {0: "n"}, "z": {0: "n"}, "calibrated": {0: "n"}}
    return [
        GraphSpec(
            role="policy",
            module=policy,
            inputs={"obs": torch.zeros(1, o), **state},
            outputs=("action", "mean", "log_std", "next.history"),
            dynamic_axes={"obs": {0: "n"}, "action": {0: "n"}, "mean": {0: "n"}}
            | members
            | {"next.history": {0: "n"}},
            sample=sample_policy,
            reference=ref_policy,
            quantizable=True,
        ),
        GraphSpec(
            role="adapt",
            module=calib,
            inputs={**state, "obs": torch.zeros(1, t, o), "mask": torch.ones(1, t)},
            outputs=("next.history", "next.z", "next.calibrated"),
            dynamic_axes=members
            | {"obs": {0: "n", 1: "b"}, "mask": {0: "n", 1: "b"}}
            | {f"next.{k}": {0: "n"} for k in ("history", "z", "calibrated")},
            sample=sample_calib,
            reference=ref_calib,
        ),
    ]
