"""The functional policy and inner loop: shapes, the explicit gradient against autograd and
finite differences, second-order meta-gradients through the update, and initialisation."""

import math

import pytest
import torch

from metagrasp.policies import functional as fn

M, B, OBS, ACT, CTX, HIDDEN = 3, 5, 4, 2, 3, (8, 6)
MODES = ["context", "last", "both"]


def random_params(seed: int = 0, ctx_dim: int = CTX) -> fn.ParamDict:
    """float64 parameters perturbed away from the init (non-zero biases, a non-tiny last
    layer) so that every term of the gradient is exercised."""
    gen = torch.Generator().manual_seed(seed)
    params = fn.init_policy_params(OBS, ACT, HIDDEN, ctx_dim, generator=gen)
    return {
        k: v.double() + 0.3 * torch.randn(v.shape, generator=gen).double()
        for k, v in params.items()
    }


def random_batch(seed: int = 1) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    mask = (torch.rand(M, B, generator=gen) > 0.3).double()
    mask[0, 0] = 1.0  # at least one valid sample in member 0
    mask[-1] = 0.0  # the last member has no valid samples at all
    return {
        "obs": torch.randn(M, B, OBS, generator=gen).double(),
        "actions": torch.randn(M, B, ACT, generator=gen).double(),
        "advantages": torch.randn(M, B, generator=gen).double(),
        "mask": mask,
    }


def params_for(mode: str) -> fn.ParamDict:
    """ANIL alone runs a context-free policy."""
    return random_params(ctx_dim=0 if mode == "last" else CTX)


def adaptable(mode: str, params: fn.ParamDict, seed: int = 2, per_sample: bool = False):
    """The (context, adapted) pair for a mode, float64, with random values."""
    gen = torch.Generator().manual_seed(seed)
    context = adapted = None
    if mode in ("context", "both"):
        shape = (M, B, CTX) if per_sample else (M, CTX)
        context = 0.5 * torch.randn(shape, generator=gen).double()
    if mode in ("last", "both"):
        adapted = {
            "w_out": params["w_out"] + 0.2 * torch.randn(M, *params["w_out"].shape, generator=gen),
            "b_out": params["b_out"] + 0.2 * torch.randn(M, ACT, generator=gen),
        }
    return context, adapted


def autograd_grads(params, batch, context, adapted) -> dict[str, torch.Tensor]:
    state = {}
    if context is not None:
        state["context"] = context.clone().requires_grad_()
    if adapted is not None:
        state.update({k: v.clone().requires_grad_() for k, v in adapted.items()})
    ad = {k: state[k] for k in ("w_out", "b_out")} if adapted is not None else None
    loss = fn.inner_loss(params, batch, state.get("context"), ad).sum()
    return dict(zip(state, torch.autograd.grad(loss, list(state.values())), strict=True))


# --------------------------------------------------------------------------- shapes


def test_shapes_plain():
    params = fn.init_policy_params(OBS, ACT, HIDDEN)
    assert fn.policy_mean(params, torch.zeros(7, OBS)).shape == (7, ACT)
    assert fn.policy_mean(params, torch.zeros(2, 7, OBS)).shape == (2, 7, ACT)
    assert fn.log_prob(params, torch.zeros(7, OBS), torch.zeros(7, ACT)).shape == (7,)


def test_per_member_context_broadcasts_over_samples():
    params = random_params()
    obs = torch.randn(M, B, OBS, dtype=torch.float64)
    ctx = torch.randn(M, CTX, dtype=torch.float64)
    mu = fn.policy_mean(params, obs, ctx)
    assert mu.shape == (M, B, ACT)
    expanded = ctx.unsqueeze(1).expand(M, B, CTX)
    torch.testing.assert_close(mu, fn.policy_mean(params, obs, expanded), rtol=0, atol=0)
    # Member m really sees its own context, not member 0's.
    torch.testing.assert_close(mu[1], fn.policy_mean(params, obs[1], ctx[1].expand(B, CTX)))


