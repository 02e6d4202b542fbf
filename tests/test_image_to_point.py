"""Image-to-point methods (ssl3d.methods.image_to_point): stage 1 ("pixel_contrast") and stage 2 ("image_to_point").

Stage 2's pairing is checked against the stored source pixels of the embedded frames, its targets against the
teacher's feature map read at those pixels, its loss against a cross-entropy written out by hand, and its voxels
against a direct voxelization of the points; the teacher stays frozen through training."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ssl3d.contrastive import pixel_info_nce
from ssl3d.data import datasets as D
from ssl3d.data import transforms as T
from ssl3d.data.image_views import ImageViews, PixelViewDataset
from ssl3d.methods import build_method, list_methods
from ssl3d.methods.image_to_point import PixelContrast, PointAugment
from ssl3d.models import build_model
from ssl3d.models.resunet2d import ResUNet2d, save_resunet2d
from ssl3d.train import pretrain


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_thread):
    """One thread: small tensors (conftest.one_thread)."""


@pytest.fixture(scope="module")
def frames():
    return D.RGBDFrameDataset(n_rooms=1, frames_per_room=2, width=64, height=48, voxel_size=0.1)


@pytest.fixture(scope="module")
def items(frames):
    return [frames[i] for i in range(len(frames))]


def tiny_teacher():
    torch.manual_seed(0)
    return ResUNet2d(layers=(1, 1, 1, 1), width=8).eval()


def method(**kw):
    torch.manual_seed(0)
    return build_method("image_to_point", build_model("res16unet14tiny", in_channels=3),
                        teacher=kw.pop("teacher", None) or tiny_teacher(), voxel_size=0.1, **kw)


def test_registry_and_errors(tmp_path):
    assert {"pixel_contrast", "image_to_point"} <= set(list_methods())
    with pytest.raises(ValueError, match="frozen 2D network"):
        build_method("image_to_point", build_model("res16unet14tiny", in_channels=0))
    with pytest.raises(TypeError, match="sparse"):
        build_method("image_to_point", build_model("pointnet", width=0.125), teacher=tiny_teacher())
    with pytest.raises(TypeError, match="ResUNet2d"):
        build_method("pixel_contrast", build_model("res16unet14tiny"))
    path = save_resunet2d(tiny_teacher(), tmp_path / "teacher.pt")
    m = build_method("image_to_point", build_model("res16unet14tiny", in_channels=0), teacher=str(path))
    assert isinstance(m.teacher, ResUNet2d) and not any(p.requires_grad for p in m.teacher.parameters())


# ----------------------------------------------------------------------------------------------------------
# Stage 1
# ----------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def view_batch(frames):
    ds = PixelViewDataset(frames, ImageViews(size=32), seed=0)
    return PixelContrast(ResUNet2d(layers=(1, 1, 1, 1), width=8)).collate([ds[0], ds[1]])


def test_pixel_contrast_loss_is_pixel_info_nce_of_the_two_views(view_batch):
    torch.manual_seed(0)
    m = build_method("pixel_contrast", ResUNet2d(layers=(1, 1, 1, 1), width=8), num_pos=64).eval()
    torch.manual_seed(1)
    out = m(view_batch)
    torch.manual_seed(1)
    ref = pixel_info_nce(m.backbone(view_batch["image0"]), m.backbone(view_batch["image1"]), view_batch["matches"],
                         num_pos=64, temperature=0.4)
    torch.testing.assert_close(out["loss"], ref)
    assert out["num_pairs"] == 128 and int(m.step) == 0  # eval mode does not count steps


def test_encoder_is_frozen_for_the_first_steps(view_batch):
    m = PixelContrast(ResUNet2d(layers=(1, 1, 1, 1), width=8), num_pos=64, freeze_encoder_steps=2).train()
    frozen = []
    for _ in range(3):
        m.zero_grad(set_to_none=True)
        out = m(view_batch)
        out["loss"].backward()
        frozen.append(out["encoder_frozen"])
        assert all((p.grad is None) == bool(out["encoder_frozen"]) for p in m.backbone.encoder.parameters())
        assert all(p.grad is not None for p in m.backbone.decoder.parameters())
    assert frozen == [1.0, 1.0, 0.0] and int(m.step) == 3
    assert "step" in m.state_dict()  # resumes with ssl3d.train checkpoints


def test_pixel_contrast_pretrains_through_the_one_loop(frames):
    torch.manual_seed(0)
    m = build_method("pixel_contrast", ResUNet2d(layers=(1, 1, 1, 1), width=8), num_pos=128, freeze_encoder_steps=1)
    h = pretrain(m, PixelViewDataset(frames, ImageViews(size=32)), epochs=2, batch_size=2, optimizer="sgd", lr=0.01,
                 scheduler=None)
    assert len(h["loss"]) == 2 and all(math.isfinite(v) for v in h["loss"])
    assert h["encoder_frozen"] == [1.0, 0.0]


# ----------------------------------------------------------------------------------------------------------
# Stage 2
# ----------------------------------------------------------------------------------------------------------
def test_reprojection_with_K_agrees_with_the_stored_pixels(items):
    m_proj, m_pix = method(pairing="project"), method(pairing="pixels")
    for b, it in enumerate(items):
        uv, vis = m_proj.pair_item(it, b)
        uv_pix, _ = m_pix.pair_item(it, b)
        assert bool(vis.all())
        torch.testing.assert_close(uv, uv_pix, atol=1e-3, rtol=0)
        torch.testing.assert_close(uv_pix, it["pixels"][:, [1, 0]].double())


def test_each_voxel_is_paired_once_with_its_first_points_pixel(items):
    m = method(augment=None)
    batch = m.make_batch(items, augment=False, num_pairs=None)
    for b, it in enumerate(items):
        sel = batch["pair_batch"] == b
        rows = batch["pair_voxel"][sel]
        assert len(torch.unique(rows)) == len(rows)
        coords = batch["coords"][rows][:, 1:]  # (P_b, 3)
        pts = it["points"]
        vox = torch.floor((pts - pts.min(0).values) / 0.1).long()  # direct voxelization of the item's points
        assert len(rows) == len(torch.unique(vox, dim=0))  # every voxel is paired (all points are visible)
        pix = it["pixels"]
        for (u, v), c in zip(batch["pair_uv"][sel].round().long().tolist(), coords.tolist(), strict=True):
            i = int(torch.nonzero((pix[:, 0] == v) & (pix[:, 1] == u)).squeeze())  # the point seen at that pixel
            assert vox[i].tolist() == c
            first = int(torch.nonzero((vox == vox[i]).all(1))[0])
            assert first == i  # the voxel's first point
        # per-voxel colours: the mean image colour at the voxel's points' pixels
        feats = batch["feats"][rows]
        i0 = int(torch.nonzero((pix[:, 0] == int(batch["pair_uv"][sel][0, 1].round())) &
                               (pix[:, 1] == int(batch["pair_uv"][sel][0, 0].round()))).squeeze())
        members = (vox == vox[i0]).all(1)
        torch.testing.assert_close(feats[0], it["image"][:, pix[members, 0], pix[members, 1]].mean(1))


def test_targets_are_the_teachers_features_at_the_points_pixels(items):
    m = method(pairing="pixels", num_pairs=40)
    batch = m.make_batch(items, augment=True)
    assert len(batch["pair_voxel"]) == 80
    t = m.targets(batch)
    with torch.no_grad():
        fmap = m.teacher(batch["image"])  # (B, 16, H, W)
    u, v = batch["pair_uv"].long().unbind(1)
    torch.testing.assert_close(t, fmap[batch["pair_batch"], :, v, u])
    mp = method(pairing="project", num_pairs=40)
    batch = mp.make_batch(items, augment=True)
    u, v = batch["pair_uv"].round().long().unbind(1)
    torch.testing.assert_close(mp.targets(batch), fmap[batch["pair_batch"], :, v, u], atol=1e-3, rtol=0)


@pytest.mark.parametrize("negatives", ["batch", "scan"])
def test_loss_is_infonce_of_point_features_against_pixel_features(items, negatives):
    m = method(pairing="pixels", num_pairs=30, negatives=negatives).eval()
    batch = m.make_batch(items, augment=False)
    out = m(batch)
    with torch.no_grad():
        z = m.head(m.backbone.encode(batch)["feats"])[batch["pair_voxel"]]  # (P, 16)
        fmap = m.teacher(batch["image"])
    u, v = batch["pair_uv"].long().unbind(1)
    t = fmap[batch["pair_batch"], :, v, u]  # (P, 16) unit vectors

    def ce(zq, tk):
        logits = F.normalize(zq, dim=1) @ F.normalize(tk, dim=1).T / 0.4
        return -torch.log_softmax(logits, 1).diagonal().mean()

    if negatives == "batch":
        ref = ce(z, t)
    else:
        ref = torch.stack([ce(z[batch["pair_batch"] == b], t[batch["pair_batch"] == b]) for b in (0, 1)]).mean()
    torch.testing.assert_close(out["loss"], ref, rtol=1e-5, atol=1e-6)
    assert out["num_pairs"] == 60 and 0 <= out["accuracy"] <= 1


def test_augmentation_moves_points_but_not_the_pairing(items):
    m = method(num_pairs=10_000, augment=PointAugment(jitter=0.01), generator=torch.Generator().manual_seed(0))
    plain = m.make_batch(items, augment=False)
    aug = m.make_batch(items, augment=True)
    assert not torch.equal(plain["coords"], aug["coords"]) or not torch.equal(plain["feats"], aug["feats"])
    for batch in (plain, aug):  # every pair's pixel is the stored pixel of one of the scan's points
        for b, it in enumerate(items):
            sel = batch["pair_batch"] == b
            uv = batch["pair_uv"][sel]
            torch.testing.assert_close(uv, uv.round(), atol=1e-3, rtol=0)
            stored = {(int(c), int(r)) for r, c in it["pixels"]}
            assert {(int(u), int(v)) for u, v in uv.round().long()} <= stored


def test_points_moved_before_pairing_are_rejected():
    ds = D.RGBDFrameDataset(n_rooms=1, frames_per_room=2, width=64, height=48, voxel_size=0.1,
                            transform=T.RandomRotation(axis=(0, 1, 0)))
    with pytest.raises(ValueError, match=r"transformed before the pairing.*transform=None"):
        method().make_batch([ds[0]])


def test_points_behind_the_camera_are_reported(items):
    it = dict(items[0])
    it["points"] = it["points"] * torch.tensor([1.0, 1.0, -1.0])
    it.pop("pixels")
    with pytest.raises(ValueError, match=r"behind the camera.*camera's frame"):
        method().make_batch([it])
    small = dict(items[0], image=items[0]["image"][:, :40])
    with pytest.raises(ValueError, match="share one size"):
        method().make_batch([items[1], small])


def test_training_steps_leave_the_teacher_untouched(frames):
    m = method(num_pairs=64)
    before = {k: v.clone() for k, v in m.teacher.state_dict().items()}
    bb = {k: v.clone() for k, v in m.backbone.state_dict().items()}
    h = pretrain(m, frames, epochs=2, batch_size=2, optimizer="sgd", lr=0.1, scheduler=None)
    assert len(h["loss"]) == 2 and all(math.isfinite(v) for v in h["loss"])
    assert not m.teacher.training
    for k, v in m.teacher.state_dict().items():
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)  # weights and BN statistics
    assert any(not torch.equal(v, bb[k]) for k, v in m.backbone.state_dict().items())


def test_retrieval_metric_on_held_out_items(items):
    res = method().retrieval(items, num_candidates=64, generator=torch.Generator().manual_seed(0))
    assert 0 <= res["top1"] <= 1 and res["chance"] == pytest.approx(1 / 64) and res["num_queries"] >= 64


def test_point_augment_is_a_rigid_similarity_without_jitter():
    pts = torch.randn(50, 3, generator=torch.Generator().manual_seed(0))
    out, _ = PointAugment(scale=(2.0, 2.0), flip_p=0.0)(pts, None, torch.Generator().manual_seed(1))
    d0, d1 = torch.cdist(pts.double(), pts.double()), torch.cdist(out.double(), out.double())
    torch.testing.assert_close(d1, 2 * d0, rtol=1e-5, atol=1e-5)  # distances scale by s: rotations only
    torch.testing.assert_close(out.mean(0), torch.zeros(3), atol=1e-5, rtol=0)
    cols = torch.rand(50, 3)
    _, c = PointAugment()(pts, cols, torch.Generator().manual_seed(2))
    assert c.min() >= 0 and c.max() <= 1 and np.abs((c - cols).numpy()).max() < 0.2
