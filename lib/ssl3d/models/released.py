"""The authors' released PointContrast checkpoints, loaded into ssl3d's Res16UNet34C (either sparse backend).

PointContrast (facebookresearch/PointContrast, README "Pretrained PointContrast Model") publishes two ScanNet
pre-trained Res16UNet34C checkpoints, ``hardest_contrastive.pth`` and ``nce.pth`` (290 MB each). They were written by
``pretrain/pointcontrast/lib/ddp_trainer.py`` ``_save_checkpoint``::

    {"curr_iter": int, "state_dict": model.state_dict(), "optimizer": ..., "scheduler": ..., "config": OmegaConf}

with PyTorch 1.5 and MinkowskiEngine 0.4.3 (the README; the paper's runs used ME 0.3.3, whose weight layout is the
same). 290 MB = 37.85 M fp32 weights + as many SGD momentum buffers. What the official model code
(``pretrain/pointcontrast/model/res16unet.py``, ``model/resnet.py``, ``model/modules/resnet_block.py``,
``model/modules/common.py``) and ME 0.4.3 (``MinkowskiEngine/MinkowskiConvolution.py``, ``Common.py``,
``src/region.cpp``) say about that state dict, and how it maps onto ssl3d:

=====================================================  ========================  =====================================
PointContrast key (ME 0.4)                             shape in the checkpoint   ssl3d (same key) — layout change
=====================================================  ========================  =====================================
``conv0p1s1.kernel``                                   (27, 3, 32)               none (HYPERCUBE, x fastest)
``conv{1,2,3,4}p{1,2,4,8}s2.kernel``                   (8, C, C)                 none (kernel 2: offsets 0…1, x fastest)
``convtr{4,5,6,7}p{16,8,4,2}s2.kernel``                (8, C_in, C_out)          none (same pairs as the strided conv)
``block{1-8}.{m}.conv{1,2}.kernel``                    (27, C_in, C_out)         **rows permuted**: HYBRID → x fastest
``block{n}.0.downsample.0.kernel``                     (C_in, C_out)             unsqueeze → (1, C_in, C_out)
``final.kernel`` / ``final.bias``                      (96, 32) / (1, 32)        unsqueeze → (1, 96, 32) / none
``{bn0-4,bntr4-7}.bn.*``, ``block….norm{1,2}.bn.*``,   (C,) and () for           none
``block….downsample.1.bn.*``                           ``num_batches_tracked``
=====================================================  ========================  =====================================

(``*`` = ``weight``, ``bias``, ``running_mean``, ``running_var``, ``num_batches_tracked`` — PyTorch ≥ 0.4.1 BatchNorm
saves the counter, so the checkpoint has it; a checkpoint without it loads with the counter at 0.)

* Names: ssl3d's Res16UNet names its modules after ``res16unet.py``, so every key keeps its name. A leading
  ``module.`` (DDP) or ``encoder.`` prefix, which PointContrast's fine-tuning loader also strips, is removed.
* Kernels are ``(K, C_in, C_out)`` in ME 0.4 as in ssl3d, except that ME 0.4 stores a 1×1×1 stride-1 kernel as a
  matrix ``(C_in, C_out)`` (``use_mm``; ``downsample.0`` and ``final``).
* Kernel offsets: ME 0.4's HYPERCUBE region iterates from the lower corner with x advancing first (``region.cpp``,
  ``RegionIterator::operator++`` case 0) — ssl3d's order; even kernels span offsets 0…k−1 like ME 0.5. But the
  residual blocks are built with ``CONV_TYPE = SPATIAL_HYPERCUBE_TEMPORAL_HYPERCROSS`` → ``RegionType.HYBRID`` with
  three HYPERCUBE axes, which ME 0.4 turns into an explicit (CUSTOM) offset list (``Common.convert_region_type``):
  the centre first, then ±x, then ±y added to each of those, then ±z added to each of the nine — row r of such a
  kernel belongs to offset :func:`me04_hybrid_offsets` ``[r]``. Only the stem and the strided / transposed convs use
  ``NON_BLOCK_CONV_TYPE = SPATIAL_HYPERCUBE``. ME 0.5 has no HYBRID region (commented out in its
  ``MinkowskiKernelGenerator.py``), so block kernels copied verbatim into an ME 0.5 or ssl3d net are scrambled;
  :func:`convert_pointcontrast_state_dict` permutes them.
* Input: ``ScanNetMatchPairDataset`` feeds ``np.ones((N, 3))`` and the trainer builds the net with
  ``num_feats = 3  # always 3 for finetuning``, so the stem is (27, 3, 32) and the net expects three constant
  channels (``misc.use_color_feat=True`` in ``ddp_launch.sh`` is read by nothing). :func:`load_pointcontrast` reads
  ``in_channels`` from the stem's own shape; ``fold_constant_input=True`` sums the stem over its input channels
  instead (exact for a constant input: ones(3)·W = ones(1)·ΣW), giving a 1-channel stem that takes
  ``sparse_quantize``'s default ones (M, 1).
* Output: ``final`` maps 96 → 32; the pre-training net L2-normalises its output (``net.normalize_feature: True``).

The real files cannot be downloaded here; ``tests/test_released.py`` writes a mock checkpoint in exactly this
format (key names and ME 0.4 shapes generated from the official model code, an OmegaConf-like config object) and
checks the loaded net layer by layer against references computed from the raw tensors.
"""