def test_per_member_last_layer():
    params = random_params(ctx_dim=0)
    obs = torch.randn(M, B, OBS, dtype=torch.float64)
    _, adapted = adaptable("last", params)
    mu = fn.policy_mean(params, obs, adapted=adapted)
    assert mu.shape == (M, B, ACT)
    assert fn.log_prob(params, obs, torch.zeros(M, B, ACT), adapted=adapted).shape == (M, B)
    for m in range(M):
        own = dict(params, w_out=adapted["w_out"][m], b_out=adapted["b_out"][m])
        torch.testing.assert_close(mu[m], fn.policy_mean(own, obs[m]))
    # Extra sample dims after the member dim are flattened and restored.
    assert fn.policy_mean(params, obs.unsqueeze(2), adapted=adapted).shape == (M, B, 1, ACT)


def test_log_prob_matches_torch_normal():
    params = random_params()
    obs, ctx = torch.randn(B, OBS).double(), torch.randn(B, CTX).double()
    acts = torch.randn(B, ACT).double()
    dist = torch.distributions.Normal(fn.policy_mean(params, obs, ctx), params["log_std"].exp())
    torch.testing.assert_close(fn.log_prob(params, obs, acts, ctx), dist.log_prob(acts).sum(-1))


def test_inner_loss_is_per_member_and_zero_for_empty_member():
    params, batch = random_params(), random_batch()
    batch["mask"][1] = 0.0
    batch["mask"][1, 2] = 1.0  # one valid sample: its own loss, undiluted
    context, _ = adaptable("context", params)
    loss = fn.inner_loss(params, batch, context)
    assert loss.shape == (M,)
    assert loss[-1].item() == 0.0
    for m in range(M - 1):
        logp = fn.log_prob(params, batch["obs"][m], batch["actions"][m], context[m].expand(B, CTX))
        mask = batch["mask"][m]
        expected = -(mask * logp * batch["advantages"][m]).sum() / mask.sum()
        torch.testing.assert_close(loss[m], expected)


# --------------------------------------------------------------------------- gradients


@pytest.mark.parametrize(
    "mode, per_sample",
    [("context", False), ("last", False), ("both", False), ("context", True), ("both", True)],
)
def test_explicit_gradient_equals_autograd(mode, per_sample):
    params, batch = params_for(mode), random_batch()
    context, adapted = adaptable(mode, params, per_sample=per_sample)
    want = autograd_grads(params, batch, context, adapted)
    got = fn.inner_grad_explicit(params, batch, context, adapted)
    assert set(got) == set(want)
    for k in want:
        assert got[k].shape == want[k].shape
        assert torch.isfinite(got[k]).all()
        torch.testing.assert_close(got[k], want[k], rtol=0, atol=1e-10)
        # The member with an all-zero mask gets exactly no gradient.
        assert (got[k][-1] == 0).all()
    assert any(want[k][0].abs().max() > 1e-3 for k in want)  # not trivially zero


def test_explicit_gradient_linear_policy():
    # No hidden layers: the context feeds the (possibly per-member) last layer directly.
    gen = torch.Generator().manual_seed(3)
    params = fn.init_policy_params(OBS, ACT, (), CTX, generator=gen)
    params = {k: v.double() + 0.3 * torch.randn(v.shape, generator=gen) for k, v in params.items()}
    batch = random_batch()
    context, adapted = adaptable("both", params)
    want = autograd_grads(params, batch, context, adapted)
    got = fn.inner_grad_explicit(params, batch, context, adapted)
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=0, atol=1e-10)


@pytest.mark.parametrize("mode", MODES)
def test_inner_gradient_matches_finite_differences(mode):
    params, batch = params_for(mode), random_batch()
    context, adapted = adaptable(mode, params)
    grads = fn.inner_grad_explicit(params, batch, context, adapted)
    state = {"context": context, **(adapted or {})}
    state = {k: v for k, v in state.items() if v is not None}

    def total_loss(s):
        ad = {"w_out": s["w_out"], "b_out": s["b_out"]} if "w_out" in s else None
        return fn.inner_loss(params, batch, s.get("context"), ad).sum().item()

    gen = torch.Generator().manual_seed(4)
    eps = 1e-6
    for name, value in state.items():
        for _ in range(4):
            # Members 0 and 1 have data (member 2 is all padding, checked elsewhere).
            idx = (int(torch.randint(2, (1,), generator=gen)),) + tuple(
                int(torch.randint(n, (1,), generator=gen)) for n in value.shape[1:]
            )
            plus, minus = dict(state), dict(state)
            plus[name], minus[name] = value.clone(), value.clone()
            plus[name][idx] += eps
            minus[name][idx] -= eps
            fd = (total_loss(plus) - total_loss(minus)) / (2 * eps)
            g = grads[name][idx].item()
            assert abs(fd - g) <= 1e-5 * max(abs(g), 1e-3), (name, idx, fd, g)


