"""PointContrast's losses (ssl3d.contrastive): time and peak memory against references, and pair-mining throughput.

Printed in one run, each number beside its target (only the PointInfoNCE time has one: ≤ 50 ms on 2 cores; the
others print "—"):

  1. Agreement (float64, small inputs): ``point_info_nce`` and ``hardest_contrastive`` against naive per-pair Python
     loops, and against the released code transcribed (values and gradients).
  2. Loss time, forward + backward, 32-d features of a 4-scene batch (2 × 20,000 points, 45,000 matches):
       PointInfoNCE at 4,096 pairs (τ 0.4) and hardest-contrastive at 4,096 positives × 1,024 candidates per view
       (the released per-GPU setting: 1,024 / 256 per scene × 4 scenes), each including its sampling.
     References, same inputs, same run: "released" = the released trainers' code transcribed into torch/numpy
     (``PointNCELossTrainer._train_iter`` and ``contrastive_hardest_negative_loss`` with FCGF's broadcast ``pdist``,
     which builds an (n, m, C) difference tensor); "naive" = the per-pair Python loop of the tests, which is far too
     slow at 4,096 pairs — it is timed forward-only on 128 pairs (InfoNCE) / 64 × 64 (hardest) and the printed
     4,096-pair figure is that time × the pair-count scaling (n² / n·m), marked "extrapolated".
     Times: minimum over interleaved rounds (robust to other processes on shared cores), median beside it, and
     [×N] = the time in units of a bare (4096 × 32) @ (32 × 4096) matmul timed in the same rounds (a yardstick that
     moves with the machine's load: on busy shared cores every number rises, the multiples much less).
  3. Peak memory of one forward + backward, each in a fresh subprocess: after setup it calls malloc_trim, reads
     VmRSS, resets the kernel's peak-RSS counter (5 → /proc/self/clear_refs), runs once, and reports VmHWM − VmRSS
     (``MALLOC_MMAP_THRESHOLD_`` = 64 KiB so freed large blocks leave the resident set).
  4. Pair mining on the embedded frames (``ssl3d.data.synthetic.make_room`` + ``ssl3d.data.rgbd.scan_room``,
     160 × 120 frames): ``find_view_pairs`` (candidate frame pairs evaluated / s, overlap ≥ 0.3 within 4 frames),
     ``make_view_pair`` at 5 cm (correspondences found / s, view pairs / s), and the loss-side mining
     (one match per unique point + 4,096 subsample, ``one_match_per_point``) on a batch of 4 mined view pairs.
     Rendering is timed separately and not counted.

    .venv/bin/python benchmarks/contrastive.py                 # ≤ 25 rounds / 120 s, 16 frames
    .venv/bin/python benchmarks/contrastive.py --quick         # ≤ 8 rounds / 30 s, 10 frames (< 2 min)
    .venv/bin/python benchmarks/contrastive.py --threads 2     # torch intra-op threads (default: torch's choice)
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ssl3d import contrastive as C

N_POINTS, N_MATCHED, DIM, BATCH = 20_000, 15_000, 32, 4
NUM_PAIRS, NUM_POS, NUM_HN = 4096, 1024, 256  # PointInfoNCE pairs; hardest: per scene × BATCH
TARGET_NCE_MS = 50.0


# ----------------------------------------------------------------------------------------------------------
# Inputs
# ----------------------------------------------------------------------------------------------------------
def make_inputs(seed: int = 0, dtype=torch.float32):
    """Unit-length features of two views of a 4-scene batch and radius-search-like matches sorted by (i, j):
    15,000 matched view-0 points with 1–5 matches each (45,000 on average)."""
    g = torch.Generator().manual_seed(seed)
    f0 = F.normalize(torch.randn(N_POINTS, DIM, generator=g, dtype=dtype), dim=1)
    f1 = F.normalize(torch.randn(N_POINTS, DIM, generator=g, dtype=dtype), dim=1)
    i = torch.randperm(N_POINTS, generator=g)[:N_MATCHED].sort().values
    reps = torch.randint(1, 6, (N_MATCHED,), generator=g)
    i = torch.repeat_interleave(i, reps)
    j = torch.randint(0, N_POINTS, (len(i),), generator=g)
    m = torch.stack([i, j], 1)
    m = m[torch.argsort(m[:, 0] * N_POINTS + m[:, 1])]
    return f0, f1, m


# ----------------------------------------------------------------------------------------------------------
# References
# ----------------------------------------------------------------------------------------------------------
def released_point_info_nce(F0, F1, pos_pairs, npos=NUM_PAIRS, T=0.4):
    """PointNCELossTrainer._train_iter (facebookresearch/PointContrast ddp_trainer.py), transcribed for the CPU."""
    q_unique, count = pos_pairs[:, 0].unique(return_counts=True)
    uniform = torch.distributions.Uniform(0, 1).sample([len(count)])
    off = torch.floor(uniform * count).long()
    cums = torch.cat([torch.tensor([0]), torch.cumsum(count, dim=0)[0:-1]], dim=0)
    k_sel = pos_pairs[:, 1][off + cums]
    q = F0[q_unique.long()]
    k = F1[k_sel.long()]
    if npos < q.shape[0]:
        sampled_inds = np.random.choice(q.shape[0], npos, replace=False)
        q = q[sampled_inds]
        k = k[sampled_inds]
    npos = q.shape[0]
    logits = torch.mm(q, k.transpose(1, 0))
    labels = torch.arange(npos).long()
    out = torch.div(logits, T).squeeze().contiguous()
    return torch.nn.CrossEntropyLoss()(out, labels)


def _hash(arr, M):
    if isinstance(arr, np.ndarray):
        N, D = arr.shape
    else:
        N, D = len(arr[0]), len(arr)
    hash_vec = np.zeros(N, dtype=np.int64)
    for d in range(D):
        hash_vec += (arr[:, d] if isinstance(arr, np.ndarray) else arr[d]) * M**d
    return hash_vec


def _pdist(A, B):
    D2 = torch.sum((A.unsqueeze(1) - B.unsqueeze(0)).pow(2), 2)
    return torch.sqrt(D2 + 1e-7)


def released_hardest(F0, F1, positive_pairs, num_pos=NUM_POS * BATCH, num_hn_samples=NUM_HN * BATCH,
                     pos_thresh=0.1, neg_thresh=1.4):
    """contrastive_hardest_negative_loss (PointContrast ddp_trainer.py = FCGF lib/trainer.py), pos + neg."""
    N0, N1 = len(F0), len(F1)
    N_pos_pairs = len(positive_pairs)
    hash_seed = max(N0, N1)
    sel0 = np.random.choice(N0, min(N0, num_hn_samples), replace=False)
    sel1 = np.random.choice(N1, min(N1, num_hn_samples), replace=False)
    if N_pos_pairs > num_pos:
        pos_sel = np.random.choice(N_pos_pairs, num_pos, replace=False)
        sample_pos_pairs = positive_pairs[pos_sel]
    else:
        sample_pos_pairs = positive_pairs
    subF0, subF1 = F0[sel0], F1[sel1]
    pos_ind0 = sample_pos_pairs[:, 0].long()
    pos_ind1 = sample_pos_pairs[:, 1].long()
    posF0, posF1 = F0[pos_ind0], F1[pos_ind1]
    D01 = _pdist(posF0, subF1)
    D10 = _pdist(posF1, subF0)
    D01min, D01ind = D01.min(1)
    D10min, D10ind = D10.min(1)
    positive_pairs = np.array(positive_pairs.numpy(), dtype=np.int64)  # .numpy(): NumPy 2 warns on a tensor
    pos_keys = _hash(positive_pairs, hash_seed)
    D01ind = sel1[D01ind.cpu().numpy()]
    D10ind = sel0[D10ind.cpu().numpy()]
    neg_keys0 = _hash([pos_ind0.numpy(), D01ind], hash_seed)
    neg_keys1 = _hash([D10ind, pos_ind1.numpy()], hash_seed)
    mask0 = torch.from_numpy(np.logical_not(np.isin(neg_keys0, pos_keys, assume_unique=False)))
    mask1 = torch.from_numpy(np.logical_not(np.isin(neg_keys1, pos_keys, assume_unique=False)))
    pos_loss = F.relu((posF0 - posF1).pow(2).sum(1) - pos_thresh)
    neg_loss0 = F.relu(neg_thresh - D01min[mask0]).pow(2)
    neg_loss1 = F.relu(neg_thresh - D10min[mask1]).pow(2)
    return pos_loss.mean() + (neg_loss0.mean() + neg_loss1.mean()) / 2


def naive_info_nce(q, k, tau=0.4):
    """The per-pair loop of tests/test_contrastive.py (features already unit length)."""
    total = 0.0
    for i in range(len(q)):
        den = sum(torch.exp(torch.dot(q[i], k[j]) / tau) for j in range(len(k)))
        total = total - torch.log(torch.exp(torch.dot(q[i], k[i]) / tau) / den)
    return total / len(q)


def naive_hardest(f0, f1, pos, cand0, cand1, true, mp=0.1, mn=1.4):
    def dist(a, b):
        return torch.sqrt(((a - b) ** 2).sum() + 1e-7)

    pos_t, n0, n1 = [], [], []
    for i, j in pos:
        pos_t.append(torch.relu(((f0[i] - f1[j]) ** 2).sum() - mp))
        d, c = min((dist(f0[i], f1[c]), c) for c in cand1)
        if (i, c) not in true:
            n0.append(torch.relu(mn - d) ** 2)
        d, c = min((dist(f1[j], f0[c]), c) for c in cand0)
        if (c, j) not in true:
            n1.append(torch.relu(mn - d) ** 2)
    return sum(pos_t) / len(pos_t) + (sum(n0) / max(len(n0), 1) + sum(n1) / max(len(n1), 1)) / 2


# ----------------------------------------------------------------------------------------------------------
# 1. Agreement
# ----------------------------------------------------------------------------------------------------------
def check_agreement() -> None:
    g = torch.Generator().manual_seed(1)
    f0 = F.normalize(torch.randn(40, 8, generator=g, dtype=torch.float64), dim=1)
    f1 = F.normalize(torch.randn(36, 8, generator=g, dtype=torch.float64), dim=1)
    m = torch.stack([torch.arange(30), torch.randperm(36, generator=g)[:30]], 1)  # one match per point: no sampling
    ours = C.point_info_nce(f0, f1, m, num_pos=100).item()
    naive = naive_info_nce(f0[m[:, 0]], f1[m[:, 1]]).item()
    released = released_point_info_nce(f0, f1, m, npos=100).item()
    ours_h = C.hardest_contrastive(f0, f1, m, num_pos=100, num_hn=100).item()
    naive_h = naive_hardest(f0, f1, m.tolist(), range(40), range(36), {tuple(r) for r in m.tolist()}).item()
    released_h = released_hardest(f0, f1, m, num_pos=100, num_hn_samples=100).item()
    # gradients against the released transcription; the released network L2-normalises its output, the loss does not
    a, b = f0.clone().requires_grad_(True), f1.clone().requires_grad_(True)
    ga = torch.autograd.grad(C.hardest_contrastive(a, b, m, num_pos=100, num_hn=100), (a, b))
    gb = torch.autograd.grad(released_hardest(F.normalize(a, dim=1), F.normalize(b, dim=1), m, num_pos=100,
                                              num_hn_samples=100), (a, b))
    dg = max(float((x - y).abs().max()) for x, y in zip(ga, gb))
    print(f"agreement (float64, 30 pairs, 8-d): PointInfoNCE |ours − naive| = {abs(ours - naive):.1e}, "
          f"|ours − released| = {abs(ours - released):.1e}; hardest |ours − naive| = {abs(ours_h - naive_h):.1e}, "
          f"|ours − released| = {abs(ours_h - released_h):.1e}, max |Δgrad| = {dg:.1e}")
    assert max(abs(ours - naive), abs(ours - released), abs(ours_h - naive_h), abs(ours_h - released_h), dg) < 1e-6


# ----------------------------------------------------------------------------------------------------------
# 2. Time
# ----------------------------------------------------------------------------------------------------------
def loss_fns():
    return {
        "nce_ours": lambda a, b, m: C.point_info_nce(a, b, m, num_pos=NUM_PAIRS),
        "nce_released": lambda a, b, m: released_point_info_nce(a, b, m),
        "hard_ours": lambda a, b, m: C.hardest_contrastive(a, b, m, num_pos=NUM_POS, num_hn=NUM_HN, batch_size=BATCH),
        "hard_released": lambda a, b, m: released_hardest(a, b, m),
    }


def time_losses(rounds: int, budget_s: float, slow_rounds: int) -> tuple[dict, int]:
    """Interleaved rounds of every loss (after a warm-up round) plus a bare (4096 × 32) @ (32 × 4096) matmul — the
    yardstick that makes times comparable across machine loads. The released hardest-contrastive (seconds per call)
    stops after ``slow_rounds`` timed rounds."""
    f0, f1, m = make_inputs()
    fns = loss_fns()
    g = torch.Generator().manual_seed(5)
    a_mm, b_mm = torch.randn(NUM_PAIRS, DIM, generator=g), torch.randn(DIM, NUM_PAIRS, generator=g)
    times = {name: [] for name in [*fns, "matmul"]}
    start, done = time.perf_counter(), 0
    for r in range(rounds + 1):
        for name, fn in fns.items():
            if name == "hard_released" and r > slow_rounds:
                continue
            a, b = f0.detach().requires_grad_(True), f1.detach().requires_grad_(True)
            t0 = time.perf_counter()
            fn(a, b, m).backward()
            if r > 0:
                times[name].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        a_mm @ b_mm
        if r > 0:
            times["matmul"].append(time.perf_counter() - t0)
        done = r
        if r >= 3 and time.perf_counter() - start > budget_s:
            break
    return times, done


def time_naive() -> dict:
    g = torch.Generator().manual_seed(2)
    q = F.normalize(torch.randn(128, DIM, generator=g), dim=1)
    k = F.normalize(torch.randn(128, DIM, generator=g), dim=1)
    t0 = time.perf_counter()
    naive_info_nce(q, k)
    t_nce = time.perf_counter() - t0
    f0 = F.normalize(torch.randn(64, DIM, generator=g), dim=1)
    f1 = F.normalize(torch.randn(64, DIM, generator=g), dim=1)
    pos = [(i, i) for i in range(64)]
    t0 = time.perf_counter()
    naive_hardest(f0, f1, pos, range(64), range(64), set(pos))
    t_hard = time.perf_counter() - t0
    return {"nce": t_nce * (NUM_PAIRS / 128) ** 2,
            "hard": t_hard * (NUM_POS * BATCH * NUM_HN * BATCH) / (64 * 64), "nce_raw": t_nce, "hard_raw": t_hard}


# ----------------------------------------------------------------------------------------------------------
# 3. Peak memory (fresh subprocess per measurement)
# ----------------------------------------------------------------------------------------------------------
def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def _memory_child(name: str) -> None:
    f0, f1, m = make_inputs()
    a, b = f0.requires_grad_(True), f1.requires_grad_(True)
    fn = loss_fns()[name]
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass
    base = _status_kb("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    fn(a, b, m).backward()
    print(json.dumps({"peak_mb": (_status_kb("VmHWM") - base) / 1024}))


def measure_memory(name: str, threads: int | None) -> float | None:
    env = dict(os.environ, SSL3D_PROGRESS="0", MALLOC_MMAP_THRESHOLD_="65536")
    cmd = [sys.executable, __file__, "--_memory", name] + (["--threads", str(threads)] if threads else [])
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if r.returncode != 0:
        print(f"  (memory measurement of {name} failed: {r.stderr.strip().splitlines()[-1:]})")
        return None
    return json.loads(r.stdout.strip().splitlines()[-1])["peak_mb"]


# ----------------------------------------------------------------------------------------------------------
# 4. Pair mining on the embedded frames
# ----------------------------------------------------------------------------------------------------------
def mining(n_frames: int) -> dict:
    from ssl3d.data import rgbd as RG
    from ssl3d.data import synthetic as S

    t0 = time.perf_counter()
    frames = RG.scan_room(S.make_room(3), n_frames, 160, 120, seed=3)
    t_render = time.perf_counter() - t0
    max_gap = 4
    candidates = sum(min(max_gap, n_frames - 1 - i) for i in range(n_frames))
    t0 = time.perf_counter()
    pairs = RG.find_view_pairs(frames, min_overlap=0.3, voxel_size=0.1, max_gap=max_gap)
    t_find = time.perf_counter() - t0
    if not pairs:
        raise RuntimeError("no overlapping frame pair: render more frames")
    t0 = time.perf_counter()
    views = [RG.make_view_pair(frames[i], frames[j], 0.05) for i, j, _ in pairs]
    t_make = time.perf_counter() - t0
    n_corr = sum(len(v["correspondences"]) for v in views)
    # loss-side mining on a batch of 4 mined pairs, concatenated as collate_pairs does
    batch = [views[t % len(views)] for t in range(BATCH)]
    off0 = np.cumsum([0] + [len(v["points0"]) for v in batch])
    off1 = np.cumsum([0] + [len(v["points1"]) for v in batch])
    m = torch.cat([torch.from_numpy(v["correspondences"]) + torch.tensor([off0[t], off1[t]])
                   for t, v in enumerate(batch)])
    g = torch.Generator().manual_seed(0)
    reps, t0 = 20, time.perf_counter()
    for _ in range(reps):
        u = C.one_match_per_point(m, g)
        u = u[torch.randperm(len(u), generator=g)[:NUM_PAIRS]]
    t_loss = (time.perf_counter() - t0) / reps
    return {"frames": n_frames, "render_s": t_render, "candidates": candidates, "find_s": t_find,
            "view_pairs": len(pairs), "make_s": t_make, "corr": n_corr, "batch_matches": len(m),
            "batch_sampled": len(u), "loss_mining_s": t_loss}


# ----------------------------------------------------------------------------------------------------------
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="≤ 8 rounds / 30 s, 10 frames (default ≤ 25 / 120 s, 16)")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    ap.add_argument("--_memory", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args._memory:
        _memory_child(args._memory)
        return
    rounds, budget, n_frames, slow = (8, 30.0, 10, 2) if args.quick else (25, 120.0, 16, 5)
    print(f"torch {torch.__version__}, CPU, {torch.get_num_threads()} threads, float32; load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    check_agreement()

    times, done = time_losses(rounds, budget, slow)
    best = {k: min(v) * 1e3 for k, v in times.items()}
    med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    naive = time_naive()
    mem = {k: measure_memory(k, args.threads) for k in loss_fns()}

    def mb(k):
        return "   n/a" if mem[k] is None else f"{mem[k]:6.0f}"

    print(f"\nloss forward + backward, 32-d, batch of {BATCH} scenes ({N_POINTS:,} points per view, "
          f"{N_MATCHED:,} matched); min (median) over {done} interleaved rounds; peak MiB = extra resident memory")
    ok = best["nce_ours"] <= TARGET_NCE_MS
    mm = best["matmul"]
    print(f"  yardstick: a bare (4096 × 32) @ (32 × 4096) matmul took {mm:.1f} ms ({med['matmul']:.1f}) in this run; "
          "[×N] = time in such matmuls")

    def row(label: str, key: str, tail: str) -> None:
        print(f"    {label:9s} {best[key]:8.1f} ms ({med[key]:6.1f}) [×{best[key] / mm:4.1f}]  peak {mb(key)} MiB"
              f"   {tail}")

    print(f"  PointInfoNCE, {NUM_PAIRS:,} pairs (τ 0.4, incl. sampling)")
    row("ours", "nce_ours", f"target ≤ {TARGET_NCE_MS:.0f} ms: {'PASS' if ok else 'MISS'}")
    row("released", "nce_released", f"ours / released {best['nce_ours'] / best['nce_released']:.2f}×   target —")
    print(f"    naive     {naive['nce'] * 1e3:8.0f} ms extrapolated (forward only, {naive['nce_raw'] * 1e3:.0f} ms "
          f"measured at 128 pairs × (4096/128)²)   target —")
    print(f"  hardest-contrastive, {NUM_POS * BATCH:,} positives × {NUM_HN * BATCH:,} candidates per view")
    row("ours", "hard_ours", "target —")
    row("released", "hard_released", f"ours / released {best['hard_ours'] / best['hard_released']:.2f}× "
        f"({len(times['hard_released'])} rounds)   target —")
    print(f"    naive     {naive['hard'] * 1e3:8.0f} ms extrapolated (forward only, {naive['hard_raw'] * 1e3:.0f} ms "
          f"measured at 64 × 64 × (4096·1024)/(64·64))   target —")

    mi = mining(n_frames)
    print(f"\npair mining on the embedded frames (one room, {mi['frames']} frames of 160 × 120; rendering "
          f"{mi['render_s']:.1f} s, not counted)")
    print(f"  find_view_pairs: {mi['candidates']} candidate frame pairs in {mi['find_s'] * 1e3:.0f} ms = "
          f"{mi['candidates'] / mi['find_s']:,.0f} pairs/s ({mi['view_pairs']} with overlap ≥ 0.3)   target —")
    print(f"  make_view_pair (5 cm): {mi['corr']:,} correspondences in {mi['view_pairs']} view pairs, "
          f"{mi['make_s'] * 1e3:.0f} ms = {mi['corr'] / mi['make_s']:,.0f} correspondences/s, "
          f"{mi['view_pairs'] / mi['make_s']:.1f} view pairs/s   target —")
    print(f"  loss-side mining (one match per unique point + subsample) on a batch of {BATCH} mined pairs: "
          f"{mi['batch_matches']:,} matches → {mi['batch_sampled']:,} pairs in {mi['loss_mining_s'] * 1e3:.2f} ms = "
          f"{mi['batch_matches'] / mi['loss_mining_s']:,.0f} matches/s   target —")


if __name__ == "__main__":
    main()
