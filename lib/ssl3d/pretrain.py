"""Pre-train any registered method from the command line — one process, or many under ``torchrun``.

    python -m ssl3d.pretrain gmm --config configs/pretrain/gmm.yaml [--data-root DIR] [--set train.epochs=2]
    torchrun --nproc_per_node 4 -m ssl3d.pretrain pointcontrast --config configs/pretrain/pointcontrast.yaml

A config is a YAML file with five sections (unknown sections or keys are errors, so a typo never silently
falls back to a default):

    backbone: {name: dgcnn, args: {width: 1.0}}                    # ssl3d.models.build_model
    method:   {args: {J: 64, cov: full}}                           # ssl3d.methods.build_method(<method>, …)
    data:     {task: parts, split: train, options: {n_points: 1024}}   # ssl3d.data.load_dataset
    train:    {epochs: 250, batch_size: 32, optimizer: adamw, lr: 1.0e-3, weight_decay: 1.0e-4, scheduler: cosine,
               seed: 0, checkpoint_every: 500}                     # ssl3d.train.pretrain; batch_size is GLOBAL
    output:   {dir: runs/full/pretrain}                            # <dir>/<method>.ckpt (resumable training state)
                                                                   # and <dir>/<method>_backbone.pt (save_backbone)

The run resumes from ``<dir>/<method>.ckpt`` when it exists (``--fresh`` starts over); a SIGTERM/SIGINT writes that
checkpoint and exits. Under ``torchrun`` every process sees ``batch_size / world_size`` samples per step through a
``DistributedSampler`` and BatchNorm is synchronised (:mod:`ssl3d.distributed`); rank 0 writes the files. The
notebooks call the same functions (``build_method`` + ``ssl3d.train.pretrain``) in-process.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

__all__ = ["SCHEMA", "load_config", "build", "run", "main"]

SCHEMA = {
    "backbone": {"name", "args"},
    "method": {"args"},
    "data": {"task", "split", "options"},
    "train": {"epochs", "batch_size", "optimizer", "lr", "weight_decay", "momentum", "dampening", "scheduler",
              "warmup", "gamma", "lr_update_freq", "seed", "checkpoint_every", "clip_grad", "num_workers", "device",
              "sync_bn"},
    "output": {"dir"},
}


def _set(cfg: dict, assignment: str) -> None:
    key, sep, value = assignment.partition("=")
    if not sep or "." not in key:
        raise ValueError(f"--set expects section.key=value (e.g. train.epochs=2), got {assignment!r}")
    node = cfg
    *path, leaf = key.split(".")
    for p in path:
        node = node.setdefault(p, {})
    node[leaf] = yaml.safe_load(value)


def load_config(path: str | Path, overrides: list[str] = ()) -> dict:
    """Read a config, apply ``section.key=value`` overrides, and check every section and key against
    :data:`SCHEMA` (the free-form ``args``/``options`` dicts are checked by the functions they are passed to)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config {path} does not exist (configs/pretrain/ holds one per method)")
    cfg = yaml.safe_load(path.read_text()) or {}
    for o in overrides:
        _set(cfg, o)
    for section, body in cfg.items():
        if section not in SCHEMA:
            raise KeyError(f"{path}: unknown section {section!r}; sections are {sorted(SCHEMA)}")
        unknown = set(body or {}) - SCHEMA[section]
        if unknown:
            raise KeyError(f"{path}: unknown key(s) {sorted(unknown)} in section {section!r}; allowed: "
                           f"{sorted(SCHEMA[section])}")
    for section in ("backbone", "data", "train"):
        if section not in cfg:
            raise KeyError(f"{path}: the config needs a {section!r} section")
    return cfg


