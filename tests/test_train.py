"""The training loop: learns, resumes exactly from a checkpoint, refuses NaN losses."""

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from ssl3d.train import make_optimizer, make_scheduler, poly_lr, train


def _setup():
    torch.manual_seed(0)
    x = torch.randn(64, 5)
    y = x @ torch.randn(5, 1) + 0.1
    model = torch.nn.Linear(5, 1)
    opt = make_optimizer(model.parameters(), "sgd", lr=0.05, momentum=0.9)
    sched = make_scheduler(opt, "exp", total_steps=100, gamma=0.99)
    loader = DataLoader(TensorDataset(x, y), batch_size=8, shuffle=True)
    return model, opt, sched, loader


def step(model, batch):
    x, y = batch
    return torch.nn.functional.mse_loss(model(x), y)


def test_loss_goes_down():
    model, opt, sched, loader = _setup()
    h = train(model, step, loader, opt, epochs=5, scheduler=sched)
    assert h["epoch_loss"][-1] < 0.2 * h["epoch_loss"][0]
    assert len(h["loss"]) == 5 * len(loader)


def test_resume_matches_uninterrupted(tmp_path):
    model, opt, sched, loader = _setup()
    train(model, step, loader, opt, epochs=4, scheduler=sched)
    straight = model.weight.detach().clone()

    model, opt, sched, loader = _setup()
    train(model, step, loader, opt, epochs=2, scheduler=sched, checkpoint=tmp_path / "c.pt")
    model, opt, sched, loader = _setup()  # a fresh process would start like this
    h = train(model, step, loader, opt, epochs=4, scheduler=sched, checkpoint=tmp_path / "c.pt")
    torch.testing.assert_close(model.weight.detach(), straight)
    assert len(h["epoch_loss"]) == 4


def test_nan_loss_stops_with_message():
    model, opt, _, loader = _setup()
    with pytest.raises(FloatingPointError, match="learning rate"):
        train(model, lambda m, b: m(b[0]).sum() * float("nan"), loader, opt)


def test_schedules():
    f = poly_lr(100, 0.9)
    assert f(0) == 1 and f(100) == 0 and 0 < f(50) < 1
    opt = make_optimizer([torch.nn.Parameter(torch.zeros(1))], "adamw", lr=1.0)
    s = make_scheduler(opt, "cosine", total_steps=10, warmup=2)
    lrs = []
    for _ in range(10):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        s.step()
    assert lrs[0] == 0.5 and lrs[1] == 1.0 and lrs[-1] < 0.05
    with pytest.raises(ValueError, match="unknown optimizer"):
        make_optimizer([], "lion")
