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


@pytest.fixture(scope="module")
def one_thread():
    """Tiny matmuls gain nothing from threads and a second BLAS thread stalls when the shared cores are busy."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
