"""ssl3d.sparse internals: the backend contract, and the torch backend's kernel maps and blocked convolution.

Kernel maps are checked against a brute-force dictionary of coordinates; convolutions (outputs AND gradients of
features and kernel) against dense ``conv3d`` / ``conv_transpose3d`` differentiated by autograd — on every code
path: dense look-up table or binary search, one block or many, sites in key order or shuffled, 1 or 2 threads.
"""

import inspect

import pytest
import torch
import torch.nn.functional as F

import ssl3d.sparse as sp
from ssl3d.sparse import backend as sb
from ssl3d.sparse import torch_ops
from ssl3d.sparse.minkowski_ops import MinkowskiBackend
from ssl3d.sparse.torch_ops import TorchBackend

_dense_forward, _dense_backward = torch_ops._forward_dense, torch_ops._backward_dense  # before any monkeypatch


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_thread):
    """Every test here runs on one thread unless it says otherwise (see conftest.one_thread)."""


LO, SIZE = -4, 8


def random_sites(gen, batch=2, lo=LO, hi=LO + SIZE, density=0.3, shuffle=True):
    """Unique (M, 4) coordinates in [lo, hi)³ per batch element; shuffled, or in (b, x, y, z) key order."""
    rows = []
    for b in range(batch):
        occ = torch.rand(hi - lo, hi - lo, hi - lo, generator=gen) < density
        xyz = occ.nonzero() + lo  # row-major → sorted (x, y, z)
        rows.append(torch.cat([torch.full((len(xyz), 1), b), xyz], 1))
    c = torch.cat(rows)
    return c[torch.randperm(len(c), generator=gen)] if shuffle else c


def to_dense(coords, feats, stride=1):
    """Zero-filled (B, C, X, Y, Z) grid of the sites (differentiable in ``feats``)."""
    b = int(coords[:, 0].max()) + 1
    n = SIZE // stride
    g = feats.new_zeros(b, n, n, n, feats.shape[1])
    i = torch.div(coords[:, 1:] - LO, stride, rounding_mode="floor")
    g = g.index_put((coords[:, 0], i[:, 0], i[:, 1], i[:, 2]), feats)
    return g.permute(0, 4, 1, 2, 3)


def read_dense(grid, coords, stride=1):
    i = torch.div(coords[:, 1:] - LO, stride, rounding_mode="floor")
    return grid.permute(0, 2, 3, 4, 1)[coords[:, 0], i[:, 0], i[:, 1], i[:, 2]]


def dense_weight(kernel, k):
    """(K, C_in, C_out), x fastest → conv3d's (C_out, C_in, kx, ky, kz) (see tests/test_sparse.py)."""
    return kernel.reshape(k, k, k, *kernel.shape[1:]).permute(4, 3, 2, 1, 0)


def site_weights(coords, channels):
    """A fixed weight per (site, channel) that depends on the coordinates only, not on the row order."""
    a = torch.tensor([0.731, 1.37, -0.59, 2.11], dtype=torch.float64)
    return torch.sin((coords.double() @ a).unsqueeze(1) * (1 + 0.25 * torch.arange(channels)) + 0.3)


# ----------------------------------------------------------------------------------------------------------
# The backend contract
# ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("impl", [TorchBackend(), MinkowskiBackend()], ids=["torch", "minkowski"])
def test_backends_implement_the_protocol(impl):
    """Both backends provide every member of SparseBackend, with the protocol's parameter names."""
    assert isinstance(impl, sb.SparseBackend)
    assert impl.name in sb.BACKENDS
    members = [n for n, v in vars(sb.SparseBackend).items() if inspect.isfunction(v) and not n.startswith("_")]
    assert sorted(members) == ["conv", "conv_transpose", "coords", "new", "same_sites"]
    for name in members:
        want = list(inspect.signature(getattr(sb.SparseBackend, name)).parameters)[1:]  # without self
        got = list(inspect.signature(getattr(impl, name)).parameters)
        assert got == want, f"{type(impl).__name__}.{name}{got} differs from SparseBackend.{name}{want}"


def test_public_api_is_importable():
    """Every name other modules use as ssl3d.sparse.X (models, notebooks, benchmarks) stays importable."""
    for name in sp.__all__:
        assert hasattr(sp, name), name
    for name in ("Conv3d", "ConvTranspose3d", "BatchNorm", "ReLU", "cat", "SparseTensor", "batch_sparse",
                 "sparse_quantize", "unbatch", "voxels_to_points", "global_avg_pool", "global_max_pool",
                 "set_backend", "get_backend", "minkowski_available", "kernel_offsets", "ENV_VAR", "BACKENDS"):
        assert name in sp.__all__, name
    x = sp.SparseTensor(torch.tensor([[0, 0, 0, 0], [0, 1, 0, 0]]), torch.ones(2, 3), backend="torch")
    y = x.replace(x.feats * 2)
    assert y.same_sites(x) and y.stride == 1 and torch.equal(y.feats, 2 * x.feats)


