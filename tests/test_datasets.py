"""Datasets, collate functions, label-fraction splits and augmentations."""

import numpy as np
import pytest
import torch

from ssl3d.data import datasets as D
from ssl3d.data import transforms as T


def test_label_fraction_subset_stratified_deterministic_nested():
    labels = np.repeat(np.arange(5), [100, 200, 50, 10, 40])
    subs = {f: D.label_fraction_subset(labels, f, seed=1) for f in (0.01, 0.05, 0.1, 1.0)}
    for f, idx in subs.items():
        counts = np.bincount(labels[idx], minlength=5)
        expect = np.maximum(1, np.round(f * np.bincount(labels)))
        np.testing.assert_array_equal(counts, expect)
    assert set(subs[0.01]) <= set(subs[0.05]) <= set(subs[0.1]) <= set(subs[1.0])
    np.testing.assert_array_equal(subs[0.05], D.label_fraction_subset(labels, 0.05, seed=1))
    assert not np.array_equal(subs[0.1], D.label_fraction_subset(labels, 0.1, seed=2))
    with pytest.raises(ValueError, match="fraction"):
        D.label_fraction_subset(labels, 0)


def test_object_dataset_deterministic_splits_and_collate():
    tr, te = D.ObjectDataset(2, 256, "train", classes=["chair", "mug"]), D.ObjectDataset(2, 256, "test",
                                                                                        classes=["chair", "mug"])
    assert len(tr) == 4 and list(tr.labels) == [0, 0, 1, 1]
    again = D.ObjectDataset(2, 256, "train", classes=["chair", "mug"])
    np.testing.assert_array_equal(tr[1]["points"], again[1]["points"])
    assert not np.allclose(tr[0]["points"], te[0]["points"])
    b = D.collate_objects([tr[i] for i in range(4)])
    assert b["points"].shape == (4, 256, 3) and b["label"].tolist() == [0, 0, 1, 1] and b["part"].shape == (4, 256)
    with pytest.raises(IndexError):
        tr[4]


def test_augmentation_depends_on_epoch_and_is_reproducible():
    ds = D.ObjectDataset(1, 128, classes=["lamp"], transform=T.Compose([T.RandomRotation(), T.Jitter()]))
    a = ds[0]["points"]
    np.testing.assert_array_equal(a, ds[0]["points"])
    ds.set_epoch(1)
    assert not np.allclose(a, ds[0]["points"])


def test_rotation_preserves_geometry_and_dropout_keeps_alignment():
    rng = np.random.default_rng(0)
    pts = rng.normal(size=(100, 3)).astype(np.float32)
    s = T.RandomRotation(axis=None)({"points": pts, "normals": pts.copy()}, rng)
    np.testing.assert_allclose(np.linalg.norm(s["points"], axis=1), np.linalg.norm(pts, axis=1), rtol=1e-5)
    np.testing.assert_allclose(s["points"], pts @ s["rotation"].T, atol=1e-5)
    part = np.arange(100)
    d = T.PointDropout(0.9)({"points": pts, "part": part, "label": 3}, np.random.default_rng(1))
    np.testing.assert_array_equal(d["points"], pts[d["part"]])
    assert d["label"] == 3 and len(d["points"]) < 100


def test_scene_dataset_voxels_and_collate():
    ds = D.SceneDataset(2, points_per_room=20000, voxel_size=0.1)
    item = ds[0]
    centres = (item["coords"].float() + 0.5) * 0.1
    assert (centres[item["inverse"]] - item["points"]).abs().max() <= 0.05 + 1e-5
    assert item["feats"].shape == (len(item["coords"]), 3)
    b = D.collate_scenes([ds[0], ds[1]])
    assert b["coords"].shape[1] == 4 and set(b["coords"][:, 0].tolist()) == {0, 1}
    assert b["offsets"][-1] == len(b["coords"]) and len(b["inverse"]) == 40000
    assert b["inverse"].max() < len(b["coords"])


def test_view_pairs_stay_consistent_under_random_rotations():
    ds = D.ViewPairDataset(n_rooms=1, frames_per_room=10, voxel_size=0.1, width=64, height=48,
                           transform=T.RandomRotation(axis=None))
    assert len(ds) > 0
    it = ds[0]
    c = it["correspondences"]
    p1_in_0 = it["points1"] @ it["T"][:3, :3].T + it["T"][:3, 3]
    err = (it["points0"][c[:, 0]] - p1_in_0[c[:, 1]]).norm(dim=1)
    assert err.max() <= 0.15 + 1e-4, "T maps view 1 onto view 0 after augmentation"
    b = D.collate_pairs([ds[0], ds[min(1, len(ds) - 1)]])
    cc = b["correspondences"]
    assert cc[:, 0].max() < len(b["points0"]) and cc[:, 1].max() < len(b["points1"])


def test_rgbd_frame_dataset_pixels_match_points():
    ds = D.RGBDFrameDataset(n_rooms=1, frames_per_room=2, voxel_size=0.1, width=64, height=48)
    it = ds[0]
    v, u = it["pixels"][:, 0], it["pixels"][:, 1]
    z = it["depth"][v, u]
    torch.testing.assert_close(it["points"][:, 2], z)
    assert it["image"].shape == (3, 48, 64)
    torch.testing.assert_close(it["semantic"], it["semantic_image"][v, u])
