"""ssl3d.gmm against independent references: scipy densities, numpy weighted statistics, a hand-computed cloud,
autograd's gradcheck, and EM's textbook properties."""

import math

import numpy as np
import pytest
import torch
from scipy.special import logsumexp, softmax
from scipy.stats import multivariate_normal

from ssl3d.gmm import (
    GMMParams,
    component_log_prob,
    fit_gmm_em,
    gmm_log_likelihood,
    gmm_nll,
    gmm_params,
    log_responsibilities,
)

COVS = ["full", "diag", "iso"]


def random_inputs(gen, b=2, n=40, j=5, scale=3.0):
    x = torch.randn(b, n, 3, generator=gen, dtype=torch.float64) * torch.tensor([1.0, 0.5, 2.0], dtype=torch.float64)
    logits = torch.randn(b, n, j, generator=gen, dtype=torch.float64) * scale
    return x, logits


def blobs(gen, n_per=60, centres=((0, 0, 0), (4, 0, 0), (0, 4, 0)), std=0.3, dtype=torch.float64):
    c = torch.tensor(centres, dtype=dtype)
    x = torch.cat([c[k] + std * torch.randn(n_per, 3, generator=gen, dtype=dtype) for k in range(len(c))])
    return x, torch.arange(len(c)).repeat_interleave(n_per), c


def scipy_log_likelihood(x, params):
    """log Σ_j π_j 𝒩(x | μ_j, Σ_j) with scipy, one cloud and one component at a time."""
    cov = params.full_cov().numpy()
    out = []
    for b in range(x.shape[0]):
        comp = [np.log(params.pi[b, j].item()) + multivariate_normal.logpdf(x[b].numpy(), params.mu[b, j].numpy(),
                                                                             cov[b, j])
                for j in range(params.num_components)]
        out.append(logsumexp(np.stack(comp, -1), axis=-1))
    return np.stack(out)


