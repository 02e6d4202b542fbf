"""Worked solutions to the exercises of 04_pointcontrast (run them: `python notebooks/solutions/04_pointcontrast.py`).
tests/test_solutions.py checks what each one claims (on smaller data)."""

import math

import numpy as np
import torch
import torch.nn.functional as F

from ssl3d import contrastive as CL
from ssl3d import geometry as G
from ssl3d.data import load_dataset


def _pair(voxel_size: float = 0.1, seed: int = 100):
    """Pair 0 of the embedded view pairs (no augmentation): its sizes and a one-to-one subset of its correspondences
    (one partner per point of view 0, then one per point of view 1), as in the notebook's section 2."""
    pairs = load_dataset("view_pairs", "train", None, n_rooms=1, frames_per_room=8, width=96, height=72,
                         voxel_size=voxel_size, seed=seed)
    item = pairs[0]
    one = CL.one_match_per_point(item["correspondences"], generator=torch.Generator().manual_seed(0))
    one = one[np.unique(one[:, 1].numpy(), return_index=True)[1]]
    return len(item["points0"]), len(item["points1"]), one


def _features(n0: int, n1: int, corr: torch.Tensor, dim: int = 32, seed: int = 0):
    """Matched features (the two copies of a point share a random unit code) and random features."""
    g = torch.Generator().manual_seed(seed)
    f0 = F.normalize(torch.randn(n0, dim, generator=g), dim=1)
    f1 = F.normalize(torch.randn(n1, dim, generator=g), dim=1)
    f1[corr[:, 1]] = f0[corr[:, 0]]
    r0 = F.normalize(torch.randn(n0, dim, generator=g), dim=1)
    r1 = F.normalize(torch.randn(n1, dim, generator=g), dim=1)
    return (f0, f1), (r0, r1)


def exercise_1(taus=(0.07, 0.4), num_pos: int = 4096, pair=None) -> dict:
    """PointInfoNCE of matched and random features per temperature. The separation (random − matched) is larger at
    the small τ, and the random features' loss climbs above log n as τ → 0: sharper logits make a random key's
    score dominate the denominator by chance."""
    n0, n1, corr = pair if pair is not None else _pair()
    matched, rand = _features(n0, n1, corr)
    out = {}
    for tau in taus:
        g = torch.Generator().manual_seed(0)
        m = float(CL.point_info_nce(*matched, corr, num_pos, tau, generator=g))
        g = torch.Generator().manual_seed(0)
        r = float(CL.point_info_nce(*rand, corr, num_pos, tau, generator=g))
        out[tau] = {"matched": m, "random": r, "separation": r - m}
    out["log_n"] = math.log(min(num_pos, len(torch.unique(corr[:, 0]))))
    return out


def exercise_2(sizes=(256, 1024, 4096), pair=None) -> dict:
    """Random features: PointInfoNCE ≈ log(number of keys). Returns {num_pos: (loss, log n)}; n is capped by the
    number of matched points of view 0."""
    n0, n1, corr = pair if pair is not None else _pair()
    _, rand = _features(n0, n1, corr)
    unique = len(torch.unique(corr[:, 0]))
    out = {}
    for n in sizes:
        g = torch.Generator().manual_seed(0)
        out[n] = (float(CL.point_info_nce(*rand, corr, n, 0.4, generator=g)), math.log(min(n, unique)))
    return out


def exercise_3(net, voxel_size: float = 0.1, quarter_turns: int = 1, n_rooms: int = 1) -> dict:
    """Cosine between the features of the same voxel in a test room and in the room rotated by k·90° about the up
    axis. A quarter turn maps the voxel grid onto itself exactly, so every voxel has a partner. Returns the mean and
    median cosine (1.0 for k = 0, any network)."""
    rooms = load_dataset("scenes", "test", None, n_rooms=n_rooms, points_per_room=20000, voxel_size=voxel_size,
                         features="ones")
    room = rooms[0]
    c = room["coords"]  # (M, 3) int
    rot = c.clone()
    for _ in range(quarter_turns % 4):  # (x, y) → (−y, x)
        rot = torch.stack([-rot[:, 1], rot[:, 0], rot[:, 2]], 1)
    net.eval()
    with torch.no_grad():  # the sparse net returns one feature per input voxel, in input order
        fa = F.normalize(net.encode({"coords": G.with_batch_index([c])})["feats"], dim=1)  # (M, C)
        fb = F.normalize(net.encode({"coords": G.with_batch_index([rot])})["feats"], dim=1)  # row i: voxel i turned
    cos = (fa * fb).sum(1).numpy()
    return {"mean": float(cos.mean()), "median": float(np.median(cos))}


if __name__ == "__main__":
    from ssl3d.models import build_model

    print(exercise_1())
    print(exercise_2())
    torch.manual_seed(0)
    net = build_model("res16unet14tiny", in_channels=0, out_channels=32)
    print("random net, quarter turn:", exercise_3(net))
