"""ScanNet view-pair extraction (ssl3d.data.scannet_pairs) on a tiny scene written in ScanNet's export layout.

The scene is rendered from an embedded room (ssl3d.data.rgbd) and written exactly as the exporters write it: depth as
16-bit PNG in millimetres, colour as .jpg (ScanNet's SensReader) for two frames and .png (PointContrast's / Pointcept's
SensorData.py) for two others, poses and intrinsics as 4 x 4 '%f' text (SensorData.save_mat_to_file), only every 25th
frame id plus one off-grid frame and one with an invalid (-inf) pose. The references are independent of the module:
poses and intrinsics read back with numpy, PointContrast's back-projection formula written out, brute-force distance
matrices instead of KD-trees.
"""

import json

import numpy as np
import pytest
from PIL import Image

from ssl3d.data import datasets as D
from ssl3d.data import real
from ssl3d.data import rgbd as R
from ssl3d.data import scannet_pairs as SP
from ssl3d.data import synthetic as S
from ssl3d.data.real import DatasetNotFoundError
from ssl3d.data.transforms import RandomRotation

VOXEL = 0.1  # at 48 x 36 pixels a 10 cm voxel merges a quarter of the pixels
RADIUS = 1.5 * VOXEL
FRAME_IDS = (0, 25, 50, 75)  # what SensReader exports with frame_skip 25; trajectory frames 0..3


def _save_mat_to_file(matrix, path):
    """SensorData.save_mat_to_file: one '%f' row per line."""
    path.write_text("".join(" ".join(f"{x:f}" for x in row) + "\n" for row in np.asarray(matrix)))


def write_scene(scene, k_offset=(0.01, -0.02), width=48, height=36):
    """Write a ScanNet scene export rendered from embedded room 3; returns the rendered frames by frame id."""
    for sub in ("color", "depth", "pose", "intrinsic"):
        (scene / sub).mkdir(parents=True)
    room = S.make_room(3)
    poses = R.camera_trajectory(room, 24, seed=1)
    K = R.intrinsics(width, height, 70.0)
    k4 = np.eye(4)
    k4[:3, :3] = K
    k4[:2, 3] = k_offset
    _save_mat_to_file(k4, scene / "intrinsic" / "intrinsic_depth.txt")
    _save_mat_to_file(k4, scene / "intrinsic" / "intrinsic_color.txt")
    rendered = {}
    for k, i in enumerate((*FRAME_IDS, 10, 100)):  # 10: not a multiple of 25; 100: lost tracking
        f = R.render_frame(room, K, poses[k], width, height)
        Image.fromarray(np.round(f["depth"] * 1000).astype(np.uint16)).save(scene / "depth" / f"{i}.png")
        if i in (0, 25):
            Image.fromarray(f["color"]).save(scene / "color" / f"{i}.jpg", quality=95)
        else:
            Image.fromarray(f["color"]).save(scene / "color" / f"{i}.png")
        _save_mat_to_file(np.full((4, 4), -np.inf) if i == 100 else f["pose"], scene / "pose" / f"{i}.txt")
        rendered[i] = f
    return rendered


@pytest.fixture(scope="module")
def scannet(tmp_path_factory):
    """A ScanNet root with one exported scene (non-zero K[0,3], K[1,3], as derived files may have)."""
    root = tmp_path_factory.mktemp("scannet")
    write_scene(root / "scans" / "scene0000_00")
    return root


@pytest.fixture(scope="module")
def extracted(scannet, tmp_path_factory):
    out = tmp_path_factory.mktemp("pairs")
    index = SP.extract_scannet_pairs(scannet / "scans" / "scene0000_00", out, frame_skip=25, min_overlap=0.3,
                                     voxel_size=VOXEL, show_progress=False)
    return out, index


def _reference_cloud(scene, i):
    """PointContrast's point_cloud_extractor.py formula on the raw files: (H·W valid, 3) camera frame and (v, u)."""
    k = np.loadtxt(scene / "intrinsic" / "intrinsic_depth.txt")
    z = np.array(Image.open(scene / "depth" / f"{i}.png")).astype(np.float64) / 1000.0
    v, u = np.nonzero(z != 0)
    zz = z[v, u]
    pts = np.stack([(u - k[0, 2]) * zz / k[0, 0] + k[0, 3], (v - k[1, 2]) * zz / k[1, 1] + k[1, 3], zz], 1)
    return pts, v, u