@pytest.mark.parametrize("cov", COVS)
def test_params_match_numpy_weighted_statistics(gen, cov):
    x, logits = random_inputs(gen)
    eps = 1e-5
    p = gmm_params(x, logits, cov=cov, eps=eps)
    gamma = softmax(logits.numpy(), axis=-1)
    for b in range(x.shape[0]):
        np.testing.assert_allclose(p.pi[b].numpy(), gamma[b].mean(0), rtol=1e-12)
        for j in range(logits.shape[-1]):
            w = gamma[b, :, j]
            mu = np.average(x[b].numpy(), axis=0, weights=w)
            full = np.cov(x[b].numpy().T, aweights=w, bias=True)  # Σ w (x − μ)(x − μ)ᵀ / Σ w
            np.testing.assert_allclose(p.mu[b, j].numpy(), mu, rtol=1e-10, atol=1e-12)
            want = {"full": full + eps * np.eye(3), "diag": np.diag(full) + eps, "iso": np.trace(full) / 3 + eps}[cov]
            np.testing.assert_allclose(p.cov[b, j].numpy(), want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("cov", COVS)
def test_log_likelihood_matches_scipy(gen, cov):
    x, logits = random_inputs(gen)
    p = gmm_params(x, logits, cov=cov)
    ll = gmm_log_likelihood(x, p)
    assert ll.shape == (2, 40) and ll.dtype == torch.float64
    np.testing.assert_allclose(ll.numpy(), scipy_log_likelihood(x, p), rtol=1e-6)
    # …and for arbitrary (not ξ-derived) parameters: random SPD covariances, random weights
    b, j = 2, 5
    a = torch.randn(b, j, 3, 3, generator=gen, dtype=torch.float64)
    covs = {"full": a @ a.transpose(-1, -2) + 0.1 * torch.eye(3, dtype=torch.float64),
            "diag": torch.rand(b, j, 3, generator=gen, dtype=torch.float64) + 0.1,
            "iso": torch.rand(b, j, generator=gen, dtype=torch.float64) + 0.1}
    q = GMMParams(torch.softmax(torch.randn(b, j, generator=gen, dtype=torch.float64), -1),
                  torch.randn(b, j, 3, generator=gen, dtype=torch.float64), covs[cov], cov)
    np.testing.assert_allclose(gmm_log_likelihood(x, q).numpy(), scipy_log_likelihood(x, q), rtol=1e-6)


def test_one_component_by_hand():
    # 4 points: origin and 2·e_k. Mean (½, ½, ½); var 1 − ¼ = ¾ per axis, cov −¼ off-diagonal: Σ = I − ¼ 11ᵀ.
    # det Σ = 1 · 1 · ¼ (eigenvalues 1, 1, ¼); Σ⁻¹ = I + 11ᵀ; every point has Mahalanobis distance 3.
    x = torch.tensor([[[0, 0, 0], [2, 0, 0], [0, 2, 0], [0, 0, 2]]], dtype=torch.float64)
    logits = torch.zeros(1, 4, 1, dtype=torch.float64)
    p = gmm_params(x, logits, cov="full", eps=0.0)
    torch.testing.assert_close(p.pi, torch.ones(1, 1, dtype=torch.float64))
    torch.testing.assert_close(p.mu, torch.full((1, 1, 3), 0.5, dtype=torch.float64))
    sigma = torch.eye(3, dtype=torch.float64) - 0.25
    torch.testing.assert_close(p.cov[0, 0], sigma)
    nll = 0.5 * (3 + math.log(0.25) + 3 * math.log(2 * math.pi))  # ½ (Mahalanobis + log|Σ| + 3 log 2π)
    assert gmm_nll(x, logits, eps=0.0).item() == pytest.approx(nll, rel=1e-12)
    # eps lands on the diagonal and nowhere else
    q = gmm_params(x, logits, cov="full", eps=1e-3)
    torch.testing.assert_close(q.cov[0, 0], sigma + 1e-3 * torch.eye(3, dtype=torch.float64))
    # iso: σ² = mean ‖x − μ‖² / 3 = ((¾ + 3 · 11/4) / 4) / 3 = ¾ = tr(Σ) / 3
    assert gmm_params(x, logits, cov="iso", eps=0.0).cov.item() == pytest.approx(0.75, rel=1e-12)


def test_good_partition_beats_random_and_uniform(gen):
    x, labels, _ = blobs(gen)
    good = 10.0 * torch.nn.functional.one_hot(labels, 3).double()
    shuffled = 10.0 * torch.nn.functional.one_hot(labels[torch.randperm(len(labels), generator=gen)], 3).double()
    uniform = torch.zeros_like(good)
    nll = {name: gmm_nll(x[None], lg[None]).item() for name, lg in
           [("good", good), ("shuffled", shuffled), ("uniform", uniform)]}
    assert nll["good"] < nll["shuffled"] - 1.0
    assert nll["good"] < nll["uniform"] - 1.0


@pytest.mark.parametrize("cov", COVS)
@pytest.mark.parametrize("empty_logit", [-30.0, -1e4])  # tiny mass / exactly zero mass in float32
def test_empty_components_stay_finite(gen, cov, empty_logit):
    x = torch.randn(2, 64, 3, generator=gen)
    logits = torch.randn(2, 64, 8, generator=gen)
    logits[..., 5:] = empty_logit
    logits[1, :, 1:] = empty_logit  # cloud 1: everything in component 0
    logits.requires_grad_(True)
    loss = gmm_nll(x, logits, cov=cov)
    loss.backward()
    assert torch.isfinite(loss)
    assert torch.isfinite(logits.grad).all()
    p = gmm_params(x, logits.detach(), cov=cov)
    assert all(torch.isfinite(t).all() for t in (p.pi, p.mu, p.cov, p.log_pi))
    assert (p.log_pi[..., 5:] < -20).all()  # log π computed in log space: finite, very negative


def test_collapsed_component_is_bounded_by_eps(gen):
    # one component holds a single point: its density there is capped at (2π ε)^(−3/2)
    x = torch.randn(1, 50, 3, generator=gen, dtype=torch.float64)
    logits = torch.zeros(1, 50, 2, dtype=torch.float64)
    logits[0, :, 1] = -50.0
    logits[0, 0] = torch.tensor([-50.0, 50.0])
    eps = 1e-5
    ll = gmm_log_likelihood(x, gmm_params(x, logits, eps=eps))
    assert torch.isfinite(ll).all()
    assert ll[0, 0].item() <= -1.5 * math.log(2 * math.pi * eps) + 1e-9


def test_gradcheck_against_finite_differences(gen):
    x, logits = random_inputs(gen, b=1, n=12, j=3, scale=1.0)
    for cov in COVS:
        assert torch.autograd.gradcheck(lambda lg, c=cov: gmm_nll(x, lg, cov=c), (logits.clone().requires_grad_(),))


@pytest.mark.parametrize("cov", COVS)
def test_invariant_to_component_and_point_order(gen, cov):
    x, logits = random_inputs(gen)
    perm_j = torch.randperm(5, generator=gen)
    perm_n = torch.randperm(40, generator=gen)
    p, q = gmm_params(x, logits, cov=cov), gmm_params(x, logits[..., perm_j], cov=cov)
    torch.testing.assert_close(q.mu, p.mu[:, perm_j])
    torch.testing.assert_close(q.cov, p.cov[:, perm_j])
    torch.testing.assert_close(gmm_log_likelihood(x, q), gmm_log_likelihood(x, p))
    torch.testing.assert_close(gmm_nll(x[:, perm_n], logits[:, perm_n], cov=cov), gmm_nll(x, logits, cov=cov))


def test_deepgmr_iso_is_three_times_the_mle(gen):
    x, logits = random_inputs(gen)
    eps = 1e-5
    iso = gmm_params(x, logits, cov="iso", eps=eps).cov
    deep = gmm_params(x, logits, cov="iso", eps=eps, deepgmr_iso=True).cov
    torch.testing.assert_close(deep - eps, 3 * (iso - eps))


def test_log_responsibilities_are_the_bayes_posterior(gen):
    x, logits = random_inputs(gen, j=4)
    p = gmm_params(x, logits, cov="full")
    cov = p.full_cov().numpy()
    lr = log_responsibilities(x, p)
    for b in range(2):
        joint = np.stack([p.pi[b, j].item() * multivariate_normal.pdf(x[b].numpy(), p.mu[b, j].numpy(), cov[b, j])
                          for j in range(4)], -1)
        np.testing.assert_allclose(lr[b].exp().numpy(), joint / joint.sum(-1, keepdims=True), rtol=1e-8)


def test_float32_matches_float64(gen):
    x, logits = random_inputs(gen, b=4, n=256, j=16)
    np.testing.assert_allclose(gmm_nll(x.float(), logits.float()).item(), gmm_nll(x, logits).item(), rtol=1e-4)


@pytest.mark.parametrize("cov", COVS)
def test_float32_far_from_origin_small_components(gen, cov):
    # tight clusters (σ = 1 cm) 1 km from the origin: naive E[xxᵀ] − μμᵀ in float32 would return garbage
    x64, labels, _ = blobs(gen, n_per=50, std=0.01)
    x64 = x64 + 1000.0
    x32 = x64.float()
    noise = torch.randn(150, 3, generator=gen, dtype=torch.float64)
    logits = 5.0 * torch.nn.functional.one_hot(labels, 3).double() + noise
    p32 = gmm_params(x32[None], logits.float()[None], cov=cov)
    p64 = gmm_params(x32.double()[None], logits[None], cov=cov)  # same (float32-rounded) coordinates
    torch.testing.assert_close(p32.cov.double(), p64.cov, rtol=1e-4, atol=1e-9)
    torch.testing.assert_close(p32.mu.double(), p64.mu, rtol=1e-6, atol=1e-4)
    nll32 = gmm_nll(x32[None], logits.float()[None], cov=cov).item()
    nll64 = gmm_nll(x32.double()[None], logits[None], cov=cov).item()
    assert nll32 == pytest.approx(nll64, rel=1e-4)
    shifted = gmm_nll(x32.double()[None] - 1000.0, logits[None], cov=cov).item()  # translation invariance
    assert shifted == pytest.approx(nll64, rel=1e-9)


@pytest.mark.parametrize("cov", COVS)
@pytest.mark.parametrize("init", ["fps", "random"])
def test_em_is_monotone_and_recovers_means(gen, cov, init):
    x, _, centres = blobs(gen, n_per=80, centres=((0, 0, 0), (5, 0, 0), (0, 5, 0), (0, 0, 5)))
    res = fit_gmm_em(x, 4, iters=30, cov=cov, init=init, generator=torch.Generator().manual_seed(3))
    ll = res.log_likelihood
    assert ll.shape == (31,)
    assert (ll[1:] - ll[:-1] >= -1e-9).all(), ll
    assert ll[-1] > ll[0]
    mu = res.params.mu[0]  # (4, 3)
    d = torch.cdist(centres, mu)  # each true centre has one fitted mean close by
    assert d.min(1).values.max() < 0.15
    assert sorted(d.argmin(1).tolist()) == [0, 1, 2, 3]
    torch.testing.assert_close(res.resp.sum(-1), torch.ones(len(x), dtype=torch.float64))


def test_em_on_a_toy_mixture_improves_over_many_steps(gen):
    # overlapping, anisotropic components: the likelihood keeps increasing (no early plateau assumed)
    a = torch.randn(200, 3, generator=gen, dtype=torch.float64) * torch.tensor([1.0, 0.2, 0.2], dtype=torch.float64)
    b = torch.randn(200, 3, generator=gen, dtype=torch.float64) * torch.tensor([0.2, 1.0, 0.2], dtype=torch.float64)
    res = fit_gmm_em(torch.cat([a, b + 0.5]), 2, iters=40, cov="full", generator=torch.Generator().manual_seed(0))
    diffs = res.log_likelihood.diff()
    assert (diffs >= -1e-9).all()


def test_input_errors(gen):
    x, logits = random_inputs(gen)
    with pytest.raises(ValueError, match=r"points\[None\]"):
        gmm_params(x[0], logits[0])
    with pytest.raises(ValueError, match="NaN"):
        gmm_params(x.clone().index_fill_(1, torch.tensor([3]), float("nan")), logits)
    with pytest.raises(ValueError, match="empty"):
        gmm_params(x[:, :0], logits[:, :0])
    with pytest.raises(ValueError, match="J ≤ N"):
        gmm_params(x[:, :3], logits[:, :3])
    with pytest.raises(ValueError, match=r"\(B, N, J\)"):
        gmm_params(x, logits[:, :10])
    with pytest.raises(ValueError, match="logits contain NaN"):
        gmm_params(x, logits.clone().fill_(float("nan")))
    with pytest.raises(ValueError, match="deepgmr_iso"):
        gmm_params(x, logits, cov="full", deepgmr_iso=True)
    with pytest.raises(ValueError, match="cov must be one of"):
        gmm_params(x, logits, cov="spherical")
    with pytest.raises(ValueError, match="1 ≤ J ≤ N"):
        fit_gmm_em(x[0, :3], 5)
    with pytest.raises(ValueError, match="init"):
        fit_gmm_em(x[0], 2, init="kmeans++")
    with pytest.raises(ValueError, match="cov_type='iso' needs cov"):
        GMMParams(torch.ones(1, 2) / 2, torch.zeros(1, 2, 3), torch.ones(1, 2, 3), "iso")


class _TinyPointNet(torch.nn.Module):
    """Per-point MLP + max-pooled global feature → per-point logits (the loss' test needs no model zoo)."""

    def __init__(self, j: int = 3, h: int = 32):
        super().__init__()
        self.local = torch.nn.Sequential(torch.nn.Linear(3, h), torch.nn.ReLU(), torch.nn.Linear(h, h), torch.nn.ReLU())
        self.head = torch.nn.Sequential(torch.nn.Linear(2 * h, h), torch.nn.ReLU(), torch.nn.Linear(h, j))

    def forward(self, x):
        f = self.local(x)  # (B, N, h)
        return self.head(torch.cat([f, f.max(1, keepdim=True).values.expand_as(f)], -1))  # (B, N, J)


def test_pretraining_a_network_lowers_the_loss(gen):
    # the loss end to end: a small point network learns to partition clouds of 3 blobs (random positions per cloud)
    torch.manual_seed(0)
    net = _TinyPointNet(3)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    clouds = torch.stack([blobs(gen, n_per=40, centres=(torch.rand(3, 3, generator=gen) * 4).tolist(),
                                dtype=torch.float32)[0] for _ in range(8)])
    losses = []
    for _ in range(40):
        loss = gmm_nll(clouds, net(clouds))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < losses[0] - 0.5


# ----------------------------------------------------------------------------------------------------------
# Padded batches (mask)
# ----------------------------------------------------------------------------------------------------------
def padded_batch(gen, sizes=(40, 23, 31), n_max=44, j=5):
    """Clouds of different sizes scattered (not only at the end) into (B, N_max, ·) with garbage padding."""
    b = len(sizes)
    x = torch.randn(b, n_max, 3, generator=gen, dtype=torch.float64) * 1e6  # padding: huge finite values
    logits = torch.randn(b, n_max, j, generator=gen, dtype=torch.float64) * 1e4
    mask = torch.zeros(b, n_max, dtype=torch.bool)
    clouds = []
    for c, n in enumerate(sizes):
        rows = torch.randperm(n_max, generator=gen)[:n].sort().values
        mask[c, rows] = True
        xc = torch.randn(n, 3, generator=gen, dtype=torch.float64) * torch.rand(3, generator=gen, dtype=torch.float64)
        lc = torch.randn(n, j, generator=gen, dtype=torch.float64) * 3
        x[c, rows], logits[c, rows] = xc + 5 * c, lc
        clouds.append((xc + 5 * c, lc))
    x[0, (~mask[0]).nonzero()[0, 0], 1] = 1e30  # its square would overflow to inf if padding were not zeroed first
    logits[1, (~mask[1]).nonzero()[0, 0], 0] = -1e30
    return x, logits, mask, clouds


@pytest.mark.parametrize("cov", COVS)
def test_masked_batch_matches_each_cloud_alone(gen, cov):
    x, logits, mask, clouds = padded_batch(gen)
    sizes = torch.tensor([len(c[0]) for c in clouds], dtype=torch.float64)
    p = gmm_params(x, logits, cov=cov, mask=mask)
    lg = logits.clone().requires_grad_(True)
    loss = gmm_nll(x, lg, mask=mask, cov=cov)
    loss.backward()
    want_loss = 0.0
    for c, (xc, lc) in enumerate(clouds):
        q = gmm_params(xc[None], lc[None], cov=cov)
        for name in ("pi", "log_pi", "mu", "cov"):
            torch.testing.assert_close(getattr(p, name)[c], getattr(q, name)[0], rtol=1e-10, atol=1e-12)
        lc = lc[None].clone().requires_grad_(True)
        nll = gmm_nll(xc[None], lc, cov=cov)
        nll.backward()
        want_loss += nll.item() * sizes[c].item() / sizes.sum().item()  # mean over all valid points
        # the batch loss weighs cloud c by N_c / Σ N: so does its gradient
        torch.testing.assert_close(lg.grad[c][mask[c]], lc.grad[0] * sizes[c] / sizes.sum(), rtol=1e-9, atol=1e-13)
        ll = gmm_log_likelihood(x, p, mask=mask)
        torch.testing.assert_close(ll[c][mask[c]], gmm_log_likelihood(xc[None], q)[0], rtol=1e-10, atol=1e-12)
    assert loss.item() == pytest.approx(want_loss, rel=1e-12)
    assert torch.isfinite(lg.grad).all() and (lg.grad[~mask] == 0).all()  # padding gets exactly no gradient
    assert (gmm_log_likelihood(x, p, mask=mask)[~mask] == 0).all()
    assert (component_log_prob(x, p, mask=mask)[~mask] == 0).all()


def test_masked_float32_and_all_valid_mask(gen):
    x, logits, mask, _ = padded_batch(gen)
    nll32 = gmm_nll(x.float(), logits.float(), mask=mask)
    assert nll32.dtype == torch.float32
    assert nll32.item() == pytest.approx(gmm_nll(x, logits, mask=mask).item(), rel=1e-5)
    y, lg = random_inputs(gen)
    full = torch.ones(y.shape[:2], dtype=torch.bool)
    torch.testing.assert_close(gmm_nll(y, lg, mask=full), gmm_nll(y, lg), rtol=1e-14, atol=0)


def test_mask_errors(gen):
    x, logits = random_inputs(gen)  # B 2, N 40, J 5
    mask = torch.ones(2, 40, dtype=torch.bool)
    with pytest.raises(TypeError, match=r"mask.bool\(\)"):
        gmm_nll(x, logits, mask=mask.float())
    with pytest.raises(TypeError, match="torch.Tensor"):
        gmm_nll(x, logits, mask=mask.tolist())
    with pytest.raises(ValueError, match=r"shape \(B, N\) = \(2, 40\)"):
        gmm_nll(x, logits, mask=mask[:, :30])
    few = mask.clone()
    few[1, 4:] = False
    with pytest.raises(ValueError, match="cloud 1 with 4 valid points.*at least J = 5"):
        gmm_params(x, logits, mask=few)
    p = gmm_params(x, logits)
    with pytest.raises(ValueError, match="cloud 0 with 0 valid points"):
        gmm_log_likelihood(x, p, mask=torch.zeros(2, 40, dtype=torch.bool))


def test_gradcheck_with_mask_and_wrt_points(gen):
    x, logits = random_inputs(gen, b=2, n=9, j=3, scale=1.0)
    mask = torch.ones(2, 9, dtype=torch.bool)
    mask[1, 6:] = False
    for cov in COVS:
        assert torch.autograd.gradcheck(lambda lg, c=cov: gmm_nll(x, lg, mask=mask, cov=c),
                                        (logits.clone().requires_grad_(),))
        # gradients w.r.t. the points are supported too (not needed in pre-training, free when not asked for)
        assert torch.autograd.gradcheck(lambda pts, c=cov: gmm_nll(pts, logits, mask=mask, cov=c),
                                        (x.clone().requires_grad_(),))
    p = gmm_params(x, logits).detach()
    assert torch.autograd.gradcheck(lambda pts: gmm_log_likelihood(pts, p), (x.clone().requires_grad_(),))


# ----------------------------------------------------------------------------------------------------------
# The fast path's numerics: closed-form 3 × 3 algebra, the shifted logsumexp, float32
# ----------------------------------------------------------------------------------------------------------
def test_ill_conditioned_covariances_match_scipy(gen):
    # eigenvalues 1, 1e-3, 1e-6 in random orientations: the closed-form inverse/log-det vs scipy's eigh-based logpdf
    b, j = 2, 3
    q, _ = torch.linalg.qr(torch.randn(b, j, 3, 3, generator=gen, dtype=torch.float64))
    eig = torch.tensor([1.0, 1e-3, 1e-6], dtype=torch.float64).expand(b, j, 3)
    cov = q @ torch.diag_embed(eig) @ q.transpose(-1, -2)
    params = GMMParams(torch.full((b, j), 1 / j, dtype=torch.float64),
                       torch.randn(b, j, 3, generator=gen, dtype=torch.float64), cov)
    x = params.mu.repeat_interleave(4, 1) + 1e-3 * torch.randn(b, 4 * j, 3, generator=gen, dtype=torch.float64)
    np.testing.assert_allclose(gmm_log_likelihood(x, params).numpy(), scipy_log_likelihood(x, params), rtol=1e-9)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_points_far_from_every_component(gen, dtype):
    # log-densities of −5000 nats underflow exp() even after the shift by the per-cloud bound: such rows are
    # recomputed with their own max
    params = GMMParams(torch.tensor([[0.5, 0.5]], dtype=dtype), torch.tensor([[[0.0, 0, 0], [1, 0, 0]]], dtype=dtype),
                       torch.tensor([[1e-4, 1.0]], dtype=dtype), "iso")
    x = torch.tensor([[[0.0, 0, 0], [1, 0, 0], [100, 0, 0], [0, -80, 30]]], dtype=dtype, requires_grad=True)
    ll = gmm_log_likelihood(x, params)
    np.testing.assert_allclose(ll.detach().double().numpy(), scipy_log_likelihood(x.detach().double(), params.detach()),
                               rtol=1e-6 if dtype == torch.float32 else 1e-12)
    assert ll[0, 2].item() < -4000
    ll.sum().backward()
    assert torch.isfinite(x.grad).all()


def test_not_positive_definite_and_infinite_logits(gen):
    x, logits = random_inputs(gen)
    p = gmm_params(x, logits)
    bad = GMMParams(p.pi, p.mu, p.cov.clone())
    bad.cov[0, 1] = torch.diag(torch.tensor([1.0, -1.0, 1.0], dtype=torch.float64))
    with pytest.raises(ValueError, match="not positive definite"):
        gmm_log_likelihood(x, bad)
    with pytest.raises(ValueError, match="not positive definite"):  # a planar cloud without eps is singular
        gmm_nll(x * torch.tensor([1.0, 1.0, 0.0], dtype=torch.float64), logits, eps=0.0)
    with pytest.raises(ValueError, match="logits contain NaN or Inf"):
        gmm_nll(x, logits.clone().index_fill_(1, torch.tensor([7]), float("-inf")))


@pytest.mark.parametrize("sharpness", [30.0, 1000.0])
def test_float32_gradients_match_float64(gen, sharpness):
    # a unit-sphere cloud cut into 32 Voronoi cells, soft or sharp (median logit gap between the two best cells
    # ≈ 0.5 or 18 nats: sharp partitions amplify rounding, see "Precision" in ssl3d.gmm): float32 follows
    # float64 to the accuracy the module docstring states
    x = torch.randn(4, 512, 3, generator=gen, dtype=torch.float64)
    x = x / x.norm(dim=-1, keepdim=True).amax(1, keepdim=True)
    logits = -sharpness * torch.cdist(x, x[:, :32]) ** 2
    grads = {}
    for dt in (torch.float32, torch.float64):
        lg = logits.to(dt).requires_grad_(True)
        loss = gmm_nll(x.to(dt), lg)
        loss.backward()
        grads[dt] = (loss.item(), lg.grad.double())
    (l32, g32), (l64, g64) = grads[torch.float32], grads[torch.float64]
    assert l32 == pytest.approx(l64, rel=1e-6, abs=1e-7)
    assert ((g32 - g64).norm() / g64.norm()).item() < 5e-5
