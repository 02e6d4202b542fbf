"""Sparse convolution on the CPU: ssl3d's pure-PyTorch backend vs MinkowskiEngine, on one indoor-like scene.

Scene: a procedural room (floor, four walls, a table, a cabinet, a bed-like block, a stool — boxes without bottoms),
rotated 17° about the vertical so walls do not align with the grid, sampled at 15 000 points/m² with 1 mm noise and
voxelized at 2 cm with ``ssl3d.sparse.sparse_quantize`` → 156 k voxels.

Printed in one run, each ratio with its target beside it (issue 16):
  1. per op — SubM conv 32→32 k3, strided conv 32→32 k2 s2, transposed conv 32→32 k2 s2 — and a Res16UNet34C
     training step (forward, loss, backward, SGD step): time of each backend and the ratio torch / MinkowskiEngine,
     peak memory of each backend and the ratio. Target: U-Net step ≤ 0.8× ME's time at ≤ 1.2× its peak memory
     (the single ops are reported without a target).
     Times: forward + backward on a fresh input tensor (so kernel maps are built inside the timed region, as in
     training; building the input tensor itself is not timed); the minimum over repetitions in which the two
     backends alternate (robust to other processes on the shared cores), the median beside it. The CPU time of the
     process (``time.process_time``, all threads) is printed too: on cores shared with other jobs it moves far less
     than wall time, and with one thread it is the work each backend does.
     Peak memory: one fresh subprocess per (op, backend) measurement (median of 3 in full mode); after setup
     (scene, modules, input tensor) the process calls malloc_trim, reads its resident set size (VmRSS), resets the
     kernel's peak-RSS counter (writing 5 to /proc/self/clear_refs) and runs the op once; peak = VmHWM − VmRSS
     before. This counts every allocation (PyTorch's and MinkowskiEngine's C++ kernel maps alike); where
     clear_refs is not writable it falls back to the ``resource.getrusage`` ru_maxrss delta (printed).
  2. The SubM conv 32→32 k3 forward with cached kernel maps: effective GFLOP/s (2 · pairs · C_in · C_out / time)
     of each backend divided by the rate of the same per-offset GEMMs done by ``torch.mm`` on operands that are
     already gathered (pairs_k × 32 @ 32 × 32, outputs preallocated: the GEMMs alone, no gather, no scatter, no
     allocation) — the fraction of the per-offset GEMM rate. Target: torch backend ≥ 0.6.
  3. Res16UNet34C forward (eval, no grad) and training-step voxels / second, both backends.

The table is also written (atomically) to ``benchmarks/results/sparse_conv.md``, one section per (mode, threads),
naming the CPU model, the thread count and the load average; README's performance table is copied from there.

    .venv/bin/python benchmarks/sparse_conv.py                # full: everything on the 156 k-voxel scene, 3 reps
    .venv/bin/python benchmarks/sparse_conv.py --threads 2    # both cores
    .venv/bin/python benchmarks/sparse_conv.py --quick        # ops on the full scene (2 reps); the U-Net on a 20 k-
                                                              # voxel crop (the voxels nearest a room corner); < 3 min

Threads: ``--threads`` (default 1) for torch and OpenMP, ``--blas-threads`` (default 1) for the OpenBLAS that only
MinkowskiEngine's CPU build uses; both are set before torch is imported. (ssl3d's minkowski backend also stops ME's
coordinate manager from resetting OpenMP to all cores.) On a 2-core machine shared with other jobs a 2-thread
OpenMP region waits for a descheduled thread, so 2-thread wall times swing between runs; compare the ratios, which
are measured in the same run with the backends alternating.

What the torch backend does to be fast is explained in ``ssl3d/sparse/torch_ops.py``'s module docstring.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import math
import os
import platform
import re
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
os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = os.environ["SSL3D_THREADS"] = str(THREADS)
os.environ["OPENBLAS_NUM_THREADS"] = str(BLAS_THREADS)

import torch  # noqa: E402

from ssl3d import sparse as sp  # noqa: E402
from ssl3d.models.sparse_unet import Res16UNet34C  # noqa: E402

OPS = ("subm", "strided", "transposed", "unet")
OP_NAMES = {"subm": "SubM conv 32→32 k3", "strided": "strided conv 32→32 k2 s2",
            "transposed": "transposed conv 32→32 k2 s2", "unet": "Res16UNet34C train step"}
TIME_TARGET = {"unet": 0.8}  # torch / ME time, at most
MEMORY_TARGET = {"unet": 1.2}  # torch / ME peak memory, at most
GEMM_TARGET = 0.6  # fraction of the per-offset GEMM rate, at least
CHANNELS = 32
RESULTS = Path(__file__).resolve().parent / "results" / "sparse_conv.md"


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
    """{(op, backend): [(wall s, CPU s) per rep]}, the backends alternating inside every repetition."""
    out = {(op, b): [] for op in ops for b in backends}
    mods = {(op, b): build_modules(op) for op in ops for b in backends}
    for op in ops:
        for r in range(warm + reps):
            for b in (backends if r % 2 == 0 else backends[::-1]):  # alternate who goes first
                x = make_input(op, coords_for[op], b, mods[op, b], seed=r)
                gc.collect()
                t0, c0 = time.perf_counter(), time.process_time()
                run_once(op, x, mods[op, b])
                dt, dc = time.perf_counter() - t0, time.process_time() - c0
                if r >= warm:
                    out[op, b].append((dt, dc))
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
# Fraction of the per-offset GEMM rate
# ----------------------------------------------------------------------------------------------------------
def gemm_fraction(coords: torch.Tensor, reps: int) -> dict:
    """Effective GFLOP/s of the cached-map SubM conv forward (both backends) and of its per-offset GEMMs alone."""
    torch.manual_seed(0)
    conv = sp.Conv3d(CHANNELS, CHANNELS, 3)
    feats = torch.rand(len(coords), CHANNELS)
    with torch.no_grad():
        xt, _ = sp.batch_sparse([(coords, feats)], backend="torch")
        xm, _ = sp.batch_sparse([(coords, feats)], backend="minkowski")
        conv(xt), conv(xm)  # build and cache the kernel maps
        kmap = xt.sites.manager.kernel_maps[(1, 1, 3, 1)]
        sizes = [i.numel() for _, i, _ in kmap.pairs] + [len(coords)]  # pairs per offset, the centre last
        flop = 2.0 * sum(sizes) * CHANNELS * CHANNELS
        w = torch.rand(len(sizes), CHANNELS, CHANNELS)
        a = [torch.rand(n, CHANNELS) for n in sizes]  # operands already gathered …
        c = [torch.empty(n, CHANNELS) for n in sizes]  # … and outputs already allocated

        def gemms():
            for k, (ak, ck) in enumerate(zip(a, c)):
                torch.mm(ak, w[k], out=ck)

        fns = {"torch": lambda: conv(xt), "minkowski": lambda: conv(xm), "gemm": gemms}
        best = {n: math.inf for n in fns}
        for fn in fns.values():
            fn()  # warm-up
        for _ in range(reps):
            for n, fn in fns.items():  # interleaved: all three see the same machine load
                t0 = time.perf_counter()
                fn()
                best[n] = min(best[n], time.perf_counter() - t0)
    res = {f"{n}_gflops": flop / t / 1e9 for n, t in best.items()}
    res["pairs"], res["sites"] = sum(sizes), len(coords)
    return res


def unet_forward_rate(coords: torch.Tensor, backends, reps: int) -> dict:
    """Res16UNet34C eval-mode forward (no grad): voxels / second per backend (min time over reps)."""
    torch.manual_seed(0)
    net = Res16UNet34C(3, 32).eval()
    feats = torch.rand(len(coords), 3)
    best = dict.fromkeys(backends, math.inf)
    with torch.no_grad():
        for _ in range(reps):
            for b in backends:
                x, _ = sp.batch_sparse([(coords, feats)], backend=b)
                t0 = time.perf_counter()
                net(x)
                best[b] = min(best[b], time.perf_counter() - t0)
    return {b: len(coords) / t for b, t in best.items()}


# ----------------------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------------------
def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _verdict(value: float, target: float | None, at_most: bool) -> str:
    if target is None:
        return "—"
    ok = value <= target if at_most else value >= target
    return f"{'≤' if at_most else '≥'} {target:g} {'✓' if ok else '✗ MISSED'}"


def report(args, scene_n: int, net_n: int, times, mem, mem_reps: int, gf: dict, fwd: dict, load: str) -> str:
    """The markdown table of this run (printed and written to RESULTS)."""
    ms = lambda v: f"{v * 1e3:,.0f}"  # noqa: E731
    lines = [
        f"Machine: {cpu_model()}, {os.cpu_count()} logical CPUs; {args.threads} thread(s) for torch/OpenMP, "
        f"OpenBLAS {BLAS_THREADS} (ME); torch {torch.__version__}, MinkowskiEngine "
        f"{sp.backend.import_minkowski().__version__}; load average at start {load}; mode: "
        f"{'quick' if args.quick else 'full'} (ops on {scene_n:,} voxels, U-Net on {net_n:,} voxels).",
        "",
        "| forward + backward, fresh kernel maps | torch ms | ME ms | time torch/ME | target | CPU-time torch/ME "
        "| torch MB | ME MB | memory torch/ME | target |",
        "|---|---:|---:|---:|---|---:|---:|---:|---:|---|",
    ]
    for op in OPS:
        tt, tm = times[op, "torch"], times[op, "minkowski"]
        wall_t, wall_m = min(t for t, _ in tt), min(t for t, _ in tm)
        cpu_t, cpu_m = min(c for _, c in tt), min(c for _, c in tm)
        mt, mm = mem[op, "torch"]["peak_mb"], mem[op, "minkowski"]["peak_mb"]
        lines.append(
            f"| {OP_NAMES[op]} | {ms(wall_t)} ({ms(statistics.median(t for t, _ in tt))}) "
            f"| {ms(wall_m)} ({ms(statistics.median(t for t, _ in tm))}) | **{wall_t / wall_m:.2f}** "
            f"| {_verdict(wall_t / wall_m, TIME_TARGET.get(op), True)} | {cpu_t / cpu_m:.2f} | {mt:,.0f} | {mm:,.0f} "
            f"| **{mt / max(mm, 1e-9):.2f}** | {_verdict(mt / max(mm, 1e-9), MEMORY_TARGET.get(op), True)} |")
    ft, fm = gf["torch_gflops"] / gf["gemm_gflops"], gf["minkowski_gflops"] / gf["gemm_gflops"]
    lines += [
        "",
        f"Times: min over {len(times['subm', 'torch'])} (ops) / {len(times['unet', 'torch'])} (U-Net) repetitions, "
        "backends alternating, median in brackets; CPU time of the process. Peak memory: "
        f"{mem['subm', 'torch']['method']} in a fresh subprocess, median of {mem_reps}.",
        "",
        "| SubM conv 32→32 k3 forward, cached kernel maps | GFLOP/s | fraction of the per-offset GEMM rate "
        "| target |",
        "|---|---:|---:|---|",
        f"| per-offset GEMMs alone (torch.mm, operands gathered) | {gf['gemm_gflops']:.1f} | 1 | |",
        f"| torch backend | {gf['torch_gflops']:.1f} | **{ft:.2f}** | {_verdict(ft, GEMM_TARGET, False)} |",
        f"| MinkowskiEngine | {gf['minkowski_gflops']:.1f} | {fm:.2f} | |",
        "",
        f"{gf['sites']:,} sites, {gf['pairs']:,} pairs ({gf['pairs'] / gf['sites']:.1f} per site). Res16UNet34C on "
        f"{net_n:,} voxels, voxels/s — forward (eval, no grad): torch {fwd['torch']:,.0f}, ME "
        f"{fwd['minkowski']:,.0f}; training step: torch {net_n / min(t for t, _ in times['unet', 'torch']):,.0f}, "
        f"ME {net_n / min(t for t, _ in times['unet', 'minkowski']):,.0f}.",
    ]
    return "\n".join(lines)


def write_results(section: str, body: str) -> None:
    """Replace this run's section of RESULTS (other sections stay), writing a temporary file and renaming it."""
    head = ("# Sparse convolution: torch backend vs MinkowskiEngine\n\n"
            "Written by `benchmarks/sparse_conv.py` (one section per mode and thread count, replaced by the latest "
            "run of that kind); README's performance table is copied from here.\n")
    sections = {}
    if RESULTS.exists():  # <!-- run: KEY -->…<!-- end -->, whatever the whitespace around the markers
        for m in re.finditer(r"<!-- run: (.*?) -->(.*?)<!-- end -->", RESULTS.read_text(), re.S):
            if "<!--" not in m.group(1):
                sections[m.group(1).strip()] = m.group(2)
    sections[section] = f"\n## {section}\n\n{body}\n\n"
    out = head + "".join(f"\n<!-- run: {k} -->{v}<!-- end -->\n" for k, v in sorted(sections.items()))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=RESULTS.parent, prefix=".sparse_conv.", delete=False) as f:
        f.write(out)
    os.replace(f.name, RESULTS)