# --------------------------------------------------------------------------- inner update


def outer_loss(params, lr, mode, steps, update=fn.inner_update, **kw):
    """-log_prob of a second batch under the state adapted on the first: the meta-objective."""
    batch, query = random_batch(1), random_batch(5)
    context, adapted = adaptable(mode, params)
    if adapted is not None:
        # ANIL starts every member from the shared last layer, so the outer gradient
        # reaches params["w_out"] both through the start and through the inner gradient.
        adapted = {
            "w_out": params["w_out"].expand(M, -1, -1),
            "b_out": params["b_out"].expand(M, -1),
        }
    context, adapted = update(params, batch, context, adapted, lr=lr, steps=steps, **kw)
    return -fn.log_prob(params, query["obs"], query["actions"], context, adapted).sum()


def learnable_lr(mode: str) -> dict[str, torch.Tensor]:
    lr = {}
    if mode in ("context", "both"):
        lr["context"] = torch.tensor([0.5, 0.3, 0.4], dtype=torch.float64)  # per coordinate
    if mode in ("last", "both"):
        lr["w_out"] = torch.tensor(0.2, dtype=torch.float64)
        lr["b_out"] = torch.tensor(0.1, dtype=torch.float64)
    return lr


@pytest.mark.parametrize("mode", MODES)
def test_second_order_meta_gradient_matches_finite_differences(mode):
    params = {k: v.requires_grad_() for k, v in params_for(mode).items()}
    lr = {k: v.requires_grad_() for k, v in learnable_lr(mode).items()}
    leaves = {**{f"p.{k}": v for k, v in params.items()}, **{f"lr.{k}": v for k, v in lr.items()}}
    loss = outer_loss(params, lr, mode, steps=2, create_graph=True)
    grads = dict(zip(leaves, torch.autograd.grad(loss, list(leaves.values())), strict=True))

    def composed(name, idx, delta):
        p = {k: v.detach().clone() for k, v in params.items()}
        r = {k: v.detach().clone() for k, v in lr.items()}
        target = p if name.startswith("p.") else r
        target[name[2:] if name.startswith("p.") else name[3:]][idx] += delta
        return outer_loss(p, r, mode, steps=2).item()

    gen = torch.Generator().manual_seed(6)
    eps = 1e-6
    names = ["p.w0", "p.b1", "p.w_out", "p.log_std", *[f"lr.{k}" for k in lr]]
    for name in names:
        shape = leaves[name].shape
        idx = tuple(int(torch.randint(n, (1,), generator=gen)) for n in shape)
        fd = (composed(name, idx, eps) - composed(name, idx, -eps)) / (2 * eps)
        g = grads[name][idx].item()
        assert abs(fd - g) <= 1e-5 * max(abs(g), 1e-3), (name, idx, fd, g)

    # The second-order terms matter here: the first-order gradient is measurably different.
    fo = outer_loss(params, lr, mode, steps=2, create_graph=False)
    fo_w0 = torch.autograd.grad(fo, [params["w0"]])[0]
    assert not torch.allclose(fo_w0, grads["p.w0"], rtol=1e-4, atol=1e-8)