# ----------------------------------------------------------------------------------------------------------
# Kernel maps against a brute-force dictionary
# ----------------------------------------------------------------------------------------------------------
def brute_pairs(c_in, c_out, offsets, s_in):
    """{k: {(i, j)}} with c_in[i] = c_out[j] + offsets[k] · s_in, by a dictionary of coordinates."""
    where = {tuple(r): i for i, r in enumerate(c_in.tolist())}
    out = {}
    for k, o in enumerate(offsets.tolist()):
        for j, r in enumerate(c_out.tolist()):
            i = where.get((r[0], r[1] + o[0] * s_in, r[2] + o[1] * s_in, r[3] + o[2] * s_in))
            if i is not None:
                out.setdefault(k, set()).add((i, j))
    return out


def map_pairs(kmap):
    d = {k: set(zip(i.tolist(), o.tolist())) for k, i, o in kmap.pairs}
    if kmap.identity is not None:
        d[kmap.identity] = {(i, i) for i in range(kmap.n_in)}
    return d


@pytest.mark.parametrize("table", [True, False], ids=["table", "searchsorted"])
@pytest.mark.parametrize("k,s,dil", [(3, 1, 1), (3, 1, 2), (5, 1, 3), (2, 1, 1), (2, 2, 1), (3, 2, 1), (2, 4, 1)])
def test_kernel_map_equals_brute_force(k, s, dil, table, gen, monkeypatch):
    """(5, 1, 3): offsets ±6 exceed the hashing margin (bounds-checked path); (2, 1, 1): even submanifold kernel."""
    if not table:
        monkeypatch.setattr(torch_ops.CoordMap, "DENSE_CELLS_PER_SITE", 0)
    c = random_sites(gen)
    x = sp.SparseTensor(c, torch.ones(len(c), 1), backend="torch")
    mgr = x.sites.manager
    assert (mgr.maps[1].table is not None) == table
    if s > 1:
        mgr.coarse(1, s)
    kmap = mgr.kernel_map(1, s, k, dil)
    assert map_pairs(kmap) == brute_pairs(c, mgr.maps[s].coords, sp.kernel_offsets(k, dil), 1)
    assert (kmap.identity is not None) == (s == 1 and k % 2 == 1)
    for _, _, o in kmap.pairs:
        assert bool((o[1:] > o[:-1]).all())  # sorted by output, each output at most once per offset
    t = kmap.T
    assert t.T is kmap
    assert {kk: {(j, i) for i, j in v} for kk, v in map_pairs(kmap).items()} == map_pairs(t)


def test_kernel_maps_are_cached_and_shared(gen):
    """One map per (s_in, s_out, k, dilation) for a whole network; transposed convs reuse the strided map."""
    c = random_sites(gen)
    x = sp.SparseTensor(c, torch.randn(len(c), 2, generator=gen), backend="torch")
    net = torch.nn.Sequential(sp.Conv3d(2, 4, 3), sp.Conv3d(4, 4, 3), sp.Conv3d(4, 4, 2, 2), sp.Conv3d(4, 4, 3),
                              sp.Conv3d(4, 4, 3), sp.ConvTranspose3d(4, 4, 2, 2), sp.Conv3d(4, 4, 3))
    net(x).feats.sum().backward()
    maps = x.sites.manager.kernel_maps
    assert sorted(maps) == [(1, 1, 3, 1), (1, 2, 2, 1), (2, 2, 3, 1)]


# ----------------------------------------------------------------------------------------------------------
# Convolutions against dense conv3d / conv_transpose3d, outputs and gradients, on every code path
# ----------------------------------------------------------------------------------------------------------
def sparse_run(op, c, f, kernel):
    """The sparse layer's output on sites c, plus loss-weighted gradients of feats and kernel."""
    feats = f.clone().requires_grad_(True)
    x = sp.SparseTensor(c, feats, backend="torch")
    k, s, dil, transposed = op
    layer = (sp.ConvTranspose3d if transposed else sp.Conv3d)(f.shape[1], kernel.shape[2], k, s, dil).double()
    with torch.no_grad():
        layer.kernel.copy_(kernel)
    if transposed:
        with torch.no_grad():
            x = sp.Conv3d(f.shape[1], f.shape[1], s, s).double()(x)  # coarse sites to go back from
        x = x.replace(x.feats.detach().requires_grad_(True))
    y = layer(x)
    (y.feats * site_weights(y.coords, y.num_channels)).sum().backward()
    return x, y, x.feats.grad, layer.kernel.grad


