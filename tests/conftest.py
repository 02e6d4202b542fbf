"""Fixtures of the unit tests (the environment is set by the repository's root conftest.py)."""

import pytest


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
