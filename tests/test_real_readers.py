"""Readers for the real datasets (ssl3d.data.real), tested on tiny fixtures written in the exact on-disk formats.

No real dataset is on the test machine: every test writes a few files (h5py / numpy text / PIL / hand-built
PLY bytes) into pytest's tmp_path, in the layout of the official release, and reads them back. The PLY
writer below is a separate implementation (``struct``) from the reader under test. Where a release has a known
quirk, the fixture reproduces the released bytes, copied from a public source named next to it (never built from
the reader's own constants): ShapeNetPart's synsetoffset2category.txt, the stray bytes of S3DIS, the two colour
formats of exported ScanNet frames. Only the Middlebury motorcycle is real data (it ships with scikit-image).
"""

import io
import json
import struct
import warnings

import h5py
import numpy as np
import pytest
from PIL import Image

from ssl3d.data import formats, real
from ssl3d.data.real import CorruptFileError, DatasetNotFoundError

# ----------------------------------------------------------------------------------------------------------
# helpers: an independent PLY writer
# ----------------------------------------------------------------------------------------------------------
_STRUCT = {"float": "f", "double": "d", "uchar": "B", "char": "b", "ushort": "H", "short": "h", "int": "i",
           "uint": "I"}


def write_ply(path, vertex: dict, vertex_types: dict, faces=None, ascii=False, face_count_type="uchar"):
    """Write a PLY with one vertex element (columns in dict order) and optional faces (list of index lists)."""
    n = len(next(iter(vertex.values())))
    head = ["ply", "format ascii 1.0" if ascii else "format binary_little_endian 1.0", "comment fixture",
            f"element vertex {n}"]
    head += [f"property {vertex_types[k]} {k}" for k in vertex]
    if faces is not None:
        head += [f"element face {len(faces)}", f"property list {face_count_type} int vertex_indices"]
    head.append("end_header")
    out = ("\n".join(head) + "\n").encode("ascii")
    if ascii:
        rows = [" ".join(str(vertex[k][i]) for k in vertex) for i in range(n)]
        rows += [" ".join(str(x) for x in [len(f), *f]) for f in (faces or [])]
        out += ("\n".join(rows) + "\n").encode("ascii")
    else:
        fmt = "<" + "".join(_STRUCT[vertex_types[k]] for k in vertex)
        for i in range(n):
            out += struct.pack(fmt, *[vertex[k][i] for k in vertex])
        for f in faces or []:
            out += struct.pack("<" + _STRUCT[face_count_type] + "i" * len(f), len(f), *f)
    path.write_bytes(out)
    return path


def scannet_vertices(n=5):
    rng = np.random.default_rng(0)
    xyz = rng.uniform(0, 4, (n, 3)).astype(np.float32)
    rgb = rng.integers(0, 256, (n, 3))
    v = {"x": xyz[:, 0].tolist(), "y": xyz[:, 1].tolist(), "z": xyz[:, 2].tolist(),
         "red": rgb[:, 0].tolist(), "green": rgb[:, 1].tolist(), "blue": rgb[:, 2].tolist(), "alpha": [255] * n}
    types = {"x": "float", "y": "float", "z": "float", "red": "uchar", "green": "uchar", "blue": "uchar",
             "alpha": "uchar"}
    return xyz, rgb, v, types


# ----------------------------------------------------------------------------------------------------------
# PLY / OFF
# ----------------------------------------------------------------------------------------------------------
def test_read_ply_binary_and_ascii(tmp_path):
    xyz, rgb, v, types = scannet_vertices(4)
    v["label"], types["label"] = [1, 40, 65535, 0], "ushort"
    faces = [[0, 1, 2], [1, 2, 3]]
    for ascii in (False, True):
        p = write_ply(tmp_path / f"m{ascii}.ply", v, types, faces, ascii=ascii)
        ply = real.read_ply(p)
        assert set(ply) == {"vertex", "face"}
        assert ply["vertex"]["x"].dtype == np.float32 and ply["vertex"]["red"].dtype == np.uint8
        assert ply["vertex"]["label"].dtype == np.uint16
        np.testing.assert_array_equal(np.stack([ply["vertex"][k] for k in "xyz"], 1), xyz)
        np.testing.assert_array_equal(ply["vertex"]["green"], rgb[:, 1])
        np.testing.assert_array_equal(ply["vertex"]["label"], [1, 40, 65535, 0])
        f = ply["face"]["vertex_indices"]
        assert f.shape == (2, 3) and f.dtype == np.int32
        np.testing.assert_array_equal(f, faces)


def test_read_ply_mixed_polygons(tmp_path):
    _, _, v, types = scannet_vertices(5)
    faces = [[0, 1, 2], [0, 1, 2, 3], [2, 3, 4]]  # a quad among triangles: ragged lists
    for ascii in (False, True):
        ply = real.read_ply(write_ply(tmp_path / f"q{ascii}.ply", v, types, faces, ascii=ascii))
        f = ply["face"]["vertex_indices"]
        assert f.dtype == object and [list(x) for x in f] == faces


