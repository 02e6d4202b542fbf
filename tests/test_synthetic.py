"""Procedural objects, scans and rooms: labels, determinism, geometry invariants."""

import numpy as np
import pytest

from ssl3d.data import synthetic as S


def test_registry_has_12_plus_classes_with_2_to_5_parts():
    assert len(S.OBJECT_CLASSES) >= 12
    for r in S.PART_RANGES:
        assert 2 <= len(r) <= 5
    assert S.NUM_PARTS == sum(len(r) for r in S.PART_RANGES) == len(S.PART_NAMES)


@pytest.mark.parametrize("cls", S.OBJECT_CLASSES)
def test_objects_labels_and_normalisation(cls):
    c = S.OBJECT_CLASSES.index(cls)
    seen = set()
    for seed in range(4):
        d = S.sample_object(cls, 512, seed=seed)
        assert d["points"].shape == (512, 3) and d["label"] == c
        assert np.abs(np.linalg.norm(d["points"], axis=1)).max() <= 1 + 1e-5
        np.testing.assert_allclose(np.linalg.norm(d["normals"], axis=1), 1, atol=1e-4)
        assert set(np.unique(d["part"])) <= set(S.PART_RANGES[c])
        seen |= set(np.unique(d["part"]).tolist())
    assert len(seen) >= 2, f"{cls}: at least two parts appear"


def test_objects_deterministic_and_varied():
    a, b = S.sample_object("chair", 256, seed=3), S.sample_object("chair", 256, seed=3)
    np.testing.assert_array_equal(a["points"], b["points"])
    c = S.sample_object("chair", 256, seed=4)
    assert not np.allclose(a["points"], c["points"])
    # intra-class variation: bounding boxes of instances differ
    ext = [np.ptp(S.make_object("table", s).vertices, axis=0) for s in range(10)]
    assert np.std(ext, axis=0).min() > 0.02


def test_unknown_class_error():
    with pytest.raises(ValueError, match="unknown object class"):
        S.make_object("spaceship", 0)


def test_hidden_point_removal_on_a_sphere():
    rng = np.random.default_rng(0)
    p = rng.normal(size=(3000, 3))
    p /= np.linalg.norm(p, axis=1, keepdims=True)
    vis = S.hidden_point_removal(p, np.array([0, 0, 10.0]))
    assert (p[vis, 2] > -0.15).all(), "no point on the far side is visible"
    front = np.nonzero(p[:, 2] > 0.4)[0]
    assert np.isin(front, vis).mean() > 0.95, "the near cap is visible"


@pytest.mark.parametrize("variant", ["OBJ_ONLY", "OBJ_BG", "PB_T50_RS"])
def test_scan_variants(variant):
    d = S.scan_object("sofa", 1024, seed=1, variant=variant)
    assert d["points"].shape == (1024, 3) and np.isfinite(d["points"]).all()
    if variant == "OBJ_ONLY":
        assert d["mask"].all()
    else:
        assert 0.2 < d["mask"].mean() < 0.98, "background and object points both present"
        assert (d["part"][~d["mask"]] == -1).all()


def test_room_layout():
    room = S.make_room(5)
    sx, sy, sz = room.size
    m = room.mesh
    assert list(room.instance_semantic[:3]) == [0, 1, 2]
    assert 4 <= room.num_instances - 3 <= 12
    rects = []
    for i in range(3, room.num_instances):
        v = m.vertices[np.unique(m.faces[m.tags == i])]
        lo, hi = v.min(0), v.max(0)
        assert lo[0] >= 0 and lo[1] >= 0 and hi[0] <= sx and hi[1] <= sy and hi[2] <= sz
        assert abs(lo[2]) < 1e-6, "furniture stands on the floor"
        rects.append((lo, hi))
    for a in range(len(rects)):
        for b in range(a + 1, len(rects)):
            (la, ha), (lb, hb) = rects[a], rects[b]
            overlap = (la[:2] < hb[:2]).all() and (lb[:2] < ha[:2]).all()
            assert not overlap, f"instances {a + 3} and {b + 3} overlap"


def test_sample_room_labels_and_inward_normals():
    room = S.make_room(2)
    d = S.sample_room(room, 20000, ceiling=True)
    assert d["colors"].min() >= 0 and d["colors"].max() <= 1
    np.testing.assert_array_equal(d["semantic"], room.instance_semantic[d["instance"]])
    shell = d["instance"] < 3
    to_centre = room.size / 2 - d["points"][shell]
    assert ((to_centre * d["normals"][shell]).sum(1) > 0).all(), "the shell faces inwards"
    assert not (S.sample_room(room, 5000)["instance"] == 2).any(), "no ceiling by default"
