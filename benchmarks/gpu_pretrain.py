"""Full-profile pre-training on a GPU: time, peak memory and loss per iteration of each method's released-recipe
config (``configs/pretrain/<method>.yaml``), built exactly as ``python -m ssl3d.pretrain`` builds it
(:func:`ssl3d.pretrain.build`), on the embedded data (the real datasets cannot travel to a lent GPU machine).

    python benchmarks/gpu_pretrain.py [--iters 30] [--methods gmm pointcontrast ...] [--set method.key=value ...]
        [--out FILE]

Per method: the backbone's parameter count, the global batch, seconds per optimiser step (median over ``--iters``
steps after 3 warm-up steps; CUDA synchronised), the share of it spent waiting for data, peak GPU memory, the
loss of the first and last step, and the config's schedule turned into hours (epochs × steps per epoch of the
*real* dataset, where the paper gives its size; see ``SCHEDULE``). On a CPU-only machine it runs on the CPU (slowly).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "lib"))

from ssl3d.pretrain import build, load_config  # noqa: E402
from ssl3d.train import make_optimizer, make_scheduler  # noqa: E402

# optimiser steps of the papers' schedules (what the hours column multiplies)
SCHEDULE = {
    "pointcontrast": (60_000, "60 k iterations (PointContrast paper)"),
    "gmm": (250 * (14_007 // 32), "250 epochs x ShapeNetPart's 14,007 training shapes / 32"),
    "act": (300 * (41_952 // 128), "300 epochs x ShapeNet-55's 41,952 training shapes / 128"),
    "image_to_point": (100 * (64 * 32 // 8), "100 epochs x 64 rooms x 32 frames / 8 (the config's own data)"),
}


def _random_act_teacher(cfg: dict, path: Path) -> Path:
    """ACT's full-profile teacher (a ViT-B/16 with prompts, as in configs/full/06_act.yaml), randomly initialised:
    its forward costs what the trained one's does, and a trained one cannot be made inside a timing run."""
    from ssl3d.act import DiscreteVAE, save_dvae

    a = cfg["backbone"]["args"]
    dvae = DiscreteVAE(num_group=a["num_group"], group_size=a["group_size"], teacher="vit_base_patch16_384",
                       load_teacher_weights=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    return save_dvae(dvae, path)


def bench(method_name: str, overrides: list[str], iters: int, device: torch.device, workers: int) -> dict:
    cfg = load_config(ROOT / "configs" / "pretrain" / f"{method_name}.yaml", overrides)
    tr = cfg["train"]
    teacher = cfg.get("method", {}).get("args", {}).get("teacher")
    if method_name == "act" and teacher and not (ROOT / teacher).is_file():
        cfg["method"]["args"]["teacher"] = _random_act_teacher(cfg, ROOT / "runs" / "bench_act_teacher.pt")
    torch.manual_seed(tr.get("seed", 0))
    method, dataset = build(method_name, cfg)
    method.to(device)
    n_params = sum(p.numel() for p in method.backbone.parameters())
    bs = tr["batch_size"]
    need = bs * (iters + 3)
    if len(dataset) < need:
        print(f"  {method_name}: the embedded dataset has {len(dataset)} items; cycling it for {need}", flush=True)
    idx = [i % len(dataset) for i in range(need)]
    loader = DataLoader(torch.utils.data.Subset(dataset, idx), batch_size=bs, shuffle=False,
                        collate_fn=method.collate, num_workers=workers, drop_last=True)
    opt = make_optimizer(method.parameters(), tr["optimizer"], lr=tr["lr"], weight_decay=tr.get("weight_decay", 0.0),
                         momentum=tr.get("momentum", 0.9))
    sched = make_scheduler(opt, tr.get("scheduler"), 10 ** 6, gamma=tr.get("gamma", 0.99),
                           warmup=tr.get("warmup", 0), lr_update_freq=tr.get("lr_update_freq", 1))
    method.train()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    steps, waits, losses = [], [], []
    t_prev = time.perf_counter()
    for k, batch in enumerate(loader):
        t_data = time.perf_counter()
        out = method(batch)
        loss = out["loss"] if isinstance(out, dict) else out
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step() if sched is not None else None
        losses.append(loss.item())  # synchronises
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t_end = time.perf_counter()
        if k >= 3:
            steps.append(t_end - t_prev)
            waits.append(t_data - t_prev)
        t_prev = t_end
    s_step = statistics.median(steps)
    total, what = SCHEDULE[method_name]
    return {"method": method_name, "backbone": cfg["backbone"]["name"], "params_M": n_params / 1e6, "batch": bs,
            "s_per_step": s_step, "data_share": statistics.median(waits) / s_step,
            "peak_GiB": torch.cuda.max_memory_allocated(device) / 2 ** 30 if device.type == "cuda" else float("nan"),
            "loss_first": losses[0], "loss_last": losses[-1], "steps": len(losses),
            "schedule_h": total * s_step / 3600, "schedule": what}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--methods", nargs="+", default=list(SCHEDULE))
    ap.add_argument("--iters", type=int, default=30)
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--set", action="append", default=[], metavar="METHOD:SECTION.KEY=VALUE",
                    help="override one method's config, e.g. act:method.args.teacher=path.pt")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    lines = [f"# benchmarks/gpu_pretrain.py on {name}, torch {torch.__version__}, {args.iters} timed steps per method",
             "| method | backbone | params (M) | batch | s/step | data wait | peak GiB | loss first → last | "
             "paper schedule | hours at this speed |", "|---|---|---|---|---|---|---|---|---|---|"]
    print("\n".join(lines), flush=True)
    for m in args.methods:
        over = [s.split(":", 1)[1] for s in args.set if s.split(":", 1)[0] == m]
        t0 = time.perf_counter()
        try:
            r = bench(m, over, args.iters, device, args.workers)
        except Exception as e:  # one method's failure must not hide the others' numbers
            line = f"| {m} | failed: {type(e).__name__}: {str(e)[:300]} |"
        else:
            line = (f"| {m} | {r['backbone']} | {r['params_M']:.2f} | {r['batch']} | {r['s_per_step']:.3f} | "
                    f"{100 * r['data_share']:.0f} % | {r['peak_GiB']:.1f} | {r['loss_first']:.3f} → "
                    f"{r['loss_last']:.3f} ({r['steps']} steps) | {r['schedule']} | {r['schedule_h']:.1f} |")
        print(line, f"<!-- {time.perf_counter() - t0:.0f} s -->", flush=True)
        lines.append(line)
    if args.out:
        Path(args.out).write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
