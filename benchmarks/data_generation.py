"""How fast the embedded data is generated, against references measured in the same run.

    .venv/bin/python benchmarks/data_generation.py [--quick]

- objects/second at 1,024 points (mesh building + area-weighted sampling), and the sampling step alone vs
  trimesh's ``sample_surface`` on the same meshes;
- scanned objects/second (hidden-point removal) per ScanObjectNN variant;
- RGB-D frames/second at 320×240 by our ray caster vs VTK's rasteriser (pyvista, off-screen, RGB + z-buffer)
  on the same room mesh — the GPU-style reference; ours also gives exact labels and texture per pixel;
- view-pair search: pairs/second.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch


def timeit(fn, repeat):
    fn()  # warm-up
    t = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - t) / repeat


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    n = 20 if args.quick else 100
    from ssl3d import geometry as G
    from ssl3d.data import rgbd as R
    from ssl3d.data import synthetic as S

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    # objects
    t = timeit(lambda: [S.sample_object(i % len(S.OBJECT_CLASSES), 1024, seed=i) for i in range(n)], 1)
    print(f"objects (1,024 points):         {n / t:8.1f} objects/s")
    meshes = [S.make_object(i % len(S.OBJECT_CLASSES), i) for i in range(n)]
    t_ours = timeit(lambda: [G.sample_surface(m.vertices, m.faces, 1024) for m in meshes], 3)
    import trimesh

    tms = [trimesh.Trimesh(m.vertices, m.faces, process=False) for m in meshes]
    t_ref = timeit(lambda: [trimesh.sample.sample_surface(tm, 1024) for tm in tms], 3)
    print(f"  surface sampling only:        {n / t_ours:8.1f} /s   trimesh {n / t_ref:8.1f} /s   ratio "
          f"{t_ref / t_ours:5.2f}× (>1 = ours faster)")
    k = max(5, n // 4)
    for v in ("OBJ_ONLY", "OBJ_BG", "PB_T50_RS"):
        t = timeit(lambda v=v: [S.scan_object(i % len(S.OBJECT_CLASSES), 1024, seed=i, variant=v)
                                for i in range(k)], 1)
        print(f"scanned objects {v:<10}     {k / t:8.1f} objects/s")
    # rooms and frames
    t = timeit(lambda: [S.make_room(i) for i in range(10)], 1)
    print(f"rooms:                          {10 / t:8.1f} rooms/s")
    room = S.make_room(0)
    K = R.intrinsics(320, 240)
    poses = R.camera_trajectory(room, 8 if args.quick else 24, seed=0)
    t_rc = timeit(lambda: [R.render_frame(room, K, p, 320, 240) for p in poses], 1) / len(poses)
    print(f"RGB-D frames 320×240, ray cast: {1 / t_rc:8.1f} frames/s ({room.num_instances} instances, "
          f"{len(room.mesh.faces)} triangles)")
    try:
        t_vtk = _vtk_fps(room, K, poses)
        print(f"  VTK rasteriser (pyvista, EGL): {1 / t_vtk:8.1f} frames/s   ratio ours/VTK time "
              f"{t_rc / t_vtk:6.1f}×")
    except Exception as e:  # no EGL/OSMesa: report, don't fail
        print(f"  VTK reference unavailable: {e}")
    frames = [R.render_frame(room, K, p, 320, 240) for p in poses]
    t = timeit(lambda: R.find_view_pairs(frames, 0.3, 0.1, max_gap=4), 1)
    npairs = sum(min(4, len(frames) - 1 - i) for i in range(len(frames)))
    print(f"view-pair search (voxel 0.1):   {npairs / t:8.1f} candidate pairs/s")


def _vtk_fps(room, K, poses):
    if not os.environ.get("DISPLAY"):
        os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")
    import pyvista as pv

    pv.OFF_SCREEN = True
    f = room.mesh.faces
    mesh = pv.PolyData(room.mesh.vertices, np.hstack([np.full((len(f), 1), 3), f]).ravel())
    pl = pv.Plotter(off_screen=True, window_size=[320, 240])
    pl.add_mesh(mesh, color="white")
    fy = K[1, 1]
    pl.camera.view_angle = float(np.degrees(2 * np.arctan(120 / fy)))

    def render(p):
        eye, fwd, down = p[:3, 3], p[:3, 2], p[:3, 1]
        pl.camera_position = [tuple(eye), tuple(eye + fwd), tuple(-down)]
        pl.camera.clipping_range = (0.05, 20.0)
        pl.render()
        pl.screenshot(return_img=True)
        pl.get_image_depth()

    render(poses[0])  # first frame builds the GL context (~1.5 s)
    t = time.perf_counter()
    for p in poses:
        render(p)
    dt = (time.perf_counter() - t) / len(poses)
    pl.close()
    return dt


if __name__ == "__main__":
    main()
