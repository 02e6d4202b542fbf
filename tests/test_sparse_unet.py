"""Res16UNet family on ssl3d.sparse: sizes, backend agreement of a whole network, checkpoints, errors."""

import pytest
import torch

import ssl3d.sparse as sp
from ssl3d.models import build_model, list_models
from ssl3d.models.sparse_unet import (
    Bottleneck,
    Res16UNet14,
    Res16UNet14A,
    Res16UNet14Tiny,
    Res16UNet18A,
    Res16UNet34C,
    Res16UNetBase,
    count_parameters,
)
from ssl3d.utils import load_checkpoint, save_checkpoint

pytestmark = pytest.mark.filterwarnings("ignore:.*should not be instantiated:DeprecationWarning")  # inside ME


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_thread):
    """Every test here runs on one thread (see conftest.one_thread)."""


def need_me():
    return pytest.importorskip("MinkowskiEngine", reason="MinkowskiEngine not built (lib/env/build_minkowski.sh)")


def room_voxels(gen, n=24, keep=0.8):
    """Voxel coordinates (M, 3) of a small room: floor, two walls and a box, randomly thinned."""
    a = torch.arange(n)
    u, v = torch.meshgrid(a, a, indexing="ij")
    u, v, z0 = u.flatten(), v.flatten(), torch.zeros(n * n, dtype=torch.long)
    floor = torch.stack([u, v, z0], 1)
    wall_x = torch.stack([z0, u, v], 1)
    wall_y = torch.stack([u, z0, v], 1)
    b = torch.arange(6, 12)
    bu, bv = torch.meshgrid(b, b, indexing="ij")
    box = torch.stack([bu.flatten(), bv.flatten(), torch.full((36,), 6)], 1)  # box top at height 6
    side = torch.stack([torch.full((36,), 6), bu.flatten(), bv.flatten() - 6], 1)
    c = torch.unique(torch.cat([floor, wall_x, wall_y, box, side]), dim=0)
    c = c[torch.rand(len(c), generator=gen) < keep]
    return c[torch.randperm(len(c), generator=gen)]


def batch(gen, backend, channels=3, samples=2):
    parts = [room_voxels(gen) for _ in range(samples)]
    return [(c, torch.rand(len(c), channels, generator=gen)) for c in parts]


# ----------------------------------------------------------------------------------------------------------
# Sizes and registry
# ----------------------------------------------------------------------------------------------------------
def test_res16unet34c_matches_paper_parameter_count():
    """PointContrast: 37.85 M parameters. 3 → 32 gives 37,847,808 (1 → 32: 37,846,080, both round to 37.85 M)."""
    n3 = count_parameters(Res16UNet34C(in_channels=3, out_channels=32))
    assert n3 == 37_847_808
    assert abs(n3 - 37.85e6) / 37.85e6 < 0.01
    assert abs(n3 - 37.85e6) < 5e3  # equal to the paper's rounding
    # the stem is the only layer that depends on in_channels: 27 offsets × (3 − 1) × 32
    assert n3 - count_parameters(Res16UNet34C(in_channels=1, out_channels=32)) == 27 * 2 * 32


def test_variant_sizes_and_registry():
    sizes = {Res16UNet14: 22_134_656, Res16UNet14A: 8_016_256, Res16UNet18A: 15_484_928, Res16UNet14Tiny: 503_416}
    for cls, n in sizes.items():
        assert count_parameters(cls(3, 32)) == n, cls.__name__
    names = list_models()
    for name in ("res16unet14", "res16unet14a", "res16unet18a", "res16unet34c", "res16unet14tiny"):
        assert name in names
    net = build_model("res16unet34c", in_channels=1, out_channels=32)
    assert isinstance(net, Res16UNet34C) and net.conv0p1s1.kernel.shape == (27, 1, 32)
    keys = net.state_dict()
    # PointContrast/ME state-dict names
    for k in ("conv0p1s1.kernel", "bn0.bn.weight", "conv1p1s2.kernel", "block1.0.conv1.kernel",
              "block1.0.norm1.bn.running_mean", "convtr4p16s2.kernel", "bntr7.bn.bias",
              "block5.0.downsample.0.kernel", "block5.0.downsample.1.bn.weight", "final.kernel", "final.bias"):
        assert k in keys, k
    assert keys["conv1p1s2.kernel"].shape == (8, 32, 32)  # kernel 2 → 8 offsets
    assert keys["convtr4p16s2.kernel"].shape == (8, 256, 256)
    assert keys["block5.0.conv1.kernel"].shape == (27, 256 + 128, 256)  # after the skip concatenation
    assert keys["final.kernel"].shape == (1, 96, 32)
    for m in net.modules():
        if isinstance(m, sp.BatchNorm):
            assert m.bn.momentum == 0.05


def test_abstract_base_refuses():
    with pytest.raises(TypeError, match="abstract"):
        Res16UNetBase()


# ----------------------------------------------------------------------------------------------------------
# Forward semantics
# ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", ["torch", pytest.param("minkowski", marks=pytest.mark.skipif(
    not sp.minkowski_available(), reason="MinkowskiEngine does not import"))])
def test_forward_sites_order_and_normalisation(backend, gen):
    x, offsets = sp.batch_sparse(batch(gen, backend), backend=backend)
    net = Res16UNet14Tiny(3, 16, normalize_feature=True)
    y = net(x)
    assert y.stride == 1 and torch.equal(y.coords, x.coords) and y.num_channels == 16
    torch.testing.assert_close(y.feats.norm(dim=1), torch.ones(len(y)))
    assert [len(t) for t in sp.unbatch(y, offsets)] == (offsets[1:] - offsets[:-1]).tolist()


