"""ssl3d — self-supervised pre-training for 3D point clouds, taught step by step.

Modules (one idea each):
    utils        seeds, checkpoints, input validation, progress bars, threads
    geometry     voxelization, kNN, farthest-point sampling, mesh sampling, rigid transforms, batch layouts
    plot         headless pyvista renders and matplotlib figures written to figures/
    data         embedded datasets, real-data readers, ``load_dataset``
    sparse       sparse tensors and convolutions (MinkowskiEngine or pure PyTorch)
    models       backbones (the contract in models/base.py), heads, checkpoints that rebuild
    gmm          the GMM parametric bottleneck
    contrastive  PointInfoNCE, hardest-contrastive, pixel InfoNCE
    methods      pre-training methods by name (an nn.Module per method, forward(batch) → {"loss", …})
    train        one training loop (exact resume), ``pretrain``
    evaluate     metrics: linear SVM, IoU, part mIoU, mean ± std
    protocols    probes and fine-tuning with label budgets, tidy records
    reproduce    the notebook runner behind ./reproduce.sh

Importing ssl3d first (before torch) sets OpenMP's wait policy to PASSIVE: idle OpenMP threads then sleep instead
of spinning, which is what keeps two notebooks on a 2-core laptop from slowing each other down by an order of
magnitude (``ssl3d.utils.configure_threads``; override with the usual environment variables). It also sets
``GOMP_SPINCOUNT=30000``: a thread first spins that many rounds (well under a millisecond) before it sleeps. With no
spin at all (PASSIVE alone) every op of a small sparse network woke a sleeping thread, and one notebook alone ran
1.4-1.8x slower (notebook 04's PointContrast pre-training: 44.6 s → 25.0 s for 78 iterations; a fine-tuning 38.6 s →
26.4 s); ``benchmarks/contention.py`` checks that two notebooks at once still do not slow each other down.
"""

import os as _os
import sys as _sys

if "torch" not in _sys.modules:  # OpenMP reads these once, when torch loads its runtime
    _os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    _os.environ.setdefault("GOMP_SPINCOUNT", "30000")  # GNU OpenMP (torch's): spin this long, then sleep

__version__ = "0.1.0"

from ssl3d.utils import configure_threads, seed_everything  # noqa: E402,F401

configure_threads()
