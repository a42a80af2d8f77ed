"""The actor-critic shared by every on-policy algorithm, with its observation normalizer.

The actor is the functional Gaussian tanh-MLP of :mod:`metagrasp.policies.functional`
held in an ``nn.ParameterDict``, so the same parameters serve plain PPO (no context),
CAVIA (a context vector as extra input), ANIL (a per-task last layer) and the exporter.
The critic is a separate MLP (value functions are never adapted). Inputs are normalised
by a running mean/std kept as buffers, so they live in checkpoints and get baked into
exports.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from metagrasp.policies import functional as fn


class RunningNorm(nn.Module):
    """Running mean and variance of inputs (parallel Welford), clipped normalisation."""

    def __init__(self, dim: int, clip: float = 10.0, eps: float = 1e-8) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim, dtype=torch.float64))
        self.register_buffer("var", torch.ones(dim, dtype=torch.float64))
        self.register_buffer("count", torch.tensor(eps, dtype=torch.float64))
        self.clip = clip

    @torch.no_grad()
    def update(self, x: torch.Tensor | np.ndarray) -> None:
        """Fold a batch ``(..., dim)`` into the statistics."""
        x = torch.as_tensor(x, dtype=torch.float64).to(self.mean.device)
        x = x.reshape(-1, self.mean.numel())
        if x.shape[0] == 0:
            return
        b_mean, b_var, b_n = x.mean(0), x.var(0, unbiased=False), x.shape[0]
        delta = b_mean - self.mean
        total = self.count + b_n
        self.mean += delta * b_n / total
        m2 = self.var * self.count + b_var * b_n + delta**2 * self.count * b_n / total
        self.var.copy_(m2 / total)
        self.count.copy_(total)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        std = torch.sqrt(self.var + 1e-8).to(x.dtype)
        return torch.clamp((x - self.mean.to(x.dtype)) / std, -self.clip, self.clip)


@torch.no_grad()
def load_widened(dst: nn.Sequential, src: nn.Sequential, at: int, extra: int) -> None:
    """Copy the MLP ``src`` into ``dst``, whose first layer has ``extra`` more inputs.

    The new inputs are inserted at column ``at`` of the first layer and get zero
    weights, so ``dst`` computes exactly what ``src`` does whatever their values
    (policy expansion: an oracle seeded from a trained DR network).

    Raises:
        ValueError: the two networks differ in anything but those input columns.
    """
    src_state, dst_state = src.state_dict(), dst.state_dict()
    first = next(k for k in src_state if k.endswith("weight"))
    if src_state.keys() != dst_state.keys():
        raise ValueError("the networks have different layers")
    for key, value in src_state.items():
        if key == first:
            want = (value.shape[0], value.shape[1] + extra)
            if dst_state[key].shape != want:
                got = tuple(dst_state[key].shape)
                raise ValueError(f"{key}: expected {tuple(want)}, got {got}")
            value = torch.cat(
                [value[:, :at], value.new_zeros(value.shape[0], extra), value[:, at:]], 1
            )
        elif dst_state[key].shape != value.shape:
            raise ValueError(f"{key}: {tuple(dst_state[key].shape)} != {tuple(value.shape)}")
        dst_state[key].copy_(value)


def mlp(sizes: tuple[int, ...], out_gain: float = 1.0) -> nn.Sequential:
    """Tanh MLP with orthogonal init (CleanRL's PPO)."""
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        lin = nn.Linear(sizes[i], sizes[i + 1])
        last = i == len(sizes) - 2
        nn.init.orthogonal_(lin.weight, out_gain if last else np.sqrt(2))
        nn.init.zeros_(lin.bias)
        layers.append(lin)
        if not last:
            layers.append(nn.Tanh())
    return nn.Sequential(*layers)


class ActorCritic(nn.Module):
    """Gaussian policy (functional params) + value MLP + observation normalizer.

    Args:
        obs_dim: observation size (after any oracle concatenation).
        act_dim: action size.
        hidden: hidden layer widths of actor and critic.
        ctx_dim: CAVIA context size (0 = none); the critic sees the context too.
        log_std_init: initial log standard deviation of the actions.
        seed: seed of the initial weights.
    """

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        hidden: tuple[int, ...] = (64, 64),
        ctx_dim: int = 0,
        log_std_init: float = -0.5,
        seed: int = 0,
    ) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        params = fn.init_policy_params(obs_dim, act_dim, hidden, ctx_dim, log_std_init, gen)
        self.actor = nn.ParameterDict({k: nn.Parameter(v) for k, v in params.items()})
        torch.manual_seed(seed + 1)
        self.critic = mlp((obs_dim + ctx_dim, *hidden, 1))
        self.norm = RunningNorm(obs_dim)
        self.obs_dim, self.act_dim, self.ctx_dim = obs_dim, act_dim, ctx_dim

    @property
    def device(self) -> torch.device:
        """Where the parameters are (``run.device``; numpy inputs are moved here)."""
        return self.actor["log_std"].device

    @property
    def params(self) -> dict[str, torch.Tensor]:
        """The actor's parameters as a plain dict (the functional API's ``ParamDict``)."""
        return dict(self.actor.items())

    def mean(self, obs_n: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """Mean action for *normalised* observations."""
        return fn.policy_mean(self.params, obs_n, context)

    def log_prob(
        self, obs_n: torch.Tensor, actions: torch.Tensor, context: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Log-density of actions for *normalised* observations."""
        return fn.log_prob(self.params, obs_n, actions, context)

    def value(self, obs_n: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """State value for *normalised* observations."""
        x = obs_n if context is None else torch.cat([obs_n, _expand(context, obs_n)], -1)
        return self.critic(x).squeeze(-1)

    @torch.no_grad()
    def sample(
        self,
        obs: np.ndarray,
        context: torch.Tensor | None = None,
        deterministic: bool = False,
        generator: torch.Generator | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Actions, their log-probs and values for raw observations (numpy in, numpy out).

        Actions are the Gaussian's samples, not clipped here: the env clips to [-1, 1]
        and the log-prob must be of what was sampled (CleanRL's convention).
        """
        obs_n = self.norm(torch.as_tensor(obs, dtype=torch.float32).to(self.device))
        return self.sample_normalised(obs_n, context, deterministic, generator)

    @torch.no_grad()
    def sample_normalised(
        self,
        obs_n: torch.Tensor,
        context: torch.Tensor | None = None,
        deterministic: bool = False,
        generator: torch.Generator | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`sample` for observations already normalised (by another network's norm)."""
        mu = self.mean(obs_n, context)
        std = torch.exp(self.actor["log_std"])
        # Noise from the (CPU) generator, then moved: a GPU learner draws the CPU's stream.
        a = (
            mu
            if deterministic
            else mu + std * torch.randn(mu.shape, generator=generator).to(mu.device)
        )
        logp = self.log_prob(obs_n, a, context)
        v = self.value(obs_n, context)
        return a.cpu().numpy(), logp.cpu().numpy(), v.cpu().numpy()


def _expand(context: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Broadcast a per-member context (n, c) over the batch dims of ``like``."""
    while context.dim() < like.dim():
        context = context.unsqueeze(-2)
    return context.expand(*like.shape[:-1], context.shape[-1])


def gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    next_values: torch.Tensor,
    dones: torch.Tensor,
    mask: torch.Tensor,
    gamma: float,
    lam: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over padded episodes ``(n, T)``.

    ``next_values`` is V(next_obs) at every step: it bootstraps truncated episodes at
    their last step; ``dones`` (terminations) zero it. Masked steps get zero advantage.

    Returns:
        (advantages, returns), both (n, T).
    """
    n, horizon = rewards.shape
    adv = torch.zeros_like(rewards)
    last = rewards.new_zeros(n)
    for t in reversed(range(horizon)):
        # The next step continues this episode only if it is valid (masked = ended).
        cont = mask[:, t + 1] if t + 1 < horizon else rewards.new_zeros(n)
        delta = rewards[:, t] + gamma * next_values[:, t] * (1 - dones[:, t]) - values[:, t]
        last = delta + gamma * lam * cont * last
        adv[:, t] = last * mask[:, t]
    return adv, (adv + values) * mask


@torch.no_grad()
def critic_gae(
    net: ActorCritic,
    obs: np.ndarray,
    next_obs: np.ndarray,
    ep: Any,
    gamma: float,
    lam: float,
    context: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`gae` of an episode block under ``net``'s critic (raw inputs, normalised here).

    ``obs``/``next_obs`` are the network inputs of ``ep`` (the oracle appends the task
    vector); rewards, terminations and mask come from ``ep``.
    """
    dev = net.device
    values = net.value(net.norm(torch.as_tensor(obs).to(dev)), context)
    next_values = net.value(net.norm(torch.as_tensor(next_obs).to(dev)), context)
    return gae(
        torch.as_tensor(ep.rewards).to(dev),
        values,
        next_values,
        torch.as_tensor(ep.dones).to(dev),
        torch.as_tensor(ep.mask).to(dev),
        gamma,
        lam,
    )
