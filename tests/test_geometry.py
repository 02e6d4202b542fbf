"""ssl3d.geometry against brute-force references (naive loops, scipy, hand-computed cases)."""

import math

import numpy as np
import pytest
import torch
from scipy.spatial import cKDTree
from scipy.spatial.transform import Rotation

from ssl3d import geometry as G


def test_square_distance_matches_cdist(gen):
    a, b = torch.randn(2, 50, 3, generator=gen), torch.randn(2, 70, 3, generator=gen)
    torch.testing.assert_close(G.square_distance(a, b), torch.cdist(a, b) ** 2, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("chunk", [7, 4096])
def test_knn_matches_naive_loop(gen, chunk):
    q, r = torch.randn(40, 3, generator=gen), torch.randn(60, 3, generator=gen)
    d, idx = G.knn(q, r, k=5, chunk_size=chunk)
    for i in range(len(q)):
        dist = [float(((q[i] - r[j]) ** 2).sum()) for j in range(len(r))]
        order = sorted(range(len(r)), key=lambda j: dist[j])[:5]
        assert idx[i].tolist() == order
        np.testing.assert_allclose(d[i].numpy(), [dist[j] for j in order], rtol=1e-4, atol=1e-5)


def test_knn_batched_and_exclude_self_matches_scipy(gen):
    x = torch.randn(3, 200, 3, generator=gen)
    d, idx = G.knn(x, k=4, exclude_self=True, chunk_size=64)
    for b in range(3):
        dd, ii = cKDTree(x[b].numpy()).query(x[b].numpy(), k=5)
        assert (idx[b] == torch.from_numpy(ii[:, 1:])).all()
        np.testing.assert_allclose(d[b].sqrt().numpy(), dd[:, 1:], rtol=1e-4, atol=1e-5)
        assert not (idx[b] == torch.arange(200)[:, None]).any()


def test_knn_errors():
    with pytest.raises(ValueError, match="only 3 points"):
        G.knn(torch.randn(5, 3), torch.randn(3, 3), k=4)
    with pytest.raises(ValueError, match=r"\(N, D\)"):
        G.knn(torch.randn(5, 3), torch.randn(2, 3, 3), k=1)


def test_radius_pairs_matches_brute_force(gen):
    a, b = torch.rand(120, 3, generator=gen), torch.rand(150, 3, generator=gen)
    r = 0.15
    pairs = G.radius_pairs(a, b, r)
    brute = (torch.cdist(a.double(), b.double()) <= r).nonzero()
    assert torch.equal(pairs, brute)
    near = G.radius_pairs(a, b, r, nearest_only=True)
    d = torch.cdist(a.double(), b.double())
    has = (d <= r).any(1)
    assert torch.equal(near[:, 0], has.nonzero().squeeze(1))
    assert torch.equal(near[:, 1], d.argmin(1)[has])


def naive_fps(x, m, start=0):
    picked = [start]
    for _ in range(m - 1):
        best, best_d = None, -1.0
        for i in range(len(x)):
            di = min(float(((x[i] - x[j]) ** 2).sum()) for j in picked)
            if di > best_d:
                best, best_d = i, di
        picked.append(best)
    return picked


def test_fps_matches_naive_and_batches(gen):
    x = torch.randn(2, 80, 3, generator=gen)
    idx = G.fps(x, 12)
    for b in range(2):
        assert idx[b].tolist() == naive_fps(x[b], 12)
    assert G.fps(x[0], 12).tolist() == idx[0].tolist()
    assert len(set(idx[0].tolist())) == 12


def test_fps_covers_better_than_random(gen):
    # on a cloud with a dense cluster and sparse outliers, FPS reaches the outliers; random rarely does
    x = torch.cat([torch.randn(2000, 3, generator=gen) * 0.05, torch.rand(50, 3, generator=gen) * 4 - 2])
    f = G.coverage_radius(x, x[G.fps(x, 64)])
    r = G.coverage_radius(x, x[torch.randperm(len(x), generator=gen)[:64]])
    assert f < 0.6 * r


def test_coverage_radius_hand_computed():
    pts = torch.tensor([[0.0, 0, 0], [1, 0, 0], [3, 0, 0]])
    assert G.coverage_radius(pts, pts[:1]) == pytest.approx(3.0)
    assert G.coverage_radius(pts, pts[[0, 2]]) == pytest.approx(1.0)


def test_voxelize_against_dict_reference(gen):
    x = torch.rand(500, 3, generator=gen) * 2 - 1
    feats = torch.randn(500, 4, generator=gen)
    labels = torch.randint(0, 3, (500,), generator=gen)
    labels[::7] = -100
    v = G.voxelize(x, 0.25, feats=feats, labels=labels)
    ref = {}
    for i in range(500):
        key = tuple(math.floor(float(c) / 0.25) for c in x[i])
        ref.setdefault(key, []).append(i)
    assert len(v) == len(ref)
    for m, key in enumerate(map(tuple, v.coords.tolist())):
        members = ref[key]
        assert v.counts[m] == len(members)
        assert v.index[m] == min(members)
        assert (v.inverse[members] == m).all()
        torch.testing.assert_close(v.feats[m], feats[members].mean(0))
        valid = [int(labels[i]) for i in members if labels[i] != -100]
        if valid:
            counts = np.bincount(valid)
            assert v.labels[m] == int(np.argmax(counts))
        else:
            assert v.labels[m] == -100
    # coordinates are sorted lexicographically and centres lie inside their voxel
    assert (v.centers()[v.inverse] - x).abs().max() <= 0.125 + 1e-6


def test_voxel_count_decreases_with_size(gen):
    x = torch.rand(3000, 3, generator=gen)
    counts = [len(G.voxelize(x, s)) for s in (0.02, 0.05, 0.1, 0.2)]
    assert counts == sorted(counts, reverse=True) and counts[0] > counts[-1]


def test_voxelize_bad_input():
    with pytest.raises(ValueError, match="empty"):
        G.voxelize(torch.zeros(0, 3), 0.1)
    with pytest.raises(ValueError, match="NaN"):
        G.voxelize(torch.tensor([[0.0, float("nan"), 0]]), 0.1)
    with pytest.raises(ValueError, match="shape"):
        G.voxelize(torch.zeros(4, 2), 0.1)
    with pytest.raises(ValueError, match="positive"):
        G.voxelize(torch.zeros(4, 3), 0.0)


def test_sample_surface_area_weighted(gen):
    # two triangles: areas 1/2 and 9/2 → 10 % / 90 % of the samples, all on their planes
    v = torch.tensor([[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1], [3, 0, 1], [0, 3, 1]])
    f = torch.tensor([[0, 1, 2], [3, 4, 5]])
    p, n, face = G.sample_surface(v, f, 20000, generator=gen)
    frac = (face == 0).float().mean().item()
    assert abs(frac - 0.1) < 0.01
    assert torch.allclose(p[face == 0, 2], torch.tensor(0.0)) and torch.allclose(p[face == 1, 2], torch.tensor(1.0))
    assert (p[:, :2] >= -1e-6).all() and (p[face == 0, :2].sum(1) <= 1 + 1e-5).all()
    assert torch.allclose(n.abs(), torch.tensor([0.0, 0, 1]).expand_as(n))
    # uniform inside the triangle: the mean is the centroid
    torch.testing.assert_close(p[face == 1].mean(0), torch.tensor([1.0, 1.0, 1.0]), atol=0.03, rtol=0)


def test_estimate_normals_on_a_plane(gen):
    x = torch.rand(400, 3, generator=gen)
    x[:, 2] = 0.3 * x[:, 0]  # plane with normal ∝ (-0.3, 0, 1)
    nrm = G.estimate_normals(x, k=10)
    true = torch.tensor([-0.3, 0.0, 1.0]) / math.sqrt(1.09)
    assert ((nrm @ true).abs() > 0.999).all()


def test_rotation_matches_scipy_and_transforms_invert(gen):
    axis, angle = np.array([1.0, 2.0, -0.5]), 0.7
    r = G.rotation_matrix(axis, angle)
    ref = Rotation.from_rotvec(axis / np.linalg.norm(axis) * angle).as_matrix()
    np.testing.assert_allclose(r.numpy(), ref, atol=1e-6)
    for _ in range(5):
        rr = G.random_rotation(gen)
        torch.testing.assert_close(rr @ rr.T, torch.eye(3), atol=1e-5, rtol=0)
        assert torch.det(rr) == pytest.approx(1.0, abs=1e-5)
    t = G.make_transform(G.random_rotation(gen), torch.tensor([1.0, -2.0, 0.5]))
    x = torch.randn(30, 3, generator=gen)
    y = G.apply_transform(x, t)
    torch.testing.assert_close(y, x @ t[:3, :3].T + t[:3, 3])
    torch.testing.assert_close(G.apply_transform(y, G.invert_transform(t)), x, atol=1e-5, rtol=0)


def test_random_rotation_about_up_axis_keeps_z(gen):
    r = G.random_rotation(gen, axis=(0, 0, 1))
    torch.testing.assert_close(r[2], torch.tensor([0.0, 0.0, 1.0]))


# ----------------------------------------------------------------------------------------------------------
# The KD-tree kNN and radius search, against brute force (float64 distances by differences) and cKDTree
# ----------------------------------------------------------------------------------------------------------
def brute_knn(q, r, k, exclude_self=False):
    """float64 distances by differences, stable argsort (ties → lower index); chunks of 256 queries."""
    out_d, out_i = [], []
    for s in range(0, q.shape[-2], 256):
        d = ((q.double()[..., s:s + 256, None, :] - r.double()[..., None, :, :]) ** 2).sum(-1)
        if exclude_self:
            rows = torch.arange(d.shape[-2])
            d[..., rows, rows + s] = float("inf")
        i = d.argsort(dim=-1, stable=True)[..., :k]
        out_d.append(d.gather(-1, i))
        out_i.append(i)
    return torch.cat(out_d, -2), torch.cat(out_i, -2)


def varied_clouds(gen, n=1800):
    u, v = torch.rand(n, generator=gen) * 6.283, torch.rand(n, generator=gen) * 6.283
    torus = torch.stack([(1 + 0.3 * v.cos()) * u.cos(), (1 + 0.3 * v.cos()) * u.sin(), 0.3 * v.sin()], 1)
    blobs = torch.randn(n, 3, generator=gen) * 0.02 + torch.randn(6, 3, generator=gen).repeat_interleave(n // 6, 0)
    planar = torch.cat([torch.rand(n, 2, generator=gen), torch.zeros(n, 1)], 1)  # zero extent along z
    line = torch.rand(n, 1, generator=gen) * torch.tensor([[1.0, 2.0, -1.0]])  # zero extent across the line
    # outliers far away, in a cloud of scene coordinates (1 km from the origin)
    scene = torch.cat([torch.rand(n - 3, 3, generator=gen) * 5, torch.tensor([[60.0, 0, 0], [0, -40, 9], [5, 5, 30]])])
    return {"torus": torus, "cube": torch.rand(n, 3, generator=gen), "blobs": blobs, "planar": planar,
            "line": line, "scene": scene + 1000.0}


@pytest.mark.parametrize("name", ["torus", "cube", "blobs", "planar", "line", "scene"])
def test_tree_knn_matches_brute_force(gen, name):
    x = varied_clouds(gen)[name]
    for exclude in (False, True):
        d, i = G._knn_tree(x[None], x[None], 16, exclude)
        dd, ii = brute_knn(x, x, 16, exclude)
        tol = 1e-5 * float(dd[:, -1].median())
        torch.testing.assert_close(d[0].double(), dd, rtol=1e-5, atol=tol)
        # indices agree except between (near-)equal distances, where the set of distances must still match
        assert (i[0] == ii).float().mean() > 0.999
        got = ((x[i[0]].double() - x.double()[:, None]) ** 2).sum(-1)  # the distances of the returned points
        torch.testing.assert_close(got, dd, rtol=1e-5, atol=tol)
        if exclude:
            assert not (i[0] == torch.arange(len(x))[:, None]).any()


def test_knn_dispatches_large_3d_clouds_to_the_tree(gen, monkeypatch):
    # 2,048² pairs reach the KD-tree; batched clouds of different scales, queries outside the reference box,
    # float64, and exact duplicates (ties: the distances match, every returned point is a true neighbour)
    calls = []
    real = G._knn_tree
    monkeypatch.setattr(G, "_knn_tree", lambda *a: calls.append(1) or real(*a))
    ref = torch.stack([torch.rand(2048, 3, generator=gen), 100 * torch.randn(2048, 3, generator=gen)]).double()
    ref[0, 1000:1010] = ref[0, 5]  # duplicates
    query = torch.cat([ref[:, :1500], 3 * ref[:, 1500:] + 2], 1)  # a quarter outside the box
    d, i = G.knn(query, ref, k=8)
    assert calls == [1]
    assert d.dtype == torch.float64 and d.shape == (2, 2048, 8)
    dd, _ = brute_knn(query, ref, 8)
    torch.testing.assert_close(d, dd, rtol=1e-9, atol=1e-9)
    picked = ref.gather(1, i.flatten(1).unsqueeze(-1).expand(-1, -1, 3)).view(2, 2048, 8, 3)
    got = ((picked - query[:, :, None]) ** 2).sum(-1)
    torch.testing.assert_close(got, dd, rtol=1e-9, atol=1e-9)
    # unbatched (N, 3) with exclude_self, against scipy
    x = ref[1].float()
    d1, i1 = G.knn(x, k=5, exclude_self=True)
    dk, ik = cKDTree(x.numpy()).query(x.numpy(), k=6)
    assert (i1 == torch.from_numpy(ik[:, 1:])).float().mean() > 0.999
    np.testing.assert_allclose(d1.double().sqrt().numpy(), dk[:, 1:], rtol=1e-5)


@pytest.mark.parametrize("name", ["torus", "cube", "blobs", "planar", "scene"])
def test_radius_pairs_on_varied_clouds(gen, name):
    x = varied_clouds(gen, n=1200)[name]
    y = x + 0.01 * torch.randn(x.shape, generator=gen)
    span = float((x.amax(0) - x.amin(0)).max())
    for radius in (span * 1e-3, span * 0.02, span * 0.3):
        pairs = G.radius_pairs(x, y.numpy(), radius)  # numpy input too
        a, b = x.double(), torch.from_numpy(y.numpy()).float().double()
        brute = (((a[:, None] - b[None]) ** 2).sum(-1) <= radius**2).nonzero()
        assert torch.equal(pairs, brute)
        near = G.radius_pairs(x, y, radius, nearest_only=True)
        d = ((a[:, None] - b[None]) ** 2).sum(-1)
        has = (d <= radius**2).any(1)
        assert torch.equal(near[:, 0], has.nonzero().squeeze(1))
        assert torch.equal(near[:, 1], d.argmin(1)[has])


def test_tree_knn_excludes_self_among_many_duplicates():
    x = torch.cat([torch.zeros(20, 3), torch.rand(200, 3) + 1])  # 20 copies: the tree may list any of them first
    d, i = G._knn_tree(x[None], x[None], 4, True)
    assert not (i[0] == torch.arange(220)[:, None]).any()
    assert torch.equal(d[0, :20], torch.zeros(20, 4, dtype=d.dtype))  # the other copies, at distance 0
    with pytest.raises(ValueError, match="radius must be"):
        G.radius_pairs(x, x, -1.0)


def test_radius_pairs_zero_radius_and_duplicates():
    a = torch.tensor([[0.0, 0, 0], [1, 0, 0], [1, 0, 0]])
    assert G.radius_pairs(a, a, 0.0).tolist() == [[0, 0], [1, 1], [1, 2], [2, 1], [2, 2]]  # radius 0: duplicates only
    assert G.radius_pairs(a, a, 0.5).tolist() == [[0, 0], [1, 1], [1, 2], [2, 1], [2, 2]]
    assert G.radius_pairs(a, a, 0.5, nearest_only=True).tolist() == [[0, 0], [1, 1], [2, 1]]  # ties → lowest j


def torch_loop_fps(x, m, start):
    """The straightforward torch loop (fps before the numpy loop)."""
    b, n, _ = x.shape
    idx, cur = torch.empty(b, m, dtype=torch.long), start.clone()
    mind, ar = torch.full((b, n), float("inf"), dtype=x.dtype), torch.arange(b)
    for t in range(m):
        idx[:, t] = cur
        mind = torch.minimum(mind, ((x - x[ar, cur].unsqueeze(1)) ** 2).sum(-1))
        cur = mind.argmax(-1)
    return idx


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fps_numpy_loop_is_identical_to_the_torch_loop(gen, dtype):
    for dims in (3, 2, 5):
        x = torch.randn(4, 700, dims, generator=gen, dtype=dtype)
        x[:, 100:140] = x[:, :40]  # duplicates: ties go to the lowest index in both
        start = torch.randint(700, (4,), generator=gen)
        want = torch_loop_fps(x, 96, start)
        assert torch.equal(G.fps(x, 96, start=None, generator=torch.Generator().manual_seed(7)),
                           torch_loop_fps(x, 96, torch.randint(700, (4,), generator=torch.Generator().manual_seed(7))))
        assert torch.equal(torch.stack([G.fps(x[c], 96, start=int(start[c])) for c in range(4)]), want)


@pytest.mark.parametrize("shape,span", [((5000, 3), 20), ((3000, 4), 6), ((1, 3), 5), ((400, 2), 1000)])
def test_unique_rows_equals_unique_dim0(shape, span):
    g = torch.Generator().manual_seed(shape[0])
    c = torch.randint(-span, span, shape, generator=g)
    got = G.unique_rows(c)
    ref = torch.unique(c, dim=0, return_inverse=True, return_counts=True)
    for a, b in zip(got, ref, strict=True):
        assert torch.equal(a, b)


def test_unique_rows_falls_back_when_keys_would_overflow():
    c = torch.tensor([[0, 0, 0], [2**40, 2**30, 5], [0, 0, 0], [-(2**40), 7, 1]])
    got = G.unique_rows(c)
    ref = torch.unique(c, dim=0, return_inverse=True, return_counts=True)
    assert all(torch.equal(a, b) for a, b in zip(got, ref, strict=True))
