"""Worked solutions to the exercises of 07_transfer_benchmark.

Run them: `python notebooks/solutions/07_transfer_benchmark.py`; tests/test_solutions.py checks what each one claims
(on smaller data)."""

import math

import torch

from ssl3d import protocols as PR
from ssl3d.data import datasets as D
from ssl3d.models import build_model
from ssl3d.train import recompute_batchnorm


def exercise_1(arch: str = "point_transformer", **config) -> dict:
    """Two networks built after the same seed have the same digest; re-estimating one's BatchNorm statistics changes
    its digest although no trainable weight moved. It must: in eval mode (probes, evaluation) the running statistics
    are part of the function the network computes, so two networks that differ only there give different numbers."""
    torch.manual_seed(0)
    a = build_model(arch, **config)
    torch.manual_seed(0)
    b = build_model(arch, **config)
    same = PR.weights_digest(a) == PR.weights_digest(b)
    params_before = [p.detach().clone() for p in b.parameters()]
    shapes = D.ObjectDataset(2, 256, classes=["mug", "chair"], random_yaw=True)
    recompute_batchnorm(b, [D.collate_for(b)([shapes[i] for i in range(4)])])
    params_same = all(torch.equal(p, q) for p, q in zip(params_before, b.parameters(), strict=True))
    return {"same_seed_same_digest": same, "parameters_unchanged": params_same,
            "digest_after_bn": PR.weights_digest(a) != PR.weights_digest(b)}


def exercise_2(records: list[dict], method: str = "ACT", task: str = "scans", protocol: str = "linear_svm",
               budget=1, metric: str = "accuracy") -> tuple[float, float, int]:
    """Mean and sample standard deviation (n − 1) over seeds of one cell of the table, by hand."""
    vals = [r["value"] for r in records if (r["method"], r["task"], r["protocol"], r["budget"], r["metric"])
            == (method, task, protocol, budget, metric)]
    if not vals:
        raise ValueError(f"no records for {method}, {task}, {protocol}, budget {budget}")
    m = sum(vals) / len(vals)
    s = math.sqrt(sum((v - m) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else 0.0
    return m, s, len(vals)


# Exercise 3 (no code): the object records are still found — their settings did not change. No scene record is:
# `scene_finetune_steps` is part of the TrainSettings every scene key digests, so all 36 scene fine-tunings run
# again, and the records of notebooks 04 and 05 (24 steps) no longer match.

if __name__ == "__main__":
    print(exercise_1(num_group=8, group_size=16, embed_dim=32, encoder_dims=32, depth=1, num_heads=2))
    from ssl3d.report import read_records
    from ssl3d.utils import repo_root

    print(exercise_2(read_records(repo_root() / "results" / "smoke" / "transfer.csv")))
