"""Export graphs of the context-based meta-learners: PEARL's posterior and RL²'s step.

* PEARL (:mod:`metagrasp.policies.pearl`): state ``z`` (the posterior mean the policy
  acts with; the prior mean 0 before any episode, as ``PEARL.act`` with
  ``deterministic=True``) and ``z_var`` (the posterior variance, for a device that wants
  posterior sampling: draw ``z + sqrt(z_var) * N(0, I)`` in numpy once per episode and
  pass it as the state's ``z``). ``policy``: ``obs, z -> action`` (the tanh-squashed
  SAC actor's mean action; no Gaussian head, its exploration is squashed, so the
  bundle's exploration is ``none``). ``adapt``: the context encoder over every
  transition of the task's episodes so far (``obs, actions, rewards, next_obs, mask ->
  next.z, next.z_var``), restarting from the prior, as ``PEARL.adapt``.
* RL² (:mod:`metagrasp.policies.rl2`): state ``hidden``, ``prev_action``,
  ``prev_reward``, ``prev_done``. ``policy``: the single GRU step
  ``obs, prev_action, prev_reward, prev_done, hidden -> action, next.hidden,
  next.prev_action`` (the action clipped to [-1, 1], which is also what training feeds
  back as the previous action). The runtime's ``observe(state, reward, done)`` writes
  the other two; ``done`` must be 1 on the last step of every episode (terminated *or*
  timed out): that is RL²'s episode-boundary flag. No adapt graph: the hidden state
  carries across the episodes of a task and ``init_state()`` starts a new one.

Every graph is checked against the algorithm's own code (``PEARL.posterior`` and
``PEARL.policy``; ``RL2Net.forward``).
"""

from __future__ import annotations

import copy
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from torch import nn

from metagrasp.export.modules import Normalizer, _copy_mlp
from metagrasp.export.plan import GraphSpec
from metagrasp.policies.pearl import MIN_VAR, product_of_gaussians

# --- PEARL ------------------------------------------------------------------------------