# ----------------------------------------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------------------------------------
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer repetitions, U-Net on a 20 k-voxel crop (< 3 min)")
    ap.add_argument("--threads", type=int, default=1, help="threads for torch and OpenMP (default 1)")
    ap.add_argument("--blas-threads", type=int, default=1,
                    help="OpenBLAS threads, used only by MinkowskiEngine (default 1: ME calls BLAS inside its OpenMP "
                         "regions, and nested BLAS threads oversubscribe the cores — measured on 2 cores with "
                         "--threads 2: U-Net step 1.80 s with 2 BLAS threads, 1.33 s with 1)")
    ap.add_argument("--no-write", action="store_true", help=f"do not update {RESULTS.relative_to(Path.cwd())}"
                    if RESULTS.is_relative_to(Path.cwd()) else "do not update the results file")
    ap.add_argument("--_memory", nargs=3, metavar=("OP", "BACKEND", "SCENE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args._memory:
        _memory_child(*args._memory)
        return

    t_start = time.perf_counter()
    load = " ".join(f"{v:.1f}" for v in os.getloadavg())
    if not sp.minkowski_available():
        raise SystemExit("MinkowskiEngine does not import: build it with `bash lib/env/build_minkowski.sh` "
                         "(or SSL3D_MINKOWSKI=1) — this benchmark compares the torch backend against it")
    backends = ("torch", "minkowski")
    reps_op, reps_net = (2, 1) if args.quick else (3, 3)
    scene = make_scene()
    net_scene = make_scene(crop=20_000) if args.quick else scene
    coords_for = {"subm": scene, "strided": scene, "transposed": scene, "unet": net_scene}
    print(f"scene: {len(scene):,} voxels at 2 cm; U-Net input: {len(net_scene):,} voxels"
          f"{' (corner crop)' if args.quick else ''}; threads {args.threads}; load average {load}", flush=True)

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
    gf = gemm_fraction(scene, reps=3 if args.quick else 5)
    fwd = unet_forward_rate(net_scene, backends, reps=reps_net)

    table = report(args, len(scene), len(net_scene), times, mem, mem_reps, gf, fwd, load)
    print("\n" + table)
    if not args.no_write:
        write_results(f"{'quick' if args.quick else 'full'}, {args.threads} thread{'s' * (args.threads > 1)}",
                      table)
        print(f"\nwritten to {RESULTS}")
    print(f"total benchmark time {time.perf_counter() - t_start:.0f} s")


if __name__ == "__main__":
    main()
