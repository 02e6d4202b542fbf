"""Worked solutions to the exercises of 06_act (run them: `python notebooks/solutions/06_act.py`).
tests/test_solutions.py checks what each one claims (on smaller data)."""

import numpy as np
import torch

from ssl3d import act as A
from ssl3d.act import chamfer_l1
from ssl3d.data import load_dataset
from ssl3d.methods import build_method
from ssl3d.models import build_model
from ssl3d.models.transformer import SMOKE, group_points
from ssl3d.train import pretrain, recompute_batchnorm


def _shapes(n_per_class: int, n_points: int, seed: int, split: str = "train"):
    return load_dataset("objects", split, None, n_per_class=n_per_class, n_points=n_points, seed=seed,
                        random_yaw=True, transform=A.ScaleAndTranslate())


def _train_dvae(shapes, dvae_kw: dict, iters: int, temp_target: float = 0.0625, batch_size: int = 16,
                seed: int = 0) -> tuple[A.DiscreteVAE, dict]:
    torch.manual_seed(seed)
    dvae = A.DiscreteVAE(**dvae_kw)
    epochs = max(1, round(iters / (len(shapes) // batch_size)))
    steps = epochs * (len(shapes) // batch_size)
    sched = dict(temp_start=1.0, temp_target=temp_target, temp_steps=steps, kl_start=0.0, kl_target=0.1,
                 kl_steps=steps, kl_warmup=steps // 10)
    h = pretrain(build_method("act_dvae", dvae, **sched), shapes, epochs=epochs, batch_size=batch_size, lr=5e-4,
                 weight_decay=5e-4, warmup=max(1, steps // 10), seed=seed, desc="dVAE")
    dvae.eval()
    batches = [torch.from_numpy(np.stack([shapes[j]["points"] for j in range(i, min(i + 32, len(shapes)))])).float()
               for i in range(0, len(shapes), 32)]
    recompute_batchnorm(dvae, batches, forward=dvae)  # precise BN after a short run (notebook 06, section 2)
    return dvae, h


def exercise_1(ratios=(0.4, 0.6, 0.8), n_per_class: int = 8, n_points: int = 1024, dvae_iters: int = 40,
               student_iters: int = 60, dvae_kw: dict | None = None, student_kw: dict | None = None,
               seed: int = 0) -> dict:
    """The masking ratio: one teacher, one student per ratio (same seed, same iterations), each student's loss
    measured at its own ratio on unseen shapes (8 fixed masks), beside two references on the same masks: the
    same student untrained, and a constant prediction — the mean of the teacher's features over the training
    patches — which needs no input at all.

    What it shows (at smoke size): every trained student is far below its untrained self and close to the
    constant, at every ratio — the students learn the mean target first, and a short-trained teacher's features
    are so similar to each other that this is most of the cosine (notebook 06, section 3). The ratio only makes a
    difference once the targets differ between patches: a longer-trained teacher, or ``center_targets=True``."""
    dvae_kw = {**A.SMOKE_DVAE, **(dvae_kw or {})}
    student_kw = {**SMOKE, **(student_kw or {})}
    shapes = _shapes(n_per_class, n_points, seed)
    dvae, _ = _train_dvae(shapes, dvae_kw, dvae_iters, seed=seed)
    held_out = torch.from_numpy(np.stack([s["points"] for s in _shapes(2, n_points, seed + 1, "test")])).float()
    train_pts = torch.from_numpy(np.stack([shapes[i]["points"] for i in range(len(shapes))])).float()
    with torch.no_grad():
        mean_target = dvae.tokenizer_features(*dvae.group(train_pts), sampling="argmax").mean((0, 1))  # (D,)

    def held_out_loss(method) -> float:
        method.eval()
        with torch.no_grad():
            losses = []
            for k in range(8):
                torch.manual_seed(k)
                losses.append(float(method({"points": held_out})["loss"]))
        return float(np.mean(losses))

    out = {}
    for r in ratios:
        torch.manual_seed(seed)
        method = build_method("act", build_model("point_transformer", **student_kw), teacher=dvae, mask_ratio=r,
                              target="argmax")
        untrained = held_out_loss(method)
        epochs = max(1, round(student_iters / (len(shapes) // 16)))
        h = pretrain(method, shapes, epochs=epochs, batch_size=16, lr=1e-3, weight_decay=0.05, seed=seed,
                     desc=f"student r={r}")
        trained = held_out_loss(method)
        real_head = method.proj_head.forward  # the constant: the mean target at every hidden patch
        method.proj_head.forward = lambda x: mean_target.expand(*x.shape[:-1], -1)
        constant = held_out_loss(method)
        method.proj_head.forward = real_head
        out[r] = {"held_out_loss": trained, "untrained_loss": untrained, "constant_loss": constant,
                  "last_train_loss": float(np.mean(h["loss"][-5:]))}
    return out


def exercise_2(groups=(8, 16, 32, 64, 128), group_size: int = 16, n_points: int = 1024, n_shapes: int = 14,
               seed: int = 0) -> dict:
    """The number of patches G at a fixed patch size K: how much of the cloud the tokens see, and how large a
    patch is (mean distance of its points to its centre).

    What it shows: coverage grows with G but stays below 100 % even when G·K = N, because kNN patches around
    farthest-point centres overlap; and a patch of K points is smaller on a denser cloud — why ACT doubles G
    (64 → 128) when it doubles the points (1,024 → 2,048) for ScanObjectNN."""
    shapes = load_dataset("scanned_objects", "test", None, n_per_class=1, n_points=n_points, seed=seed)
    pts = torch.from_numpy(np.stack([shapes[i]["points"] for i in range(min(n_shapes, len(shapes)))])).float()
    out = {}
    for g in groups:
        neigh, center = group_points(pts, g, group_size)  # (B, G, K, 3), (B, G, 3)
        absolute = (neigh + center[:, :, None]).reshape(len(pts), -1, 3)
        covered = [len(torch.unique(torch.cdist(a, p).argmin(1))) / n_points for a, p in zip(absolute, pts)]
        out[g] = {"coverage": float(np.mean(covered)), "patch_radius": float(neigh.norm(dim=-1).mean()),
                  "points_in_patches": g * group_size}
    return out


def exercise_3(temp_targets=(1.0, 0.0625), n_per_class: int = 8, n_points: int = 1024, iters: int = 80,
               dvae_kw: dict | None = None, seed: int = 0) -> dict:
    """The Gumbel temperature schedule of stage 1: τ held at 1 vs annealed 1 → 0.0625 within the run.

    During training the decoder sees *soft* codes (a Gumbel-softmax at τ); the teacher used by stage 2 reads
    *hard* ones. Measured on unseen shapes: the Chamfer-ℓ1 of the reconstruction from argmax codes and the
    number of codes in use (perplexity of the argmax histogram)."""
    dvae_kw = {**A.SMOKE_DVAE, **(dvae_kw or {})}
    shapes = _shapes(n_per_class, n_points, seed)
    held_out = torch.from_numpy(np.stack([s["points"] for s in _shapes(2, n_points, seed + 1, "test")])).float()
    out = {}
    for t in temp_targets:
        dvae, h = _train_dvae(shapes, dvae_kw, iters, temp_target=t, seed=seed)
        with torch.no_grad():
            neigh, center = dvae.group(held_out)
            recon = dvae.reconstruct(held_out)  # (B, G·K, 3) from argmax codes
            target = (neigh + center[:, :, None]).reshape(len(held_out), -1, 3)
            codes = dvae.logits(neigh, center).argmax(-1).flatten()
        p = torch.bincount(codes, minlength=dvae.num_tokens).float()
        p = p[p > 0] / p.sum()
        out[t] = {"argmax_chamfer": float(chamfer_l1(recon, target)),
                  "codes_in_use": float(torch.exp(-(p * p.log()).sum())),
                  "train_recon": float(np.mean(h["recon"][-5:]))}
    return out


if __name__ == "__main__":
    print(exercise_1())
    print(exercise_2())
    print(exercise_3())
