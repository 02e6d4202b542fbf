"""Ray-cast RGB-D frames against independent geometry: hand cases and brute-force point-to-mesh distances."""

import numpy as np
import pytest

from ssl3d.data import rgbd as R
from ssl3d.data import synthetic as S


def point_triangle_distance(p, a, b, c):
    """Naive closest distance from point p to triangle abc (Ericson, Real-Time Collision Detection, 5.1.5)."""
    ab, ac, ap = b - a, c - a, p - a
    d1, d2 = ab @ ap, ac @ ap
    if d1 <= 0 and d2 <= 0:
        return np.linalg.norm(p - a)
    bp = p - b
    d3, d4 = ab @ bp, ac @ bp
    if d3 >= 0 and d4 <= d3:
        return np.linalg.norm(p - b)
    vc = d1 * d4 - d3 * d2
    if vc <= 0 and d1 >= 0 and d3 <= 0:
        return np.linalg.norm(p - (a + d1 / (d1 - d3) * ab))
    cp = p - c
    d5, d6 = ab @ cp, ac @ cp
    if d6 >= 0 and d5 <= d6:
        return np.linalg.norm(p - c)
    vb = d5 * d2 - d1 * d6
    if vb <= 0 and d2 >= 0 and d6 <= 0:
        return np.linalg.norm(p - (a + d2 / (d2 - d6) * ac))
    va = d3 * d6 - d5 * d4
    if va <= 0 and (d4 - d3) >= 0 and (d5 - d6) >= 0:
        w = (d4 - d3) / ((d4 - d3) + (d5 - d6))
        return np.linalg.norm(p - (b + w * (c - b)))
    denom = 1 / (va + vb + vc)
    return np.linalg.norm(p - (a + ab * vb * denom + ac * vc * denom))


def test_plane_hand_case():
    # a big quad at world z = 2; camera at the origin looking along +z (pose = identity)
    quad = S.quad((-10, -10, 2), (10, -10, 2), (10, 10, 2), (-10, 10, 2))
    K = R.intrinsics(40, 30, 60)
    depth, face = R.raycast(quad.vertices, quad.faces, quad.tags, K, np.eye(4), 40, 30)
    np.testing.assert_allclose(depth, 2.0, atol=1e-12)
    assert (face >= 0).all()
    pts, pix = R.backproject(depth, K)
    np.testing.assert_allclose(pts[:, 2], 2.0)
    uv, z = R.project(pts, K)
    np.testing.assert_allclose(uv, pix[:, ::-1], atol=1e-9)  # pixel centres at integer coordinates


def test_look_at_convention():
    pose = R.look_at((0, 0, 0), (1, 0, 0))
    np.testing.assert_allclose(pose[:3, 2], [1, 0, 0])  # camera z = forward
    np.testing.assert_allclose(pose[:3, 1], [0, 0, -1])  # camera y = down
    np.testing.assert_allclose(np.linalg.det(pose[:3, :3]), 1)


@pytest.fixture(scope="module")
def frame():
    room = S.make_room(3)
    poses = R.camera_trajectory(room, 4, seed=3)
    return room, R.render_frame(room, R.intrinsics(96, 72), poses[1], 96, 72)


def test_backprojected_pixels_lie_on_the_surface_with_the_right_label(frame):
    room, f = frame
    m = room.mesh
    pts, pix = R.backproject(f["depth"], f["K"], f["pose"])
    assert len(pts) == 96 * 72, "inside a closed room every ray hits something"
    rng = np.random.default_rng(0)
    tri = m.vertices[m.faces]  # (F, 3, 3)
    for k in rng.choice(len(pts), 120, replace=False):
        d = np.array([point_triangle_distance(pts[k], *t) for t in tri])
        assert d.min() < 1e-3, f"pixel {pix[k]} is {d.min() * 1000:.2f} mm off the surface"
        near = np.nonzero(d < 1e-3)[0]
        labels = set(room.instance_semantic[m.tags[near]].tolist())
        assert f["semantic"][pix[k, 0], pix[k, 1]] in labels


def test_frame_contents(frame):
    room, f = frame
    assert f["color"].shape == (72, 96, 3) and f["color"].dtype == np.uint8
    assert f["depth"].min() > 0 and f["depth"].max() < np.linalg.norm(room.size)
    assert f["color"].std() > 10, "textured, not flat"


def test_view_pair_correspondences_against_brute_force():
    room = S.make_room(4)
    frames = R.scan_room(room, 12, 64, 48, seed=4)
    pairs = R.find_view_pairs(frames, 0.3, 0.1, max_gap=2)
    assert pairs, "consecutive frames overlap"
    i, j, ov = pairs[0]
    p = R.make_view_pair(frames[i], frames[j], voxel_size=0.1)
    b_in_0 = p["points1"] @ p["T"][:3, :3].T + p["T"][:3, 3]
    d = np.linalg.norm(p["points0"][:, None] - b_in_0[None], axis=2)
    brute = np.argwhere(d <= 0.15)
    np.testing.assert_array_equal(p["correspondences"], brute)
    # world consistency: both views of a correspondence are the same place in the room
    w0 = p["points0"] @ frames[i]["pose"][:3, :3].T + frames[i]["pose"][:3, 3]
    w1 = p["points1"] @ frames[j]["pose"][:3, :3].T + frames[j]["pose"][:3, 3]
    c = p["correspondences"]
    assert np.linalg.norm(w0[c[:, 0]] - w1[c[:, 1]], axis=1).max() <= 0.15 + 1e-5
    assert p["overlap"] >= 0.3 - 1e-9


def test_backproject_rejects_bad_depth():
    with pytest.raises(ValueError, match=r"\(H, W\)"):
        R.backproject(np.zeros(5), np.eye(3))