class LatentSquashedPolicy(nn.Module):
    """``obs, z`` -> PEARL's deterministic action ``tanh(mu(norm(obs), z))``."""

    def __init__(self, policy: nn.Module) -> None:
        super().__init__()
        self.norm = Normalizer(policy.norm)
        self.body = _copy_mlp(policy.body)

    def forward(self, obs: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        mu, _ = self.body(torch.cat([self.norm(obs), z], -1)).chunk(2, -1)
        return torch.clamp(torch.tanh(mu), -1.0, 1.0)


class PosteriorEncoder(nn.Module):
    """PEARL's context encoder: padded transitions -> posterior ``(mean, var)``.

    Actions are clipped to [-1, 1] first (what the env executed; ``PEARL.posterior``
    does the same), so a device may record the commanded or the clipped action.
    """

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.norm = Normalizer(encoder.norm)
        self.rew_norm = Normalizer(encoder.rew_norm)
        self.net = _copy_mlp(encoder.net)
        self.latent_dim = int(encoder.latent_dim)
        self.use_next_obs = bool(encoder.use_next_obs)

    def forward(self, obs, actions, rewards, *rest: torch.Tensor) -> tuple[torch.Tensor, ...]:
        # rest: (next_obs, mask), or (mask,) for an encoder without s' (an unused graph
        # input would be dropped by the tracer, so the graph does not take one).
        mask = rest[-1]
        parts = [self.norm(obs), torch.clamp(actions, -1.0, 1.0), self.rew_norm(rewards[..., None])]
        if self.use_next_obs:
            parts.append(self.norm(rest[0]))
        mu, raw = self.net(torch.cat(parts, -1)).split(self.latent_dim, -1)
        var = nn.functional.softplus(raw).clamp(min=MIN_VAR)
        return product_of_gaussians(mu, var, mask)


def pearl_graphs(algo: Any) -> list[GraphSpec]:
    """PEARL's policy and posterior graphs (see the module docstring)."""
    o, a, t = algo.spec.obs_dim, algo.spec.act_dim, algo.spec.max_steps
    lat = algo.config.latent_dim
    policy = LatentSquashedPolicy(algo.policy)
    enc = PosteriorEncoder(algo.encoder)

    def sample_policy(n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        return {
            "obs": policy.norm.sample((n,), rng),
            "z": rng.standard_normal((n, lat)).astype(np.float32),
        }

    def ref_policy(obs: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor]:
        with torch.no_grad():
            return (algo.policy(obs, z),)

    def sample_adapt(n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        k = int(rng.integers(1, 4))
        lengths = rng.integers(0, t + 1, (n, k))  # 0: an empty episode (the prior)
        mask = (np.arange(t)[None, None] < lengths[..., None]).astype(np.float32)
        mask = mask.reshape(n, k * t)
        rew = enc.rew_norm.sample((n, k * t), rng)[..., 0]
        return {
            "obs": enc.norm.sample((n, k * t), rng),
            "actions": rng.uniform(-1.5, 1.5, (n, k * t, a)).astype(np.float32),
            "rewards": rew * mask,
            "next_obs": enc.norm.sample((n, k * t), rng),
            "mask": mask,
        }

    def ref_adapt(obs, actions, rewards, *rest) -> tuple[torch.Tensor, ...]:
        # Training's path: PEARL.posterior over the episodes (one block holding them all).
        ep = SimpleNamespace(
            obs=obs.numpy(),
            actions=actions.numpy(),
            rewards=rewards.numpy(),
            next_obs=rest[0].numpy() if enc.use_next_obs else np.zeros_like(obs.numpy()),
            mask=rest[-1].numpy(),
        )
        return algo.posterior([ep])

    fields = ("obs", "actions", "rewards", "next_obs", "mask")
    if not enc.use_next_obs:
        fields = ("obs", "actions", "rewards", "mask")
    shapes = {"obs": (1, t, o), "actions": (1, t, a), "next_obs": (1, t, o)}
    return [
        GraphSpec(
            role="policy",
            module=policy,
            inputs={"obs": torch.zeros(1, o), "z": torch.zeros(1, lat)},
            outputs=("action",),
            dynamic_axes={k: {0: "n"} for k in ("obs", "z", "action")},
            sample=sample_policy,
            reference=ref_policy,
            quantizable=True,
        ),
        GraphSpec(
            role="adapt",
            module=enc,
            inputs={f: torch.ones(shapes.get(f, (1, t))) for f in fields},
            outputs=("next.z", "next.z_var"),
            dynamic_axes={k: {0: "m", 1: "b"} for k in fields}
            | {"next.z": {0: "m"}, "next.z_var": {0: "m"}},
            sample=sample_adapt,
            reference=ref_adapt,
        ),
    ]


# --- RL² --------------------------------------------------------------------------------


class RecurrentStep(nn.Module):
    """RL²'s policy step (the critic is left out): see the module docstring."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.norm = Normalizer(net.norm)
        self.rew_norm = Normalizer(net.rew_norm)
        self.embed = _copy_mlp(net.embed)
        self.gru = copy.deepcopy(net.gru).float().requires_grad_(False)
        self.mu = copy.deepcopy(net.mu).float().requires_grad_(False)

    def forward(self, obs, prev_action, prev_reward, prev_done, hidden) -> tuple[torch.Tensor, ...]:
        x = torch.cat([self.norm(obs), prev_action, self.rew_norm(prev_reward), prev_done], -1)
        out, h = self.gru(self.embed(x)[:, None], hidden[None])
        action = torch.clamp(self.mu(out[:, 0]), -1.0, 1.0)
        return action, h[0], action


def rl2_graphs(algo: Any) -> list[GraphSpec]:
    """RL²'s single-step policy graph (see the module docstring)."""
    net, o, a = algo.net, algo.spec.obs_dim, algo.spec.act_dim
    hid = algo.config.gru_size
    step = RecurrentStep(net)
    state = {
        "prev_action": torch.zeros(1, a),
        "prev_reward": torch.zeros(1, 1),
        "prev_done": torch.zeros(1, 1),
        "hidden": torch.zeros(1, hid),
    }

    def sample(n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        return {
            "obs": step.norm.sample((n,), rng),
            "prev_action": rng.uniform(-1.0, 1.0, (n, a)).astype(np.float32),
            "prev_reward": step.rew_norm.sample((n,), rng),
            "prev_done": (rng.random((n, 1)) < 0.3).astype(np.float32),
            "hidden": rng.uniform(-1.0, 1.0, (n, hid)).astype(np.float32),
        }

    def reference(obs, prev_action, prev_reward, prev_done, hidden) -> tuple[torch.Tensor, ...]:
        with torch.no_grad():
            mu, h = algo.step(obs, prev_action, prev_reward, prev_done, hidden)
            action = torch.clamp(mu, -1.0, 1.0)
            return action, h, action

    names = ("obs", *state, "action", "next.hidden", "next.prev_action")
    return [
        GraphSpec(
            role="policy",
            module=step,
            inputs={"obs": torch.zeros(1, o), **state},
            outputs=("action", "next.hidden", "next.prev_action"),
            dynamic_axes={k: {0: "n"} for k in names},
            sample=sample,
            reference=reference,
            quantizable=True,
        )
    ]
