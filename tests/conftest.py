"""Shared pytest setup: figures go to a temporary folder, progress bars stay quiet, seeds are fixed.

The environment variables are set at import time so that the notebook kernels nbval starts inherit them.
"""

import os
import tempfile

import pytest

os.environ.setdefault("SSL3D_FIGURES", tempfile.mkdtemp(prefix="ssl3d-figures-"))
os.environ.setdefault("SSL3D_PROGRESS", "0")


@pytest.fixture
def gen():
    import torch

    return torch.Generator().manual_seed(0)
