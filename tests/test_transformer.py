"""The point tokenizer and the 3D Transformer backbone (ssl3d.models.transformer), and the loading of the authors'
released ACT checkpoints (ssl3d.models.released_act), against brute-force loops and hand-written references."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ssl3d import protocols as PR
from ssl3d.data import datasets as D
from ssl3d.models import build_model, load_backbone, save_backbone
from ssl3d.models import transformer as T
from ssl3d.models.released_act import load_act_checkpoint, released_head

TINY = {"num_group": 8, "group_size": 8, "encoder_dims": 16, "embed_dim": 16, "depth": 2, "num_heads": 2,
        "patch_dims": (8, 8, 16), "head_dims": (16,)}


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_thread):
    """One thread: small matmuls (conftest.one_thread)."""


def tiny(**kw):
    torch.manual_seed(0)
    return build_model("point_transformer", **{**TINY, **kw})


# ----------------------------------------------------------------------------------------------------------
# Tokenizer
# ----------------------------------------------------------------------------------------------------------
def brute_fps(p: np.ndarray, m: int) -> list[int]:
    chosen, dmin = [0], np.full(len(p), np.inf)
    for _ in range(m - 1):
        dmin = np.minimum(dmin, ((p - p[chosen[-1]]) ** 2).sum(1))
        chosen.append(int(dmin.argmax()))
    return chosen


def test_group_points_are_fps_centres_with_their_k_nearest_points(gen):
    pts = torch.rand(2, 60, 3, generator=gen, dtype=torch.float64)
    neigh, center = T.group_points(pts, 6, 5)
    assert neigh.shape == (2, 6, 5, 3) and center.shape == (2, 6, 3)
    for b in range(2):
        p = pts[b].numpy()
        idx = brute_fps(p, 6)
        np.testing.assert_array_equal(center[b].numpy(), p[idx])
        for g, c in enumerate(idx):
            order = np.argsort(((p - p[c]) ** 2).sum(1), kind="stable")[:5]  # nearest first, itself included
            np.testing.assert_allclose(neigh[b, g].numpy(), p[order] - p[c], atol=1e-12)


def test_group_points_errors_name_the_fix():
    with pytest.raises(ValueError, match="empty"):
        T.group_points(torch.zeros(1, 0, 3), 4, 4)
    with pytest.raises(ValueError, match="cannot give 16 groups of 8 points"):
        T.group_points(torch.rand(1, 10, 3), 16, 8)
    with pytest.raises(ValueError, match="NaN"):
        T.group_points(torch.full((1, 20, 3), float("nan")), 4, 4)
    with pytest.raises(ValueError, match="batch dimension"):
        T.group_points(torch.rand(20, 3), 4, 4)
    with pytest.raises(ValueError, match="cannot give"):
        tiny().encode({"points": torch.rand(2, 6, 3)})


@pytest.mark.parametrize("b,g,ratio", [(4, 64, 0.8), (3, 32, 0.6), (5, 10, 0.75), (2, 7, 0.5), (3, 5, 0.0)])
def test_masking_keeps_exactly_the_requested_ratio(b, g, ratio, gen):
    counts = torch.zeros(g)
    for _ in range(50):
        mask = T.random_mask(b, g, ratio, generator=gen)
        assert mask.dtype == torch.bool and mask.shape == (b, g)
        assert (mask.sum(1) == int(ratio * g)).all()
        counts += mask.float().sum(0)
    if 0 < ratio:
        assert (counts > 0).all() and (counts < 50 * b).all()  # every position is sometimes masked, sometimes not
    with pytest.raises(ValueError, match="at least one visible"):
        T.random_mask(b, g, 1.0)


# ----------------------------------------------------------------------------------------------------------
# Blocks against a hand-written reference
# ----------------------------------------------------------------------------------------------------------
def ref_layernorm(x, w, b, eps):
    m = x.mean(-1, keepdim=True)
    v = ((x - m) ** 2).mean(-1, keepdim=True)
    return (x - m) / torch.sqrt(v + eps) * w + b


def ref_gelu(x):
    return 0.5 * x * (1 + torch.erf(x / math.sqrt(2)))


def ref_attention(x, w_qkv, b_qkv, w_o, b_o, heads):
    """Per-head loop: q, k, v = the thirds of x W_qkvᵀ; heads are contiguous slices of each third."""
    c = x.shape[-1]
    qkv = x @ w_qkv.T + (0 if b_qkv is None else b_qkv)
    q, k, v = qkv[..., :c], qkv[..., c:2 * c], qkv[..., 2 * c:]
    d, outs = c // heads, []
    for h in range(heads):
        sl = slice(h * d, (h + 1) * d)
        a = torch.softmax(q[..., sl] @ k[..., sl].transpose(-1, -2) / math.sqrt(d), dim=-1)
        outs.append(a @ v[..., sl])
    return torch.cat(outs, -1) @ w_o.T + b_o


def ref_block(x, sd, pre, heads, eps):
    g = lambda k: sd[pre + k]  # noqa: E731
    h = ref_layernorm(x, g("norm1.weight"), g("norm1.bias"), eps)
    x = x + ref_attention(h, g("attn.qkv.weight"), sd.get(pre + "attn.qkv.bias"), g("attn.proj.weight"),
                          g("attn.proj.bias"), heads)
    h = ref_layernorm(x, g("norm2.weight"), g("norm2.bias"), eps)
    return x + ref_gelu(h @ g("mlp.fc1.weight").T + g("mlp.fc1.bias")) @ g("mlp.fc2.weight").T + g("mlp.fc2.bias")


@pytest.mark.parametrize("qkv_bias,eps", [(False, 1e-5), (True, 1e-6)])  # ACT's block, timm's ViT block
def test_block_matches_a_hand_written_transformer_block(qkv_bias, eps, gen):
    torch.manual_seed(0)
    blk = T.Block(12, 3, qkv_bias=qkv_bias, eps=eps, drop_path=0.3).double().eval()
    for p in blk.parameters():
        torch.nn.init.normal_(p, std=0.3, generator=gen)
    x = torch.randn(2, 7, 12, generator=gen, dtype=torch.float64)
    sd = blk.state_dict()
    torch.testing.assert_close(blk(x), ref_block(x, sd, "", 3, eps))


def test_drop_path_drops_whole_samples_in_training_only():
    dp = T.DropPath(0.5).train()
    torch.manual_seed(0)
    y = dp(torch.ones(400, 3, 2))
    kept = y.flatten(1).amax(1)
    assert set(kept.unique().tolist()) <= {0.0, 2.0} and 0.35 < (kept > 0).float().mean() < 0.65
    assert (y.flatten(1) == kept[:, None]).all()  # all or nothing per sample
    x = torch.randn(4, 3)
    assert torch.equal(dp.eval()(x), x)


# ----------------------------------------------------------------------------------------------------------
# Tokens → points
# ----------------------------------------------------------------------------------------------------------
def test_token_features_reach_the_points_like_a_brute_force_loop(gen):
    pts = torch.rand(2, 30, 3, generator=gen, dtype=torch.float64)
    cen = torch.rand(2, 5, 3, generator=gen, dtype=torch.float64)
    tok = torch.randn(2, 5, 4, generator=gen, dtype=torch.float64)
    interp, near = T.interpolate_tokens(pts, cen, tok), T.nearest_token(pts, cen, tok)
    for b in range(2):
        for i in range(30):
            d2 = [float(((pts[b, i] - cen[b, j]) ** 2).sum()) for j in range(5)]
            order = sorted(range(5), key=lambda j: d2[j])
            w = [1 / (d2[j] + 1e-8) for j in order[:3]]
            want = sum(wj * tok[b, j] for wj, j in zip(w, order[:3])) / sum(w)
            torch.testing.assert_close(interp[b, i], want)
            torch.testing.assert_close(near[b, i], tok[b, order[0]])


# ----------------------------------------------------------------------------------------------------------
# The backbone contract
# ----------------------------------------------------------------------------------------------------------
def test_backbone_contract_and_descriptors(gen, tmp_path):
    net = tiny().eval()
    pts = torch.rand(3, 64, 3, generator=gen) * 2 - 1
    out = net(pts)
    c = net.embed_dim
    assert net.kind == "point" and net.in_channels == 0 and net.feat_dim == net.global_dim == 2 * c
    assert out["feats"].shape == (3, 64, 2 * c) and out["global_feats"].shape == (3, 2 * c)
    cls, z = net.forward_tokens(net.embed(net.group(pts)[0]), out["center"])
    torch.testing.assert_close(out["global_feats"], torch.cat([cls, z.max(1).values], -1))  # ACT's [cls ‖ max]
    torch.testing.assert_close(out["feats"][..., :c], T.interpolate_tokens(pts, out["center"], z))
    torch.testing.assert_close(out["feats"][..., c:], z.max(1).values[:, None].expand(-1, 64, -1))
    enc = net.encode({"points": pts})
    assert set(enc) == {"feats", "global_feats"} and torch.equal(enc["global_feats"], out["global_feats"])
    again = load_backbone(save_backbone(net, tmp_path / "pt.pt"))
    assert again.config == net.config and torch.equal(again.eval().encode({"points": pts})["feats"], enc["feats"])
    with pytest.raises(ValueError, match="in_channels=0"):
        build_model("point_transformer", in_channels=3)


def test_masked_tokens_do_not_reach_the_student_encoder(gen):
    net = tiny().eval()
    tok, cen = torch.randn(2, 8, 16, generator=gen), torch.randn(2, 8, 3, generator=gen)
    vis = ~T.random_mask(2, 8, 0.5, generator=gen)
    cls, z = net.forward_tokens(tok, cen, visible=vis)
    tok2, cen2 = tok.clone(), cen.clone()
    tok2[~vis], cen2[~vis] = 100.0, -5.0  # change only the masked tokens
    cls2, z2 = net.forward_tokens(tok2, cen2, visible=vis)
    assert z.shape == (2, 4, 16) and torch.equal(z, z2) and torch.equal(cls, cls2)
    with pytest.raises(ValueError, match="same number of tokens"):
        net.forward_tokens(tok, cen, visible=torch.arange(8).expand(2, 8) < torch.tensor([[3], [4]]))


def test_shared_protocols_run_on_it_unchanged():
    classes = ["chair", "mug", "lamp"]
    train, test = D.ObjectDataset(4, 64, "train", classes=classes), D.ObjectDataset(2, 64, "test", classes=classes)
    net = tiny()
    st = PR.TrainSettings(steps=2, batch_size=4)
    recs = PR.linear_probe(net, train, test, method="act", budget=2, Cs=(0.1, 1.0))
    recs += PR.finetune_classification(net, train, test, method="act", budget=2, settings=st)
    recs += PR.finetune_partseg(net, train, test, method="act", budget=1, settings=st)
    assert [r["protocol"] for r in recs] == ["linear_svm"] * 2 + ["finetune"] + ["finetune_partseg"] * 2
    assert all(r["backbone"] == "point_transformer" and 0 <= r["value"] <= 100 for r in recs)


# ----------------------------------------------------------------------------------------------------------
# Released checkpoints: mock files in exactly the official format (key names and shapes from RunpeiDong/ACT
# models/act.py — PointTransformer, VisableOnlyMaskTransformer, ACT_PointDistillation — transcribed by hand)
# ----------------------------------------------------------------------------------------------------------
def bn_keys(prefix, c):
    return {f"{prefix}.weight": (c,), f"{prefix}.bias": (c,), f"{prefix}.running_mean": (c,),
            f"{prefix}.running_var": (c,), f"{prefix}.num_batches_tracked": ()}


def official_encoder_keys(c, depth, encoder_dims):
    """PointTransformer (fine-tuning) / VisableOnlyMaskTransformer (pre-training) encoder keys and shapes."""
    k = {"encoder.first_conv.0.weight": (128, 3, 1), "encoder.first_conv.0.bias": (128,),
         **bn_keys("encoder.first_conv.1", 128),
         "encoder.first_conv.3.weight": (256, 128, 1), "encoder.first_conv.3.bias": (256,),
         "encoder.second_conv.0.weight": (512, 512, 1), "encoder.second_conv.0.bias": (512,),
         **bn_keys("encoder.second_conv.1", 512),
         "encoder.second_conv.3.weight": (encoder_dims, 512, 1), "encoder.second_conv.3.bias": (encoder_dims,),
         "cls_token": (1, 1, c), "cls_pos": (1, 1, c),
         "pos_embed.0.weight": (128, 3), "pos_embed.0.bias": (128,), "pos_embed.2.weight": (c, 128),
         "pos_embed.2.bias": (c,), "norm.weight": (c,), "norm.bias": (c,)}
    if encoder_dims != c:
        k.update({"reduce_dim.weight": (c, encoder_dims), "reduce_dim.bias": (c,)})
    for i in range(depth):
        p = f"blocks.blocks.{i}."
        k.update({p + "norm1.weight": (c,), p + "norm1.bias": (c,), p + "attn.qkv.weight": (3 * c, c),
                  p + "attn.proj.weight": (c, c), p + "attn.proj.bias": (c,), p + "norm2.weight": (c,),
                  p + "norm2.bias": (c,), p + "mlp.fc1.weight": (4 * c, c), p + "mlp.fc1.bias": (4 * c,),
                  p + "mlp.fc2.weight": (c, 4 * c), p + "mlp.fc2.bias": (c,)})
    return k


def official_finetune_head_keys(c, classes):
    return {"cls_head_finetune.0.weight": (256, 2 * c), "cls_head_finetune.0.bias": (256,),
            **bn_keys("cls_head_finetune.1", 256),
            "cls_head_finetune.4.weight": (256, 256), "cls_head_finetune.4.bias": (256,),
            **bn_keys("cls_head_finetune.5", 256),
            "cls_head_finetune.8.weight": (classes, 256), "cls_head_finetune.8.bias": (classes,)}


def random_state(shapes, gen):
    out = {}
    for k, s in shapes.items():
        if k.endswith("num_batches_tracked"):
            out[k] = torch.tensor(7)
        elif k.endswith("running_var"):
            out[k] = torch.rand(s, generator=gen) + 0.5
        else:
            out[k] = torch.randn(s, generator=gen) * 0.1
    return out


def save_official(path, state, **extra):
    torch.save({"base_model": {"module." + k: v for k, v in state.items()}, "optimizer": {"state": {}},
                "epoch": 299, "metrics": {"acc": 88.21, "acc_avg": 0.0}, "best_metrics": {"acc": 88.21}, **extra}, path)
    return path


def ref_official_logits(sd, neigh, center, heads, depth):
    """ACT's PointTransformer.forward + cls_head_finetune (eval), written with F ops on the raw tensors."""
    bn = lambda x, p: F.batch_norm(x, sd[p + ".running_mean"], sd[p + ".running_var"], sd[p + ".weight"],  # noqa
                                   sd[p + ".bias"], False, 0.0, 1e-5)
    b, g, n, _ = neigh.shape
    x = neigh.reshape(b * g, n, 3).transpose(2, 1)  # (BG, 3, n), Conv1d layout as in the code
    f = F.conv1d(F.relu(bn(F.conv1d(x, sd["encoder.first_conv.0.weight"], sd["encoder.first_conv.0.bias"]),
                           "encoder.first_conv.1")), sd["encoder.first_conv.3.weight"], sd["encoder.first_conv.3.bias"])
    f = torch.cat([f.max(2, keepdim=True).values.expand(-1, -1, n), f], 1)
    f = F.conv1d(F.relu(bn(F.conv1d(f, sd["encoder.second_conv.0.weight"], sd["encoder.second_conv.0.bias"]),
                           "encoder.second_conv.1")), sd["encoder.second_conv.3.weight"],
                 sd["encoder.second_conv.3.bias"])
    tok = f.max(2).values.reshape(b, g, -1)
    if "reduce_dim.weight" in sd:
        tok = tok @ sd["reduce_dim.weight"].T + sd["reduce_dim.bias"]
    c = tok.shape[-1]
    pos = ref_gelu(center @ sd["pos_embed.0.weight"].T + sd["pos_embed.0.bias"]) @ sd["pos_embed.2.weight"].T \
        + sd["pos_embed.2.bias"]
    x = torch.cat([sd["cls_token"].expand(b, -1, -1), tok], 1)
    pos = torch.cat([sd["cls_pos"].expand(b, -1, -1), pos], 1)
    for i in range(depth):
        x = ref_block(x + pos, sd, f"blocks.blocks.{i}.", heads, 1e-5)
    x = ref_layernorm(x, sd["norm.weight"], sd["norm.bias"], 1e-5)
    h = torch.cat([x[:, 0], x[:, 1:].max(1).values], -1)
    assert h.shape[-1] == 2 * c
    for lin, norm in (("0", "1"), ("4", "5")):
        h = F.relu(bn(h @ sd[f"cls_head_finetune.{lin}.weight"].T + sd[f"cls_head_finetune.{lin}.bias"],
                      f"cls_head_finetune.{norm}"))
    return h @ sd["cls_head_finetune.8.weight"].T + sd["cls_head_finetune.8.bias"]