def _brute_force_pairs(p0, p1, T):
    """All (i, j) with ‖p0_i − T p1_j‖ ≤ RADIUS from the full distance matrix, and the matrix itself."""
    q = p1.astype(np.float64) @ T[:3, :3].T + T[:3, 3]
    d = np.linalg.norm(p0.astype(np.float64)[:, None, :] - q[None, :, :], axis=-1)  # (N0, N1)
    return {tuple(x) for x in np.argwhere(d <= RADIUS)}, d


def test_pairs_agree_with_brute_force(scannet, extracted):
    """Every stored pair: T from the pose files, correspondences = brute-force radius search after T, overlap ≥ 0.3."""
    scene = scannet / "scans" / "scene0000_00"
    out, index = extracted
    assert index["frames"] == list(FRAME_IDS) and index["invalid_pose_frames"] == [100]
    assert index["voxel_size"] == VOXEL and index["overlap_rule"] == "min"
    kept = [tuple(p["frames"]) for p in index["pairs"]]
    assert 0 < len(kept) < 6  # some pairs of the 4 frames overlap, some do not
    for p in index["pairs"]:
        i, j = p["frames"]
        z = np.load(out / "scene0000_00" / p["file"])
        assert sorted(z.files) == sorted(SP.PAIR_FIELDS)
        for k in ("points0", "points1", "colors0", "colors1", "T"):
            assert z[k].dtype == np.float32
        assert z["correspondences"].dtype == np.int64 and z["overlap"].shape == ()
        T = np.linalg.inv(np.loadtxt(scene / "pose" / f"{i}.txt")) @ np.loadtxt(scene / "pose" / f"{j}.txt")
        np.testing.assert_allclose(z["T"], T, atol=1e-5)
        want, d = _brute_force_pairs(z["points0"], z["points1"], T)
        got = {tuple(x) for x in z["correspondences"]}
        assert all(abs(d[a, b] - RADIUS) < 1e-5 for a, b in got ^ want)  # equal up to round-off at the radius
        assert len(got) == p["correspondences"]
        f0 = len({a for a, _ in got}) / len(z["points0"])
        f1 = len({b for _, b in got}) / len(z["points1"])
        assert float(z["overlap"]) == pytest.approx(min(f0, f1)) == pytest.approx(p["overlap"])
        assert min(f0, f1) >= 0.3 and (p["overlap0"], p["overlap1"]) == pytest.approx((f0, f1))


def test_stored_points_are_backprojected_pixels_one_per_voxel(scannet, extracted):
    """Each stored point is a pixel back-projected with K[0,3], K[1,3] added (PointContrast's formula), with that
    pixel's colour, and no two stored points share a voxel."""
    scene = scannet / "scans" / "scene0000_00"
    out, index = extracted
    p = index["pairs"][0]
    z = np.load(out / "scene0000_00" / p["file"])
    for view, i in enumerate(p["frames"]):
        ref, v, u = _reference_cloud(scene, i)
        pts = z[f"points{view}"].astype(np.float64)
        d = np.linalg.norm(pts[:, None, :] - ref[None, :, :], axis=-1)  # (N, H·W)
        nearest = d.argmin(1)
        assert d[np.arange(len(pts)), nearest].max() < 1e-5
        suffix = ".jpg" if i in (0, 25) else ".png"
        img = np.asarray(Image.open(scene / "color" / f"{i}{suffix}").convert("RGB"))
        np.testing.assert_allclose(z[f"colors{view}"], img[v[nearest], u[nearest]] / 255, atol=1e-6)
        cells = np.floor(z[f"points{view}"] / np.float32(VOXEL))
        assert len(np.unique(cells, axis=0)) == len(pts)
        assert len(pts) < len(ref)  # downsampled


def test_every_pair_above_the_threshold_is_kept(scannet, extracted):
    """Completeness: the overlap of every frame pair (brute force on the per-frame clouds) decides the kept set."""
    out, index = extracted
    frames = real.ScanNetFrames(scannet / "scans" / "scene0000_00", frame_skip=25)
    clouds = {f["frame"]: (SP.frame_cloud(f, VOXEL)["points"], f["pose"].astype(np.float64))
              for f in (frames[k] for k in range(len(frames)))}
    want = set()
    for a in FRAME_IDS:
        for b in FRAME_IDS:
            if a < b:
                T = np.linalg.inv(clouds[a][1]) @ clouds[b][1]
                pairs, _ = _brute_force_pairs(clouds[a][0], clouds[b][0], T)
                f0 = len({x for x, _ in pairs}) / len(clouds[a][0])
                f1 = len({y for _, y in pairs}) / len(clouds[b][0])
                if min(f0, f1) >= 0.3:
                    want.add((a, b))
    assert {tuple(p["frames"]) for p in index["pairs"]} == want