from __future__ import annotations

import pickle
import re
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from ssl3d import sparse as sp

__all__ = [
    "KEY_RULES",
    "CheckpointMismatchError",
    "CheckpointPlaceholder",
    "me04_hybrid_offsets",
    "hybrid_to_hypercube",
    "convert_pointcontrast_state_dict",
    "read_pointcontrast_checkpoint",
    "load_pointcontrast",
]

#: Key map: (regular expression on the PointContrast key, layout change). The ssl3d key is the same name.
#: Layouts: "same" (copied), "hybrid" (3×3×3 rows in ME 0.4 HYBRID order → x fastest), "matrix" (ME 0.4 1×1×1
#: (C_in, C_out) → (1, C_in, C_out)).
_BN = r"\.bn\.(weight|bias|running_mean|running_var|num_batches_tracked)"
KEY_RULES: tuple[tuple[str, str], ...] = (
    (r"conv0p1s1\.kernel", "same"),
    (r"conv[1-4]p\d+s2\.kernel", "same"),
    (r"convtr[4-7]p\d+s2\.kernel", "same"),
    (r"block[1-8]\.\d+\.conv[12]\.kernel", "hybrid"),
    (r"block[1-8]\.\d+\.downsample\.0\.kernel", "matrix"),
    (r"final\.kernel", "matrix"),
    (r"final\.bias", "same"),
    (r"(bn[0-4]|bntr[4-7]|block[1-8]\.\d+\.norm[12]|block[1-8]\.\d+\.downsample\.1)" + _BN, "same"),
)
_RULES = tuple((re.compile(p), layout) for p, layout in KEY_RULES)


class CheckpointMismatchError(KeyError):
    """A checkpoint that does not fit the network: the message lists every missing, unexpected and misshapen key."""

    def __str__(self) -> str:  # KeyError would print the message with quotes
        return str(self.args[0]) if self.args else ""


# ----------------------------------------------------------------------------------------------------------
# Kernel offsets of MinkowskiEngine 0.4
# ----------------------------------------------------------------------------------------------------------
def me04_hybrid_offsets(kernel_size: int = 3) -> torch.Tensor:
    """(k³, 3) offsets (dx, dy, dz) of ME 0.4's ``RegionType.HYBRID`` kernel with HYPERCUBE on all three axes, in
    kernel-row order (``Common.convert_region_type``, ``center=True``, dilation and tensor stride 1).

        offsets = [(0, 0, 0)]
        for axis d = x, y, z:  for each offset o already listed, for c in 0…k−1 except the centre:
                               append o with o[d] = c − ⌊(k−1)/2⌋

    For k = 3: (0,0,0), (−1,0,0), (1,0,0), (0,−1,0), (0,1,0), (−1,−1,0), (−1,1,0), (1,−1,0), (1,1,0), (0,0,−1), …
    """
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"HYBRID kernels of the Res16UNet blocks have an odd size, got {kernel_size}")
    center = (kernel_size - 1) // 2
    offsets = [[0, 0, 0]]
    for d in range(3):
        new = []
        for o in offsets:
            for c in range(kernel_size):
                if c == center:
                    continue
                o2 = list(o)
                o2[d] = c - center
                new.append(o2)
        offsets.extend(new)
    return torch.tensor(offsets, dtype=torch.long)  # (k³, 3)


