"""Sparse convolution on the CPU: ssl3d's pure-PyTorch backend vs MinkowskiEngine, on one indoor-like scene.

Scene: a procedural room (floor, four walls, a table, a cabinet, a bed-like block, a stool — boxes without bottoms),
rotated 17° about the vertical so walls do not align with the grid, sampled at 15 000 points/m² with 1 mm noise and
voxelized at 2 cm with ``ssl3d.sparse.sparse_quantize`` → ≈150 k voxels.

Printed in one run:
  1. per op — SubM conv 32→32 k3, strided conv 32→32 k2 s2, transposed conv 32→32 k2 s2 — and for a Res16UNet34C
     training step (forward, loss, backward, SGD step): time of each backend and the ratio torch / MinkowskiEngine,
     peak memory of each backend and the ratio. Times: forward + backward on a fresh input tensor (so kernel maps
     are built inside the timed region, as in training; building the input tensor itself is not timed); minimum
     over interleaved repetitions (robust to other processes on the shared cores), median beside it.
     Peak memory: one fresh subprocess per (op, backend) measurement (median of 3 in full mode); after setup
     (scene, modules, input tensor) the process calls malloc_trim, reads its resident set size (VmRSS), resets the
     kernel's peak-RSS counter (writing 5 to /proc/self/clear_refs) and runs the op once; peak = VmHWM − VmRSS
     before. This counts every allocation (PyTorch's and MinkowskiEngine's C++ kernel maps alike); where
     clear_refs is not writable it falls back to the ``resource.getrusage`` ru_maxrss delta (printed).
  2. MinkowskiEngine's effective GFLOP/s for the 32→32 3×3×3 SubM conv forward with cached kernel maps,
     2 · pairs · C_in · C_out / time, divided by dense ``torch.matmul`` GFLOP/s on the same per-offset GEMMs
     (pairs_k × 32 @ 32 × 32, operands already gathered) — the fraction of the GEMM roofline (the torch backend's
     number beside it).
  3. Res16UNet34C forward (eval, no grad) and forward + backward voxels / second, both backends.

    .venv/bin/python benchmarks/sparse_conv.py           # full: all on the 150 k-voxel scene, 3 repetitions
    .venv/bin/python benchmarks/sparse_conv.py --quick   # ops on the full scene (2 reps); the U-Net on a 20 k-voxel
                                                         # crop (the voxels nearest a room corner); < 2 min
    .venv/bin/python benchmarks/sparse_conv.py --quick --threads 2   # both cores (only meaningful on idle cores)

Threads: ``--threads`` (default 1) for torch and OpenMP, ``--blas-threads`` (default 1) for the OpenBLAS that only
MinkowskiEngine's CPU build uses; both are set before torch is imported. (ssl3d's minkowski backend also stops ME's
coordinate manager from resetting OpenMP to all cores.) One thread is the default because on a 2-core machine
shared with other jobs a 2-thread OpenMP region waits for a descheduled thread; the torch backend opens ~100 such
regions per convolution (a gather, GEMM and scatter per kernel offset) against MinkowskiEngine's few, so 2-thread
ratios measured on busy cores mostly measure the scheduler (we saw 1–30× swings between runs). On idle cores,
``--threads 2`` is meaningful.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _int_from_argv(flag: str, default: int) -> int:
    """Thread counts must act before torch/OpenMP/OpenBLAS start their pools, i.e. before `import torch`."""
    for i, a in enumerate(sys.argv):
        if a == flag and i + 1 < len(sys.argv):
            return int(sys.argv[i + 1])
        if a.startswith(flag + "="):
            return int(a.split("=", 1)[1])
    return default


THREADS = _int_from_argv("--threads", 1)
BLAS_THREADS = _int_from_argv("--blas-threads", 1)
# torch: intra-op OpenMP + MKL. MinkowskiEngine's CPU kernels: the same OpenMP runtime + system OpenBLAS.
os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(THREADS)
os.environ["OPENBLAS_NUM_THREADS"] = str(BLAS_THREADS)

import torch  # noqa: E402

from ssl3d import sparse as sp  # noqa: E402
from ssl3d.models.sparse_unet import Res16UNet34C  # noqa: E402

OPS = ("subm", "strided", "transposed", "unet")
OP_NAMES = {"subm": "SubM conv 32→32 k3", "strided": "strided conv 32→32 k2 s2",
            "transposed": "transposed conv 32→32 k2 s2", "unet": "Res16UNet34C train step"}
CHANNELS = 32


# ----------------------------------------------------------------------------------------------------------
# Scene
# ----------------------------------------------------------------------------------------------------------
def _rect(o, u, v):
    return tuple(torch.tensor(a, dtype=torch.float64) for a in (o, u, v))


def _box(x0, y0, w, d, h):
    """The five visible faces (no bottom) of an axis-aligned box standing on the floor."""
    return [_rect([x0, y0, h], [w, 0, 0], [0, d, 0]), _rect([x0, y0, 0], [w, 0, 0], [0, 0, h]),
            _rect([x0, y0 + d, 0], [w, 0, 0], [0, 0, h]), _rect([x0, y0, 0], [0, d, 0], [0, 0, h]),
            _rect([x0 + w, y0, 0], [0, d, 0], [0, 0, h])]


def room_points(seed: int = 0, density: float = 15000.0, width=3.1, depth=2.8, height=2.1) -> torch.Tensor:
    """(N, 3) float32 points on the surfaces of a furnished room, in metres."""
    faces = [_rect([0, 0, 0], [width, 0, 0], [0, depth, 0]),  # floor
             _rect([0, 0, 0], [width, 0, 0], [0, 0, height]), _rect([0, depth, 0], [width, 0, 0], [0, 0, height]),
             _rect([0, 0, 0], [0, depth, 0], [0, 0, height]), _rect([width, 0, 0], [0, depth, 0], [0, 0, height])]
    faces += _box(0.3, 0.3, 1.6, 0.8, 0.75) + _box(2.1, 0.2, 0.9, 0.45, 1.8) + _box(2.0, 1.9, 0.5, 0.5, 0.45) \
        + _box(0.4, 2.2, 1.4, 0.45, 0.5)
    gen = torch.Generator().manual_seed(seed)
    pts = []
    for o, u, v in faces:
        n = int(torch.linalg.cross(u, v).norm() * density)
        r = torch.rand(n, 2, generator=gen, dtype=torch.float64)
        pts.append(o + r[:, :1] * u + r[:, 1:] * v)
    p = torch.cat(pts)
    a = math.radians(17.0)
    rot = torch.tensor([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]], dtype=torch.float64)
    p = p @ rot.T + 0.001 * torch.randn(p.shape, generator=gen, dtype=torch.float64)
    return p.float()


def make_scene(voxel: float = 0.02, crop: int | None = None, seed: int = 0) -> torch.Tensor:
    """(M, 3) int64 voxel coordinates; ``crop`` keeps the ``crop`` voxels nearest to one room corner."""
    c = sp.sparse_quantize(room_points(seed), voxel).coords
    if crop is not None and crop < len(c):
        d = (c - c.min(0).values).float().norm(dim=1)
        c = c[torch.topk(d, crop, largest=False).indices]
    return c


# ----------------------------------------------------------------------------------------------------------
# One measurement = one call of `run_once`
# ----------------------------------------------------------------------------------------------------------
def build_modules(op: str, seed: int = 0):
    torch.manual_seed(seed)
    if op == "subm":
        return {"layer": sp.Conv3d(CHANNELS, CHANNELS, 3)}
    if op == "strided":
        return {"layer": sp.Conv3d(CHANNELS, CHANNELS, 2, 2)}
    if op == "transposed":
        return {"down": sp.Conv3d(CHANNELS, CHANNELS, 2, 2), "layer": sp.ConvTranspose3d(CHANNELS, CHANNELS, 2, 2)}
    net = Res16UNet34C(in_channels=3, out_channels=32, normalize_feature=True)
    return {"layer": net, "opt": torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.8, weight_decay=1e-4)}


def make_input(op: str, coords: torch.Tensor, backend: str, mods, seed: int = 0) -> sp.SparseTensor:
    """A fresh input tensor (new coordinate cache, so kernel maps are rebuilt): untimed setup."""
    gen = torch.Generator().manual_seed(seed)
    cin = 3 if op == "unet" else CHANNELS
    feats = torch.rand(len(coords), cin, generator=gen)
    x, _ = sp.batch_sparse([(coords, feats)], backend=backend)
    if op == "transposed":
        with torch.no_grad():
            x = mods["down"](x)  # the coarse tensor; its fine sites are in the cache
    return x.replace(x.feats.detach().requires_grad_(op != "unet"))


def run_once(op: str, x: sp.SparseTensor, mods) -> None:
    """The measured region: forward + backward (+ SGD step for the U-Net)."""
    layer = mods["layer"]
    y = layer(x)
    loss = (y.feats * y.feats).sum() / len(y) if op != "unet" else -(y.feats[:, 0]).mean()
    loss.backward()
    if op == "unet":
        mods["opt"].step()
        mods["opt"].zero_grad(set_to_none=True)


def time_ops(ops, coords_for, backends, reps: int, warm: int = 1):
    """{(op, backend): [seconds per rep]} with backends interleaved inside every repetition."""
    out = {(op, b): [] for op in ops for b in backends}
    mods = {(op, b): build_modules(op) for op in ops for b in backends}
    for op in ops:
        for r in range(warm + reps):
            for b in backends:
                x = make_input(op, coords_for[op], b, mods[op, b], seed=r)
                gc.collect()
                t0 = time.perf_counter()
                run_once(op, x, mods[op, b])
                dt = time.perf_counter() - t0
                if r >= warm:
                    out[op, b].append(dt)
                del x
    return out


# ----------------------------------------------------------------------------------------------------------
# Peak memory in a fresh subprocess
# ----------------------------------------------------------------------------------------------------------
def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def _memory_child(op: str, backend: str, scene: str) -> None:
    coords = torch.load(scene)[op]
    mods = build_modules(op)
    x = make_input(op, coords, backend, mods)
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass
    base = _status_kb("VmRSS")
    try:
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
        method = "VmHWM-VmRSS"
    except OSError:
        method = "ru_maxrss"
        base_max = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    run_once(op, x, mods)
    if method == "VmHWM-VmRSS":
        peak = _status_kb("VmHWM") - base
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base_max
    print(json.dumps({"peak_mb": peak / 1024, "method": method}))


def measure_memory(op: str, backend: str, scene: str, threads: int) -> dict:
    env = dict(os.environ, SSL3D_PROGRESS="0")
    cmd = [sys.executable, __file__, "--_memory", op, backend, scene, "--threads", str(threads),
           "--blas-threads", str(BLAS_THREADS)]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if r.returncode != 0:
        raise RuntimeError(f"memory measurement {op}/{backend} failed:\n{r.stderr[-2000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------------------------------------
# GEMM roofline
# ----------------------------------------------------------------------------------------------------------
def _best(fn, reps: int) -> float:
    fn()
    best = math.inf
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def roofline(coords: torch.Tensor, reps: int) -> dict:
    """Effective GFLOP/s of the cached-map SubM conv forward (both backends) and of the same GEMMs done densely."""
    torch.manual_seed(0)
    conv = sp.Conv3d(CHANNELS, CHANNELS, 3)
    feats = torch.rand(len(coords), CHANNELS)
    res = {}
    with torch.no_grad():
        xt, _ = sp.batch_sparse([(coords, feats)], backend="torch")
        conv(xt)  # builds and caches the kernel map
        kmap = xt._handle.kernel_maps[(1, 1, 3, 1)]
        sizes = [len(coords) if i is None else i.numel() for _, i, _ in kmap.pairs]  # pairs per offset
        pairs = sum(sizes)
        flop = 2.0 * pairs * CHANNELS * CHANNELS
        res["pairs"], res["sites"] = pairs, len(coords)
        res["torch_gflops"] = flop / _best(lambda: conv(xt), reps) / 1e9
        if sp.minkowski_available():
            xm, _ = sp.batch_sparse([(coords, feats)], backend="minkowski")
            conv(xm)
            res["me_gflops"] = flop / _best(lambda: conv(xm), reps) / 1e9
        a = [torch.rand(n, CHANNELS) for n in sizes]  # already gathered operands
        w = torch.rand(len(sizes), CHANNELS, CHANNELS)
        res["dense_gflops"] = flop / _best(lambda: [ak @ w[k] for k, ak in enumerate(a)], reps) / 1e9
        big = torch.rand(len(coords), CHANNELS)
        res["dense_one_gemm_gflops"] = 2.0 * len(coords) * CHANNELS**2 / _best(lambda: big @ w[0], reps) / 1e9
    return res


def unet_forward_rate(coords: torch.Tensor, backends, reps: int) -> dict:
    """Res16UNet34C eval-mode forward (no grad): voxels / second per backend (min time over reps)."""
    torch.manual_seed(0)
    net = Res16UNet34C(3, 32).eval()
    feats = torch.rand(len(coords), 3)
    out = {}
    with torch.no_grad():
        for b in backends:
            def fwd(b=b):
                x, _ = sp.batch_sparse([(coords, feats)], backend=b)
                net(x)
            out[b] = len(coords) / _best(fwd, reps)
    return out


# ----------------------------------------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------------------------------------
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer repetitions, U-Net on a 20 k-voxel crop (< 2 min)")
    ap.add_argument("--threads", type=int, default=1,
                    help="threads for torch and OpenMP (default 1: on cores shared with other jobs, "
                         "2-thread OpenMP regions stall for scheduler time slices and the timings become noise)")
    ap.add_argument("--blas-threads", type=int, default=1,
                    help="OpenBLAS threads, used only by MinkowskiEngine (default 1: ME calls BLAS inside its OpenMP "
                         "regions, and nested BLAS threads oversubscribe the cores — measured on 2 cores with "
                         "--threads 2: U-Net step 1.80 s with 2 BLAS threads, 1.33 s with 1)")
    ap.add_argument("--_memory", nargs=3, metavar=("OP", "BACKEND", "SCENE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args._memory:
        _memory_child(*args._memory)
        return

    t_start = time.perf_counter()
    if not sp.minkowski_available():
        raise SystemExit("MinkowskiEngine does not import: build it with `bash lib/env/build_minkowski.sh` "
                         "(or SSL3D_MINKOWSKI=1) — this benchmark compares the torch backend against it")
    backends = ("torch", "minkowski")
    reps_op, reps_net = (2, 1) if args.quick else (3, 3)
    scene = make_scene()
    net_scene = make_scene(crop=20_000) if args.quick else scene
    coords_for = {"subm": scene, "strided": scene, "transposed": scene, "unet": net_scene}
    print(f"scene: {len(scene):,} voxels at 2 cm (room {room_points().shape[0]:,} points); U-Net input: "
          f"{len(net_scene):,} voxels{' (corner crop)' if args.quick else ''}")
    print(f"threads: {torch.get_num_threads()} (torch, OpenMP), OpenBLAS {os.environ['OPENBLAS_NUM_THREADS']} (ME); "
          f"torch {torch.__version__}, MinkowskiEngine {sp._import_me().__version__}; mode: "
          f"{'quick' if args.quick else 'full'}")

    times = time_ops(OPS[:3], coords_for, backends, reps_op)
    times.update(time_ops(OPS[3:], coords_for, backends, reps_net))

    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "scene.pt")
        torch.save(coords_for, path)
        mem_reps = 1 if args.quick else 3
        mem = {}
        for op in OPS:
            for b in backends:
                runs = [measure_memory(op, b, path, args.threads) for _ in range(mem_reps)]
                mem[op, b] = {"peak_mb": statistics.median(r["peak_mb"] for r in runs), "method": runs[0]["method"]}

    print("\n1. time (forward + backward, fresh kernel maps; min over reps, median in brackets) and peak memory")
    print(f"   {'op':30s} {'torch ms':>17s} {'ME ms':>17s} {'torch/ME':>9s} {'torch MB':>9s} {'ME MB':>8s} "
          f"{'torch/ME':>9s}")
    for op in OPS:
        tt, tm = times[op, "torch"], times[op, "minkowski"]
        mt, mm = mem[op, "torch"]["peak_mb"], mem[op, "minkowski"]["peak_mb"]
        print(f"   {OP_NAMES[op]:30s} {min(tt) * 1e3:8.0f} ({statistics.median(tt) * 1e3:6.0f}) "
              f"{min(tm) * 1e3:8.0f} ({statistics.median(tm) * 1e3:6.0f}) {min(tt) / min(tm):9.2f} "
              f"{mt:9.1f} {mm:8.1f} {mt / max(mm, 1e-9):9.2f}")
    print(f"   peak memory: {mem['subm', 'torch']['method']} in one fresh subprocess per measurement, median of "
          f"{mem_reps} (RSS peaks move by ~10-20 % between runs: allocator and page reuse)")

    rf = roofline(scene, reps=3 if args.quick else 5)
    print(f"\n2. SubM conv 32→32 k3 forward, cached kernel maps: {rf['sites']:,} sites, {rf['pairs']:,} pairs "
          f"({rf['pairs'] / rf['sites']:.1f} per site)")
    print(f"   MinkowskiEngine {rf['me_gflops']:6.1f} GFLOP/s | torch backend {rf['torch_gflops']:6.1f} GFLOP/s | "
          f"dense matmul, same per-offset GEMMs {rf['dense_gflops']:6.1f} GFLOP/s "
          f"(one {rf['sites']:,}×32 @ 32×32 GEMM: {rf['dense_one_gemm_gflops']:.1f})")
    print(f"   fraction of the GEMM roofline: MinkowskiEngine {rf['me_gflops'] / rf['dense_gflops']:.2f}, "
          f"torch backend {rf['torch_gflops'] / rf['dense_gflops']:.2f}")

    fwd = unet_forward_rate(net_scene, backends, reps=reps_net)
    n = len(net_scene)
    print(f"\n3. Res16UNet34C on {n:,} voxels (3 → 32 channels), voxels / second")
    for b in backends:
        train = n / min(times["unet", b])
        print(f"   {b:10s} forward (eval, no grad) {fwd[b]:10,.0f}   forward + backward + SGD step {train:10,.0f}")
    print(f"\ntotal benchmark time {time.perf_counter() - t_start:.0f} s")


if __name__ == "__main__":
    main()
