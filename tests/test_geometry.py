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
