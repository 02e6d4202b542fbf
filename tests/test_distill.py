"""2D → 3D (ssl3d.distill): projection round trips with rgbd.backproject, visibility (behind the camera, outside the
image, occluded), bilinear sampling against a manual computation and grid_sample, the real Middlebury scan, and
the retrieval metric on hand-made features."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ssl3d import distill as D
from ssl3d.data import rgbd as R
from ssl3d.data import synthetic as S


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_thread):
    """One thread: tiny tensors (conftest.one_thread)."""


@pytest.fixture(scope="module")
def frame():
    room = S.make_room(3)
    return R.scan_room(room, 1, width=48, height=36, seed=1)[0]


@pytest.fixture(scope="module")
def moto():
    from ssl3d.data.real import motorcycle_rgbd

    return motorcycle_rgbd()


def test_projection_inverts_backprojection_in_camera_and_world_frames(frame):
    for pose in (None, frame["pose"]):
        pts, pix = R.backproject(frame["depth"], frame["K"], pose)
        uv, z = D.project_points(pts, frame["K"], pose)
        np.testing.assert_allclose(uv.numpy(), pix[:, ::-1].astype(np.float64), atol=1e-6)
        np.testing.assert_allclose(z.numpy(), frame["depth"][pix[:, 0], pix[:, 1]], rtol=1e-6)
        assert bool(D.visible_mask(uv, z, frame["depth"].shape).all())


def test_visibility_excludes_points_behind_the_camera_and_outside_the_image():
    K = np.array([[8.0, 0, 3.5], [0, 8.0, 2.5], [0, 0, 1]])  # an 8 × 6 image; pixel centres at integers
    pts = torch.tensor([[0.0, 0.0, 1.0],  # image centre (3.5, 2.5)
                        [0.0, 0.0, -1.0],  # behind the camera
                        [0.0, 0.0, 0.0],  # in the camera centre
                        [-0.5, 0.0, 1.0],  # u = −0.5: the left edge of pixel 0, inside
                        [0.5, 0.0, 1.0],  # u = 7.5 = W − ½: the right edge, outside
                        [0.46875, 0.0, 1.0],  # u = 7.25, inside
                        [0.0, 0.375, 1.0],  # v = 5.5 = H − ½, outside
                        [0.0, -0.3125, 1.0],  # v = 0, inside
                        [4.0, 0.0, -1.0]])  # behind, would project to u = −28.5
    uv, z = D.project_points(pts, K)
    vis = D.visible_mask(uv, z, (6, 8))
    assert vis.tolist() == [True, False, False, True, False, True, False, True, False]
    assert torch.isnan(uv[1]).all() and torch.isnan(uv[8]).all()
    torch.testing.assert_close(uv[[0, 3, 5, 7]], torch.tensor([[3.5, 2.5], [-0.5, 2.5], [7.25, 2.5], [3.5, 0.0]],
                                                              dtype=torch.float64))
    depth = np.full((6, 8), 1.0)
    depth[3, 4] = 0.5  # an occluder in front of the image centre ((u, v) = (3.5, 2.5) rounds half up to (4, 3))
    vis_occ = D.visible_mask(uv, z, (6, 8), depth=depth, occlusion_tol=0.05)
    assert vis_occ.tolist() == [False, False, False, True, False, True, False, True, False]
    with pytest.raises(ValueError, match="depth map"):
        D.visible_mask(uv, z, (6, 8), occlusion_tol=0.05)
    with pytest.raises(ValueError, match=r"\(3, 3\) pinhole"):
        D.project_points(pts, np.eye(4))
    with pytest.raises(ValueError, match="in pixels"):
        D.project_points(pts, np.diag([0.0, 1.0, 1.0]))


def _manual_bilinear(fmap, u, v):
    """Bilinear interpolation written out for one point on a (C, H, W) map, border-clamped."""
    C, H, W = fmap.shape
    u, v = min(max(u, 0.0), W - 1), min(max(v, 0.0), H - 1)
    u0, v0 = min(math.floor(u), W - 2), min(math.floor(v), H - 2)
    a, b = u - u0, v - v0
    return ((1 - a) * (1 - b) * fmap[:, v0, u0] + a * (1 - b) * fmap[:, v0, u0 + 1]
            + (1 - a) * b * fmap[:, v0 + 1, u0] + a * b * fmap[:, v0 + 1, u0 + 1])


def test_bilinear_sampling_equals_a_manual_computation_and_grid_sample(gen):
    fmap = torch.randn(2, 5, 7, 9, generator=gen, dtype=torch.float64)  # (B, C, H, W)
    uv = torch.tensor([[0.0, 0.0], [8.0, 6.0], [3.0, 2.0], [3.5, 2.0], [3.25, 4.75], [-0.4, 1.5], [8.45, 6.3],
                       [7.999, 0.001]], dtype=torch.float64)
    bi = torch.tensor([0, 1, 0, 1, 1, 0, 1, 0])
    out = D.bilinear_sample(fmap, uv, bi)
    for i in range(len(uv)):
        torch.testing.assert_close(out[i], _manual_bilinear(fmap[bi[i]], float(uv[i, 0]), float(uv[i, 1])))
    torch.testing.assert_close(out[2], fmap[0, :, 2, 3])  # a pixel centre is that pixel's feature
    torch.testing.assert_close(out[3], (fmap[1, :, 2, 3] + fmap[1, :, 2, 4]) / 2)
    grid = torch.stack([uv[:, 0] / 8 * 2 - 1, uv[:, 1] / 6 * 2 - 1], 1)  # align_corners=True: centres at ±1
    ref = torch.stack([F.grid_sample(fmap[b:b + 1], grid[i].view(1, 1, 1, 2), align_corners=True,
                                     padding_mode="border")[0, :, 0, 0] for i, b in enumerate(bi.tolist())])
    torch.testing.assert_close(out, ref)
    one = D.bilinear_sample(fmap[0], uv[:2])  # a single (C, H, W) map
    torch.testing.assert_close(one, torch.stack([fmap[0, :, 0, 0], fmap[0, :, 6, 8]]))
    with pytest.raises(ValueError, match="batch_index"):
        D.bilinear_sample(fmap, uv)
    with pytest.raises(ValueError, match="visible_mask"):
        D.bilinear_sample(fmap[0], torch.tensor([[math.nan, 1.0]]))


def test_bilinear_sampling_is_differentiable_in_the_map(gen):
    fmap = torch.randn(3, 4, 5, generator=gen, requires_grad=True)
    D.bilinear_sample(fmap, torch.tensor([[1.25, 2.5]])).sum().backward()
    expected = torch.zeros(4, 5)
    expected[2, 1], expected[2, 2], expected[3, 1], expected[3, 2] = 0.375, 0.125, 0.375, 0.125
    torch.testing.assert_close(fmap.grad, expected.expand(3, 4, 5))


def test_resize_uv_maps_pixel_centres_between_resolutions():
    uv = torch.tensor([[0.5, 1.5], [-0.5, -0.5], [7.5, 5.5]])
    torch.testing.assert_close(D.resize_uv(uv, (6, 8), (3, 4)), torch.tensor([[0.0, 0.5], [-0.5, -0.5], [3.5, 2.5]]))
    torch.testing.assert_close(D.resize_uv(D.resize_uv(uv, (6, 8), (9, 5)), (9, 5), (6, 8)), uv)


def test_real_scan_crop_projects_onto_its_own_pixels(moto):
    """The Middlebury motorcycle (real K, real depth): a crop with shifted intrinsics back-projects to the same 3D
    points as the full frame, and its points project back onto their pixels, where sampling gives their colours."""
    top, left, h, w = 200, 300, 24, 32
    crop = D.crop_rgbd(moto, top, left, h, w)
    item = D.rgbd_item(crop["color"], crop["depth"], crop["K"], voxel_size=0.005)  # ~2 px at 2.3 m
    pix = item["pixels"]
    assert len(pix) > 50 and item["image"].shape == (3, h, w)
    K = moto["K"].astype(np.float64)  # the full frame's camera, full-frame pixel coordinates
    r, c = pix[:, 0].numpy() + top, pix[:, 1].numpy() + left
    z = moto["depth"][r, c].astype(np.float64)
    full = np.stack([(c - K[0, 2]) * z / K[0, 0], (r - K[1, 2]) * z / K[1, 1], z], 1)
    np.testing.assert_allclose(item["points"].numpy(), full, rtol=1e-5, atol=1e-5)
    uv, z = D.project_points(item["points"], item["K"])
    assert bool(D.visible_mask(uv, z, (h, w)).all())
    np.testing.assert_allclose(uv.numpy(), pix[:, [1, 0]].numpy(), atol=1e-3)
    colours = D.bilinear_sample(item["image"], uv.float())  # (M, 3)
    torch.testing.assert_close(colours, item["image"][:, pix[:, 0], pix[:, 1]].T, atol=2e-3, rtol=0)
    # the same points seen from the full frame's camera land on the shifted pixels
    uv_full, _ = D.project_points(item["points"], moto["K"])
    np.testing.assert_allclose(uv_full.numpy(), (pix[:, [1, 0]] + torch.tensor([left, top])).numpy(), atol=1e-3)
    with pytest.raises(ValueError, match="outside"):
        D.crop_rgbd(moto, 490, 0, 20, 20)


def test_retrieval_accuracy_on_hand_made_features():
    k = torch.eye(4)
    assert D.retrieval_accuracy(k, k, num_candidates=8) == {"top1": 1.0, "chance": 0.25, "num_queries": 4}
    q = 3 * k[[1, 0, 2, 3]]  # rows 0 and 1 retrieve each other's pixel; scaling does not matter (cosine)
    assert D.retrieval_accuracy(q, k, num_candidates=8)["top1"] == 0.5
    # two scans with the same features: within a scan every query finds its own pixel
    k2 = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    res = D.retrieval_accuracy(k2, k2, num_candidates=1024, batch_index=torch.tensor([0, 0, 1, 1]))
    assert res == {"top1": 1.0, "chance": 0.5, "num_queries": 4}
    # groups of num_candidates: 10 pairs → two groups of 4, the last 2 pairs dropped
    g = torch.Generator().manual_seed(0)
    res = D.retrieval_accuracy(torch.randn(10, 3, generator=g), torch.randn(10, 3, generator=g), num_candidates=4)
    assert res["num_queries"] == 8 and res["chance"] == 0.25
    with pytest.raises(ValueError, match="paired row by row"):
        D.retrieval_accuracy(torch.zeros(3, 2), torch.zeros(4, 2))


def test_real_scan_crop_through_stage_two(moto):
    """Stage 2 runs on a real frame: K re-projection pairs every voxel with its own pixel."""
    from ssl3d.methods import build_method
    from ssl3d.models import build_model
    from ssl3d.models.resunet2d import ResUNet2d

    crop = D.crop_rgbd(moto, 180, 330, 32, 48)
    item = D.rgbd_item(crop["color"], crop["depth"], crop["K"], voxel_size=0.01)
    torch.manual_seed(0)
    m = build_method("image_to_point", build_model("res16unet14tiny", in_channels=3),
                     teacher=ResUNet2d(layers=(1, 1, 1, 1), width=8), voxel_size=0.01, num_pairs=100)
    batch = m.make_batch([item], augment=True)
    assert len(batch["pair_voxel"]) == min(100, len(item["points"]))
    stored = {(int(c), int(r)) for r, c in item["pixels"]}
    assert {(int(u), int(v)) for u, v in batch["pair_uv"].round().long()} <= stored
    torch.testing.assert_close(batch["pair_uv"], batch["pair_uv"].round(), atol=1e-3, rtol=0)
    assert math.isfinite(m(batch)["loss"].item())