def test_errors(gen):
    x, _ = sp.batch_sparse(batch(gen, "torch", channels=4), backend="torch")
    with pytest.raises(ValueError, match="expects 3 input channels but the tensor has 4.*in_channels=4"):
        Res16UNet14Tiny(3, 8)(x)
    y = sp.Conv3d(4, 4, 2, 2)(x)
    with pytest.raises(ValueError, match="stride-1 input"):
        Res16UNet14Tiny(4, 8)(y)


# ----------------------------------------------------------------------------------------------------------
# Whole-network agreement of the two backends
# ----------------------------------------------------------------------------------------------------------
def _run(net, samples, backend, targets=None):
    x, _ = sp.batch_sparse([(c, f.clone()) for c, f in samples], backend=backend)
    x.feats.requires_grad_(True)
    net.zero_grad()
    y = net(x)
    w = targets if targets is not None else torch.ones_like(y.feats)
    (y.feats * w).sum().div(len(y)).backward()
    return y, x.feats.grad, {n: p.grad.clone() for n, p in net.named_parameters()}


class _TinyBottleneckNet(Res16UNetBase):
    BLOCK = Bottleneck
    INIT_DIM = 8
    PLANES = (4, 8, 8, 16, 8, 8, 4, 4)
    LAYERS = (1, 1, 1, 1, 1, 1, 1, 1)


@pytest.mark.parametrize("cls", [Res16UNet14Tiny, _TinyBottleneckNet])
def test_whole_unet_backends_agree(cls, gen):
    """Same weights, same input: outputs and all gradients agree across backends.

    Gradients are compared in float64 (training-mode BN): on this small scene the deepest level has ~10 sites per
    BN batch, so float32 round-off is amplified by 1/σ and flips ReLUs — float32 and float64 input gradients of the
    *same* backend differ by up to 50 % there, and the two float32 backends by ~1e-3. In float64 the backends agree
    to ~1e-14, far inside atol 1e-5. Float32 is checked on the forward outputs (train mode) and on outputs and
    gradients in eval mode (running statistics: no amplification).
    """
    need_me()
    samples = batch(gen, None)
    targets = torch.randn(sum(len(c) for c, _ in samples), 8, generator=gen, dtype=torch.float64)
    torch.manual_seed(0)
    net = cls(3, 8)
    state = {k: v.clone() for k, v in net.state_dict().items()}

    net64 = cls(3, 8).double()
    net64.load_state_dict(state)
    s64 = [(c, f.double()) for c, f in samples]
    yt, gxt, gpt = _run(net64, s64, "torch", targets)
    ym, gxm, gpm = _run(net64, s64, "minkowski", targets)
    assert torch.equal(yt.coords, ym.coords)
    torch.testing.assert_close(yt.feats, ym.feats, atol=1e-9, rtol=1e-9)
    torch.testing.assert_close(gxt, gxm, atol=1e-9, rtol=1e-9)
    for n in gpt:
        torch.testing.assert_close(gpt[n], gpm[n], atol=1e-9, rtol=1e-9, msg=lambda m, n=n: f"grad of {n}: {m}")

    with torch.no_grad():  # float32, training-mode BN, forward
        out = {b: net(sp.batch_sparse(samples, backend=b)[0]).feats for b in ("torch", "minkowski")}
    torch.testing.assert_close(out["torch"], out["minkowski"], atol=1e-5, rtol=1e-5)
    net.eval()  # float32, eval-mode BN, forward + backward
    yt, gxt, gpt = _run(net, samples, "torch", targets.float())
    ym, gxm, gpm = _run(net, samples, "minkowski", targets.float())
    torch.testing.assert_close(yt.feats, ym.feats, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(gxt, gxm, atol=1e-5, rtol=1e-5)
    for n in gpt:
        torch.testing.assert_close(gpt[n], gpm[n], atol=1e-5, rtol=1e-5, msg=lambda m, n=n: f"grad of {n}: {m}")


def test_res16unet34c_forward_backends_agree(gen):
    """Forward only, in float64: 34 layers of float32 round-off in two summation orders drift by ~1e-5 (measured
    1.3e-5 max over 44 k outputs), which would hide real differences; in float64 the backends agree to ~1e-12."""
    need_me()
    samples = [(c, f.double()) for c, f in batch(gen, None, channels=3, samples=1)]
    torch.manual_seed(0)
    net = Res16UNet34C(3, 32).double()
    with torch.no_grad():
        out = {b: net(sp.batch_sparse(samples, backend=b)[0]) for b in ("torch", "minkowski")}
    assert torch.equal(out["torch"].coords, out["minkowski"].coords)
    torch.testing.assert_close(out["torch"].feats, out["minkowski"].feats, atol=1e-9, rtol=1e-9)


@pytest.mark.parametrize("src,dst", [("torch", "minkowski"), ("minkowski", "torch")])
def test_unet_checkpoint_crosses_backends(src, dst, gen, tmp_path):
    need_me()
    samples = batch(gen, None)
    torch.manual_seed(0)
    net = Res16UNet14Tiny(3, 8, normalize_feature=True)
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.8)
    _run(net, samples, src)  # one training step: weights and BN running statistics move
    opt.step()
    net.eval()
    with torch.no_grad():
        ref = net(sp.batch_sparse(samples, backend=src)[0]).feats
    path = save_checkpoint(tmp_path / "unet.pt", net, optimizer=opt, step=1)
    torch.manual_seed(1)
    other = Res16UNet14Tiny(3, 8, normalize_feature=True)
    load_checkpoint(path, other)
    other.eval()
    with torch.no_grad():
        out = other(sp.batch_sparse(samples, backend=dst)[0]).feats
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
