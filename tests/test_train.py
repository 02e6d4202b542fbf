"""The training loop: learns, resumes exactly from a checkpoint, refuses NaN losses."""

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from ssl3d.train import exp_lr, make_optimizer, make_scheduler, poly_lr, recompute_batchnorm, train


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
    h = train(model, loader, opt, epochs=5, scheduler=sched, step_fn=step)
    assert h["epoch_loss"][-1] < 0.2 * h["epoch_loss"][0]
    assert len(h["loss"]) == 5 * len(loader)


def test_resume_matches_uninterrupted(tmp_path):
    model, opt, sched, loader = _setup()
    train(model, loader, opt, epochs=4, scheduler=sched, step_fn=step)
    straight = model.weight.detach().clone()

    model, opt, sched, loader = _setup()
    train(model, loader, opt, epochs=2, scheduler=sched, step_fn=step, checkpoint=tmp_path / "c.pt")
    model, opt, sched, loader = _setup()  # a fresh process would start like this
    h = train(model, loader, opt, epochs=4, scheduler=sched, step_fn=step, checkpoint=tmp_path / "c.pt")
    torch.testing.assert_close(model.weight.detach(), straight)
    assert len(h["epoch_loss"]) == 4


def test_nan_loss_stops_with_message():
    model, opt, _, loader = _setup()
    with pytest.raises(FloatingPointError, match="learning rate"):
        train(model, loader, opt, step_fn=lambda m, b: m(b[0]).sum() * float("nan"))


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
        make_optimizer([torch.nn.Parameter(torch.zeros(1))], "lion")
    with pytest.raises(ValueError, match="no trainable parameters"):
        make_optimizer([torch.nn.Parameter(torch.zeros(1), requires_grad=False)], "sgd")


def test_dict_outputs_are_loss_and_metrics():
    """A method's forward returns {"loss": …, <metric>: …}: the loop trains on the loss and logs the rest."""
    model, opt, sched, loader = _setup()

    class Method(torch.nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, batch):
            loss = step(self.net, batch)
            return {"loss": loss, "half": loss.detach() / 2}

    h = train(Method(model), loader, opt, epochs=2, scheduler=sched)
    assert len(h["half"]) == len(h["loss"]) == 2 * len(loader)
    assert h["half"] == pytest.approx([v / 2 for v in h["loss"]])
    with pytest.raises(KeyError, match="without 'loss'"):
        train(model, loader, opt, step_fn=lambda m, b: {"mse": step(m, b)})


RUN = '''
import sys, time, torch
from torch.utils.data import DataLoader, TensorDataset
from ssl3d.train import make_optimizer, make_scheduler, train, TrainingInterrupted

torch.manual_seed(0)
x = torch.randn(64, 5)
y = x @ torch.randn(5, 1)
model = torch.nn.Sequential(torch.nn.Linear(5, 16), torch.nn.Dropout(0.3), torch.nn.Linear(16, 1))
opt = make_optimizer(model.parameters(), "adamw", lr=1e-2)
sched = make_scheduler(opt, "cosine", total_steps=4 * 8)
loader = DataLoader(TensorDataset(x, y), batch_size=8, shuffle=True, generator=torch.Generator().manual_seed(1))
slow = float(sys.argv[3])

def step(m, b):
    time.sleep(slow)  # room for the signal to land mid-epoch
    print("iteration", flush=True)
    return torch.nn.functional.mse_loss(m(b[0]), b[1])

ckpt = None if sys.argv[2] == "none" else sys.argv[2]
try:
    h = train(model, loader, opt, epochs=4, scheduler=sched, step_fn=step, checkpoint=ckpt)
except TrainingInterrupted:
    sys.exit(3)
torch.save({"model": model.state_dict(), "loss": h["loss"]}, sys.argv[1])
'''


def test_a_signal_interrupts_a_run_that_then_resumes_bit_identical(tmp_path):
    """A real SIGTERM mid-epoch: the process writes its checkpoint and exits; a new process resumes it and ends with
    the same weights, bit for bit, and the same loss history as an uninterrupted run (shuffling, dropout, Adam,
    a cosine schedule)."""
    import os
    import signal
    import subprocess
    import sys

    script = tmp_path / "run.py"
    script.write_text(RUN)
    env = {**os.environ, "SSL3D_PROGRESS": "0", "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, script, tmp_path / "straight.pt", "none", "0"], check=True, env=env)
    ckpt = tmp_path / "run.ckpt"
    proc = subprocess.Popen([sys.executable, script, tmp_path / "resumed.pt", ckpt, "0.05"], env=env,
                            stdout=subprocess.PIPE, text=True)
    for _ in range(11):  # let it get into the second epoch (8 iterations per epoch)
        assert proc.stdout.readline().startswith("iteration")
    proc.send_signal(signal.SIGTERM)
    proc.stdout.read()
    assert proc.wait(timeout=60) == 3, "the interrupted run exits through TrainingInterrupted"
    assert ckpt.is_file()
    subprocess.run([sys.executable, script, tmp_path / "resumed.pt", ckpt, "0"], check=True, env=env,
                   stdout=subprocess.DEVNULL)
    a, b = torch.load(tmp_path / "straight.pt"), torch.load(tmp_path / "resumed.pt")
    assert a["loss"] == b["loss"]
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k


def test_recompute_batchnorm_is_the_average_of_the_batch_statistics():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4), torch.nn.Dropout(0.5))
    net.train()
    batches = [torch.randn(16, 3) * 1e-3 + k for k in range(3)]  # tiny variance, shifting means
    pre = [net[0](b) for b in batches]  # (16, 4) inputs of the BatchNorm
    assert recompute_batchnorm(net, batches) == 3
    bn = net[1]
    torch.testing.assert_close(bn.running_mean, torch.stack([p.mean(0) for p in pre]).mean(0))
    torch.testing.assert_close(bn.running_var, torch.stack([p.var(0) for p in pre]).mean(0))  # unbiased, as BN
    assert bn.momentum == 0.1 and net.training  # settings and mode restored
    # the exponential average of a short run still remembers its start (variance 1); the recomputed one does not
    fresh = torch.nn.BatchNorm1d(4).train()
    for p in pre:
        fresh(p)
    assert float(fresh.running_var.min()) > 0.5 and float(bn.running_var.max()) < 1e-4
    before = bn.running_var.clone()
    with pytest.raises(ValueError, match="no batches"):
        recompute_batchnorm(net, [])
    assert torch.equal(bn.running_var, before)  # an empty input leaves the statistics alone


@pytest.mark.parametrize("freq", [1, 3, 250])
def test_exp_schedule_follows_the_released_trainer(freq):
    """PointContrast's trainer: ExponentialLR(γ), stepped after iteration 1 and after every freq-th iteration."""
    gamma, iters = 0.9, 700
    ref_opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    ref = torch.optim.lr_scheduler.ExponentialLR(ref_opt, gamma)
    expected = []
    for curr_iter in range(1, iters + 1):  # the released loop: train an iteration, then maybe step
        expected.append(ref_opt.param_groups[0]["lr"])
        ref_opt.step()
        if curr_iter % freq == 0 or (curr_iter == 1 and freq > 1):
            ref.step()
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    sched = make_scheduler(opt, "exp", total_steps=iters, gamma=gamma, lr_update_freq=freq)
    got = []
    for _ in range(iters):
        got.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert got == pytest.approx(expected, rel=1e-12, abs=0)
    assert exp_lr(gamma, freq)(0) == 1.0
    with pytest.raises(ValueError, match="update_freq"):
        exp_lr(gamma, 0)