def test_released_finetuned_checkpoint_loads_and_computes_like_the_official_model(tmp_path, gen):
    c, depth, heads, classes = 32, 2, 4, 15
    state = random_state({**official_encoder_keys(c, depth, c), **official_finetune_head_keys(c, classes)}, gen)
    path = save_official(tmp_path / "scan_hardest.pth", state)
    net, info = load_act_checkpoint(path, num_heads=heads, num_group=16, group_size=32)
    assert info["epoch"] == 299 and info["ignored"] == [] and info["config"]["depth"] == depth
    assert isinstance(net.reduce_dim, torch.nn.Identity)
    for k, v in net.state_dict().items():
        assert torch.equal(v, state[k]), k
    head = released_head(info["head"])
    pts = torch.rand(2, 128, 3, generator=gen) * 2 - 1
    net.eval()
    logits = head(net.encode({"points": pts})["global_feats"])
    neigh, center = T.group_points(pts, 16, 32)
    torch.testing.assert_close(logits, ref_official_logits(state, neigh, center, heads, depth), rtol=1e-4, atol=1e-5)


def test_released_pretrained_checkpoints_load_with_the_pretraining_keys_listed(tmp_path, gen):
    c, depth = 32, 2
    enc = official_encoder_keys(c, depth, c)
    enc.update({"lm_head.weight": (8192, c), "lm_head.bias": (8192,), "cls_head.0.weight": (512, c),
                "cls_head.0.bias": (512,), "cls_head.2.weight": (512, 512), "cls_head.2.bias": (512,)})
    other = {"mask_token": (1, 1, c), "decoder_pos_embed.0.weight": (128, 3), "decoder_pos_embed.0.bias": (128,),
             "decoder_pos_embed.2.weight": (c, 128), "decoder_pos_embed.2.bias": (c,),
             "ACT_decoder.blocks.0.norm1.weight": (c,), "ACT_decoder.norm.weight": (c,), "ACT_decoder.norm.bias": (c,),
             "proj_head.weight": (384, c), "proj_head.bias": (384,), "dvae_tokenizer.codebook": (8192, 384),
             "dvae_tokenizer.visual_prompt_token": (1, 64, 768)}
    state = random_state({**{"ACT_encoder." + k: s for k, s in enc.items()}, **other}, gen)
    net, info = load_act_checkpoint(save_official(tmp_path / "act_pretrain.pth", state), num_heads=4)
    assert info["head"] == {} and set(info["ignored"]) == set(other) | {
        "ACT_encoder.lm_head.weight", "ACT_encoder.lm_head.bias", "ACT_encoder.cls_head.0.weight",
        "ACT_encoder.cls_head.0.bias", "ACT_encoder.cls_head.2.weight", "ACT_encoder.cls_head.2.bias"}
    assert torch.equal(net.blocks.blocks[1].attn.qkv.weight, state["ACT_encoder.blocks.blocks.1.attn.qkv.weight"])
    with pytest.raises(ValueError, match="pre-training checkpoint"):
        released_head(info["head"])
    # Point-BERT's layout: transformer_q prefix, a 256-d patch embedding and a reduce_dim Linear to the width
    pb = random_state({"transformer_q." + k: s for k, s in official_encoder_keys(c, 1, 24).items()}, gen)
    pb["transformer_q.mask_token"] = torch.zeros(1, 1, c)
    pb["transformer_k.cls_token"] = torch.zeros(1, 1, c)
    net, info = load_act_checkpoint(save_official(tmp_path / "pointbert.pth", pb), num_heads=4)
    assert net.reduce_dim.weight.shape == (c, 24) and set(info["ignored"]) == {"transformer_q.mask_token",
                                                                                 "transformer_k.cls_token"}