def test_same_pair_as_the_embedded_make_view_pair(tmp_path):
    """With K[0,3] = K[1,3] = 0 (the official files) a stored pair is what rgbd.make_view_pair makes of the frames."""
    scene = tmp_path / "scans" / "scene0000_00"
    write_scene(scene, k_offset=(0.0, 0.0))
    index = SP.extract_scannet_pairs(scene, tmp_path / "out", voxel_size=VOXEL, show_progress=False)
    frames = real.ScanNetFrames(scene, frame_skip=25)
    by_id = {f["frame"]: f for f in (frames[k] for k in range(len(frames)))}
    for p in index["pairs"]:
        f0, f1 = ({**by_id[i], "semantic": np.zeros(by_id[i]["depth"].shape, np.int64),
                   "instance": np.zeros(by_id[i]["depth"].shape, np.int64)} for i in p["frames"])
        want = R.make_view_pair(f0, f1, VOXEL)
        z = np.load(tmp_path / "out" / "scene0000_00" / p["file"])
        for k in ("points0", "points1", "correspondences"):
            np.testing.assert_array_equal(z[k], want[k])
        np.testing.assert_allclose(z["T"], want["T"], atol=1e-6)  # here T is computed in float64, there in float32
        np.testing.assert_allclose(z["colors0"], want["colors0"], atol=1e-7)
        assert float(z["overlap"]) == want["overlap"]


def test_overlap_rule_max_keeps_pointcontrasts_pairs(scannet, extracted, tmp_path):
    """overlap_rule='max' keeps a pair when either view reaches the threshold (compute_full_overlapping.py);
    the stored overlap keeps its min meaning."""
    _, index_min = extracted
    index = SP.extract_scannet_pairs(scannet / "scans" / "scene0000_00", tmp_path, min_overlap=0.3,
                                     voxel_size=VOXEL, overlap_rule="max", show_progress=False)
    kept_min, kept_max = ({tuple(p["frames"]) for p in ix["pairs"]} for ix in (index_min, index))
    assert kept_min < kept_max  # in this scene frames 0 and 75 overlap by 29 % and 33 %: only 'max' keeps them
    assert all(max(p["overlap0"], p["overlap1"]) >= 0.3 and p["overlap"] == min(p["overlap0"], p["overlap1"])
               for p in index["pairs"])
    with pytest.raises(ValueError, match="overlap_rule"):
        SP.extract_scannet_pairs(scannet / "scans" / "scene0000_00", tmp_path, overlap_rule="mean")


def test_writes_are_atomic_and_resumable(scannet, tmp_path, monkeypatch):
    """A crash leaves no partial file and no index; the next run completes; a finished scene is not redone."""
    scene = scannet / "scans" / "scene0000_00"
    out = tmp_path / "pairs"
    real_replace = SP.os.replace

    def crash_on_index(src, dst):
        if str(dst).endswith(SP.INDEX_NAME):
            raise OSError("disk full (simulated)")
        real_replace(src, dst)

    monkeypatch.setattr(SP.os, "replace", crash_on_index)
    with pytest.raises(OSError, match="simulated"):
        SP.extract_scannet_pairs(scene, out, voxel_size=VOXEL, show_progress=False)
    files = sorted(p.name for p in (out / "scene0000_00").iterdir())
    assert files and not any(n.endswith(".partial") or n == SP.INDEX_NAME for n in files)
    for n in files:  # the pairs written before the crash are complete files
        assert sorted(np.load(out / "scene0000_00" / n).files) == sorted(SP.PAIR_FIELDS)

    def crash_inside_npz(fh, **arrays):
        fh.write(b"PK\x03\x04 half a zip")
        raise OSError("killed (simulated)")

    monkeypatch.setattr(SP.os, "replace", real_replace)
    monkeypatch.setattr(SP.np, "savez_compressed", crash_inside_npz)
    (out / "scene0000_00" / files[0]).unlink()
    with pytest.raises(OSError, match="killed"):
        SP.extract_scannet_pairs(scene, out, voxel_size=VOXEL, show_progress=False)
    assert not (out / "scene0000_00" / files[0]).exists()
    assert not any(p.name.endswith(".partial") for p in (out / "scene0000_00").iterdir())
    monkeypatch.undo()

    index = SP.extract_scannet_pairs(scene, out, voxel_size=VOXEL, show_progress=False)
    assert sorted(p["file"] for p in index["pairs"]) == files
    assert json.loads((out / "scene0000_00" / SP.INDEX_NAME).read_text()) == index
    monkeypatch.setattr(SP.os, "replace", crash_on_index)  # a finished scene writes nothing
    assert SP.extract_scannet_pairs(scene, out, voxel_size=VOXEL, show_progress=False) == index
    with pytest.raises(ValueError, match=r"other parameters .*min_overlap.*another out_dir"):
        SP.extract_scannet_pairs(scene, out, voxel_size=VOXEL, min_overlap=0.5, show_progress=False)


