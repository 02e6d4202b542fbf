"""Multi-process pre-training (torchrun, gloo on the CPU): the same trajectory as one process with the same global
batch; the command line refuses bad configs."""

import os
import subprocess
import sys

import pytest
import torch
import yaml

from ssl3d.pretrain import load_config

CONFIG = {
    "backbone": {"name": "pointnet", "args": {"width": 0.125}},
    "method": {"args": {"J": 4, "eps": 1.0e-4}},
    "data": {"task": "objects", "split": "train",
             "options": {"n_per_class": 2, "n_points": 64, "classes": ["chair", "mug", "lamp", "table"]}},
    "train": {"epochs": 2, "batch_size": 4, "optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "scheduler": None,
              "seed": 0},
}


def _run(tmp_path, name, nproc):
    cfg = {**CONFIG, "output": {"dir": str(tmp_path / name)}}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "SSL3D_PROGRESS": "0", "OMP_NUM_THREADS": "1", "SSL3D_THREADS": "1"}
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--master_port",
                str(29500 + nproc + os.getpid() % 1000)] if nproc > 1 else [sys.executable]
    out = subprocess.run([*launcher, "-m", "ssl3d.pretrain", "gmm", "--config", str(path)], env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    ckpt = torch.load(tmp_path / name / "gmm.ckpt", weights_only=True)
    model = torch.load(tmp_path / name / "gmm_backbone.pt", weights_only=True)["state_dict"]
    return ckpt["extra"]["history"]["loss"], model


def test_two_processes_follow_one_process_with_the_same_global_batch(tmp_path):
    """2 × batch 2 (gloo, synchronised BatchNorm, averaged gradients) ≈ 1 × batch 4, step by step."""
    loss1, w1 = _run(tmp_path, "one", 1)
    loss2, w2 = _run(tmp_path, "two", 2)
    assert len(loss1) == len(loss2) == 4
    assert loss1 == pytest.approx(loss2, rel=1e-4, abs=1e-5)
    for k in w1:
        torch.testing.assert_close(w2[k], w1[k], rtol=1e-3, atol=1e-4, msg=k)
    assert loss1[0] == pytest.approx(loss2[0], rel=1e-5)  # first step: same weights, same data, global BatchNorm


def test_bad_configs_are_refused_with_the_key_named(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**CONFIG, "train": {**CONFIG["train"], "epoch": 3}}))
    with pytest.raises(KeyError, match=r"unknown key\(s\) \['epoch'\] in section 'train'"):
        load_config(bad)
    bad.write_text(yaml.safe_dump({**CONFIG, "optim": {}}))
    with pytest.raises(KeyError, match="unknown section 'optim'"):
        load_config(bad)
    with pytest.raises(FileNotFoundError):
        load_config(tmp_path / "missing.yaml")
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump(CONFIG))
    assert load_config(good, ["train.epochs=7"])["train"]["epochs"] == 7
    with pytest.raises(ValueError, match="section.key=value"):
        load_config(good, ["epochs=7"])
    out = subprocess.run([sys.executable, "-m", "ssl3d.pretrain", "gmm", "--config", str(bad)], capture_output=True,
                         text=True, env={**os.environ, "SSL3D_PROGRESS": "0"})
    assert out.returncode == 2 and "unknown section 'optim'" in out.stderr


# ----------------------------------------------------------------------------------------------------------
# Every shipped pre-training config runs (one epoch, tiny sizes, in-process — the code path torchrun runs per rank)
# ----------------------------------------------------------------------------------------------------------
ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]
TINY_OBJECTS = {"n_per_class": 1, "n_points": 128, "classes": ["chair", "mug"]}


def _tiny(name, tmp_path) -> dict:
    from test_act import TINY_STUDENT, tiny_dvae  # pytest puts tests/ on sys.path
    from test_image_to_point import tiny_teacher

    from ssl3d.act import save_dvae
    from ssl3d.models.resunet2d import save_resunet2d

    sparse = {"name": "res16unet14tiny", "args": {"in_channels": 0, "out_channels": 8}}
    if name == "gmm":
        return {"backbone": {"name": "pointnet", "args": {"width": 0.125}}, "method": {"args": {"J": 4}},
                "data": {"options": TINY_OBJECTS}}
    if name == "pointcontrast":
        return {"backbone": sparse, "method": {"args": {"num_pos": 64}},
                "data": {"options": {"voxel_size": 0.2, "n_rooms": 1, "frames_per_room": 4, "width": 48,
                                     "height": 36}}}
    if name == "image_to_point":
        teacher = save_resunet2d(tiny_teacher(), tmp_path / "teacher2d.pt")
        return {"backbone": sparse, "method": {"args": {"teacher": str(teacher), "num_pairs": 32, "voxel_size": 0.2}},
                "data": {"options": {"n_rooms": 1, "frames_per_room": 2, "voxel_size": 0.2, "width": 32,
                                     "height": 24}}}
    if name == "act":
        teacher = save_dvae(tiny_dvae(), tmp_path / "dvae.pt")
        return {"backbone": {"name": "point_transformer", "args": TINY_STUDENT},
                "method": {"args": {"teacher": str(teacher)}}, "data": {"options": TINY_OBJECTS}}
    raise KeyError(name)


@pytest.mark.parametrize("name", sorted(p.stem for p in (ROOT / "configs" / "pretrain").glob("*.yaml")))
def test_every_pretraining_config_runs_and_writes_a_rebuildable_backbone(tmp_path, name):
    from ssl3d.models import load_backbone
    from ssl3d.pretrain import run

    cfg = load_config(ROOT / "configs" / "pretrain" / f"{name}.yaml")
    tiny = _tiny(name, tmp_path)
    cfg["backbone"] = tiny["backbone"]
    cfg["method"]["args"].update(tiny["method"]["args"])
    cfg["data"]["options"] = tiny["data"]["options"]
    cfg["train"].update(epochs=1, batch_size=2, checkpoint_every=None, warmup=0, device="cpu")
    cfg["output"] = {"dir": str(tmp_path / "out")}
    res = run(name, cfg)
    assert all(torch.isfinite(torch.tensor(res["history"]["loss"])))
    net, meta = load_backbone(res["backbone_path"], return_meta=True)
    assert meta["method"] == name and type(net).__name__ == {"gmm": "PointNet", "act": "PointTransformer"}.get(
        name, "Res16UNet14Tiny")
    assert res["checkpoint"].is_file()