def test_mismatched_released_keys_are_listed(tmp_path, gen):
    c = 32
    state = random_state(official_encoder_keys(c, 1, c), gen)
    extra = dict(state, **{"blocks.blocks.0.attn.q_bias": torch.zeros(c)})
    with pytest.raises(ValueError, match=r"unexpected keys \[blocks.blocks.0.attn.q_bias\]"):
        load_act_checkpoint(save_official(tmp_path / "a.pth", extra), num_heads=4)
    missing = {k: v for k, v in state.items() if k != "norm.weight"}
    with pytest.raises(ValueError, match=r"missing keys \[norm.weight\]"):
        load_act_checkpoint(save_official(tmp_path / "b.pth", missing), num_heads=4)
    with pytest.raises(ValueError, match=r"shape mismatches \[blocks.blocks.0.mlp.fc1.weight"):
        load_act_checkpoint(save_official(tmp_path / "c.pth", state), num_heads=4,
                            into=build_model("point_transformer", embed_dim=32, encoder_dims=32, depth=1, num_heads=4,
                                             mlp_ratio=2.0))
    with pytest.raises(FileNotFoundError, match="model zoo"):
        load_act_checkpoint(tmp_path / "none.pth")


def official_dvae_keys(enc, d, dec, v, k, width, depth, p):
    """ACTPromptedDiscreteVAEwithVIT state dict keys and shapes (RunpeiDong/ACT models/dvae.py)."""
    keys = {kk: s for kk, s in official_encoder_keys(8, 0, enc).items() if kk.startswith("encoder.")}

    def dgcnn(name, cin, cout):
        out = {f"{name}.input_trans.weight": (128, cin, 1), f"{name}.input_trans.bias": (128,)}
        for i, (ci, co) in enumerate([(256, 256), (512, 512), (1024, 512), (1024, 1024)], start=1):
            out.update({f"{name}.layer{i}.0.weight": (co, ci, 1, 1), f"{name}.layer{i}.1.weight": (co,),
                        f"{name}.layer{i}.1.bias": (co,)})
        out.update({f"{name}.layer5.0.weight": (cout, 2304, 1), f"{name}.layer5.1.weight": (cout,),
                    f"{name}.layer5.1.bias": (cout,)})
        return out

    keys.update(dgcnn("dgcnn_1", enc, v))
    keys.update(dgcnn("dgcnn_2", d, dec))
    keys.update({"codebook": (v, d), "decoder.mlp.0.weight": (1024, dec), "decoder.mlp.0.bias": (1024,),
                 "decoder.mlp.2.weight": (1024, 1024), "decoder.mlp.2.bias": (1024,),
                 "decoder.mlp.4.weight": (3 * k // 4, 1024), "decoder.mlp.4.bias": (3 * k // 4,),
                 "decoder.final_conv.0.weight": (512, dec + 5, 1), "decoder.final_conv.0.bias": (512,),
                 **bn_keys("decoder.final_conv.1", 512), "decoder.final_conv.3.weight": (512, 512, 1),
                 "decoder.final_conv.3.bias": (512,), **bn_keys("decoder.final_conv.4", 512),
                 "decoder.final_conv.6.weight": (3, 512, 1), "decoder.final_conv.6.bias": (3,),
                 "visual_embed.1.weight": (width,), "visual_embed.1.bias": (width,),
                 "proj_pre.weight": (width, d), "proj_pre.bias": (width,), "visual_pos_embed.0.weight": (128, 3),
                 "visual_pos_embed.0.bias": (128,), "visual_pos_embed.2.weight": (width, 128),
                 "visual_pos_embed.2.bias": (width,), "proj_post.weight": (d, width), "proj_post.bias": (d,),
                 "visual_prompt_token": (1, p, width), "visual_prompt_pos": (1, p, width),
                 "deep_prompt_tokens": (depth - 1, p, width), "deep_prompt_pos": (depth - 1, p, width)})
    for i in range(depth):  # timm ViT blocks
        b = f"visual_embed.0.{i}."
        keys.update({b + "norm1.weight": (width,), b + "norm1.bias": (width,),
                     b + "attn.qkv.weight": (3 * width, width), b + "attn.qkv.bias": (3 * width,),
                     b + "attn.proj.weight": (width, width), b + "attn.proj.bias": (width,),
                     b + "norm2.weight": (width,), b + "norm2.bias": (width,),
                     b + "mlp.fc1.weight": (4 * width, width), b + "mlp.fc1.bias": (4 * width,),
                     b + "mlp.fc2.weight": (width, 4 * width), b + "mlp.fc2.bias": (width,)})
    return keys


def test_released_dvae_checkpoint_loads_with_its_frozen_vit(tmp_path, gen):
    from ssl3d.models.released_act import load_act_dvae, map_dvae_keys

    state = random_state(official_dvae_keys(enc=32, d=32, dec=32, v=64, k=32, width=384, depth=2, p=4), gen)
    dvae = load_act_dvae(save_official(tmp_path / "ckpt_act_dvae.pth", state), num_group=8)
    assert dvae.config["teacher"] == "vit_small_patch16_384" and dvae.config["teacher_depth"] == 2
    assert dvae.config["num_prompt_token"] == 4 and dvae.config["group_size"] == 32 and dvae.num_tokens == 64
    assert torch.equal(dvae.visual_embed.layers[1].attn.qkv.bias, state["visual_embed.0.1.attn.qkv.bias"])
    assert torch.equal(dvae.visual_embed.norm.weight, state["visual_embed.1.weight"])
    assert torch.equal(dvae.dgcnn_1.layer4[0].weight, state["dgcnn_1.layer4.0.weight"])
    assert all(not p.requires_grad for p in dvae.visual_embed.parameters())
    out = dvae.eval()(torch.rand(2, 64, 3, generator=gen))
    assert out["fine"].shape == (2, 8, 32, 3) and torch.isfinite(out["fine"]).all()
    bert = {"module.visual_embed.0.layer.3.attention.self.query.weight": torch.zeros(1)}
    assert map_dvae_keys(bert) == ({"visual_embed.layers.3.attention.self.query.weight": torch.zeros(1)}, "bert")
    state["dvae_extra.weight"] = torch.zeros(1)
    with pytest.raises(ValueError, match=r"unexpected keys \[dvae_extra.weight\]"):
        load_act_dvae(save_official(tmp_path / "bad.pth", state), num_group=8)
