"""Speed of ACT's pieces, and the wall time of the smoke pre-training of both stages.

1. Tokenizer: the mini-PointNet patch embedding as channel-last GEMMs (``ssl3d.models.transformer.MiniPointNet``)
   against the official layout (``Conv1d`` over (B·G, C, K), the same weights), forward + backward; outputs checked
   to agree first.
2. Chamfer-ℓ1 of the dVAE loss (B·G patches of K points): ``ssl3d.act.chamfer_l1`` (one matmul per patch batch)
   against the direct (B, N, M, 3) difference tensor, forward + backward.
3. ``--pretrain``: ``ssl3d.train.pretrain`` of stage 1 (``act_dvae``, ``ssl3d.act.SMOKE_DVAE``, MiniLM teacher cut
   to two layers) then stage 2 (``act``, ``ssl3d.models.transformer.SMOKE``) on embedded objects (1,024 points):
   wall time, iterations/s, first and last loss.

    .venv/bin/python benchmarks/act.py --quick                 # 1 + 2, < 1 min
    flock /tmp/ssl3d-train.lock .venv/bin/python benchmarks/act.py --pretrain    # + 3 (≈ 2 min)

Timings are the minimum over interleaved rounds (robust to other processes sharing the CPU). The pre-training
prints wall and CPU time: on a shared machine the CPU time (÷ threads) is closer to what an idle one takes.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from ssl3d.act import chamfer_l1
from ssl3d.models.transformer import MiniPointNet


def conv_reference(net: MiniPointNet, groups: torch.Tensor) -> torch.Tensor:
    """The official forward: Conv1d/BatchNorm1d over (B·G, C, K)."""
    bs, g, n, _ = groups.shape
    x = groups.reshape(bs * g, n, 3).transpose(2, 1)
    f = net.first_conv(x)
    f = torch.cat([f.max(2, keepdim=True).values.expand(-1, -1, n), f], 1)
    return net.second_conv(f).max(2).values.reshape(bs, g, -1)


def chamfer_reference(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    d = ((a[:, :, None] - b[:, None]) ** 2).sum(-1)  # (B, N, M)
    d1, d2 = d.min(2).values, d.min(1).values
    return (d1.clamp_min(1e-12).sqrt().mean() + d2.clamp_min(1e-12).sqrt().mean()) / 2


def timeit(fns: dict, rounds: int, budget: float) -> dict:
    times = {k: [] for k in fns}
    t0 = time.perf_counter()
    for _ in range(rounds):
        for k, f in fns.items():
            s = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - s)
        if time.perf_counter() - t0 > budget:
            break
    return {k: (min(v), statistics.median(v)) for k, v in times.items()}


def bench_kernels(quick: bool):
    rounds, budget = (5, 20) if quick else (20, 60)
    print("tokenizer (mini-PointNet, official widths 128/256/512 → 384), forward + backward")
    for b, g, k in [(16, 64, 32)] + ([] if quick else [(32, 64, 32), (32, 128, 32)]):
        net = MiniPointNet(384)
        groups = torch.randn(b, g, k, 3) * 0.1
        torch.testing.assert_close(net(groups), conv_reference(net, groups), rtol=1e-4, atol=1e-4)
        r = timeit({"ours": lambda net=net, x=groups: net(x).sum().backward(),
                    "conv1d": lambda net=net, x=groups: conv_reference(net, x).sum().backward()}, rounds, budget)
        print(f"  B={b:3d} G={g:3d} K={k}: ours {r['ours'][0] * 1e3:7.1f} ms, Conv1d {r['conv1d'][0] * 1e3:7.1f} ms "
              f"→ {r['conv1d'][0] / r['ours'][0]:.2f}× (medians {r['ours'][1] * 1e3:.1f} / {r['conv1d'][1] * 1e3:.1f})")
    print("Chamfer-ℓ1 over B·G patches of K points, forward + backward")
    for bg, k in [(16 * 64, 32)] + ([] if quick else [(64 * 64, 32)]):
        a = torch.randn(bg, k, 3, requires_grad=True)
        c = torch.randn(bg, k, 3)
        torch.testing.assert_close(chamfer_l1(a, c), chamfer_reference(a, c), rtol=1e-4, atol=1e-5)
        r = timeit({"ours": lambda a=a, c=c: chamfer_l1(a, c).backward(),
                    "direct": lambda a=a, c=c: chamfer_reference(a, c).backward()}, rounds, budget)
        print(f"  {bg} patches × {k}: ours {r['ours'][0] * 1e3:6.1f} ms, direct {r['direct'][0] * 1e3:6.1f} ms → "
              f"{r['direct'][0] / r['ours'][0]:.2f}×")


def bench_pretrain(epochs1: int, epochs2: int, n_per_class: int, batch_size: int):
    from ssl3d.act import SMOKE_DVAE, DiscreteVAE, ScaleAndTranslate
    from ssl3d.data.datasets import ObjectDataset
    from ssl3d.methods import build_method
    from ssl3d.methods.act import SMOKE_SCHEDULE
    from ssl3d.models import build_model
    from ssl3d.models.transformer import SMOKE
    from ssl3d.train import pretrain

    torch.manual_seed(0)
    data = ObjectDataset(n_per_class, 1024, "train", transform=ScaleAndTranslate())
    _ = [data.raw(i) for i in range(len(data))]  # generate the shapes outside the timings
    steps = epochs1 * (len(data) // batch_size)
    dvae = DiscreteVAE(**SMOKE_DVAE)
    sched = {**SMOKE_SCHEDULE, "temp_steps": steps, "kl_steps": steps, "kl_warmup": steps // 10}
    s, c = time.perf_counter(), time.process_time()
    h1 = pretrain(build_method("act_dvae", dvae, **sched), data, epochs=epochs1, batch_size=batch_size, lr=5e-4,
                  weight_decay=5e-4, warmup=max(1, steps // 10))
    t1, c1 = time.perf_counter() - s, time.process_time() - c
    print(f"stage 1 (act_dvae, SMOKE_DVAE, {len(data)} shapes × {epochs1} epochs, batch {batch_size}): wall {t1:.1f} s "
          f"(CPU {c1:.1f} s), {len(h1['loss']) / t1:.2f} it/s; Chamfer {h1['recon'][0]:.4f} → {h1['recon'][-1]:.4f}, "
          f"codes in use {h1['code_perplexity'][0]:.0f} → {h1['code_perplexity'][-1]:.0f}")
    student = build_model("point_transformer", **SMOKE)
    s, c = time.perf_counter(), time.process_time()
    h2 = pretrain(build_method("act", student, teacher=dvae), data, epochs=epochs2, batch_size=batch_size, lr=1e-3,
                  weight_decay=0.05)
    t2, c2 = time.perf_counter() - s, time.process_time() - c
    print(f"stage 2 (act, SMOKE student, {epochs2} epochs): wall {t2:.1f} s (CPU {c2:.1f} s), "
          f"{len(h2['loss']) / t2:.2f} it/s; cosine {h2['cosine'][0]:.3f} → {h2['cosine'][-1]:.3f}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--pretrain", action="store_true", help="also time the smoke pre-training of both stages")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--epochs1", type=int, default=12)
    ap.add_argument("--epochs2", type=int, default=12)
    ap.add_argument("--n-per-class", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=16)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    bench_kernels(args.quick)
    if args.pretrain:
        bench_pretrain(args.epochs1, args.epochs2, args.n_per_class, args.batch_size)


if __name__ == "__main__":
    main()