def test_read_ply_truncated_and_malformed(tmp_path):
    _, _, v, types = scannet_vertices(50)
    p = write_ply(tmp_path / "scene_vh_clean_2.ply", v, types, [[0, 1, 2]] * 20)
    full = p.read_bytes()
    p.write_bytes(full[:-30])  # cut inside the faces
    with pytest.raises(CorruptFileError, match="scene_vh_clean_2.ply.*truncated"):
        real.read_ply(p)
    p.write_bytes(full[:len(full) // 3])  # cut inside the vertices
    with pytest.raises(CorruptFileError, match="scene_vh_clean_2.ply.*truncated"):
        real.read_ply(p)
    p.write_bytes(full[:40])  # cut inside the header
    with pytest.raises(CorruptFileError, match="end_header"):
        real.read_ply(p)
    a = write_ply(tmp_path / "a.ply", v, types, ascii=True)
    a.write_text(a.read_text().rsplit("\n", 3)[0])  # drop the last rows
    with pytest.raises(CorruptFileError, match="a.ply.*truncated"):
        real.read_ply(a)


def test_read_off_plain_fused_and_polygons(tmp_path):
    cube_v = "0 0 0\n1 0 0\n1 1 0\n0 1 0\n"
    (tmp_path / "plain.off").write_text("OFF\n# a comment\n4 2 0\n" + cube_v + "3 0 1 2\n3 0 2 3\n")
    (tmp_path / "fused.off").write_text("OFF4 1 0\n" + cube_v + "4 0 1 2 3\n")  # ModelNet quirk + a quad
    v, f = real.read_off(tmp_path / "plain.off")
    assert v.dtype == np.float32 and v.shape == (4, 3) and f.dtype == np.int64
    np.testing.assert_array_equal(f, [[0, 1, 2], [0, 2, 3]])
    v2, f2 = real.read_off(tmp_path / "fused.off")
    np.testing.assert_array_equal(v2, v)
    np.testing.assert_array_equal(f2, [[0, 1, 2], [0, 2, 3]])  # quad → triangle fan
    (tmp_path / "short.off").write_text("OFF\n4 2 0\n" + cube_v + "3 0 1 2\n")
    with pytest.raises(CorruptFileError, match="short.off.*truncated"):
        real.read_off(tmp_path / "short.off")


# ----------------------------------------------------------------------------------------------------------
# ModelNet40
# ----------------------------------------------------------------------------------------------------------
def _modelnet_h5(root, with_normals=True):
    root.mkdir()
    rng = np.random.default_rng(1)
    data = {}
    for name, b in [("ply_data_train0.h5", 3), ("ply_data_train1.h5", 2), ("ply_data_test0.h5", 2)]:
        pts = rng.normal(size=(b, 2048, 3)).astype(np.float32)
        lab = rng.integers(0, 40, (b, 1)).astype(np.uint8)
        nrm = rng.normal(size=(b, 2048, 3)).astype(np.float32)
        with h5py.File(root / name, "w") as f:
            f["data"], f["label"] = pts, lab
            if with_normals:
                f["normal"] = nrm
        data[name] = (pts, lab, nrm)
    (root / "train_files.txt").write_text("data/modelnet40_ply_hdf5_2048/ply_data_train0.h5\n"
                                          "data/modelnet40_ply_hdf5_2048/ply_data_train1.h5\n")
    (root / "test_files.txt").write_text("data/modelnet40_ply_hdf5_2048/ply_data_test0.h5\n")
    (root / "shape_names.txt").write_text("\n".join(real.MODELNET40_CLASSES) + "\n")
    return data


def test_modelnet40_h5(tmp_path):
    root = tmp_path / "modelnet40_ply_hdf5_2048"
    data = _modelnet_h5(root)
    ds = real.ModelNet40H5(root, "train")
    assert len(ds) == 5 and ds.classes == real.MODELNET40_CLASSES and len(ds.classes) == 40
    it = ds[4]  # second row of the second file
    pts, lab, nrm = data["ply_data_train1.h5"]
    assert it["points"].dtype == np.float32 and it["points"].shape == (2048, 3)
    np.testing.assert_array_equal(it["points"], pts[1])
    np.testing.assert_array_equal(it["normals"], nrm[1])
    assert it["label"] == int(lab[1, 0]) and isinstance(it["label"], int)
    assert len(real.ModelNet40H5(root, "test")) == 2
    bare = tmp_path / "no_normals"
    _modelnet_h5(bare, with_normals=False)
    assert "normals" not in real.ModelNet40H5(bare)[0] and real.ModelNet40H5(bare).normals is None


def test_modelnet40_h5_errors(tmp_path):
    with pytest.raises(DatasetNotFoundError) as e:
        real.ModelNet40H5(tmp_path / "nowhere")
    msg = str(e.value)
    assert "ply_data_train0.h5" in msg and "train_files.txt" in msg and "PointNet" in msg
    assert isinstance(e.value, FileNotFoundError)
    root = tmp_path / "modelnet40_ply_hdf5_2048"
    _modelnet_h5(root)
    (root / "ply_data_train1.h5").unlink()
    with pytest.raises(DatasetNotFoundError, match="ply_data_train1.h5"):
        real.ModelNet40H5(root)
    good = (root / "ply_data_train0.h5").read_bytes()
    (root / "ply_data_train1.h5").write_bytes(good[: len(good) // 2])  # truncated HDF5
    with pytest.raises(CorruptFileError, match="ply_data_train1.h5"):
        real.ModelNet40H5(root)


def test_modelnet40_meshes(tmp_path):
    root = tmp_path / "ModelNet40"
    cube_v = [(x, y, z) for x in (0, 1) for y in (0, 1) for z in (0, 1)]
    cube_f = [(0, 1, 3), (0, 3, 2), (4, 6, 7), (4, 7, 5), (0, 4, 5), (0, 5, 1),
              (2, 3, 7), (2, 7, 6), (0, 2, 6), (0, 6, 4), (1, 5, 7), (1, 7, 3)]
    body = "".join(f"{x} {y} {z}\n" for x, y, z in cube_v) + "".join(f"3 {a} {b} {c}\n" for a, b, c in cube_f)
    for cls, split, k in [("chair", "train", 1), ("chair", "test", 2), ("airplane", "train", 1)]:
        d = root / cls / split
        d.mkdir(parents=True, exist_ok=True)
        header = "OFF8 12 0\n" if cls == "chair" else "OFF\n8 12 0\n"
        (d / f"{cls}_{k:04d}.off").write_text(header + body)
    ds = real.ModelNet40Mesh(root, "train", num_points=256)
    assert len(ds) == 2
    it = ds[1]  # chair (folders sorted: airplane, chair)
    assert it["label"] == real.MODELNET40_CLASSES.index("chair") == 8 and ds[0]["label"] == 0
    assert it["vertices"].shape == (8, 3) and it["faces"].shape == (12, 3)
    p = it["points"]
    assert p.shape == (256, 3) and p.dtype == np.float32
    # every sample lies on the cube surface: one coordinate is 0 or 1, all within [0, 1]
    assert (p.min() >= -1e-6) and (p.max() <= 1 + 1e-6)
    assert np.all(np.min(np.minimum(np.abs(p), np.abs(p - 1)), axis=1) < 1e-6)
    np.testing.assert_array_equal(ds[1]["points"], it["points"])  # deterministic per item
    with pytest.raises(DatasetNotFoundError, match="Princeton ModelNet"):
        real.ModelNet40Mesh(tmp_path / "none")


# ----------------------------------------------------------------------------------------------------------
# ShapeNetPart
# ----------------------------------------------------------------------------------------------------------
# synsetoffset2category.txt of shapenetcore_partanno_segmentation_benchmark_v0_normal, byte for byte as released
# (tab-separated, no newline after the last line). Written here from the release's text, never from the code under
# test; its ids are also those of charlesq34/pointnet part_seg/testing_ply_file_list.txt (e.g. 03467517/...,
# 04225987/...).
RELEASE_SYNSETOFFSET2CATEGORY = (
    "Airplane\t02691156\nBag\t02773838\nCap\t02954340\nCar\t02958343\nChair\t03001627\nEarphone\t03261776\n"
    "Guitar\t03467517\nKnife\t03624134\nLamp\t03636649\nLaptop\t03642806\nMotorbike\t03790512\nMug\t03797390\n"
    "Pistol\t03948459\nRocket\t04099429\nSkateboard\t04225987\nTable\t04379243"
)


def test_shapenetpart_constants():
    """The category ids are the release's (synsetoffset2category.txt, in its order: labels are positions)."""
    release = dict(ln.split("\t") for ln in RELEASE_SYNSETOFFSET2CATEGORY.split("\n"))
    assert list(real.SHAPENETPART_CATEGORIES.items()) == list(release.items())
    assert (real.SHAPENETPART_CATEGORIES["Guitar"], real.SHAPENETPART_CATEGORIES["Skateboard"]) == ("03467517",
                                                                                                    "04225987")
    assert len(real.SHAPENETPART_CATEGORIES) == 16
    ids = [p for parts in real.SHAPENETPART_PARTS.values() for p in parts]
    assert ids == list(range(50)) == list(range(real.SHAPENETPART_NUM_PARTS))
    assert real.SHAPENETPART_PARTS["Motorbike"] == (30, 31, 32, 33, 34, 35)
    assert real.SHAPENETPART_PART_TO_CATEGORY.shape == (50,)
    assert real.SHAPENETPART_PART_TO_CATEGORY[12] == list(real.SHAPENETPART_CATEGORIES).index("Chair") == 4
    assert real.SHAPENETPART_PART_TO_CATEGORY[49] == 15


# shapes of the release (ids from part_seg/testing_ply_file_list.txt) → their part labels in the fixture
SHAPENETPART_SHAPES = {("02691156", "1021a0914a7207aff927ed529ad90a11"): [0, 1, 3],
                       ("03001627", "1a6f615e8b1b5ae4dbbc9440457e303e"): [12, 15, 14],
                       ("03001627", "2a05d684f8d5e3b69d4f2a7e4e5e2b84"): [13, 13, 12],
                       ("03467517", "d546e034a6c659a425cd348738a8052a"): [19, 20, 21],  # Guitar
                       ("04225987", "f5d7698b5a57d61226e0640b67de606"): [44, 46, 45]}  # Skateboard


def _shapenetpart(root):
    (root / "train_test_split").mkdir(parents=True)
    (root / "synsetoffset2category.txt").write_bytes(RELEASE_SYNSETOFFSET2CATEGORY.encode("ascii"))
    rng = np.random.default_rng(2)
    tables = {}
    for (syn, sid), parts in SHAPENETPART_SHAPES.items():
        (root / syn).mkdir(exist_ok=True)
        t = np.column_stack([rng.normal(size=(3, 6)).round(6), parts])
        np.savetxt(root / syn / f"{sid}.txt", t, fmt="%.6f")
        tables[sid] = t
    keys = [f"shape_data/{s}/{i}" for s, i in SHAPENETPART_SHAPES]
    for split, ks in [("train", keys[:2]), ("val", keys[2:3]), ("test", [keys[1], *keys[3:]])]:
        (root / "train_test_split" / f"shuffled_{split}_file_list.json").write_text(json.dumps(ks))
    return tables


def test_shapenetpart(tmp_path):
    root = tmp_path / "shapenetcore_partanno_segmentation_benchmark_v0_normal"
    tables = _shapenetpart(root)
    ds = real.ShapeNetPart(root, "train")
    assert len(ds) == 2 and len(real.ShapeNetPart(root, "trainval")) == 3
    it = ds[1]
    t = tables["1a6f615e8b1b5ae4dbbc9440457e303e"]
    assert it["points"].dtype == np.float32 and it["part"].dtype == np.int64
    np.testing.assert_allclose(it["points"], t[:, :3], atol=1e-6)
    np.testing.assert_allclose(it["normals"], t[:, 3:6], atol=1e-6)
    np.testing.assert_array_equal(it["part"], [12, 15, 14])
    assert it["label"] == 4 and it["category"] == "Chair" and ds[0]["label"] == 0
    assert set(it["part"]) <= set(real.SHAPENETPART_PARTS[it["category"]])
    only = real.ShapeNetPart(root, "trainval", categories=["Airplane"])
    assert len(only) == 1 and only[0]["category"] == "Airplane"


def test_shapenetpart_guitar_and_skateboard(tmp_path):
    """Guitar (03467517) and Skateboard (04225987) shapes of the release are found and labelled 6 and 14."""
    root = tmp_path / "shapenetcore_partanno_segmentation_benchmark_v0_normal"
    tables = _shapenetpart(root)
    test = real.ShapeNetPart(root, "test")
    got = {it["shape_id"]: it for it in (test[i] for i in range(len(test)))}
    guitar, board = got["d546e034a6c659a425cd348738a8052a"], got["f5d7698b5a57d61226e0640b67de606"]
    assert (guitar["category"], guitar["label"]) == ("Guitar", 6)
    assert (board["category"], board["label"]) == ("Skateboard", 14)
    np.testing.assert_array_equal(board["part"], [44, 46, 45])
    np.testing.assert_allclose(guitar["points"], tables["d546e034a6c659a425cd348738a8052a"][:, :3], atol=1e-6)
    assert len(real.ShapeNetPart(root, "test", categories=["Guitar", "Skateboard"])) == 2


def test_shapenetpart_errors(tmp_path):
    with pytest.raises(DatasetNotFoundError) as e:
        real.ShapeNetPart(tmp_path / "missing")
    assert "shuffled_train_file_list.json" in str(e.value) and "synsetoffset2category.txt" in str(e.value)
    root = tmp_path / "snp"
    _shapenetpart(root)
    bad = root / "03001627" / "1a6f615e8b1b5ae4dbbc9440457e303e.txt"
    bad.write_text("0 0 0 0 0 1 12\n0 0 0 0 1 14\n")  # second row: 6 columns
    with pytest.raises(CorruptFileError, match=r"1a6f615e8b1b5ae4dbbc9440457e303e\.txt.*line 2 has 6 values"):
        real.ShapeNetPart(root, "train")[1]
    wrong = RELEASE_SYNSETOFFSET2CATEGORY.replace("03467517", "03467671")  # a Guitar id that is not the release's
    (root / "synsetoffset2category.txt").write_text(wrong)
    with pytest.raises(CorruptFileError, match=r"synsetoffset2category.txt: maps Guitar 03467671 \(the release: "
                                               r"03467517\)"):
        real.ShapeNetPart(root, "train")


# ----------------------------------------------------------------------------------------------------------
# ScanObjectNN
# ----------------------------------------------------------------------------------------------------------
def _scanobjectnn(root):
    patterns = ["main_split/{}_objectdataset.h5",  # OBJ_BG (k = 0)
                "main_split_nobg/{}_objectdataset.h5",  # OBJ_ONLY (k = 1)
                "main_split/{}_objectdataset_augmentedrot_scale75.h5"]  # PB_T50_RS (k = 2)
    for k, pattern in enumerate(patterns):
        for split, b in [("training", 3), ("test", 2)]:
            p = root / pattern.format(split)
            p.parent.mkdir(parents=True, exist_ok=True)
            with h5py.File(p, "w") as f:
                f["data"] = np.full((b, 2048, 3), 10 * k + (split == "test"), dtype=np.float32)
                f["label"] = np.arange(b, dtype=np.int8) + k
                mask = np.zeros((b, 2048), dtype=np.int32)
                mask[:, :100] = -1  # background points
                f["mask"] = mask


@pytest.mark.parametrize("variant,k", [("OBJ_BG", 0), ("OBJ_ONLY", 1), ("PB_T50_RS", 2)])
def test_scanobjectnn_variants(tmp_path, variant, k):
    root = tmp_path / "h5_files"
    _scanobjectnn(root)
    tr, te = real.ScanObjectNN(root, variant, "train"), real.ScanObjectNN(root, variant, "test")
    assert len(tr) == 3 and len(te) == 2
    it = tr[2]
    assert it["points"].dtype == np.float32 and it["points"].shape == (2048, 3)
    assert float(it["points"][0, 0]) == 10 * k and float(te[0]["points"][0, 0]) == 10 * k + 1
    assert it["label"] == 2 + k and real.SCANOBJECTNN_CLASSES[it["label"]]
    assert it["mask"].dtype == np.int64 and it["foreground"].sum() == 2048 - 100 and not it["foreground"][0]


def test_scanobjectnn_errors(tmp_path):
    assert len(real.SCANOBJECTNN_CLASSES) == 15
    with pytest.raises(DatasetNotFoundError) as e:
        real.ScanObjectNN(tmp_path / "h5_files", "OBJ_ONLY")
    assert "main_split_nobg" in str(e.value) and "ScanObjectNN project" in str(e.value)
    with pytest.raises(ValueError, match="variant"):
        real.ScanObjectNN(tmp_path, "PB_T25")
    root = tmp_path / "h5_files"
    _scanobjectnn(root)
    p = root / "main_split" / "test_objectdataset.h5"
    p.write_bytes(p.read_bytes()[:1000])
    with pytest.raises(CorruptFileError, match="test_objectdataset.h5"):
        real.ScanObjectNN(root, "OBJ_BG", "test")


# ----------------------------------------------------------------------------------------------------------
# ScanNet v2
# ----------------------------------------------------------------------------------------------------------
def test_nyu40_to_scannet20():
    got = real.nyu40_to_scannet20(np.arange(42))
    want = np.full(42, -100)
    for k, nyu in enumerate(real.SCANNET_VALID_CLASS_IDS):
        want[nyu] = k
    np.testing.assert_array_equal(got, want)
    assert got.dtype == np.int64 and got[39] == 19 and got[13] == -100 and got[0] == -100
    assert len(real.SCANNET20_CLASSES) == 20 and real.SCANNET20_CLASSES[real.nyu40_to_scannet20([33])[0]] == "toilet"


def _scannet_scene(root, name="scene0000_00", subset="scans"):
    """A scene in ScanNet v2's layout: train/val scenes in scans/ with labels, test scenes in scans_test/ without."""
    d = root / subset / name
    d.mkdir(parents=True)
    xyz, rgb, v, types = scannet_vertices(6)
    faces = [[0, 1, 2], [3, 4, 5]]
    write_ply(d / f"{name}_vh_clean_2.ply", v, types, faces)
    if subset == "scans":
        lv, lt = dict(v), dict(types)
        lv["label"], lt["label"] = [1, 2, 13, 39, 0, 33], "ushort"
        write_ply(d / f"{name}_vh_clean_2.labels.ply", lv, lt, faces)
    return d, xyz, rgb


def test_scannet_scene(tmp_path):
    root = tmp_path / "scannet"
    d, xyz, rgb = _scannet_scene(root)
    ds = real.ScanNetScenes(root, with_faces=True)
    assert ds.scenes == ["scene0000_00"] and len(ds) == 1
    s = ds[0]
    assert s["points"].dtype == np.float32 and s["colors"].dtype == np.float32
    np.testing.assert_array_equal(s["points"], xyz)
    np.testing.assert_allclose(s["colors"], rgb / 255.0, atol=1e-7)
    np.testing.assert_array_equal(s["nyu40"], [1, 2, 13, 39, 0, 33])
    np.testing.assert_array_equal(s["semantic"], [0, 1, -100, 19, -100, 16])
    assert s["semantic"].dtype == np.int64
    np.testing.assert_array_equal(s["faces"], [[0, 1, 2], [3, 4, 5]])
    (d / "scene0000_00_vh_clean_2.labels.ply").unlink()  # test scenes have no labels
    assert "semantic" not in real.read_scannet_scene(d)


def test_scannet_test_scenes_live_in_scans_test(tmp_path):
    """ScanNet v2 puts its 100 test scenes in scans_test/ (PointContrast's ScanNet preprocessing: SUBSETS = {train:
    'scans', test: 'scans_test'}; Pointcept's globs scans*/scene*), next to the train/val scenes in scans/."""
    root = tmp_path / "scannet"
    _scannet_scene(root, "scene0000_00")
    d_test, xyz, _ = _scannet_scene(root, "scene0707_00", subset="scans_test")
    ds = real.ScanNetScenes(root)
    assert ds.scenes == ["scene0000_00", "scene0707_00"] and ds.scene_dirs[1] == d_test
    assert "semantic" in ds[0] and "semantic" not in ds[1]
    np.testing.assert_array_equal(ds[1]["points"], xyz)
    named = real.ScanNetScenes(root, scenes=["scene0707_00", "scene0000_00"])  # e.g. scannetv2_test.txt's lines
    assert named.scene_dirs == [d_test, root / "scans" / "scene0000_00"]
    assert real.ScanNetScenes(root, subsets=("scans",)).scenes == ["scene0000_00"]
    assert real.ScanNetScenes(root, subsets=("scans_test",)).scenes == ["scene0707_00"]
    only_test = tmp_path / "only_test"
    _scannet_scene(only_test, "scene0707_00", subset="scans_test")
    assert real.ScanNetScenes(only_test).scenes == ["scene0707_00"]  # no scans/ folder needed
    with pytest.raises(DatasetNotFoundError, match=r"missing scans/scene0999_00/ \(or scans_test/scene0999_00/\)"):
        real.ScanNetScenes(root, scenes=["scene0999_00"])
    with pytest.raises(ValueError, match="subsets"):
        real.ScanNetScenes(root, subsets=("scans_val",))


def test_scannet_errors(tmp_path):
    with pytest.raises(DatasetNotFoundError) as e:
        real.ScanNetScenes(tmp_path / "scannet")
    msg = str(e.value)
    assert "scene0000_00_vh_clean_2.labels.ply" in msg and "ScanNet v2 (request access" in msg
    assert "scans_test/" in msg and "color/0.jpg" in msg and ".png from PointContrast's / Pointcept's" in msg
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetNotFoundError, match="missing scans/, scans_test/"):
        real.ScanNetScenes(tmp_path / "empty")
    root = tmp_path / "scannet"
    d, _, _ = _scannet_scene(root)
    lab = d / "scene0000_00_vh_clean_2.labels.ply"
    lab.write_bytes(lab.read_bytes()[:-20])
    with pytest.raises(CorruptFileError, match="scene0000_00_vh_clean_2.labels.ply"):
        real.ScanNetScenes(root)[0]
    _, _, v, types = scannet_vertices(4)  # label file with a different vertex count
    v["label"], types["label"] = [1, 1, 1, 1], "ushort"
    write_ply(lab, v, types, [[0, 1, 2]])
    with pytest.raises(CorruptFileError, match="labels.ply: has 4 vertices"):
        real.ScanNetScenes(root)[0]


def _save_mat_to_file(matrix, path):
    """How SensorData.py (ScanNet's and PointContrast's/Pointcept's copies) writes a 4 x 4: one '%f' row per line."""
    path.write_text("".join(" ".join(f"{x:f}" for x in row) + "\n" for row in np.asarray(matrix)))


def _scannet_frames(scene, color_suffix=".jpg", k_offset=(0.0, 0.0)):
    """Three exported frames: colour as ScanNet's SensReader (.jpg) or PointContrast's/Pointcept's SensorData.py
    (.png) writes it, 16-bit depth PNG in mm, 4 x 4 pose/intrinsic text; frame 1 has an invalid (-inf) pose."""
    for sub in ("color", "depth", "pose", "intrinsic"):
        (scene / sub).mkdir(parents=True)
    k_depth = np.array([[2.0, 0, 1.5, k_offset[0]], [0, 4.0, 1.0, k_offset[1]], [0, 0, 1, 0], [0, 0, 0, 1]])
    k_color = np.array([[4.0, 0, 3.0, 0], [0, 8.0, 2.0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    _save_mat_to_file(k_depth, scene / "intrinsic" / "intrinsic_depth.txt")
    _save_mat_to_file(k_color, scene / "intrinsic" / "intrinsic_color.txt")
    depth_mm = np.array([[0, 1000, 2000, 3000], [500, 0, 1234, 65535], [1, 2, 3, 4]], dtype=np.uint16)  # (3, 4)
    pose = np.eye(4)
    pose[:3, 3] = [1, 2, 3]
    for i in range(3):
        Image.fromarray(depth_mm).save(scene / "depth" / f"{i}.png")
        Image.fromarray(np.full((6, 8, 3), (200, 100, 50), np.uint8)).save(scene / "color" / f"{i}{color_suffix}",
                                                                           quality=100)
        _save_mat_to_file(np.full((4, 4), -np.inf) if i == 1 else pose, scene / "pose" / f"{i}.txt")
    return depth_mm, k_depth, pose


def test_scannet_frames(tmp_path):
    scene = tmp_path / "scene0000_00"
    depth_mm, k_depth, pose = _scannet_frames(scene)
    fr = real.ScanNetFrames(scene)
    assert fr.frames == [0, 2] and fr.invalid_frames == [1] and len(fr) == 2
    it = fr[1]
    assert it["frame"] == 2 and it["pose_valid"]
    assert it["depth"].dtype == np.float32 and it["depth"].shape == (3, 4)
    np.testing.assert_allclose(it["depth"], depth_mm / 1000.0, rtol=1e-7)
    assert it["depth"][0, 0] == 0 and it["depth"][1, 3] == np.float32(65.535)
    assert it["color"].dtype == np.uint8 and it["color"].shape == (3, 4, 3)  # resized to the depth resolution
    assert np.abs(it["color"].astype(int) - [200, 100, 50]).max() <= 3
    np.testing.assert_array_equal(it["K"], k_depth[:3, :3])
    np.testing.assert_allclose(it["K_color"], [[2, 0, 1.5], [0, 4, 1], [0, 0, 1]])  # scaled by 1/2
    np.testing.assert_array_equal(it["pose"], pose)
    np.testing.assert_array_equal(it["K_offset"], [0, 0])
    all_frames = real.ScanNetFrames(scene, skip_invalid_poses=False)
    assert len(all_frames) == 3 and not all_frames[1]["pose_valid"]
    with pytest.raises(DatasetNotFoundError, match="intrinsic_depth.txt"):
        real.ScanNetFrames(tmp_path / "scene0001_00")


def test_scannet_frames_pointcontrast_export(tmp_path):
    """Frames exported by PointContrast's / Pointcept's pair preprocessing: their SensorData.py writes colour as
    color/<i>.png (imageio.imwrite(... str(f) + '.png')), and their point_cloud_extractor.py back-projects with
    X = (u − cx)·Z/fx + K[0,3], Y = (v − cy)·Z/fy + K[1,3] — written out below as the reference."""
    scene = tmp_path / "scene0000_00"
    depth_mm, k_depth, pose = _scannet_frames(scene, color_suffix=".png", k_offset=(0.25, -0.5))
    fr = real.ScanNetFrames(scene)
    assert fr.frames == [0, 2] and fr.color_files[2] == scene / "color" / "2.png"
    it = fr[1]
    assert it["color"].shape == (3, 4, 3) and np.abs(it["color"].astype(int) - [200, 100, 50]).max() <= 1  # lossless
    np.testing.assert_array_equal(it["K_offset"], [0.25, -0.5])
    # PointContrast's formula on a pixel grid (meshgrid of columns x and rows y), valid depth only
    x, y = np.meshgrid(np.arange(4.0), np.arange(3.0))
    z = depth_mm / 1000.0
    ok = z != 0
    want = np.stack([(x - 1.5) * z / 2.0 + 0.25, (y - 1.0) * z / 4.0 - 0.5, z], -1)[ok]  # (M, 3), row-major
    want_world = want @ pose[:3, :3].T + pose[:3, 3]
    got = real.backproject_depth(it["depth"], it["K"], pose=it["pose"], offset=it["K_offset"])
    np.testing.assert_allclose(got["points"], want_world, rtol=1e-6)
    no_offset = real.backproject_depth(it["depth"], it["K"])["points"]  # without it every point moves by (bx, by)
    np.testing.assert_allclose(no_offset + [0.25, -0.5, 0], want, rtol=1e-6)
    with pytest.raises(ValueError, match="offset"):
        real.backproject_depth(it["depth"], it["K"], offset=[1, 2, 3])


def test_scannet_frames_missing_colour(tmp_path):
    """A frame with neither colour file is reported as missing (both names), not as a corrupt color/<i>.jpg."""
    scene = tmp_path / "scene0000_00"
    _scannet_frames(scene, color_suffix=".png")
    (scene / "color" / "2.png").unlink()
    with pytest.raises(DatasetNotFoundError, match=r"missing color/2.jpg \(or color/2.png\)") as e:
        real.ScanNetFrames(scene)
    assert "SensorData.py" in str(e.value)  # the layout explains both colour formats


def test_backproject_depth_hand_computed():
    depth = np.zeros((3, 4), np.float32)
    depth[2, 3] = 2.0  # pixel u=3 (column), v=2 (row)
    depth[0, 1] = np.inf  # invalid
    K = np.array([[2.0, 0, 1.5], [0, 4.0, 1.0], [0, 0, 1]])
    # X = (3 - 1.5) * 2 / 2 = 1.5, Y = (2 - 1) * 2 / 4 = 0.5, Z = 2
    out = real.backproject_depth(depth, K)
    np.testing.assert_allclose(out["points"], [[1.5, 0.5, 2.0]])
    np.testing.assert_array_equal(out["uv"], [[3, 2]])
    # world: rotate 90° about z then translate: (x, y, z) → (-y, x, z) + (1, 2, 3)
    pose = np.array([[0, -1, 0, 1], [1, 0, 0, 2], [0, 0, 1, 3], [0, 0, 0, 1]], dtype=np.float64)
    color = np.zeros((3, 4, 3), np.uint8)
    color[2, 3] = (255, 0, 51)
    out = real.backproject_depth(depth, K, pose=pose, color=color)
    np.testing.assert_allclose(out["points"], [[1 - 0.5, 2 + 1.5, 3 + 2.0]])
    np.testing.assert_allclose(out["colors"], [[1.0, 0.0, 0.2]])
    assert out["points"].dtype == np.float32


# ----------------------------------------------------------------------------------------------------------
# S3DIS
# ----------------------------------------------------------------------------------------------------------
# Lines 180386-180392 of Area_5/hallway_6/Annotations/ceiling_1.txt in Stanford3dDataset_v1.2_Aligned_Version, byte
# for byte: the context and the '-' line of the hunk in loicland/superpoint_graph's S3DIS_fix.diff (the patch S3DIS
# users apply; the same line is quoted in charlesq34/pointnet#45 and HuguesTHOMAS/KPConv#82). Line 180389 (the 4th
# here) holds a NUL where a space belongs. The patch's '+' line is the corrected one.
HALLWAY_6_CEILING_1 = (b"22.383 6.858 3.050 155 155 165\n"
                       b"22.275 6.643 3.048 192 194 191\n"
                       b"22.359 6.835 3.050 152 152 162\n"
                       b"22.350 6.692 3.048 185\x00187 182\n"
                       b"22.314 6.638 3.048 170 171 175\n"
                       b"22.481 6.818 3.049 149 149 159\n"
                       b"22.328 6.673 3.048 190 195 191\n")
HALLWAY_6_PATCHED_LINE = b"22.350 6.692 3.048 185 187 182"

# Area_5/office_19/Annotations/ceiling_1.txt of the non-aligned Stanford3dDataset_v1.2, line 323474: the 6th value is
# stored as b"103.0\x100000" (Mask3D#87: "could not convert string '103.0\x100000' to float64 at row 323473,
# column 6"; zeliu98/CloserLook3D#15) and Pointcept's README corrects it to "103.000000"; the dataset's own Readme
# (quoted in alexsax/2D-3D-Semantics#43) puts the byte at character 56 of the line. Only that token and its position
# are published: the five values before it are placeholders, as long as needed for the byte to sit at character 56.
OFFICE_19_LINE = b"8.123000 12.345000 3.045000 103.000000 103.000000 103.0\x100000"
OFFICE_19_CORRECTED = b"8.123000 12.345000 3.045000 103.000000 103.000000 103.000000"


def _s3dis(root):
    rooms = {}
    for area, room in [(1, "office_1"), (5, "hallway_6"), (5, "office_2")]:
        ann = root / f"Area_{area}" / room / "Annotations"
        ann.mkdir(parents=True)
        (ann.parent / f"{room}.txt").write_text("0 0 0 0 0 0\n")  # the unlabelled whole-room file
        rooms[(area, room)] = ann
    ann = rooms[(5, "hallway_6")]
    (ann / "ceiling_1.txt").write_bytes(HALLWAY_6_CEILING_1)
    (ann / "stairs_1.txt").write_text("7 8 9 0 0 255\n")
    (ann / "chair_10.txt").write_text("1 1 1 10 20 30\n")
    (ann / "chair_2.txt").write_text("2 2 2 10 20 30\n3 3 3 10 20 30\n")
    (rooms[(5, "office_2")] / "wall_1.txt").write_text("0 0 0 1 1 1\n")
    (rooms[(1, "office_1")] / "floor_1.txt").write_text("0 0 0 1 1 1\n")


def test_s3dis_room_and_areas(tmp_path):
    """Area 5 of the Aligned version reads, stray NUL included (HALLWAY_6_CEILING_1: S3DIS_fix.diff's bytes).

    Reference: the ceiling rows are the released lines with the patch's corrected line, parsed by numpy.
    """
    root = tmp_path / "Stanford3dDataset_v1.2_Aligned_Version"
    _s3dis(root)
    assert HALLWAY_6_CEILING_1.count(b"\x00") == 1 and HALLWAY_6_CEILING_1.split(b"\n")[3].startswith(b"22.350")
    with pytest.warns(UserWarning, match=r"ceiling_1.txt: .*line\(s\) \[4\]"):
        r = real.read_s3dis_room(root / "Area_5" / "hallway_6")
    ceiling = np.loadtxt(io.BytesIO(HALLWAY_6_CEILING_1.replace(b"185\x00187 182", HALLWAY_6_PATCHED_LINE[19:])))
    assert ceiling.shape == (7, 6)
    np.testing.assert_array_equal(r["points"][:7], ceiling[:, :3].astype(np.float32))
    np.testing.assert_allclose(r["colors"][3], np.array([185, 187, 182]) / 255, rtol=1e-6)
    np.testing.assert_allclose(r["colors"][:7], ceiling[:, 3:] / 255, rtol=1e-6)
    # natural order after the ceiling: chair_2, chair_10, stairs_1
    np.testing.assert_array_equal(r["points"][7:], np.array([[2, 2, 2], [3, 3, 3], [1, 1, 1], [7, 8, 9]], np.float32))
    C = real.S3DIS_CLASSES
    np.testing.assert_array_equal(r["semantic"], [C.index("ceiling")] * 7 + [C.index("chair")] * 3
                                  + [C.index("clutter")])
    np.testing.assert_array_equal(r["instance"], [0] * 7 + [1, 1, 2, 3])
    np.testing.assert_allclose(r["colors"][7], np.array([10, 20, 30]) / 255, rtol=1e-6)
    assert r["points"].dtype == np.float32 and r["semantic"].dtype == np.int64 and r["room"] == "Area_5/hallway_6"
    assert len(C) == 13
    test = real.S3DIS(root, "test", test_area=5)  # the standard test area: every room reads
    assert [p.name for p in test.rooms] == ["hallway_6", "office_2"]
    with pytest.warns(UserWarning, match="hallway_6"):
        assert [len(test[i]["points"]) for i in range(len(test))] == [11, 1]
    with pytest.raises(DatasetNotFoundError, match="Area_2"):  # train needs areas 1-4 and 6
        real.S3DIS(root, "train")
    assert len(real.S3DIS(root, areas=[1])) == 1


def test_s3dis_non_aligned_office_19(tmp_path):
    r"""The non-aligned v1.2's stray byte (OFFICE_19_LINE: b"103.0\x100000", 6th column, character 56) is read as
    Pointcept's correction 103.000000; the line's other values are placeholders (see OFFICE_19_LINE)."""
    assert OFFICE_19_LINE.index(b"\x10") + 1 == 56 and OFFICE_19_LINE.split()[5] == b"103.0\x100000"
    ann = tmp_path / "Stanford3dDataset_v1.2" / "Area_5" / "office_19" / "Annotations"
    ann.mkdir(parents=True)
    (ann / "ceiling_1.txt").write_bytes(b"8.1 12.3 3.0 101 102 103\n" + OFFICE_19_LINE + b"\n")
    with pytest.warns(UserWarning, match=r"ceiling_1.txt: .*line\(s\) \[2\]"):
        r = real.read_s3dis_room(ann.parent)
    want = np.loadtxt(io.BytesIO(OFFICE_19_CORRECTED))
    np.testing.assert_array_equal(r["points"][1], want[:3].astype(np.float32))
    np.testing.assert_allclose(r["colors"][1], want[3:] / 255, rtol=1e-6)
    assert r["colors"][1, 2] == np.float32(103 / 255)


def test_read_table_repair_rule(tmp_path):
    r"""read_table's tolerance restores the 0x20 bit of control bytes and nothing else.

    The third known S3DIS byte, b"-9.1\x160" in Area_3/hallway_2/hallway_2.txt of the Aligned version (line 926337;
    S3DIS_fix.diff, loicland/superpoint_graph#230), becomes -9.160, the value of its neighbours in the released file.
    """
    lines = (b"19.276 -9.160 1.684 139 130 99\n"
             b"19.302 -9.1\x160 1.785 146 137 106\n"
             b"19.242 -9.160 1.790 146 134 108\n")
    p = tmp_path / "hallway_2.txt"
    p.write_bytes(lines)
    with pytest.warns(UserWarning, match=r"line\(s\) \[2\]"):
        t = formats.read_table(p, 6, "x y z r g b", tolerant=True)
    np.testing.assert_array_equal(t[:, 1], [-9.160, -9.160, -9.160])
    with pytest.raises(CorruptFileError, match=r"hallway_2.txt: line 2 is not numeric: '19.302 -9.1\\x160"):
        formats.read_table(p, 6, "x y z r g b")  # strict by default
    p.write_bytes(b"1 2 3 4 5 6\r\n7 8 9 10 11 12\r\n")  # CRLF: \r is whitespace, not a '-' that lost a bit
    np.testing.assert_array_equal(formats.read_table(p, 6, "x y z r g b", tolerant=True)[1], [7, 8, 9, 10, 11, 12])
    genuinely_corrupt = {
        b"1 2 3 4 5 6 7\n1 2 3 4 5\n": "line 1 has 7 values but 6 are expected",  # 12 values, 2 lines
        b"1 2 3 4 5 6\n1 2 3 185\x00187 182 9\n": "line 2 has 7 values",  # a NUL repaired into one value too many
        b"1 2 3 4 5 6\n1 2 3 \xff4 5 6\n": r"line 2 is not numeric: '1 2 3 \xff4 5 6'",  # not a lost 0x20 bit
        b"1 2 3 4 5 6\n1 2 3 4 5 x\n": "line 2 is not numeric",
        b"\n\n": "is empty",
    }
    for data, msg in genuinely_corrupt.items():
        p.write_bytes(data)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with pytest.raises(CorruptFileError, match=msg):
                formats.read_table(p, 6, "x y z r g b", tolerant=True)


def test_s3dis_errors(tmp_path):
    with pytest.raises(DatasetNotFoundError) as e:
        real.S3DIS(tmp_path / "Stanford3dDataset_v1.2_Aligned_Version", "test")
    assert "Annotations" in str(e.value) and "S3DIS" in str(e.value)
    ann = tmp_path / "Area_5" / "office_9" / "Annotations"
    ann.mkdir(parents=True)
    (ann / "table_1.txt").write_text("1 2 3 4 5 6\n1 2 3 4 5\n")
    with pytest.raises(CorruptFileError, match=r"table_1\.txt: line 2 has 5 values"):
        real.read_s3dis_room(ann.parent)


# ----------------------------------------------------------------------------------------------------------
# Middlebury motorcycle (real data shipped with scikit-image)
# ----------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def moto_pair():
    return real.motorcycle_pair()


def test_motorcycle_rgbd():
    r = real.motorcycle_rgbd()
    from skimage.data import stereo_motorcycle

    _, _, disp = stereo_motorcycle()
    c = real.MOTORCYCLE_CALIBRATION
    assert r["color"].shape == (500, 741, 3) and r["depth"].shape == (500, 741) and r["depth"].dtype == np.float32
    np.testing.assert_array_equal(r["pose"], np.eye(4))
    valid = np.isfinite(disp) & (disp > 0)
    assert (r["depth"][~valid] == 0).all() and (r["depth"][valid] > 0).all()
    v, u = 250, 370
    assert valid[v, u]
    np.testing.assert_allclose(r["depth"][v, u], 994.978 * 0.193001 / (disp[v, u] + 31.086), rtol=1e-6)
    assert 330_000 < len(r["points"]) == valid.sum() < 350_000
    assert 1.5 < r["depth"][valid].min() and r["depth"].max() < 6  # metres
    i = np.nonzero((r["uv"][:, 0] == u) & (r["uv"][:, 1] == v))[0][0]
    z = r["depth"][v, u]
    np.testing.assert_allclose(r["points"][i], [(u - c["cx"]) * z / c["f"], (v - c["cy"]) * z / c["f"], z],
                               rtol=1e-5)
    np.testing.assert_allclose(r["colors"][i], r["color"][v, u] / 255.0)


def test_motorcycle_pair_geometry(moto_pair):
    L, R, T = moto_pair["left"], moto_pair["right"], moto_pair["T_right_left"]
    assert len(L["points"]) == len(R["points"]) > 300_000
    np.testing.assert_allclose(T, [[1, 0, 0, -0.193001], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]], atol=1e-7)
    np.testing.assert_allclose(R["pose"] @ T, np.eye(4), atol=1e-7)  # right pose = inverse of T_right_left
    # a left point moved into the right camera frame projects onto its corresponding right pixel (u - d, v)
    p = L["points"].astype(np.float64) @ T[:3, :3].T.astype(np.float64) + T[:3, 3]
    K = R["K"].astype(np.float64)
    uv = np.stack([K[0, 0] * p[:, 0] / p[:, 2] + K[0, 2], K[1, 1] * p[:, 1] / p[:, 2] + K[1, 2]], 1)
    assert np.abs(uv - R["uv"]).max() < 0.01  # sub-pixel
    from skimage.data import stereo_motorcycle

    _, _, disp = stereo_motorcycle()
    u, v = L["uv"][:, 0].astype(int), L["uv"][:, 1].astype(int)
    np.testing.assert_allclose(R["uv"][:, 0], u - disp[v, u], atol=1e-3)
    np.testing.assert_array_equal(R["uv"][:, 1], L["uv"][:, 1])


def test_motorcycle_pair_colours_agree(moto_pair):
    """The correspondence direction is right on the real images: matched colours agree far better than chance."""
    L, R = moto_pair["left"], moto_pair["right"]
    matched = np.abs(L["colors"] - R["colors"]).mean()
    shuffled = np.abs(L["colors"] - R["colors"][np.random.default_rng(0).permutation(len(R["colors"]))]).mean()
    assert matched < 0.06 and matched < shuffled / 4
