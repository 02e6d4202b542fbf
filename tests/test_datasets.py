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


def test_view_pairs_in_the_world_frame_are_gravity_aligned():
    kw = dict(n_rooms=1, frames_per_room=10, voxel_size=0.1, width=64, height=48)
    cam, world = D.ViewPairDataset(**kw), D.ViewPairDataset(frame="world", **kw, transform=T.RandomRotation((0, 0, 1)))
    raw_c, raw_w = cam.raw(0), world.raw(0)
    R0 = cam.frames(cam.pairs[0][0])[cam.pairs[0][1]]["pose"][:3, :3]
    np.testing.assert_allclose(raw_w["points0"], raw_c["points0"] @ R0.T, atol=1e-5)  # rotated, not moved
    floor = raw_w["semantic0"] == 0  # the floor is horizontal in the world frame: constant z
    assert floor.sum() > 20 and raw_w["points0"][floor, 2].std() < 0.02
    it = world[0]  # the ground truth still holds after the up-axis augmentation
    c = it["correspondences"]
    p1_in_0 = it["points1"] @ it["T"][:3, :3].T + it["T"][:3, 3]
    assert (it["points0"][c[:, 0]] - p1_in_0[c[:, 1]]).norm(dim=1).max() <= 0.15 + 1e-4
    with pytest.raises(ValueError, match="frame"):
        D.ViewPairDataset(frame="gravity", **kw)


def test_rgbd_frame_dataset_pixels_match_points():
    ds = D.RGBDFrameDataset(n_rooms=1, frames_per_room=2, voxel_size=0.1, width=64, height=48)
    it = ds[0]
    v, u = it["pixels"][:, 0], it["pixels"][:, 1]
    z = it["depth"][v, u]
    torch.testing.assert_close(it["points"][:, 2], z)
    assert it["image"].shape == (3, 48, 64)
    torch.testing.assert_close(it["semantic"], it["semantic_image"][v, u])
    torch.testing.assert_close(it["pose"], torch.from_numpy(ds.raw(0)["pose"]).float())  # for frame="world"


# ----------------------------------------------------------------------------------------------------------
# Label budgets of the data-efficient protocols
# ----------------------------------------------------------------------------------------------------------
def test_per_class_subset_counts_and_nests_with_fractions():
    labels = np.repeat(np.arange(4), [30, 30, 5, 30])
    one, two = D.per_class_subset(labels, 1, seed=4), D.per_class_subset(labels, 2, seed=4)
    assert np.bincount(labels[one]).tolist() == [1, 1, 1, 1] and np.bincount(labels[two]).tolist() == [2, 2, 2, 2]
    assert set(one) <= set(two) <= set(D.per_class_subset(labels, 10, seed=4))
    assert np.bincount(labels[D.per_class_subset(labels, 10, seed=4)]).tolist() == [10, 10, 5, 10]
    # the same permutation as label_fraction_subset: 1/30 of each class of 30 is the 1-per-class subset's prefix
    assert set(one[labels[one] != 2]) == set(D.label_fraction_subset(labels, 1 / 30, seed=4)[labels[
        D.label_fraction_subset(labels, 1 / 30, seed=4)] != 2])


def test_scene_subset_nested_and_seeded():
    a, b = D.scene_subset(40, 0.05, seed=1), D.scene_subset(40, 0.25, seed=1)
    assert len(a) == 2 and len(b) == 10 and set(a) <= set(b)
    assert len(D.scene_subset(3, 0.01)) == 1  # at least one scene
    assert not np.array_equal(D.scene_subset(40, 0.25, seed=2), b)


def test_annotation_subset_exact_nested_seeded():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 5, 1000)
    labels[rng.random(1000) < 0.3] = -100  # unlabelled points are never chosen
    subs = {n: D.annotation_subset(labels, n, seed=7, key=3) for n in (20, 50, 100, 200)}
    for n, idx in subs.items():
        assert len(idx) == n == len(np.unique(idx)) and (labels[idx] != -100).all()
    assert set(subs[20]) <= set(subs[50]) <= set(subs[100]) <= set(subs[200])
    np.testing.assert_array_equal(subs[50], D.annotation_subset(labels, 50, seed=7, key=3))
    assert not np.array_equal(subs[50], D.annotation_subset(labels, 50, seed=8, key=3))
    assert not np.array_equal(subs[50], D.annotation_subset(labels, 50, seed=7, key=4))  # scenes differ
    assert len(D.annotation_subset(labels[:10], 50)) == int((labels[:10] != -100).sum())  # fewer: all of them


def test_limited_annotations_keep_exactly_the_chosen_points():
    ds = D.SceneDataset(2, points_per_room=5000, voxel_size=0.2)
    lim = ds.with_annotations(30, seed=1)
    for i in range(2):
        full, item = ds[i], lim[i]
        labelled = item["semantic"] != -100
        assert int(labelled.sum()) == 30
        assert torch.equal(item["semantic"][labelled], full["semantic"][labelled])
        # a voxel is labelled iff one of the chosen points falls in it, with that point's (majority) label
        chosen_vox = torch.unique(item["inverse"][labelled])
        assert torch.equal(torch.nonzero(item["labels"] != -100).squeeze(1), chosen_vox)
        assert torch.equal(item["coords"], full["coords"]) and torch.equal(item["feats"], full["feats"])
    assert ds.annotated is None  # the original keeps every label


