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
