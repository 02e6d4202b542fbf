"""Image-to-point smoke run: both stages at the smoke sizes (ssl3d.methods.image_to_point.SMOKE), with timings.

    flock /tmp/ssl3d-train.lock .venv/bin/python benchmarks/image_to_point.py [--steps1 40] [--steps2 40]

Prints the wall and CPU time of frame generation, stage 1 (pixel_contrast) and stage 2 (image_to_point), the loss
at the start and the end of each stage, and the held-out retrieval top-1 (1,024 candidates, or all pairs of a scan
when fewer) of the stage-2 network before and after pre-training. CPU time is printed beside wall time because the
machines here are shared: wall time alone says little when other jobs run.
"""

from __future__ import annotations

import argparse
import math
import time

import torch

from ssl3d.data.datasets import RGBDFrameDataset
from ssl3d.data.image_views import ImageViews, PixelViewDataset
from ssl3d.methods import build_method
from ssl3d.methods.image_to_point import SMOKE
from ssl3d.models import build_model
from ssl3d.models.resunet2d import build_resunet2d
from ssl3d.train import pretrain


class Clock:
    def __init__(self, what: str):
        self.what = what

    def __enter__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        wall, cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu
        print(f"{self.what:28s} wall {wall:7.1f} s   cpu {cpu:7.1f} s", flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps1", type=int, default=SMOKE["stage1"]["steps"])
    ap.add_argument("--steps2", type=int, default=SMOKE["stage2"]["steps"])
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    fr, s1, s2 = SMOKE["frames"], SMOKE["stage1"], SMOKE["stage2"]
    with Clock("frames (train + test)"):
        frames = RGBDFrameDataset(**fr)
        test = RGBDFrameDataset(n_rooms=1, frames_per_room=4, split="test", width=fr["width"], height=fr["height"],
                                voxel_size=fr["voxel_size"])
        for ds in (frames, test):
            for i in range(len(ds)):
                ds.raw(i)
        held_out = [test[i] for i in range(len(test))]

    net = build_resunet2d(s1["net"])
    views = PixelViewDataset(frames, ImageViews(size=s1["view_size"]), seed=0)
    m1 = build_method("pixel_contrast", net, num_pos=s1["num_pos"], freeze_encoder_steps=s1["freeze_encoder_steps"])
    epochs1 = math.ceil(args.steps1 * s1["batch_size"] / len(frames))
    with Clock(f"stage 1 ({epochs1 * len(frames) // s1['batch_size']} steps)"):
        h1 = pretrain(m1, views, epochs=epochs1, batch_size=s1["batch_size"], optimizer=s1["optimizer"], lr=s1["lr"],
                      momentum=s1["momentum"], dampening=s1["dampening"], weight_decay=s1["weight_decay"],
                      scheduler=None)
    n = max(1, len(h1["loss"]) // 5)
    print(f"  stage 1 loss {sum(h1['loss'][:n]) / n:.3f} → {sum(h1['loss'][-n:]) / n:.3f}   pixel accuracy "
          f"{sum(h1['accuracy'][:n]) / n:.3f} → {sum(h1['accuracy'][-n:]) / n:.3f}")

    backbone = build_model(s2["backbone"], in_channels=3)
    m2 = build_method("image_to_point", backbone, teacher=net, num_pairs=s2["num_pairs"], voxel_size=s2["voxel_size"])
    before = m2.retrieval(held_out)
    epochs2 = math.ceil(args.steps2 * s2["batch_size"] / len(frames))
    with Clock(f"stage 2 ({epochs2 * len(frames) // s2['batch_size']} steps)"):
        h2 = pretrain(m2, frames, epochs=epochs2, batch_size=s2["batch_size"], optimizer=s2["optimizer"], lr=s2["lr"],
                      momentum=s2["momentum"], dampening=s2["dampening"], weight_decay=s2["weight_decay"],
                      scheduler=None)
    after = m2.retrieval(held_out)
    n = max(1, len(h2["loss"]) // 5)
    print(f"  stage 2 loss {sum(h2['loss'][:n]) / n:.3f} → {sum(h2['loss'][-n:]) / n:.3f}")
    print(f"  held-out retrieval top-1: random init {before['top1']:.3f}, pre-trained {after['top1']:.3f} "
          f"(chance {after['chance']:.4f}, {after['num_queries']} queries)")


if __name__ == "__main__":
    main()
