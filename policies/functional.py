"""The Gaussian tanh-MLP policy and the MAML-family inner loop as plain functions.

Parameters live in a flat ``ParamDict`` (``"w0", "b0", ..., "w_out", "b_out", "log_std"``;
weights are ``(in, out)`` so a layer is ``x @ w + b``) rather than in an ``nn.Module``, so
that the meta-learners can run the same network under per-task state without copying
modules:

* CAVIA adapts a context vector concatenated to the (normalised) observation;
* ANIL adapts a per-member last layer ``adapted = {"w_out": (M, H, A), "b_out": (M, A)}``.

``M`` is the number of members (tasks) adapted at once, ``B`` the samples per member.
:func:`inner_update` differentiates with ``torch.autograd.grad`` (and can keep the graph
for second-order meta-gradients); :func:`inner_grad_explicit` computes the same gradient
by hand-written backprop so the whole adaptation step can be traced by ``torch.onnx``,
which cannot trace ``torch.autograd``.
"""

from __future__ import annotations

import math

import torch

ParamDict = dict[str, torch.Tensor]
LearningRate = float | torch.Tensor | dict[str, float | torch.Tensor]

_LOG_2PI = math.log(2.0 * math.pi)


def init_policy_params(
    obs_dim: int,
    act_dim: int,
    hidden: tuple[int, ...] = (64, 64),
    ctx_dim: int = 0,
    log_std_init: float = -0.5,
    generator: torch.Generator | None = None,
) -> ParamDict:
    """Fresh policy parameters, initialised as in CleanRL's PPO.

    Hidden weights are orthogonal with gain sqrt(2), the output weights orthogonal with gain
    0.01 (near-zero initial mean actions), biases zero.

    Args:
        obs_dim: observation size.
        act_dim: action size.
        hidden: hidden layer widths (may be empty: a linear policy).
        ctx_dim: size of the context appended to the observation (0 = none).
        log_std_init: initial log standard deviation of every action dimension.
        generator: source of randomness, for reproducible initial weights.

    Returns:
        The float32 parameters ``"w0", "b0", ..., "w_out", "b_out", "log_std"``.
    """
    sizes = (obs_dim + ctx_dim, *hidden)
    params: ParamDict = {}
    for i in range(len(hidden)):
        params[f"w{i}"] = _orthogonal(sizes[i], sizes[i + 1], math.sqrt(2.0), generator)
        params[f"b{i}"] = torch.zeros(sizes[i + 1])
    params["w_out"] = _orthogonal(sizes[-1], act_dim, 0.01, generator)
    params["b_out"] = torch.zeros(act_dim)
    params["log_std"] = torch.full((act_dim,), float(log_std_init))
    return params


def _orthogonal(n_in: int, n_out: int, gain: float, generator: torch.Generator | None):
    # nn.init.orthogonal_ on an (out, in) weight, transposed to this module's (in, out) layout,
    # so the initial network equals an nn.Linear stack built the CleanRL way.
    w = torch.empty(n_out, n_in)
    torch.nn.init.orthogonal_(w, gain=gain, generator=generator)
    return w.t().contiguous()


def _n_hidden(params: ParamDict) -> int:
    n = 0
    while f"w{n}" in params:
        n += 1
    return n


