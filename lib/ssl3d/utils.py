"""Small utilities shared by every module: seeding, input checks, checkpoints, progress bars."""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = [
    "seed_everything",
    "rng_state",
    "set_rng_state",
    "check_points",
    "progress",
    "save_checkpoint",
    "load_checkpoint",
    "repo_root",
    "pick_device",
    "available_cores",
    "configure_threads",
]


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch; return a fresh ``torch.Generator`` seeded the same way."""
    if not isinstance(seed, int | np.integer):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """Everything needed to resume random number streams exactly (stored in checkpoints).

    Only tensors, ints, strings and tuples, so that checkpoints load with ``torch.load(..., weights_only=True)``.
    """
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"python": random.getstate(), "torch": torch.get_rng_state(),
             "numpy": (name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached))}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def available_cores() -> int:
    """CPU cores this process may really use: its affinity mask, capped by a cgroup CPU quota (containers, CI)."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        n = os.cpu_count() or 1
    try:  # cgroup v2: "max 100000" or "<quota> <period>"
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            n = min(n, max(1, int(int(quota) // int(period))))
    except (OSError, ValueError):
        pass
    return max(1, n)


def configure_threads(n: int | None = None) -> int:
    """Set torch's intra-op threads: ``n``, else ``SSL3D_THREADS``, else :func:`available_cores` (never more).

    Called by ``import ssl3d``. Two processes on 2 cores each running 2 spinning OpenMP threads slow each other
    down far more than 2×; ssl3d also sets ``OMP_WAIT_POLICY=PASSIVE`` when it is imported before torch (see the
    package docstring). ``benchmarks/contention.py`` measures the effect. Returns the thread count.
    """
    if n is None:
        env = os.environ.get("SSL3D_THREADS")
        if env is not None:
            try:
                n = int(env)
            except ValueError:
                raise ValueError(f"SSL3D_THREADS must be a positive integer, got {env!r}") from None
        else:
            n = available_cores()
    if n < 1:
        raise ValueError(f"the thread count must be ≥ 1, got {n}")
    torch.set_num_threads(n)
    return n


def pick_device(device: str | torch.device | None = "auto") -> torch.device:
    """``"auto"`` (or None) → CUDA when a GPU is visible, else the CPU; anything else is checked and returned.
    Every notebook takes a ``device`` parameter that goes through here."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    d = torch.device(device)
    if d.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device={device!r} but no CUDA GPU is visible (torch {torch.__version__}, CUDA build: "
                           f"{torch.version.cuda}); use device='cpu' or 'auto'")
    return d


def check_points(x: torch.Tensor | np.ndarray, name: str = "points", dim: int = 3, batched: bool | None = None):
    """Validate a point cloud: (N, dim) or (B, N, dim), non-empty, finite. Raises ValueError naming the fix."""
    if not isinstance(x, torch.Tensor | np.ndarray):
        raise TypeError(f"{name} must be a torch.Tensor or numpy array, got {type(x).__name__}")
    shape = tuple(x.shape)
    ok_ndims = {2: (2,), 3: (3,), None: (2, 3)}[None if batched is None else (3 if batched else 2)]
    if len(shape) not in ok_ndims or shape[-1] != dim:
        want = {(2,): f"(N, {dim})", (3,): f"(B, N, {dim})", (2, 3): f"(N, {dim}) or (B, N, {dim})"}[ok_ndims]
        raise ValueError(f"{name} must have shape {want}, got {shape}")
    if shape[-2] == 0:
        raise ValueError(f"{name} is empty (0 points): check the data loader or the crop that produced it")
    finite = torch.isfinite(x).all() if isinstance(x, torch.Tensor) else np.isfinite(x).all()
    if not bool(finite):
        raise ValueError(f"{name} contains NaN or Inf values: clean the input (e.g. drop invalid depth pixels)")
    return x


def progress(iterable=None, total: int | None = None, desc: str = "", **kw):
    """A tqdm progress bar that stays quiet in CI/tests (SSL3D_PROGRESS=0) so notebook outputs stay diff-able."""
    from tqdm.auto import tqdm

    disable = kw.pop("disable", False) or os.environ.get("SSL3D_PROGRESS", "1") == "0"
    return tqdm(iterable, total=total, desc=desc, disable=disable, leave=False, dynamic_ncols=True, **kw)


def save_checkpoint(path: str | Path, model: torch.nn.Module, optimizer=None, scheduler=None, step: int = 0,
                    **extra) -> Path:
    """Atomically save model + optimizer + scheduler + RNG state so that training resumes exactly."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {
        "model": model.state_dict(),
        "model_class": type(model).__name__,
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "step": step,
        "rng": rng_state(),
        "extra": extra,
    }
    tmp = path.with_name(path.name + ".partial")
    torch.save(state, tmp)
    os.replace(tmp, path)
    return path


def load_checkpoint(path: str | Path, model: torch.nn.Module, optimizer=None, scheduler=None,
                    restore_rng: bool = True, strict: bool = True) -> dict[str, Any]:
    """Restore a checkpoint written by :func:`save_checkpoint`; mismatched weights raise a clear error."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist: train first or pass the right path")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated / not a torch file / objects weights_only refuses
        raise ValueError(f"checkpoint {path} could not be read ({type(e).__name__}: {e}); it is truncated, not a "
                         f"torch file, or holds objects other than tensors and plain Python values") from e
    if not isinstance(state, dict) or "model" not in state:
        raise ValueError(f"{path} is not an ssl3d checkpoint (no 'model' entry); was it saved by save_checkpoint?")
    missing, unexpected = [], []
    own = model.state_dict()
    for k, v in state["model"].items():
        if k not in own:
            unexpected.append(k)
        elif own[k].shape != v.shape:
            raise ValueError(
                f"checkpoint {path} does not match the model: '{k}' has shape {tuple(v.shape)} in the file "
                f"but {tuple(own[k].shape)} in {type(model).__name__} — build the model with the same config "
                f"(checkpoint was saved from {state.get('model_class')})"
            )
    missing = [k for k in own if k not in state["model"]]
    if strict and (missing or unexpected):
        raise ValueError(
            f"checkpoint {path} does not match {type(model).__name__}: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]} (pass strict=False to load a backbone into a larger model)"
        )
    model.load_state_dict(state["model"], strict=strict)
    if optimizer is not None and state.get("optimizer") is not None:
        optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None and state.get("scheduler") is not None:
        scheduler.load_state_dict(state["scheduler"])
    if restore_rng and state.get("rng") is not None:
        set_rng_state(state["rng"])
    return state


def repo_root() -> Path:
    """The repository root (the folder holding pyproject.toml) when ssl3d is installed in editable mode."""
    here = Path(__file__).resolve()
    for p in here.parents:
        if (p / "pyproject.toml").is_file() and (p / "lib" / "ssl3d").is_dir():
            return p
    return Path.cwd()


def list_notebooks(root: Path | None = None, only: list[str] | None = None) -> list[Path]:
    """The numbered notebooks ``notebooks/NN_*.ipynb`` in order; ``only`` filters by stem or number prefix."""
    root = root or repo_root()
    nbs = sorted((root / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    if only:
        picked = [p for p in nbs if any(p.stem == o or p.stem.startswith(o) or p.name == o for o in only)]
        if not picked:
            names = ", ".join(p.stem for p in nbs)
            raise SystemExit(f"--only {' '.join(only)} matches no notebook (have: {names})")
        nbs = picked
    return nbs
