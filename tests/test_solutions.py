"""The worked solutions of the notebooks' exercises (notebooks/solutions/) say what they compute."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

SOLUTIONS = Path(__file__).resolve().parents[1] / "notebooks" / "solutions"


def load(stem: str):
    path = SOLUTIONS / f"{stem}.py"
    spec = importlib.util.spec_from_file_location(f"solutions_{stem}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_every_notebook_with_exercises_has_solutions():
    import json

    for nb in sorted((SOLUTIONS.parent).glob("[0-9][0-9]_*.ipynb")):
        text = "".join("".join(c["source"]) for c in json.loads(nb.read_text())["cells"])
        if "## Exercises" in text:
            assert (SOLUTIONS / f"{nb.stem}.py").is_file(), f"{nb.name} has exercises but no solutions file"
            assert f"notebooks/solutions/{nb.stem}.py" in text, f"{nb.name} does not point to its solutions"


@pytest.fixture(scope="module")
def airplane():
    return load("00_point_clouds_101").airplane(4096)


def test_00_solutions(airplane):
    s = load("00_point_clouds_101")
    points, normals = airplane
    e1 = s.exercise_1(points)
    assert all(a > b for a, b in zip(e1["counts"], e1["counts"][1:]))
    assert -2.3 < e1["slope"] < -1.5, "a surface: about s^-2, not s^-3"
    e2 = s.exercise_2(points, normals)
    assert e2["clean"]["best_k"] == 4 and e2["noisy"]["best_k"] == 64
    assert e2["noisy"]["median_error_deg"][4] > 3 * e2["clean"]["median_error_deg"][4]
    e3 = s.exercise_3(points)
    assert e3["fps_relative_spread"] < 0.1 and max(e3["fps"]) < min(e3["random"])


def test_01_solutions():
    s = load("01_data")
    chance = 1 / 14
    e1 = s.exercise_1(widths=(0.25, 1.0))
    assert all(r["fixed C=0.01"] > 5 * chance and r["tuned C"] > 5 * chance for r in e1.values())
    e2 = s.exercise_2()
    assert e2[0.6]["pairs"] < e2[0.3]["pairs"] and e2[0.6]["mean_overlap"] > e2[0.3]["mean_overlap"] >= 0.3
    e3 = s.exercise_3()
    assert e3["all six"] > 5 * chance and e3["accuracy lost without"][e3["most important"]] > 0


def test_02_solutions():
    s = load("02_sparse_convolution")
    pts = s.room_points(20_000)
    e1 = s.exercise_1(pts, sizes=(0.05, 0.1, 0.2))
    per = [e1[k]["neighbours_per_voxel"] for k in (0.05, 0.1, 0.2)]
    assert all(1 <= p < 27 for p in per) and per[0] < per[1] < per[2]
    assert s.exercise_2() < 1e-4, "dilated sparse conv = dense conv3d with dilation 2"
    e3 = s.exercise_3(pts)
    assert all(r["voxels_in_field"] > 0 and r["max_reach_m"] > 1.0 for r in e3.values())


def test_03_solutions():
    s = load("03_gmm_bottleneck")
    e1 = s.exercise_1(Js=(4, 64))
    assert e1[64]["eff"] > e1[4]["eff"] and e1[64]["fraction_used"] < e1[4]["fraction_used"]
    assert e1[64]["used"] < 64, "more components than the shapes need stay unused"
    e2 = s.exercise_2()
    a, r = e2["aligned"], e2["rotated"]
    assert min(a["full"], a["diag"]) > a["iso"] + 0.5, "boxes aligned with the axes: diag is as good as full"
    assert abs(r["full"] - a["full"]) < 1e-6, "full covariances do not care about the orientation"
    assert r["diag"] < r["full"] - 0.5, "rotated, diag falls far behind full"
    e3 = s.exercise_3()
    eps = sorted(e3)
    assert all(e3[e]["smallest_std"] >= e ** 0.5 * (1 - 1e-6) for e in eps), "ε is a floor on every variance"
    assert e3[eps[0]]["log_likelihood"] > e3[eps[-1]]["log_likelihood"] + 0.5



def test_04_solutions():
    s = load("04_pointcontrast")
    pair = s._pair(voxel_size=0.15)
    e1 = s.exercise_1(taus=(0.07, 0.4), num_pos=512, pair=pair)
    assert e1[0.07]["separation"] > e1[0.4]["separation"] > 0, "a small τ separates matched from random more"
    assert e1[0.07]["random"] > e1["log_n"] > e1[0.07]["matched"], "random features score above log n at τ = 0.07"
    e2 = s.exercise_2(sizes=(64, 256), pair=pair)
    assert all(abs(loss - log_n) < 0.15 * log_n for loss, log_n in e2.values()), "random features: ≈ log n"
    assert e2[256][0] > e2[64][0], "more keys, higher loss"
    import torch

    from ssl3d.models import build_model

    torch.manual_seed(0)
    net = build_model("res16unet14tiny", in_channels=0, out_channels=8)
    same = s.exercise_3(net, voxel_size=0.2, quarter_turns=0)
    assert abs(same["mean"] - 1) < 1e-5, "no rotation: identical features"
    turned = s.exercise_3(net, voxel_size=0.2, quarter_turns=1)
    assert -1 <= turned["mean"] < 0.9999, "a quarter turn changes a random network's features"


def test_05_solutions():
    s = load("05_image_to_point")
    e1 = s.exercise_1(n_pairs=60)
    for r in e1.values():
        assert 0 < r["mean_matches"] < r["view_pixels"], "some, never all, view pixels have a partner"
    released, smoke = e1.values()
    assert released["at_cap"] > 0.8, "at 224 px most pairs have more matches than the 4,092 the loss samples"
    assert smoke["at_cap"] < released["at_cap"]
    e2 = s.exercise_2(n_frames=2)
    assert e2["native"]["min_cosine"] > 1 - 1e-5, "at native resolution points sit on pixel centres: identical"
    assert e2["half"]["mean_cosine"] < 0.999 and e2["half"]["min_cosine"] < e2["native"]["min_cosine"]
    e3 = s.exercise_3()
    kept, rejected = e3["kept"], e3["rejected"]
    assert kept["points"] + rejected["points"] == e3["in_front_and_inside"] < e3["points"]
    assert rejected["points"] > 0 and kept["same_instance"] > 0.95 > 0.2 > rejected["same_instance"]
    assert rejected["colour_error"] > 2 * kept["colour_error"], "occluded points land on other colours"


def test_06_solutions():
    s = load("06_act")
    e2 = s.exercise_2(groups=(16, 32, 64, 128))
    cover = [e2[g]["coverage"] for g in (16, 32, 64, 128)]
    assert all(a < b for a, b in zip(cover, cover[1:])), "more patches cover more of the cloud"
    assert e2[64]["points_in_patches"] == 1024 and cover[2] < 0.95, "G·K = N still leaves points out (overlaps)"
    small = dict(n_per_class=2, dvae_kw={"num_tokens": 64}, seed=0)
    e1 = s.exercise_1(ratios=(0.2, 0.8), dvae_iters=8, student_iters=12, **small)
    for r in e1.values():
        assert r["held_out_loss"] < 0.5 * r["untrained_loss"], "each student learned (at least the mean target)"
        assert 0 <= r["constant_loss"] < r["untrained_loss"], "the constant already beats an untrained student"
    e3 = s.exercise_3(temp_targets=(1.0, 0.0625), iters=8, **small)
    assert all(1 <= e3[t]["codes_in_use"] <= 64 and np.isfinite(e3[t]["argmax_chamfer"]) for t in e3)


def test_07_solutions():
    s = load("07_transfer_benchmark")
    e1 = s.exercise_1(num_group=8, group_size=16, embed_dim=32, encoder_dims=32, depth=1, num_heads=2,
                      patch_dims=(16, 32, 32))
    assert e1 == {"same_seed_same_digest": True, "parameters_unchanged": True, "digest_after_bn": True}
    from ssl3d.protocols import summarize

    recs = [{"method": m, "task": "scans", "protocol": "linear_svm", "budget": 1, "metric": "accuracy", "seed": k,
             "value": v} for m, vals in (("ACT", (40.0, 43.0, 49.0)), ("GMM", (1.0, 2.0, 3.0))) for k, v in
            enumerate(vals)]
    m, sd, n = s.exercise_2(recs)
    ref = [r for r in summarize(recs, by=("method",)) if r["method"] == "ACT"][0]
    assert n == 3 and abs(m - 44.0) < 1e-12 and abs(m - ref["mean"]) < 1e-12 and abs(sd - ref["std"]) < 1e-12
    assert abs(sd - float(np.std([40.0, 43.0, 49.0], ddof=1))) < 1e-12