def hybrid_to_hypercube(kernel_size: int = 3) -> torch.Tensor:
    """(k³,) row permutation ``perm`` with ``kernel_ssl3d = kernel_me04_hybrid[perm]`` (ssl3d/ME 0.5 order: offset
    row ``(iz·k + iy)·k + ix``, x fastest — :func:`ssl3d.sparse.kernel_offsets`)."""
    off = me04_hybrid_offsets(kernel_size) + (kernel_size - 1) // 2  # (K, 3) per-axis indices ix, iy, iz
    row = (off[:, 2] * kernel_size + off[:, 1]) * kernel_size + off[:, 0]  # (K,) hypercube row of hybrid row r
    perm = torch.empty_like(row)
    perm[row] = torch.arange(len(row))
    return perm


# ----------------------------------------------------------------------------------------------------------
# State-dict conversion
# ----------------------------------------------------------------------------------------------------------
def _strip_prefix(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    for prefix in ("module.", "encoder."):
        if sd and all(k.startswith(prefix) for k in sd):
            sd = {k[len(prefix):]: v for k, v in sd.items()}
    return dict(sd)


def _layout(key: str) -> str | None:
    for rx, layout in _RULES:
        if rx.fullmatch(key):
            return layout
    return None


def convert_pointcontrast_state_dict(sd: Mapping[str, torch.Tensor]) -> OrderedDict[str, torch.Tensor]:
    """PointContrast / ME 0.4 Res16UNet state dict → ssl3d Res16UNet state dict (the map in the module docstring).

    Raises :class:`CheckpointMismatchError` naming every key that no rule knows, and every kernel whose shape does not
    fit its rule (a block kernel that is not 3×3×3, a 1×1×1 kernel that is not a matrix, …).
    """
    if not isinstance(sd, Mapping) or not sd:
        raise CheckpointMismatchError(f"expected a non-empty state dict (key → tensor), got {type(sd).__name__}")
    sd = _strip_prefix(sd)
    out, unknown, bad = OrderedDict(), [], []
    perm3 = hybrid_to_hypercube(3)
    for key, v in sd.items():
        layout = _layout(key)
        if layout is None:
            unknown.append(key)
            continue
        if not isinstance(v, torch.Tensor):
            bad.append(f"{key}: not a tensor ({type(v).__name__})")
            continue
        if layout == "hybrid":
            if v.dim() != 3 or v.shape[0] != 27:
                bad.append(f"{key}: {tuple(v.shape)}, expected (27, C_in, C_out) — a 3×3×3 block kernel")
                continue
            v = v[perm3.to(v.device)]  # (27, C_in, C_out) rows in x-fastest order
        elif layout == "matrix":
            if v.dim() == 2:
                v = v.unsqueeze(0)  # (C_in, C_out) → (1, C_in, C_out)
            elif not (v.dim() == 3 and v.shape[0] == 1):
                bad.append(f"{key}: {tuple(v.shape)}, expected ME 0.4's 1×1×1 matrix (C_in, C_out)")
                continue
        elif key.endswith(".kernel") and v.dim() != 3:
            bad.append(f"{key}: {tuple(v.shape)}, expected (K, C_in, C_out)")
            continue
        out[key] = v
    if unknown or bad:
        raise CheckpointMismatchError(_report("this is not a PointContrast Res16UNet state dict", unknown=unknown,
                                              misshapen=bad))
    return out


def _report(what: str, missing=(), unknown=(), misshapen=()) -> str:
    def listing(name, keys):
        keys = list(keys)
        if not keys:
            return ""
        shown = ", ".join(keys[:40]) + (f", … ({len(keys) - 40} more)" if len(keys) > 40 else "")
        return f"\n  {name} ({len(keys)}): {shown}"

    return (f"{what}:" + listing("missing", missing) + listing("unexpected", unknown) +
            listing("misshapen", misshapen) +
            "\n  Fix: pass PointContrast's Res16UNet34C file (nce.pth / hardest_contrastive.pth, the state dict under "
            "'state_dict'), or build the matching variant with model=…; the key map is documented in "
            "ssl3d.models.released")


def _check_fit(net: nn.Module, sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Every model key present with the model's shape (``num_batches_tracked`` may be absent: filled with 0)."""
    own = net.state_dict()
    sd = dict(sd)
    for k, v in own.items():
        if k.endswith("num_batches_tracked") and k not in sd:
            sd[k] = torch.zeros_like(v)
    missing = [k for k in own if k not in sd]
    unknown = [k for k in sd if k not in own]
    bad = [f"{k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}"
           for k in own if k in sd and tuple(sd[k].shape) != tuple(own[k].shape)]
    if missing or unknown or bad:
        raise CheckpointMismatchError(_report(f"the checkpoint does not fit {type(net).__name__}", missing, unknown,
                                              bad))
    return sd


# ----------------------------------------------------------------------------------------------------------
# Reading the file: weights_only, with inert placeholders for the pickled config object
# ----------------------------------------------------------------------------------------------------------
class CheckpointPlaceholder:
    """Stands in for a pickled object whose class ``torch.load(weights_only=True)`` refuses (PointContrast pickles
    its Hydra/OmegaConf config next to the weights). Nothing is imported from the object's module and none of its
    code runs: the placeholder only records the pickled constructor arguments (``args``) and state (``state``)."""

    qualname = "?"

    def __new__(cls, *args, **kwargs):
        return object.__new__(cls)

    def __init__(self, *args, **kwargs):
        self.args, self.kwargs, self.state = args, kwargs, None

    def __setstate__(self, state):
        self.state = state

    def __repr__(self) -> str:
        return f"<placeholder for {self.qualname}>"


def _placeholder(name: str) -> type:
    return type(name.rsplit(".", 1)[-1], (CheckpointPlaceholder,), {"qualname": name})


_REFUSED = re.compile(r"GLOBAL (\S+) was not an allowed global")


def read_pointcontrast_checkpoint(path: str | Path, placeholders: bool = True) -> tuple[object, list[str]]:
    """``torch.load(path, weights_only=True)`` of a released checkpoint → (the loaded object, names replaced).

    The released files pickle ``'config': self.config`` (an OmegaConf ``DictConfig``, plus e.g. ``typing.Any`` inside
    it), which ``weights_only=True`` refuses. Rather than ``weights_only=False`` (which would run any code the file
    names), each refused global is registered — for this one load — as an inert :class:`CheckpointPlaceholder`
    subclass under its own name, and the file is read again with ``weights_only=True``; the names are found by
    ``torch.serialization.get_unsafe_globals_in_checkpoint`` (zip files, PyTorch ≥ 1.6) or from the refusal messages
    (the legacy format PyTorch 1.5 wrote). Globals from ``os``/``sys`` stay refused. ``placeholders=False`` raises
    instead.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: download PointContrast's nce.pth or hardest_contrastive.pth "
                                "(links in the facebookresearch/PointContrast README) and pass its path")
    names: list[str] = []
    try:
        names = [n for n in torch.serialization.get_unsafe_globals_in_checkpoint(str(path))] if placeholders else []
    except (ValueError, RuntimeError, pickle.UnpicklingError):
        names = []  # legacy (non-zip) file: found below from the refusal messages
    for _ in range(256):
        stubs = [(_placeholder(n), n) for n in names]
        try:
            with torch.serialization.safe_globals(stubs):
                return torch.load(path, map_location="cpu", weights_only=True), sorted(names)
        except pickle.UnpicklingError as e:
            m = _REFUSED.search(str(e))
            if not placeholders or m is None or m.group(1) in names:
                raise pickle.UnpicklingError(
                    f"{path} holds objects that torch.load(weights_only=True) refuses ({e}). "
                    + ("Allow inert placeholders with placeholders=True." if not placeholders else
                       "They are not plain classes a placeholder can stand in for; inspect the file.")) from e
            name = m.group(1)
            names.append(name if "." in name else f"builtins.{name}")
    raise pickle.UnpicklingError(f"{path}: more than 256 refused globals — not a PointContrast checkpoint")


def _state_dict_of(ckpt) -> Mapping[str, torch.Tensor]:
    if isinstance(ckpt, Mapping):
        for key in ("state_dict", "model_state"):  # PointContrast's trainer / its fine-tuning code's alternative
            if key in ckpt and isinstance(ckpt[key], Mapping):
                return ckpt[key]
        if ckpt and all(isinstance(v, torch.Tensor) for v in ckpt.values()):
            return ckpt  # a bare state dict
    keys = sorted(ckpt) if isinstance(ckpt, Mapping) else type(ckpt).__name__
    raise CheckpointMismatchError(f"no state dict in the checkpoint (expected a 'state_dict' entry, got {keys}): "
                                  "pass PointContrast's released nce.pth / hardest_contrastive.pth")


# ----------------------------------------------------------------------------------------------------------
# Loading into ssl3d
# ----------------------------------------------------------------------------------------------------------
def load_pointcontrast(path_or_state, backend: str | None = None, model: str = "res16unet34c",
                       normalize_feature: bool = True, bn_momentum: float = 0.05, fold_constant_input: bool = False,
                       return_checkpoint: bool = False):
    """Build ssl3d's Res16UNet34C from a released PointContrast checkpoint (or an already loaded one / its state dict).

    The net's sizes come from the checkpoint's own kernels: ``in_channels = conv0p1s1.kernel.shape[1]`` (3 for the
    released files: three constant channels), stem kernel size from ``shape[0] = k³``, ``out_channels`` from
    ``final.kernel``. Weights are converted with :func:`convert_pointcontrast_state_dict` and loaded strictly: a
    missing, extra or misshapen key raises :class:`CheckpointMismatchError` listing them all.

    Args:
        path_or_state: a file path, or the object ``torch.load`` returned, or a state dict.
        backend: ``"torch"`` / ``"minkowski"`` / None. The weights are the same on both backends (one layout); the
            backend of the :class:`ssl3d.sparse.SparseTensor` fed to the net decides where it runs. Given here, it is
            only checked to be usable, so a missing MinkowskiEngine fails now rather than at the first forward.
        model: ssl3d registry name of the architecture (``res16unet34c`` for the released files).
        normalize_feature: L2-normalise the output like the pre-training net (``net.normalize_feature: True``).
        bn_momentum: PointContrast's 0.05 (a training setting, not stored in the state dict).
        fold_constant_input: sum the stem over its input channels → ssl3d's geometry-only net (``in_channels=0``, a
            1-channel stem that ``encode`` feeds with ones); exact for the released input (ones in every channel).
        return_checkpoint: also return ``{"checkpoint": the loaded object, "placeholders": names}``.
    Returns:
        the net in eval mode (or ``(net, info)``).
    """
    from ssl3d.models import build_model

    if backend is not None:
        if backend not in sp.BACKENDS:
            raise ValueError(f"unknown sparse backend {backend!r}; choose one of {sp.BACKENDS} or None")
        if backend == "minkowski" and not sp.minkowski_available():
            raise ImportError("backend='minkowski' but MinkowskiEngine does not import here: build it with "
                              "lib/env/build_minkowski.sh, or use backend='torch' (same weights, same outputs)")
    placeholders: list[str] = []
    if isinstance(path_or_state, str | Path):
        ckpt, placeholders = read_pointcontrast_checkpoint(path_or_state)
    else:
        ckpt = path_or_state
    sd = convert_pointcontrast_state_dict(_state_dict_of(ckpt))
    for key in ("conv0p1s1.kernel", "final.kernel"):
        if key not in sd:
            raise CheckpointMismatchError(_report("the checkpoint has no " + key, missing=[key]))
    stem = sd["conv0p1s1.kernel"]  # (k³, C_in, INIT_DIM)
    k = round(stem.shape[0] ** (1 / 3))
    if k**3 != stem.shape[0]:
        raise CheckpointMismatchError(_report("conv0p1s1.kernel is not a cubic kernel",
                                              misshapen=[f"conv0p1s1.kernel: {tuple(stem.shape)}"]))
    if fold_constant_input:
        sd["conv0p1s1.kernel"] = stem = stem.sum(1, keepdim=True)  # (k³, 1, INIT_DIM)
    # a folded stem is ssl3d's geometry-only input: in_channels=0, one constant feature per voxel
    net = build_model(model, in_channels=0 if fold_constant_input else stem.shape[1],
                      out_channels=sd["final.kernel"].shape[-1],
                      bn_momentum=bn_momentum, conv1_kernel_size=k, normalize_feature=normalize_feature)
    if net.conv0p1s1.kernel.shape != stem.shape:
        raise CheckpointMismatchError(_report(f"{model} built a stem of shape {tuple(net.conv0p1s1.kernel.shape)}",
                                              misshapen=[f"conv0p1s1.kernel: {tuple(stem.shape)}"]))
    net.load_state_dict(_check_fit(net, sd), strict=True)
    net.eval()
    if return_checkpoint:
        return net, {"checkpoint": ckpt, "placeholders": placeholders}
    return net
