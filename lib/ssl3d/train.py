"""One readable training loop for every method, with checkpoints that resume exactly.

    history = train(model, step_fn, loader, optimizer, epochs=10, scheduler=sched, checkpoint="runs/x.pt")

``step_fn(model, batch) -> loss`` (a scalar tensor) or ``(loss, metrics_dict)`` holds everything
method-specific (the GMM negative log-likelihood, PointInfoNCE, cross-entropy, ...). The loop does the rest:
``zero_grad → backward → (clip) → step → scheduler.step()`` per iteration, a progress bar, a loss history, a
check that the loss is finite (a NaN stops training with a message instead of silently producing numbers), and
an atomic checkpoint after every epoch. Calling ``train`` again with the same ``checkpoint`` resumes after the
last completed epoch, restoring model, optimizer, scheduler and RNG states, so an interrupted run ends with the
same weights as an uninterrupted one.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from ssl3d.utils import load_checkpoint, progress, save_checkpoint

__all__ = ["train", "make_optimizer", "make_scheduler", "poly_lr"]


def make_optimizer(params, name: str = "adamw", lr: float = 1e-3, weight_decay: float = 0.0,
                   momentum: float = 0.9, dampening: float = 0.0):
    """SGD (PointContrast: lr 0.1, momentum 0.8, wd 1e-4) or AdamW (ACT, Point-MAE) by name."""
    name = name.lower()
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer '{name}' (use sgd, adam or adamw)")


def poly_lr(total_steps: int, power: float = 0.9):
    """The 'poly' schedule of the segmentation literature: lr · (1 − step/total)^power."""
    return lambda step: max(0.0, 1 - step / max(total_steps, 1)) ** power


def make_scheduler(optimizer, name: str | None, total_steps: int, gamma: float = 0.99, warmup: int = 0):
    """Per-iteration schedulers: None, 'poly', 'exp' (PointContrast: γ 0.99), 'cosine' (with linear warm-up)."""
    if name is None or name == "none":
        return None
    if name == "poly":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, poly_lr(total_steps))
    if name == "exp":
        return torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma)
    if name == "cosine":
        def f(step):
            if step < warmup:
                return (step + 1) / warmup
            t = (step - warmup) / max(total_steps - warmup, 1)
            return 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))

        return torch.optim.lr_scheduler.LambdaLR(optimizer, f)
    raise ValueError(f"unknown scheduler '{name}' (use none, poly, exp or cosine)")


def train(model: torch.nn.Module, step_fn, loader, optimizer, epochs: int = 1, scheduler=None,
          checkpoint: str | Path | None = None, clip_grad: float | None = None, desc: str = "train",
          on_epoch_end=None) -> dict:
    """Train ``model`` for ``epochs`` passes over ``loader``; returns the history.

    history = {"loss": [per-iteration losses], "epoch_loss": [mean per epoch], <metric>: [per iteration], ...}

    ``on_epoch_end(epoch, model)`` runs after every epoch (e.g. to render partitions during training); the
    dataset's ``set_epoch`` is called when it has one, so augmentations differ per epoch and reproduce.
    """
    history: dict[str, list] = {"loss": [], "epoch_loss": []}
    start = 0
    if checkpoint is not None and Path(checkpoint).is_file():
        state = load_checkpoint(checkpoint, model, optimizer, scheduler)
        start = state["step"]
        history = state["extra"].get("history", history)
        if start >= epochs:
            return history
    for epoch in range(start, epochs):
        model.train()
        ds = getattr(loader, "dataset", None)
        if hasattr(ds, "set_epoch"):
            ds.set_epoch(epoch)
        losses = []
        bar = progress(loader, desc=f"{desc} {epoch + 1}/{epochs}")
        for batch in bar:
            out = step_fn(model, batch)
            loss, metrics = out if isinstance(out, tuple) else (out, {})
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"{desc}: loss became {loss.item()} at epoch {epoch + 1}, iteration {len(losses) + 1}; lower the "
                    f"learning rate, check the input for NaNs, or enable gradient clipping (clip_grad=...)")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if clip_grad is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), clip_grad)
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            losses.append(loss.item())
            history["loss"].append(loss.item())
            for k, v in metrics.items():
                history.setdefault(k, []).append(float(v))
            bar.set_postfix(loss=f"{loss.item():.4f}")
        history["epoch_loss"].append(sum(losses) / max(len(losses), 1))
        if on_epoch_end is not None:
            on_epoch_end(epoch, model)
        if checkpoint is not None:
            save_checkpoint(checkpoint, model, optimizer, scheduler, step=epoch + 1, history=history)
    return history