def _expand(context: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Broadcast a context over the batch dims of ``like``: ``(M, C)`` over ``(M, B, D)``."""
    # Inserting at -2 keeps the member dim leading, which plain right-aligned broadcasting
    # would get wrong ((M, C) against (M, B, D) would align M with B).
    while context.dim() < like.dim():
        context = context.unsqueeze(-2)
    return context.expand(*like.shape[:-1], context.shape[-1])


def _reduce_like(grad: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
    """Adjoint of :func:`_expand`: sum a per-sample gradient back to the context's shape."""
    while grad.dim() > context.dim():
        grad = grad.sum(-2)
    for d in range(grad.dim()):
        if context.shape[d] == 1 and grad.shape[d] != 1:
            grad = grad.sum(d, keepdim=True)
    return grad


def _forward(
    params: ParamDict,
    obs: torch.Tensor,
    context: torch.Tensor | None,
    adapted: ParamDict | None,
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Activations ``[x, h_0, ..., h_{L-1}]`` (``x`` the network input) and the mean."""
    x = obs if context is None else torch.cat([obs, _expand(context, obs)], -1)
    if x.shape[-1] != params[_first_weight(params)].shape[0]:
        raise ValueError(
            f"policy input has {x.shape[-1]} features (obs {obs.shape[-1]} + context), "
            f"the parameters expect {params[_first_weight(params)].shape[0]}"
        )
    acts = [x]
    for i in range(_n_hidden(params)):
        acts.append(torch.tanh(acts[-1] @ params[f"w{i}"] + params[f"b{i}"]))
    h = acts[-1]
    if adapted is None:
        return acts, h @ params["w_out"] + params["b_out"]
    # Each member m applies its own last layer to its own samples: one batched matmul over
    # the flattened sample dims, rather than a Python loop over members.
    w, b = adapted["w_out"], adapted["b_out"]
    if h.shape[0] != w.shape[0]:
        raise ValueError(f"obs has {h.shape[0]} members, adapted last layer {w.shape[0]}")
    flat = h.reshape(h.shape[0], -1, h.shape[-1])
    mu = torch.baddbmm(b.unsqueeze(1), flat, w)
    return acts, mu.reshape(*h.shape[:-1], w.shape[-1])


def _first_weight(params: ParamDict) -> str:
    return "w0" if "w0" in params else "w_out"


def policy_mean(
    params: ParamDict,
    obs: torch.Tensor,
    context: torch.Tensor | None = None,
    adapted: ParamDict | None = None,
) -> torch.Tensor:
    """Mean action of the Gaussian policy.

    Args:
        params: policy parameters.
        obs: normalised observations ``(..., obs_dim)``; ``(M, ..., obs_dim)`` with ``adapted``.
        context: ``(..., ctx_dim)`` matching ``obs``, or per member ``(M, ctx_dim)``
            broadcast over the sample dims; None when the policy has no context.
        adapted: optional per-member last layer ``{"w_out": (M, H, A), "b_out": (M, A)}``
            replacing ``params["w_out"], params["b_out"]`` (ANIL).

    Returns:
        Mean actions ``(..., act_dim)``.
    """
    return _forward(params, obs, context, adapted)[1]


def log_prob(
    params: ParamDict,
    obs: torch.Tensor,
    actions: torch.Tensor,
    context: torch.Tensor | None = None,
    adapted: ParamDict | None = None,
) -> torch.Tensor:
    """Log-density of ``actions`` under the diagonal Gaussian ``N(mean, exp(log_std)^2)``.

    Args:
        params: policy parameters.
        obs: normalised observations, as in :func:`policy_mean`.
        actions: ``(..., act_dim)``.
        context: optional context, as in :func:`policy_mean`.
        adapted: optional per-member last layer, as in :func:`policy_mean`.

    Returns:
        ``(...)``, summed over action dimensions.
    """
    mu = policy_mean(params, obs, context, adapted)
    log_std = params["log_std"]
    z = (actions - mu) * torch.exp(-log_std)
    return -0.5 * (z**2).sum(-1) - log_std.sum() - 0.5 * mu.shape[-1] * _LOG_2PI


def _loss_weights(batch: dict[str, torch.Tensor], like: torch.Tensor) -> torch.Tensor:
    """``c_b = -mask_b * adv_b / max(sum_b mask_b, 1)``: L_m = sum_b c_b logp_b."""
    mask = batch["mask"].to(like.dtype)
    # The floor of 1 keeps a member with no valid samples at loss and gradient 0, not NaN.
    count = mask.sum(-1, keepdim=True).clamp(min=1.0)
    return -mask * batch["advantages"].to(like.dtype) / count


def inner_loss(
    params: ParamDict,
    batch: dict[str, torch.Tensor],
    context: torch.Tensor | None = None,
    adapted: ParamDict | None = None,
) -> torch.Tensor:
    """Per-member policy-gradient loss ``L_m = -sum_b mask*logp*adv / max(sum_b mask, 1)``.

    Args:
        params: policy parameters.
        batch: ``"obs"`` (M, B, obs_dim), ``"actions"`` (M, B, A), ``"advantages"`` (M, B),
            ``"mask"`` (M, B) in {0, 1} (0 marks padding).
        context: optional per-member context ``(M, ctx_dim)`` or ``(M, B, ctx_dim)``.
        adapted: optional per-member last layer.

    Returns:
        ``(M,)``, not summed: members share no adaptable state, so the gradient of the sum
        w.r.t. member m's context or last layer is member m's own gradient.
    """
    logp = log_prob(params, batch["obs"], batch["actions"], context, adapted)
    return (_loss_weights(batch, logp) * logp).sum(-1)


def _adaptables(context: torch.Tensor | None, adapted: ParamDict | None) -> ParamDict:
    state: ParamDict = {}
    if context is not None:
        state["context"] = context
    if adapted is not None:
        state["w_out"], state["b_out"] = adapted["w_out"], adapted["b_out"]
    if not state:
        raise ValueError("nothing to adapt: pass a context (CAVIA) and/or adapted (ANIL)")
    return state


def _step(state: ParamDict, grads: ParamDict, lr: LearningRate) -> ParamDict:
    out = {}
    for name, value in state.items():
        if isinstance(lr, dict):
            if name not in lr:
                raise KeyError(f"no inner learning rate for {name!r} (got {sorted(lr)})")
            rate = lr[name]
        else:
            rate = lr
        # A tensor rate broadcasts against the parameter (scalar, or per-coordinate as in
        # Meta-SGD, e.g. (ctx_dim,) over (M, ctx_dim)); the outer loop may learn it.
        out[name] = value - rate * grads[name]
    return out


def _split(state: ParamDict) -> tuple[torch.Tensor | None, ParamDict | None]:
    adapted = {"w_out": state["w_out"], "b_out": state["b_out"]} if "w_out" in state else None
    return state.get("context"), adapted


def inner_update(
    params: ParamDict,
    batch: dict[str, torch.Tensor],
    context: torch.Tensor | None = None,
    adapted: ParamDict | None = None,
    lr: LearningRate = 0.1,
    steps: int = 1,
    create_graph: bool = False,
) -> tuple[torch.Tensor | None, ParamDict | None]:
    """Gradient-descent steps on ``sum_m L_m`` w.r.t. the adaptable state only.

    Args:
        params: shared policy parameters (not updated).
        batch: as in :func:`inner_loss`.
        context: per-member context to adapt (CAVIA), or None.
        adapted: per-member last layer to adapt (ANIL), or None.
        lr: step size, a float/tensor for all, or a dict keyed by ``"context"``, ``"w_out"``,
            ``"b_out"``; tensors (possibly learnable, per coordinate) broadcast.
        steps: number of gradient steps.
        create_graph: keep the graph of the gradients so that an outer loss can be
            differentiated through the update (second-order MAML). Without it the returned
            state still depends on its initial value and on ``lr`` (first-order MAML).

    Returns:
        ``(context, adapted)`` after the update; None for what was not given.
    """
    state = _adaptables(context, adapted)
    # Adaptation at evaluation time often runs under no_grad; the inner gradient is needed
    # regardless.
    with torch.enable_grad():
        for _ in range(steps):
            # A constant initial state (e.g. a zero context) has no graph to differentiate
            # w.r.t.; a detached leaf copy stands in for it without changing any value.
            probe = {
                k: v if v.requires_grad else v.detach().requires_grad_() for k, v in state.items()
            }
            loss = inner_loss(params, batch, *_split(probe)).sum()
            g = torch.autograd.grad(loss, list(probe.values()), create_graph=create_graph)
            state = _step(state, dict(zip(probe, g, strict=True)), lr)
    return _split(state)


def inner_grad_explicit(
    params: ParamDict,
    batch: dict[str, torch.Tensor],
    context: torch.Tensor | None = None,
    adapted: ParamDict | None = None,
) -> dict[str, torch.Tensor]:
    """The gradient of ``sum_m L_m`` w.r.t. the adaptable state, by hand-written backprop.

    Equal to ``torch.autograd.grad(inner_loss(...).sum(), ...)`` but built from ordinary
    tensor ops only, so it can be traced by ``torch.onnx`` (and differentiated again by
    autograd when the inputs require grad).

    Args:
        params: policy parameters.
        batch: as in :func:`inner_loss`.
        context: per-member context, or None.
        adapted: per-member last layer, or None.

    Returns:
        ``"context"`` (shaped like ``context``) and/or ``"w_out"``, ``"b_out"`` (shaped like
        ``adapted``'s).
    """
    _adaptables(context, adapted)  # same "nothing to adapt" check as inner_update
    acts, mu = _forward(params, batch["obs"], context, adapted)
    log_std = params["log_std"]
    # d logp / d mu = (a - mu) / sigma^2, weighted by each sample's loss coefficient.
    c = _loss_weights(batch, mu)
    g = c.unsqueeze(-1) * (batch["actions"] - mu) * torch.exp(-2.0 * log_std)  # (M, B, A)
    grads: dict[str, torch.Tensor] = {}
    h = acts[-1]
    if adapted is not None:
        flat_h = h.reshape(h.shape[0], -1, h.shape[-1])
        flat_g = g.reshape(g.shape[0], -1, g.shape[-1])
        grads["w_out"] = flat_h.transpose(1, 2) @ flat_g  # (M, H, A)
        grads["b_out"] = flat_g.sum(1)  # (M, A)
    if context is not None:
        obs_dim = batch["obs"].shape[-1]
        n = _n_hidden(params)
        weights = [params[f"w{i}"] for i in range(n)]
        if adapted is None:
            weights.append(params["w_out"])
        else:
            weights.append(adapted["w_out"])
        # Back through the layers from the mean to the input. Only the context columns
        # of the first weight matter, so that slice is taken before the last product.
        for layer in range(n, -1, -1):
            w = weights[layer] if layer > 0 else weights[layer][..., obs_dim:, :]
            if layer == n and adapted is not None:
                flat = g.reshape(g.shape[0], -1, g.shape[-1])
                g = (flat @ w.transpose(1, 2)).reshape(*g.shape[:-1], w.shape[1])
            else:
                g = g @ w.transpose(-1, -2)
            if layer > 0:
                g = g * (1.0 - acts[layer] ** 2)  # tanh' = 1 - tanh^2
        grads["context"] = _reduce_like(g, context)
    return grads


def inner_update_explicit(
    params: ParamDict,
    batch: dict[str, torch.Tensor],
    context: torch.Tensor | None = None,
    adapted: ParamDict | None = None,
    lr: LearningRate = 0.1,
    steps: int = 1,
) -> tuple[torch.Tensor | None, ParamDict | None]:
    """:func:`inner_update` with :func:`inner_grad_explicit` as the gradient (exportable).

    Args:
        params: shared policy parameters.
        batch: as in :func:`inner_loss`.
        context: per-member context to adapt, or None.
        adapted: per-member last layer to adapt, or None.
        lr: step size(s), as in :func:`inner_update`.
        steps: number of gradient steps.

    Returns:
        ``(context, adapted)`` after the update; None for what was not given.
    """
    state = _adaptables(context, adapted)
    for _ in range(steps):
        state = _step(state, inner_grad_explicit(params, batch, *_split(state)), lr)
    return _split(state)