def test_collate_voxels_and_batch_helpers():
    from ssl3d.geometry import pad_batch, with_batch_index

    ds = D.ObjectDataset(1, 256, classes=["chair", "mug", "lamp"])
    b = D.collate_voxels([ds[i] for i in range(3)], voxel_size=0.25)
    assert b["coords"].shape[1] == 4 and b["coords"][:, 0].tolist() == sorted(b["coords"][:, 0].tolist())
    assert b["centers"].shape == (len(b["coords"]), 3) and b["labels"].shape == (len(b["coords"]),)
    pts = b["points"].reshape(-1, 3)
    assert (b["centers"][b["inverse"]] - pts).abs().max() <= 0.125 + 1e-6  # every point lies in its voxel
    assert "feats" not in b  # geometry-only items
    assert torch.equal(with_batch_index([torch.ones(2, 3), torch.zeros(1, 3)])[:, 0], torch.tensor([0, 0, 1]))
    vals = torch.arange(10.0).unsqueeze(1)
    bi = torch.tensor([1, 0, 1, 2, 0, 1, 2, 2, 2, 0])
    padded, mask = pad_batch(vals, bi)
    assert padded.shape == (3, 4, 1) and mask.sum(1).tolist() == [3, 3, 4]
    for s in range(3):  # rows of a sample keep their order; padding is zero
        assert padded[s, mask[s], 0].tolist() == vals[bi == s, 0].tolist()
        assert (padded[s, ~mask[s]] == 0).all()


def test_class_subset_keeps_relabels_and_forwards_the_epoch():
    from ssl3d.data import ClassSubset, class_held_out_split, load_dataset
    from ssl3d.data import transforms as T

    full = load_dataset("parts", "train", n_per_class=3, n_points=64, transform=T.Jitter(0.01, 0.02))
    held_in, held_out = class_held_out_split(None)
    assert set(held_in).isdisjoint(held_out) and sorted(held_in + held_out) == sorted(full.class_names)
    sub = ClassSubset(full, ["sofa", "chair"])  # the subset's order defines its labels
    assert len(sub) == 6 and sub.class_names == ["sofa", "chair"] and sub.num_classes == 2
    assert sub.labels.tolist() == [1, 1, 1, 0, 0, 0]  # chair (class 0 of the full set) comes first in it
    for i in range(len(sub)):  # the same clouds, relabelled; the parts keep their global ids
        j = int(sub.indices[i])
        np.testing.assert_array_equal(sub[i]["points"], full[j]["points"])
        assert sub[i]["label"] == sub.labels[i]
        assert full.class_names[full[j]["label"]] == sub.class_names[sub[i]["label"]]
        lo, hi = sub.part_ranges[sub[i]["label"]][0], sub.part_ranges[sub[i]["label"]][-1]
        assert lo <= sub[i]["part"].min() and sub[i]["part"].max() <= hi
    before = sub[0]["points"].copy()
    sub.set_epoch(1)
    assert full.epoch == 1 and not np.array_equal(sub[0]["points"], before)  # new augmentation each epoch
    with pytest.raises(ValueError, match="unknown"):
        ClassSubset(full, ["chair", "piano"])
    with pytest.raises(ValueError, match="distinct"):
        ClassSubset(full, ["chair", "chair"])
    # the real split: ModelNet40 classes that no ShapeNetPart category covers
    pre, probe = class_held_out_split("/nonexistent")
    assert pre is None and len(probe) == 31 and "chair" not in probe and "sofa" in probe


def test_numpy_and_python_indices_give_the_same_items():
    """A torch Subset indexes with NumPy integers; the item (and its augmentation) must not depend on that type —
    np.int64's repr differs from int's, and the per-item seed was once derived from it."""
    from ssl3d.data import load_dataset

    makers = [(lambda: load_dataset("objects", "train", n_per_class=2, n_points=64, random_yaw=True), 3, "points"),
              (lambda: load_dataset("objects", "train", n_per_class=2, n_points=64, transform=T.Jitter(0.01, 0.02)), 1,
               "points"),
              (lambda: load_dataset("scenes", "train", n_rooms=1, points_per_room=2000), 0, "coords")]
    for make, i, key in makers:  # each from a fresh dataset (items are cached by index)
        np.testing.assert_array_equal(np.asarray(make()[np.int64(i)][key]), np.asarray(make()[i][key]))
    assert D._seed("object", np.int64(3), np.int32(2)) == D._seed("object", 3, 2)


def test_class_counts_equal_a_loop_over_the_items():
    """SceneDataset.class_counts (points before voxelization, no augmentation) against a plain loop over the items'
    ``semantic`` arrays; the 6-room embedded test split holds every class its training split holds, the 2-room one
    does not (why notebooks 04, 05 and 07 test on 6 rooms)."""
    train = D.SceneDataset(3, points_per_room=3000, voxel_size=0.2, features="ones")
    ref = np.zeros(train.num_classes, dtype=np.int64)
    for i in range(len(train)):
        s = train[i]["semantic"].numpy()
        ref += np.bincount(s[s >= 0], minlength=train.num_classes)
    assert np.array_equal(train.class_counts(), ref) and ref.sum() == 3 * 3000
    kw = dict(points_per_room=30000, voxel_size=0.1, seed=0, features="ones")  # notebook 04's rooms
    seen = D.SceneDataset(8, split="train", **kw).class_counts() > 0
    assert (seen & (D.SceneDataset(2, split="test", **kw).class_counts() == 0)).any()
    assert not (seen & (D.SceneDataset(6, split="test", **kw).class_counts() == 0)).any()