def build(method_name: str, cfg: dict, data_root: str | None = None):
    """The method (its backbone inside) and the training dataset a config describes: (method, dataset). The
    network is on the CPU and seeded by whoever calls (``run`` seeds with ``train.seed``)."""
    from ssl3d.data import load_dataset
    from ssl3d.methods import build_method
    from ssl3d.models import build_model

    backbone = build_model(cfg["backbone"]["name"], **cfg["backbone"].get("args", {}))
    method = build_method(method_name, backbone, **cfg.get("method", {}).get("args", {}))
    data = cfg["data"]
    dataset = load_dataset(data["task"], data.get("split", "train"), data_root, **data.get("options", {}))
    return method, dataset


def run(method_name: str, cfg: dict, data_root: str | None = None, fresh: bool = False) -> dict:
    """Build backbone, method and dataset from ``cfg``, pre-train (resumable, distributed under torchrun), save the
    backbone. Returns {"history", "backbone_path", "checkpoint"}."""
    import torch
    from torch.utils.data.distributed import DistributedSampler

    from ssl3d import distributed as dd
    from ssl3d.models import save_backbone
    from ssl3d.train import pretrain

    tr = dict(cfg["train"])
    info = dd.init_distributed(tr.pop("device", "auto"))
    sync_bn = tr.pop("sync_bn", True)
    seed = tr.get("seed", 0)
    if tr["batch_size"] % info.world_size:
        raise ValueError(f"train.batch_size={tr['batch_size']} is the global batch: it must be divisible by the "
                         f"{info.world_size} processes")
    torch.manual_seed(seed)
    method, dataset = build(method_name, cfg, data_root)
    out_dir = Path(cfg.get("output", {}).get("dir", "runs/pretrain"))
    ckpt = out_dir / f"{method_name}.ckpt"
    if fresh and ckpt.exists() and info.rank == 0:
        ckpt.unlink()
    if info.world_size > 1:
        torch.distributed.barrier()
    model = dd.wrap(method, info, sync_bn=sync_bn)
    # one data order for any number of processes: process r takes every world_size-th sample of one permutation,
    # so the union of the per-process batches is the batch a single process would see
    sampler = DistributedSampler(dataset, info.world_size, info.rank, shuffle=True, seed=seed, drop_last=True)
    history = pretrain(model, dataset, **{**tr, "batch_size": tr["batch_size"] // info.world_size},
                       checkpoint=ckpt, sampler=sampler, desc=f"{method_name} (rank {info.rank}/{info.world_size})")
    path = out_dir / f"{method_name}_backbone.pt"
    if info.rank == 0:
        save_backbone(method.backbone, path, method=method_name, config=cfg)
    dd.cleanup()
    return {"history": history, "backbone_path": path, "checkpoint": ckpt, "rank": info.rank}


def main(argv: list[str] | None = None) -> int:
    from ssl3d.methods import list_methods

    ap = argparse.ArgumentParser(prog="python -m ssl3d.pretrain", description=__doc__.split("\n\n")[0])
    ap.add_argument("method", help=f"a registered method ({', '.join(list_methods())})")
    ap.add_argument("--config", required=True, help="YAML config (see the module docstring)")
    ap.add_argument("--data-root", default=None, help="folder with the real datasets (default: embedded data)")
    ap.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="override a config value")
    ap.add_argument("--fresh", action="store_true", help="ignore an existing checkpoint and start over")
    args = ap.parse_args(argv)
    if args.method not in list_methods():
        ap.error(f"unknown method {args.method!r}; registered: {', '.join(list_methods())}")
    try:
        cfg = load_config(args.config, args.set)
    except (FileNotFoundError, KeyError, ValueError) as e:
        print(f"pretrain: {e}", file=sys.stderr)
        return 2
    from ssl3d.train import TrainingInterrupted

    try:
        res = run(args.method, cfg, args.data_root, args.fresh)
    except TrainingInterrupted as e:
        print(f"pretrain: {e}", file=sys.stderr)
        return 130
    if res["rank"] == 0:
        h = res["history"]
        print(f"pretrain: {args.method}: loss {h['epoch_loss'][0]:.4f} → {h['epoch_loss'][-1]:.4f}; backbone → "
              f"{res['backbone_path']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