def dense_run(op, x, kernel):
    """The same computation on dense grids, differentiated by autograd."""
    k, s, dil, transposed = op
    feats = x.feats.detach().clone().requires_grad_(True)
    w = kernel.clone().requires_grad_(True)
    pad = dil * (k - 1) // 2 if k % 2 else 0
    if transposed:
        grid = F.conv_transpose3d(to_dense(x.coords, feats, x.stride), dense_weight(w, k).transpose(0, 1), stride=s,
                                  padding=pad, output_padding=pad)
    else:
        grid = to_dense(x.coords, feats)
        if k % 2 == 0 and s == 1:  # even submanifold kernel: offsets 0 … k−1 reach past the high end of the box
            grid = F.pad(grid, [0, (k - 1) * dil] * 3)
        grid = F.conv3d(grid, dense_weight(w, k), stride=s, padding=pad, dilation=dil)
    return grid, feats, w


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("blocks", ["neighbour-matrix", "one", "many"])
@pytest.mark.parametrize("table", [True, False], ids=["table", "searchsorted"])
@pytest.mark.parametrize("order", ["shuffled", "sorted"])
@pytest.mark.parametrize("op", [(3, 1, 1, False), (3, 1, 2, False), (5, 1, 3, False), (2, 1, 1, False),
                                (2, 2, 1, False), (3, 2, 1, False), (2, 2, 1, True), (3, 2, 1, True)],
                         ids=["subm3", "subm3-dil2", "subm5-dil3", "subm2", "k2s2", "k3s2", "tr-k2s2", "tr-k3s2"])
def test_conv_paths_equal_dense(op, order, table, blocks, threads, gen, monkeypatch):
    if not table:
        monkeypatch.setattr(torch_ops.CoordMap, "DENSE_CELLS_PER_SITE", 0)
    if blocks != "neighbour-matrix":  # the per-offset path of large maps
        monkeypatch.setattr(torch_ops, "DENSE_MAX_ELEMENTS", 0)
    if blocks == "many":  # blocks of ≥ 4 output rows: dozens of blocks on this scene
        monkeypatch.setattr(torch_ops, "BLOCK_PAIRS", 16)
        monkeypatch.setattr(torch_ops, "MIN_BLOCK_ROWS", 4)
    calls = []
    monkeypatch.setattr(torch_ops, "_forward_dense", lambda *a: calls.append("forward") or _dense_forward(*a))
    monkeypatch.setattr(torch_ops, "_backward_dense", lambda *a: calls.append("backward") or _dense_backward(*a))
    n = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        c = random_sites(gen, shuffle=order == "shuffled", density=0.4)
        f = torch.randn(len(c), 3, generator=gen, dtype=torch.float64)
        kernel = torch.randn(op[0] ** 3, 3, 4, generator=gen, dtype=torch.float64)
        x, y, gx, gw = sparse_run(op, c, f, kernel)
    finally:
        torch.set_num_threads(n)
    assert set(calls) == ({"forward", "backward"} if blocks == "neighbour-matrix" else set())  # the path under test
    grid, feats, w = dense_run(op, x, kernel)
    s_out = x.stride // op[1] if op[3] else op[1]
    out = read_dense(grid, y.coords, s_out)
    torch.testing.assert_close(y.feats.detach(), out.detach(), atol=1e-10, rtol=1e-10)
    (out * site_weights(y.coords, y.num_channels)).sum().backward()
    torch.testing.assert_close(gx, feats.grad, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(gw, w.grad, atol=1e-10, rtol=1e-10)


def test_two_block_threads_are_deterministic_and_keep_the_thread_setting(gen, monkeypatch):
    """With 2 threads the blocks run on 2 Python threads (fixed split): the same result every time, equal to one
    thread's up to summation order, and torch's thread count is left as it was."""
    monkeypatch.setattr(torch_ops, "DENSE_MAX_ELEMENTS", 0)
    monkeypatch.setattr(torch_ops, "BLOCK_PAIRS", 16)
    monkeypatch.setattr(torch_ops, "MIN_BLOCK_ROWS", 4)
    c = random_sites(gen, density=0.4)
    f = torch.randn(len(c), 3, generator=gen, dtype=torch.float64)
    kernel = torch.randn(27, 3, 4, generator=gen, dtype=torch.float64)
    n = torch.get_num_threads()
    runs = {}
    try:
        for threads, rep in ((2, 0), (2, 1), (1, 0)):
            torch.set_num_threads(threads)
            _, y, gx, gw = sparse_run((3, 1, 1, False), c, f, kernel)
            assert torch.get_num_threads() == threads
            runs[threads, rep] = (y.feats.detach(), gx, gw)
    finally:
        torch.set_num_threads(n)
    for a, b in zip(runs[2, 0], runs[2, 1]):
        assert torch.equal(a, b)
    for a, b in zip(runs[2, 0], runs[1, 0]):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-12)