@pytest.mark.parametrize("mode", MODES)
def test_explicit_update_equals_autograd_update(mode):
    params, batch = params_for(mode), random_batch()
    context, adapted = adaptable(mode, params)
    lr = learnable_lr(mode)
    c1, a1 = fn.inner_update(params, batch, context, adapted, lr=lr, steps=3)
    with torch.no_grad():  # the explicit path needs no autograd at all
        c2, a2 = fn.inner_update_explicit(params, batch, context, adapted, lr=lr, steps=3)
    if context is not None:
        torch.testing.assert_close(c1, c2, rtol=0, atol=1e-10)
    if adapted is not None:
        for k in adapted:
            torch.testing.assert_close(a1[k], a2[k], rtol=0, atol=1e-10)
    # Both paths leave the empty member where it started.
    if context is not None:
        torch.testing.assert_close(c2[-1], context[-1], rtol=0, atol=0)


def test_explicit_update_is_differentiable_like_create_graph():
    # Autograd through the explicit gradient gives the same second-order meta-gradient.
    params = {k: v.requires_grad_() for k, v in random_params().items()}
    lr = {k: v.requires_grad_() for k, v in learnable_lr("both").items()}
    leaves = [*params.values(), *lr.values()]
    g1 = torch.autograd.grad(outer_loss(params, lr, "both", 2, create_graph=True), leaves)
    g2 = torch.autograd.grad(outer_loss(params, lr, "both", 2, fn.inner_update_explicit), leaves)
    for a, b in zip(g1, g2, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10)


@pytest.mark.parametrize("mode", MODES)
def test_one_inner_step_decreases_inner_loss(mode):
    params, batch = params_for(mode), random_batch()
    context, adapted = adaptable(mode, params)
    before = fn.inner_loss(params, batch, context, adapted)
    c, a = fn.inner_update(params, batch, context, adapted, lr=0.05)
    after = fn.inner_loss(params, batch, c, a)
    # Members are independent, so every member with data improves, not just the sum.
    assert (after[:2] < before[:2] - 1e-6).all(), (before, after)
    assert after.sum() < before.sum()


def test_inner_update_float_lr_under_no_grad_and_constant_start():
    params, batch = random_params(), random_batch()
    zeros = torch.zeros(M, CTX, dtype=torch.float64)  # CAVIA's usual start: not a leaf param
    with torch.no_grad():
        c, a = fn.inner_update(params, batch, zeros, lr=0.3, steps=1)
    assert a is None
    torch.testing.assert_close(c, -0.3 * fn.inner_grad_explicit(params, batch, zeros)["context"])


def test_inner_update_errors():
    params, batch = random_params(), random_batch()
    with pytest.raises(ValueError, match="nothing to adapt"):
        fn.inner_update(params, batch)
    with pytest.raises(KeyError, match="context"):
        fn.inner_update(params, batch, torch.zeros(M, CTX).double(), lr={"w_out": 0.1})
    with pytest.raises(ValueError, match="features"):
        fn.policy_mean(params, batch["obs"])  # context missing


# --------------------------------------------------------------------------- init


def test_seeded_init_is_reproducible_and_cleanrl_like():
    def make(seed):
        return fn.init_policy_params(
            OBS, ACT, HIDDEN, CTX, -0.5, torch.Generator().manual_seed(seed)
        )

    a, b, c = make(0), make(0), make(1)
    assert list(a) == ["w0", "b0", "w1", "b1", "w_out", "b_out", "log_std"]
    for k in a:
        assert a[k].dtype == torch.float32
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)
    assert not torch.equal(a["w0"], c["w0"])
    assert a["w0"].shape == (OBS + CTX, HIDDEN[0]) and a["w_out"].shape == (HIDDEN[1], ACT)
    assert all((a[k] == 0).all() for k in ("b0", "b1", "b_out"))
    torch.testing.assert_close(a["log_std"], torch.full((ACT,), -0.5))
    # Orthogonal with gain g: the smaller Gram matrix is g^2 I.
    w1 = a["w1"]  # (8, 6): orthonormal columns
    torch.testing.assert_close(w1.t() @ w1, 2.0 * torch.eye(6), rtol=0, atol=1e-5)
    w_out = a["w_out"]
    torch.testing.assert_close(w_out.t() @ w_out, 1e-4 * torch.eye(ACT), rtol=0, atol=1e-8)
    assert math.isclose(float(a["w0"].norm() ** 2), 2.0 * min(OBS + CTX, HIDDEN[0]), rel_tol=1e-5)
