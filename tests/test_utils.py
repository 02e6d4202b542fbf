import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from ssl3d import utils


def test_seed_everything_reproduces():
    utils.seed_everything(3)
    a = (torch.rand(3), np.random.rand(3))
    utils.seed_everything(3)
    b = (torch.rand(3), np.random.rand(3))
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1])


def test_check_points_messages():
    with pytest.raises(ValueError, match="empty"):
        utils.check_points(torch.zeros(0, 3))
    with pytest.raises(ValueError, match="NaN"):
        utils.check_points(np.array([[0, np.inf, 0]]))
    with pytest.raises(ValueError, match=r"\(B, N, 3\)"):
        utils.check_points(torch.zeros(5, 3), batched=True)
    utils.check_points(torch.zeros(2, 5, 3))


def test_checkpoint_resumes_exactly(tmp_path):
    def make():
        torch.manual_seed(0)
        m = torch.nn.Linear(4, 2)
        opt = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)
        sch = torch.optim.lr_scheduler.ExponentialLR(opt, 0.9)
        return m, opt, sch

    def step(m, opt, sch):
        x = torch.randn(8, 4)
        loss = m(x).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sch.step()
        return loss.item()

    m, opt, sch = make()
    step(m, opt, sch)
    utils.save_checkpoint(tmp_path / "c.pt", m, opt, sch, step=1)
    straight = [step(m, opt, sch) for _ in range(3)]
    m2, opt2, sch2 = make()
    state = utils.load_checkpoint(tmp_path / "c.pt", m2, opt2, sch2)
    assert state["step"] == 1
    resumed = [step(m2, opt2, sch2) for _ in range(3)]
    assert straight == resumed


def test_checkpoint_mismatch_and_truncation(tmp_path):
    utils.save_checkpoint(tmp_path / "c.pt", torch.nn.Linear(4, 2))
    with pytest.raises(ValueError, match="does not match"):
        utils.load_checkpoint(tmp_path / "c.pt", torch.nn.Linear(4, 3))
    (tmp_path / "bad.pt").write_bytes((tmp_path / "c.pt").read_bytes()[:50])
    with pytest.raises(ValueError, match="truncated"):
        utils.load_checkpoint(tmp_path / "bad.pt", torch.nn.Linear(4, 2))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        utils.load_checkpoint(tmp_path / "nope.pt", torch.nn.Linear(4, 2))


def _env_after_import(first: str, env: dict) -> dict:
    """OMP_WAIT_POLICY and GOMP_SPINCOUNT as a fresh interpreter sees them after importing ``first``, then ssl3d."""
    code = (f"import {first}, ssl3d, os, json; "
            "print(json.dumps({k: os.environ.get(k) for k in ('OMP_WAIT_POLICY', 'GOMP_SPINCOUNT')}))")
    base = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    out = subprocess.run([sys.executable, "-c", code], env={**base, **env}, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_importing_ssl3d_first_sets_a_sleeping_but_briefly_spinning_openmp_policy():
    # imported before torch: idle threads spin 30,000 rounds, then sleep (ssl3d/__init__.py says why)
    assert _env_after_import("sys", {}) == {"OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": "30000"}
    # a user's settings win
    assert _env_after_import("sys", {"GOMP_SPINCOUNT": "0"}) == {"OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": "0"}
    # after torch it is too late (OpenMP has read its environment): ssl3d leaves it alone
    assert _env_after_import("torch", {}) == {"OMP_WAIT_POLICY": None, "GOMP_SPINCOUNT": None}
