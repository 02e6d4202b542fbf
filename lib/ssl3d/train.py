"""One readable training loop for every method, with checkpoints that resume exactly.

    history = train(model, loader, optimizer, epochs=10, scheduler=sched, checkpoint="runs/x.pt")
    history = pretrain(method, dataset, epochs=12, batch_size=32, optimizer="adamw", lr=1e-3)

``model(batch)`` returns either a scalar loss or a dict ``{"loss": …, <metric>: …}`` — every
:class:`ssl3d.methods.Method` does, so the loop is the same for all of them; ``step_fn(model, batch)`` overrides
that for anything else (e.g. cross-entropy of a :class:`~ssl3d.models.heads.Segmenter`). The loop does the rest:
``zero_grad → backward → (clip) → step → scheduler.step()`` per iteration, a progress bar, a history of the loss
and metrics, and a check that the loss is finite (a NaN stops training with a message instead of silently
producing numbers).

Resuming exactly. With ``checkpoint=path`` the loop writes (atomically) model, optimizer, scheduler, RNG states,
the position in the data and the history after every epoch and every ``checkpoint_every`` iterations; a SIGTERM
or SIGINT (Ctrl-C, a cluster's pre-emption) finishes the current iteration, writes the checkpoint and raises
:class:`TrainingInterrupted`. Calling ``train`` again with the same ``checkpoint`` continues where it stopped:
the loader's shuffling generator is rewound to the start of the interrupted epoch, the iterations already done
are skipped, and the RNG states are restored, so the resumed run ends with bit-identical weights to an
uninterrupted one (``tests/test_train.py`` interrupts a real process with a signal to check it). Exact mid-epoch
resume needs a loader whose order comes from its own ``generator`` (``pretrain`` and the protocols build such
loaders) or a ``DistributedSampler``; at epoch boundaries any loader resumes exactly.

Distributed runs (``torchrun``, :mod:`ssl3d.distributed`): only rank 0 writes checkpoints and shows progress bars;
a ``DistributedSampler`` gets ``set_epoch`` like the dataset does.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import signal
from collections.abc import Mapping
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from ssl3d.utils import load_checkpoint, progress, save_checkpoint, set_rng_state

__all__ = ["train", "pretrain", "make_optimizer", "make_scheduler", "poly_lr", "recompute_batchnorm",
           "TrainingInterrupted"]


class TrainingInterrupted(KeyboardInterrupt):
    """Raised by :func:`train` after a SIGTERM/SIGINT, once the checkpoint of the last finished iteration is written
    (call ``train`` again with the same checkpoint to resume)."""


def make_optimizer(params, name: str = "adamw", lr: float = 1e-3, weight_decay: float = 0.0,
                   momentum: float = 0.9, dampening: float = 0.0):
    """SGD (PointContrast: lr 0.1, momentum 0.8, wd 1e-4) or AdamW (ACT, Point-MAE) by name. Parameters with
    ``requires_grad=False`` (frozen teachers) are left out."""
    params = [p for p in params if p.requires_grad]
    if not params:
        raise ValueError("make_optimizer: no trainable parameters (is everything frozen?)")
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


def exp_lr(gamma: float, update_freq: int = 1):
    """PointContrast's stepped exponential decay: its trainer calls ``scheduler.step()`` after iteration 1 and after
    every ``update_freq``-th iteration (``trainer.lr_update_freq``, 250 in the released launch scripts), so the
    factor for 0-indexed step s is 1 at s = 0 and γ^(1 + ⌊s / update_freq⌋) after. ``update_freq = 1``: γ^s."""
    if update_freq < 1:
        raise ValueError(f"update_freq must be ≥ 1 iteration, got {update_freq}")
    if update_freq == 1:
        return lambda step: gamma ** step
    return lambda step: 1.0 if step == 0 else gamma ** (1 + step // update_freq)


def make_scheduler(optimizer, name: str | None, total_steps: int, gamma: float = 0.99, warmup: int = 0,
                   lr_update_freq: int = 1):
    """Per-iteration schedulers: None, 'poly', 'exp' (PointContrast: γ 0.99 every ``lr_update_freq`` iterations,
    :func:`exp_lr`), 'cosine' (with linear warm-up)."""
    if name is None or name == "none":
        return None
    if name == "poly":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, poly_lr(total_steps))
    if name == "exp":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, exp_lr(gamma, lr_update_freq))
    if name == "cosine":
        def f(step):
            if step < warmup:
                return (step + 1) / warmup
            t = (step - warmup) / max(total_steps - warmup, 1)
            return 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))

        return torch.optim.lr_scheduler.LambdaLR(optimizer, f)
    raise ValueError(f"unknown scheduler '{name}' (use none, poly, exp or cosine)")


def _loss_and_metrics(out) -> tuple[torch.Tensor, dict]:
    if isinstance(out, Mapping):
        if "loss" not in out:
            raise KeyError(f"the model returned a dict without 'loss' (keys {sorted(out)}): a method's forward must "
                           f"return {{'loss': scalar, ...}}")
        return out["loss"], {k: v for k, v in out.items() if k != "loss"}
    if isinstance(out, tuple):
        return out[0], dict(out[1])
    return out, {}


def _world() -> tuple[int, int]:
    """(rank, world size) of a distributed run, (0, 1) otherwise."""
    d = torch.distributed
    return (d.get_rank(), d.get_world_size()) if d.is_available() and d.is_initialized() else (0, 1)


def _global_mean(x: torch.Tensor) -> float:
    """The mean of a scalar over every process (for logging), the value itself in a single process."""
    if _world()[1] == 1:
        return x.item()
    y = x.detach().clone().reshape(1)
    torch.distributed.all_reduce(y)
    return y.item() / _world()[1]


@contextlib.contextmanager
def _stop_on_signals():
    """Turn SIGTERM/SIGINT into a flag the loop checks after each iteration (main thread only)."""
    stop = {"signal": None}

    def handler(signum, frame):
        stop["signal"] = signum

    try:
        old = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    except ValueError:  # not the main thread: no signal handling
        old = {}
    try:
        yield stop
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def train(model: torch.nn.Module, loader, optimizer, epochs: int = 1, scheduler=None, step_fn=None,
          checkpoint: str | Path | None = None, checkpoint_every: int | None = None, clip_grad: float | None = None,
          desc: str = "train", on_epoch_end=None) -> dict:
    """Train ``model`` for ``epochs`` passes over ``loader``; returns the history.

    history = {"loss": [per-iteration losses], "epoch_loss": [mean per epoch], <metric>: [per iteration], ...}

    ``step_fn(model, batch)`` → loss, ``(loss, metrics)`` or ``{"loss": …, …}``; default ``model(batch)``.
    ``on_epoch_end(epoch, model)`` runs after every epoch (e.g. to render partitions during training); the
    dataset's (and a DistributedSampler's) ``set_epoch`` is called, so augmentations differ per epoch and reproduce.
    ``checkpoint`` / ``checkpoint_every``: see the module docstring (resume, signals).
    """
    history: dict[str, list] = {"loss": [], "epoch_loss": []}
    core = getattr(model, "module", model)  # what is saved: the model itself, not its DistributedDataParallel wrapper
    rank, _ = _world()
    gen = getattr(loader, "generator", None)  # the shuffling generator of a DataLoader
    start_epoch, skip, epoch_gen, rng, pos = 0, 0, None, None, {}
    if checkpoint is not None and Path(checkpoint).is_file():
        state = load_checkpoint(checkpoint, core, optimizer, scheduler, restore_rng=False)
        pos = state["extra"].get("position", {"epoch": state["step"], "iteration": 0})
        start_epoch, skip = pos["epoch"], pos["iteration"]
        epoch_gen = pos.get("generator")
        history = state["extra"].get("history", history)
        rng = state["rng"]
        if start_epoch >= epochs:
            return history
    save = checkpoint is not None and rank == 0
    with _stop_on_signals() as stop:
        for epoch in range(start_epoch, epochs):
            model.train()
            for obj in (getattr(loader, "dataset", None), getattr(loader, "sampler", None)):
                if hasattr(obj, "set_epoch"):
                    obj.set_epoch(epoch)
            if gen is not None:
                if epoch_gen is not None:
                    gen.set_state(epoch_gen)  # rewind the shuffling to the start of the interrupted epoch
                epoch_gen = gen.get_state()
            losses = list(pos.get("epoch_losses", [])) if skip else []  # the interrupted epoch's losses so far
            if rng is not None and skip == 0:  # resuming at an epoch boundary: RNG as it was before iter()
                set_rng_state(rng)
                rng = None
            batches = iter(loader)
            for _ in range(skip):  # resuming mid-epoch: the same batches, not trained on twice
                next(batches)
            if rng is not None:  # model-side randomness (dropout, sampled pairs) continues where it stopped
                set_rng_state(rng)
                rng = None
            bar = progress(batches, total=len(loader) - skip if hasattr(loader, "__len__") else None,
                           desc=f"{desc} {epoch + 1}/{epochs}", disable=rank != 0)
            it = skip
            for batch in bar:
                loss, metrics = _loss_and_metrics(step_fn(model, batch) if step_fn is not None else model(batch))
                if not torch.isfinite(loss):
                    raise FloatingPointError(
                        f"{desc}: loss became {loss.item()} at epoch {epoch + 1}, iteration {it + 1}; lower the "
                        f"learning rate, check the input for NaNs, or enable gradient clipping (clip_grad=...)")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if clip_grad is not None:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), clip_grad)
                optimizer.step()
                if scheduler is not None:
                    scheduler.step()
                it += 1
                value = _global_mean(loss)  # the loss of the whole (global) batch
                losses.append(value)
                history["loss"].append(value)
                for k, v in metrics.items():
                    history.setdefault(k, []).append(float(v))
                bar.set_postfix(loss=f"{value:.4f}")
                due = checkpoint_every is not None and it % checkpoint_every == 0
                if save and (due or stop["signal"] is not None):
                    save_checkpoint(checkpoint, core, optimizer, scheduler, step=epoch, history=history,
                                    position={"epoch": epoch, "iteration": it, "generator": epoch_gen,
                                              "epoch_losses": list(losses)})
                if stop["signal"] is not None:
                    raise TrainingInterrupted(f"{desc}: stopped by signal {stop['signal']} at epoch {epoch + 1}, "
                                              f"iteration {it}; the checkpoint {checkpoint} resumes it")
            skip, epoch_gen = 0, None
            history["epoch_loss"].append(sum(losses) / max(len(losses), 1))
            if on_epoch_end is not None:
                on_epoch_end(epoch, model)
            if save:
                save_checkpoint(checkpoint, core, optimizer, scheduler, step=epoch + 1, history=history,
                                position={"epoch": epoch + 1, "iteration": 0, "generator": None})
    return history


def pretrain(method, dataset, *, epochs: int, batch_size: int, optimizer: str = "adamw", lr: float = 1e-3,
             weight_decay: float = 0.0, momentum: float = 0.9, dampening: float = 0.0, scheduler: str | None = "cosine",
             warmup: int = 0, gamma: float = 0.99, lr_update_freq: int = 1, seed: int = 0,
             checkpoint: str | Path | None = None, checkpoint_every: int | None = None,
             clip_grad: float | None = None, num_workers: int = 0,
             drop_last: bool = True, desc: str | None = None, on_epoch_end=None, sampler=None) -> dict:
    """Pre-train any :class:`ssl3d.methods.Method` on ``dataset``: a shuffled loader (seeded) with the method's own
    ``collate``, the named optimizer and per-iteration scheduler, then :func:`train`. Returns the history.
    ``sampler`` (e.g. a ``DistributedSampler``) replaces the seeded shuffling."""
    g = torch.Generator().manual_seed(seed)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=sampler is None, sampler=sampler,
                        collate_fn=method.collate, generator=g if sampler is None else None,
                        drop_last=drop_last and len(dataset) >= batch_size, num_workers=num_workers)
    if len(loader) == 0:
        raise ValueError(f"pretrain: the dataset has {len(dataset)} items, fewer than one batch of {batch_size}")
    opt = make_optimizer(method.parameters(), optimizer, lr=lr, weight_decay=weight_decay, momentum=momentum,
                         dampening=dampening)
    sched = make_scheduler(opt, scheduler, epochs * len(loader), gamma=gamma, warmup=warmup,
                           lr_update_freq=lr_update_freq)
    return train(method, loader, opt, epochs, sched, checkpoint=checkpoint, checkpoint_every=checkpoint_every,
                 clip_grad=clip_grad, desc=desc or f"{method.name} pre-training", on_epoch_end=on_epoch_end)


@torch.no_grad()
def recompute_batchnorm(model: torch.nn.Module, batches, forward=None) -> int:
    """"Precise BN": set every BatchNorm's running mean and variance to the average of its batch statistics over
    ``batches``, each passed to ``forward`` (default: ``model.encode`` if the model has one, else ``model``).

    Why: BatchNorm's running statistics are an exponential average with momentum 0.1 that starts from mean 0 and
    variance 1. After a short run they still remember that start: the point-patch encoder of the Transformer
    sees patch coordinates of variance ~1e-6 (normalised shapes, 16-point patches), and after 30 iterations its
    running variance is still ~0.9³⁰ ≈ 0.04, so in eval mode every patch maps to nearly the same feature. A
    network that never trained (a "scratch" baseline) has exactly the initial (0, 1). Recomputing the statistics
    on data (no labels, no gradients; dropout off) removes that artefact for every network alike.
    Returns the number of batches used. The model comes back in the mode it had.
    """
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return 0
    batches = iter(batches)
    first = next(batches, None)
    if first is None:  # checked before the statistics are reset, so that the model is left untouched
        raise ValueError("recompute_batchnorm: no batches given — pass a DataLoader over (unlabelled) training data")
    was_training, momenta = model.training, [m.momentum for m in bns]
    model.eval()
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average: after n batches, the mean of their n statistics
        m.train()
    n = 0
    forward = forward or (model.encode if hasattr(model, "encode") else model)
    for batch in itertools.chain([first], batches):
        forward(batch)
        n += 1
    for m, mom in zip(bns, momenta):
        m.momentum = mom
    model.train(was_training)
    return n
