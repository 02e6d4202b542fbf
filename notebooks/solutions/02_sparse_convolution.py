"""Worked solutions to the exercises of 02_sparse_convolution (run: `python notebooks/solutions/02_…py`).
tests/test_solutions.py checks what each one claims."""

import itertools

import torch
import torch.nn.functional as F

from ssl3d import sparse as sp
from ssl3d.data import synthetic as S
from ssl3d.geometry import with_batch_index
from ssl3d.models import build_model


def room_points(n_points: int = 60_000, seed: int = 0):
    return S.sample_room(S.make_room(seed), n_points, seed=seed)["points"]


def exercise_1(points, sizes=(0.025, 0.05, 0.1)) -> dict:
    """Neighbours per voxel of a 3×3×3 submanifold convolution (the voxel itself included).

    A surface is two-dimensional: a voxel on a flat, axis-aligned patch has 9 of the 27 offsets occupied, a few
    more where the surface is tilted or bends — so the average stays far below 27. At 2.5 cm the room's 60,000
    samples no longer fill the surface grid (gaps between samples), and the average falls to a few neighbours;
    from 5 to 10 cm the surface is closed and the average rises towards and past 9 as corners and thin furniture
    fill more of each 3×3×3 block."""
    out = {}
    offsets = torch.tensor(list(itertools.product((-1, 0, 1), repeat=3)))  # (27, 3)
    for s in sizes:
        c = sp.sparse_quantize(points, s).coords  # (M, 3)
        keys = {tuple(v) for v in c.tolist()}
        pairs = sum(tuple(v) in keys for v in (c.unsqueeze(1) + offsets).reshape(-1, 3).tolist())
        out[s] = {"voxels": len(c), "pairs": pairs, "neighbours_per_voxel": pairs / len(c)}
    return out


def exercise_2(seed: int = 0) -> float:
    """A dilation-2 submanifold conv equals a dense conv3d with dilation=2 and padding=2 at the active sites
    (returns the largest difference)."""
    g = torch.Generator().manual_seed(seed)
    coords = torch.unique(torch.randint(0, 8, (80, 3), generator=g), dim=0)
    feats = torch.randn(len(coords), 3, generator=g)
    conv = sp.Conv3d(3, 4, kernel_size=3, dilation=2)
    with torch.no_grad():
        ours = conv(sp.SparseTensor(with_batch_index([coords]), feats, backend="torch")).feats
        grid = torch.zeros(1, 3, 8, 8, 8)
        grid[0, :, coords[:, 0], coords[:, 1], coords[:, 2]] = feats.T
        w = conv.kernel.view(3, 3, 3, 3, 4).permute(4, 3, 2, 1, 0)  # (C_out, C_in, x, y, z); offsets x fastest
        dense = F.conv3d(grid, w, padding=2, dilation=2)[0, :, coords[:, 0], coords[:, 1], coords[:, 2]].T
    return float((ours - dense).abs().max())


def exercise_3(points, sizes=(0.05, 0.1), seed: int = 0) -> dict:
    """Receptive field of Res16UNet14Tiny around the voxel nearest the room's centre, at two voxel sizes.

    Four stride-2 levels with 3×3×3 blocks reach far enough that at both 5 and 10 cm every voxel of the room
    influences the centre output: the room's walls, not the network, bound the reach (the same metres at both
    sizes). At 10 cm the network would reach twice as far in metres — a bigger room would show it."""
    out = {}
    torch.manual_seed(seed)
    net = build_model("res16unet14tiny", in_channels=0, out_channels=8).eval()
    for s in sizes:
        v = sp.sparse_quantize(points, s)
        ones = torch.ones(len(v), 1, requires_grad=True)
        out_f = net(sp.SparseTensor(with_batch_index([v.coords]), ones)).feats
        centres = v.centers()
        mid = (centres - centres.mean(0)).norm(dim=1).argmin()
        out_f[mid].sum().backward()
        rf = ones.grad.abs().squeeze(1) > 0
        reach = (centres[rf] - centres[mid]).abs().max(0).values
        out[s] = {"voxels_in_field": int(rf.sum()), "reach_m": reach.tolist(), "max_reach_m": float(reach.max())}
    return out


if __name__ == "__main__":
    pts = room_points()
    print(exercise_1(pts))
    print(exercise_2())
    print(exercise_3(pts))