def test_missing_folders_give_clear_errors(tmp_path, capsys):
    with pytest.raises(DatasetNotFoundError) as e:
        SP.extract_scannet_pairs(tmp_path / "scans" / "scene0001_00", tmp_path / "out")
    assert "scene0001_00" in str(e.value) and "scans_test/" in str(e.value) and "color/0.jpg" in str(e.value)
    assert SP.main(["--scannet", str(tmp_path / "nowhere"), "--out", str(tmp_path / "out")]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "bare" / "scans" / "scene0000_00").mkdir(parents=True)  # a scene without exported frames
    assert SP.main(["--scannet", str(tmp_path / "bare"), "--out", str(tmp_path / "out")]) == 2
    assert "exported frames" in capsys.readouterr().err
    assert SP.main(["--scannet", str(tmp_path / "bare"), "--out", str(tmp_path / "out"), "--scenes", "x"]) == 2
    assert "missing scans/x/" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError, match="extract pairs first"):
        SP.ScanNetPairs(tmp_path / "out", VOXEL)


def test_command_line_and_dataset_round_trip(scannet, tmp_path, capsys):
    """The command writes the pairs; ScanNetPairs serves ViewPairDataset's items; collate_pairs batches them."""
    out = tmp_path / "pairs"
    assert SP.main(["--scannet", str(scannet), "--out", str(out), "--voxel-size", str(VOXEL)]) == 0
    index = json.loads((out / "scene0000_00" / SP.INDEX_NAME).read_text())
    assert f"{len(index['pairs'])} pairs from 1 scene(s)" in capsys.readouterr().out
    ds = SP.ScanNetPairs(out, VOXEL)
    assert len(ds) == len(index["pairs"]) >= 2 and ds.pairs[0][0] == "scene0000_00"
    assert len(SP.ScanNetPairs(out / "scene0000_00", VOXEL)) == len(ds)  # one scene's folder works too
    embedded = D.ViewPairDataset(n_rooms=1, frames_per_room=6, voxel_size=0.1, width=32, height=24, max_gap=2)[0]
    item = ds[0]
    assert set(item) == set(embedded)
    for k, v in item.items():  # same types (tensors, python float overlap), dtypes and ranks
        assert type(v) is type(embedded[k]), k
        assert getattr(v, "dtype", None) == getattr(embedded[k], "dtype", None), k
        assert np.ndim(v) == np.ndim(embedded[k]), k
    assert item["feats0"].shape == (len(item["points0"]), 1)
    rgb = SP.ScanNetPairs(out, VOXEL, features="rgb")[0]
    z = np.load(out / "scene0000_00" / index["pairs"][0]["file"])
    np.testing.assert_array_equal(rgb["feats0"].numpy(), z["colors0"])

    rotated = SP.ScanNetPairs(out, VOXEL, transform=RandomRotation(axis=None), seed=3)
    batch = D.collate_pairs([rotated[0], rotated[1]])
    c0, c1 = batch["correspondences"][:, 0], batch["correspondences"][:, 1]
    b = np.searchsorted(batch["offsets0"].numpy(), c0.numpy(), side="right") - 1
    assert (b == np.searchsorted(batch["offsets1"].numpy(), c1.numpy(), side="right") - 1).all()
    T = batch["T"].double().numpy()[b]  # (P, 4, 4) per correspondence
    p1 = batch["points1"].double().numpy()[c1]
    moved = np.einsum("pij,pj->pi", T[:, :3, :3], p1) + T[:, :3, 3]
    assert np.linalg.norm(batch["points0"].double().numpy()[c0] - moved, axis=1).max() <= RADIUS + 1e-4
    assert batch["coords0"].shape[1] == 4 and set(batch["coords0"][:, 0].tolist()) == {0, 1}
    with pytest.raises(ValueError, match="extracted at voxel_size=0.1"):
        SP.ScanNetPairs(out, 0.025)
    with pytest.raises(IndexError):
        ds[len(ds)]
