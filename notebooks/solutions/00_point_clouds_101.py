"""Worked solutions to the exercises of 00_point_clouds_101 (run them: `python notebooks/solutions/00_…py`).
tests/test_solutions.py checks what each one claims."""

import numpy as np
import pyvista as pv
import torch

from ssl3d import geometry as G


def airplane(n_points: int = 8192, seed: int = 0):
    """The notebook's cloud: pyvista's airplane in the unit sphere, area-weighted samples and their normals."""
    mesh = pv.examples.load_airplane().triangulate()
    faces = torch.from_numpy(mesh.faces.reshape(-1, 4)[:, 1:].astype(np.int64))
    verts = G.normalize_unit_sphere(torch.from_numpy(np.array(mesh.points)))[0]
    points, normals, _ = G.sample_surface(verts, faces, n_points, generator=torch.Generator().manual_seed(seed))
    return points, normals


def exercise_1(points, sizes=(0.02, 0.04, 0.08, 0.16)) -> dict:
    """Occupied voxels vs voxel size: the slope of log(count) against log(size) is close to −2 for a surface
    (each halving of s multiplies the count by about 4), not −3 as for a volume. At large s it flattens: a voxel
    then spans both skins of the thin wings."""
    counts = [len(G.voxelize(points, s)) for s in sizes]
    slope = np.polyfit(np.log(sizes), np.log(counts), 1)[0]
    return {"sizes": list(sizes), "counts": counts, "slope": float(slope)}


def exercise_2(points, normals, ks=(4, 16, 64), sigma: float = 0.005, seed: int = 0) -> dict:
    """Median normal error vs k, on the exact surface samples and on samples jittered by N(0, σ²).

    Noiseless samples of flat triangles are exactly planar: the smallest neighbourhood is best, and larger ones only
    add points across edges and the two skins of thin parts. With noise the smallest neighbourhood fits the noise
    (errors of tens of degrees at k = 4) and the largest k wins: the bias of big neighbourhoods is the lesser evil.
    """
    noisy = points + sigma * torch.randn(points.shape, generator=torch.Generator().manual_seed(seed))
    out = {}
    for name, pts in (("clean", points), ("noisy", noisy)):
        med = {}
        for k in ks:
            est = G.estimate_normals(pts, k=k)
            cos = (est * normals).sum(1).abs().clamp(max=1)
            med[k] = float(torch.rad2deg(torch.arccos(cos)).median())
        out[name] = {"median_error_deg": med, "best_k": min(med, key=med.get)}
    return out


def exercise_3(points, m: int = 64, trials: int = 5, seed: int = 0) -> dict:
    """FPS from random starts: the coverage radius barely changes (FPS is a 2-approximation of the optimal
    covering whatever the start), and every start beats the mean of random subsets."""
    g = torch.Generator().manual_seed(seed)
    fps = [G.coverage_radius(points, points[G.fps(points, m, start=None, generator=g)]) for _ in range(trials)]
    rand = [G.coverage_radius(points, points[torch.randperm(len(points), generator=g)[:m]]) for _ in range(trials)]
    return {"fps": fps, "random": rand, "fps_relative_spread": float(np.std(fps) / np.mean(fps))}


if __name__ == "__main__":
    pts, nrm = airplane()
    print(exercise_1(pts))
    print(exercise_2(pts, nrm))
    print(exercise_3(pts))
