"""Load the authors' released ACT (and Point-BERT) checkpoints into :class:`~ssl3d.models.transformer.PointTransformer`.

    net, info = load_act_checkpoint("ckpt_act_pretrain.pth")                     # pre-trained student
    net, info = load_act_checkpoint("scan_hardest.pth", num_group=128)           # ScanObjectNN-fine-tuned
    head = released_head(info["head"])                                           # its cls_head_finetune
    dvae = load_act_dvae("ckpt_act_dvae.pth")                                    # the stage-1 teacher (ViT-B inside)

The files (RunpeiDong/ACT ``tools/builder.py: save_checkpoint``) are ``torch.save`` dicts
``{"base_model": state_dict, "optimizer": …, "epoch": …, "metrics": …, "best_metrics": …}``; the state dict of a
model wrapped in ``nn.DataParallel`` has every key prefixed ``module.``. The key map (the same steps as the
official ``PointTransformer.load_model_from_ckpt``, plus Point-BERT's layout):

=================================================  =============================================================
file key                                           ssl3d key
=================================================  =============================================================
``module.<k>``                                     ``<k>`` (DataParallel prefix stripped)
``ACT_encoder.<k>`` (pre-training, ACT)            ``<k>`` — the student encoder of ``ACT_PointDistillation``
``transformer_q.<k>`` (pre-training, Point-BERT)   ``<k>`` — the query encoder of Point-BERT
``base_model.<k>``                                 ``<k>``
``encoder.first_conv.*``, ``encoder.second_conv.*``  the same (mini-PointNet, ``Conv1d`` weights kept as they are)
``reduce_dim.*``, ``cls_token``, ``cls_pos``,      the same
``pos_embed.{0,2}.*``, ``blocks.blocks.{i}.*``,
``norm.*``
``cls_head_finetune.*`` (fine-tuned files)         returned apart as ``info["head"]`` (:func:`released_head`)
=================================================  =============================================================

Keys that belong to pre-training only are dropped and listed in ``info["ignored"]``: the encoder's ``lm_head``
and ``cls_head``, and in a pre-training file every key outside the student encoder (``dvae_tokenizer.*``,
``ACT_decoder.*``, ``mask_token``, ``decoder_pos_embed.*``, ``proj_head.*``; Point-BERT: ``transformer_k.*``,
``dvae.*``, ``queue``…). Anything else that does not match, and any backbone key the file lacks or has with another
shape, is an error that lists the keys. The architecture is read from the shapes (depth, width, patch widths,
``reduce_dim``); the number of heads and the grouping are not in the weights — pass them (ACT: 6 heads; 64 groups
for 1,024 points, 128 for the 2,048-point ScanObjectNN fine-tuning; groups of 32).
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from torch import nn

from ssl3d.models import load_state_dict_checked
from ssl3d.models.transformer import PointTransformer

__all__ = ["read_released_state", "map_released_keys", "released_config", "load_act_checkpoint", "released_head",
           "map_dvae_keys", "load_act_dvae"]

_ENCODER_PREFIXES = ("ACT_encoder.", "transformer_q.", "base_model.")
_PRETRAIN_ONLY_IN_ENCODER = ("lm_head.", "cls_head.")


def read_released_state(path: str | Path, trusted: bool = False) -> tuple[dict[str, torch.Tensor], dict]:
    """(state dict, the file's other entries) of a released checkpoint. ``weights_only`` loading unless
    ``trusted=True`` (only for files whose origin you trust: it runs pickled code)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"released checkpoint {path} does not exist: download it from the ACT model zoo "
                                f"(model_zoo/MODEL_ZOO.md of RunpeiDong/ACT) and pass its path")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=not trusted)
    except Exception as e:
        raise ValueError(f"{path} could not be read with weights_only=True ({type(e).__name__}: {e}); if you trust "
                         f"the file, pass trusted=True") from e
    if not isinstance(ckpt, dict):
        raise ValueError(f"{path} holds a {type(ckpt).__name__}, not a checkpoint dict")
    for key in ("base_model", "model", "state_dict"):
        if isinstance(ckpt.get(key), dict):
            return dict(ckpt[key]), {k: v for k, v in ckpt.items() if k != key}
    if all(isinstance(v, torch.Tensor) for v in ckpt.values()):
        return dict(ckpt), {}
    raise ValueError(f"{path} has no 'base_model' / 'model' / 'state_dict' entry (keys {sorted(ckpt)}); it is not an "
                     f"ACT or Point-BERT checkpoint")


def map_released_keys(state: dict[str, torch.Tensor]) -> tuple[dict, dict, list[str]]:
    """Apply the key map (module docstring): → (backbone state, head state, ignored keys)."""
    state = {k.removeprefix("module."): v for k, v in state.items()}
    prefix = next((p for p in _ENCODER_PREFIXES if any(k.startswith(p) for k in state)), None)
    backbone, head, ignored = {}, {}, []
    for k, v in state.items():
        if prefix is not None:
            if not k.startswith(prefix):
                ignored.append(k)  # dVAE teacher, decoder, momentum encoder, queue…: pre-training only
                continue
            k = k[len(prefix):]
        if k.startswith("cls_head_finetune."):
            head[k[len("cls_head_finetune."):]] = v
        elif k.startswith(_PRETRAIN_ONLY_IN_ENCODER) or (k == "mask_token" and prefix == "transformer_q."):
            ignored.append((prefix or "") + k)
        else:
            backbone[k] = v
    return backbone, head, ignored


def released_config(backbone_state: dict[str, torch.Tensor], num_heads: int = 6, num_group: int = 64,
                    group_size: int = 32) -> dict:
    """PointTransformer constructor arguments read from the shapes of a mapped state dict."""
    need = ("cls_token", "encoder.first_conv.0.weight", "encoder.first_conv.3.weight", "encoder.second_conv.0.weight",
            "encoder.second_conv.3.weight")
    missing = [k for k in need if k not in backbone_state]
    if missing:
        raise ValueError(f"the checkpoint has no PointTransformer encoder (missing {missing}; it has "
                         f"{sorted(backbone_state)[:8]} …): pass an ACT / Point-BERT pre-trained or fine-tuned file")
    blocks = {int(m.group(1)) for k in backbone_state if (m := re.match(r"blocks\.blocks\.(\d+)\.", k))}
    if not blocks:
        raise ValueError("the checkpoint has no Transformer blocks (blocks.blocks.<i>.*)")
    embed = backbone_state["cls_token"].shape[-1]
    return {"num_group": num_group, "group_size": group_size,
            "encoder_dims": backbone_state["encoder.second_conv.3.weight"].shape[0], "embed_dim": embed,
            "depth": max(blocks) + 1, "num_heads": num_heads,
            "patch_dims": (backbone_state["encoder.first_conv.0.weight"].shape[0],
                           backbone_state["encoder.first_conv.3.weight"].shape[0],
                           backbone_state["encoder.second_conv.0.weight"].shape[0])}


def load_act_checkpoint(path: str | Path, num_heads: int = 6, num_group: int = 64, group_size: int = 32,
                        into: PointTransformer | None = None, trusted: bool = False, **overrides):
    """A released ACT / Point-BERT checkpoint → (PointTransformer with its weights, info).

    ``info``: ``head`` (the ``cls_head_finetune`` state dict, empty for pre-training files), ``ignored`` (keys
    dropped as pre-training only), ``config`` (the constructor arguments), ``epoch`` and ``metrics`` when the file
    has them. ``into`` loads into an existing network instead (its architecture must match). Any other key that does
    not match raises an error listing the missing, unexpected and misshapen keys.
    """
    state, extra = read_released_state(path, trusted)
    backbone_state, head, ignored = map_released_keys(state)
    if into is None:
        config = {**released_config(backbone_state, num_heads, num_group, group_size), **overrides}
        into = PointTransformer(**config)
    load_state_dict_checked(into, backbone_state, f"released checkpoint {path} (after the ACT key map)")
    info = {"head": head, "ignored": ignored, "config": into.config}
    info.update({k: extra[k] for k in ("epoch", "metrics", "best_metrics") if k in extra})
    return into, info


def released_head(head_state: dict[str, torch.Tensor]) -> nn.Sequential:
    """ACT's ``cls_head_finetune`` rebuilt from its weights: the MLP-3 head (Linear 2C→256, BN, ReLU, Dropout 0.5,
    Linear 256→256, BN, ReLU, Dropout 0.5, Linear 256→classes), the linear head (Linear 2C→classes) or Point-BERT's
    (Linear 2C→256, ReLU, Dropout 0.5, Linear 256→classes); it reads the backbone's ``global_feats`` [cls ‖ max]."""
    if not head_state:
        raise ValueError("no cls_head_finetune weights: this is a pre-training checkpoint (fine-tune a new head, "
                         "ssl3d.protocols.finetune_classification)")
    if "8.weight" in head_state:
        w0, w8 = head_state["0.weight"], head_state["8.weight"]
        head = nn.Sequential(nn.Linear(w0.shape[1], w0.shape[0]), nn.BatchNorm1d(w0.shape[0]), nn.ReLU(inplace=True),
                             nn.Dropout(0.5), nn.Linear(w0.shape[0], head_state["4.weight"].shape[0]),
                             nn.BatchNorm1d(head_state["4.weight"].shape[0]), nn.ReLU(inplace=True), nn.Dropout(0.5),
                             nn.Linear(w8.shape[1], w8.shape[0]))
    elif set(head_state) == {"0.weight", "0.bias", "3.weight", "3.bias"}:  # Point-BERT's head
        w0, w3 = head_state["0.weight"], head_state["3.weight"]
        head = nn.Sequential(nn.Linear(w0.shape[1], w0.shape[0]), nn.ReLU(inplace=True), nn.Dropout(0.5),
                             nn.Linear(w3.shape[1], w3.shape[0]))
    elif set(head_state) == {"0.weight", "0.bias"}:
        w0 = head_state["0.weight"]
        head = nn.Sequential(nn.Linear(w0.shape[1], w0.shape[0]))
    else:
        raise ValueError(f"unrecognised cls_head_finetune layout (keys {sorted(head_state)}): expected ACT's MLP-3 "
                         f"(0, 1, 4, 5, 8), linear (0) or Point-BERT's (0, 3) head")
    load_state_dict_checked(head, head_state, "cls_head_finetune")
    return head.eval()


# ----------------------------------------------------------------------------------------------------------
# The released stage-1 dVAE (ckpt_act_dvae.pth): ACTPromptedDiscreteVAEwithVIT / …withBERT
# ----------------------------------------------------------------------------------------------------------
def map_dvae_keys(state: dict[str, torch.Tensor]) -> tuple[dict, str]:
    """ACT's dVAE keys → :class:`ssl3d.act.DiscreteVAE` keys, and the teacher family ("vit" or "bert").

    ``module.`` is stripped; the frozen Transformer ``visual_embed`` is an ``nn.Sequential`` in the code —
    ``visual_embed.0.{i}.*`` (timm ``blocks``) and ``visual_embed.1.*`` (timm's final ``norm``) for a ViT,
    ``visual_embed.0.layer.{i}.*`` (a Hugging Face ``BertEncoder``) for BERT — and becomes
    ``visual_embed.layers.{i}.*`` / ``visual_embed.norm.*`` here. Every other name is the same in both.
    """
    out, family = {}, "vit"
    for k, v in state.items():
        k = k.removeprefix("module.")
        if (m := re.match(r"visual_embed\.0\.layer\.(\d+)\.(.*)", k)) is not None:
            family, k = "bert", f"visual_embed.layers.{m.group(1)}.{m.group(2)}"
        elif (m := re.match(r"visual_embed\.0\.(\d+)\.(.*)", k)) is not None:
            k = f"visual_embed.layers.{m.group(1)}.{m.group(2)}"
        elif k.startswith("visual_embed.1."):
            k = "visual_embed.norm." + k[len("visual_embed.1."):]
        out[k] = v
    return out, family


def load_act_dvae(path: str | Path, num_group: int = 64, trusted: bool = False, **overrides):
    """ACT's released stage-1 checkpoint → :class:`ssl3d.act.DiscreteVAE` with every weight, the frozen pretrained
    Transformer included (so the ViT-B teacher needs no timm weights of its own). Sizes are read from the shapes;
    the number of groups is not in the weights (ACT: 64). Mismatched keys raise an error that lists them."""
    from ssl3d.act import TEACHERS, DiscreteVAE

    state, _ = read_released_state(path, trusted)
    state, family = map_dvae_keys(state)
    if "codebook" not in state or "proj_pre.weight" not in state:
        raise ValueError(f"{path} is not an ACT dVAE checkpoint with a pretrained Transformer (no codebook / "
                         f"proj_pre; keys {sorted(state)[:8]} …)")
    width = state["proj_pre.weight"].shape[0]
    depth = 1 + max(int(m.group(1)) for k in state if (m := re.match(r"visual_embed\.layers\.(\d+)\.", k)))
    teacher = next((n for n, t in TEACHERS.items() if t[0] == family and t[1] == width and t[5] is not None), None)
    if teacher is None:
        raise ValueError(f"no {family} teacher of width {width} in ssl3d.act.TEACHERS; add its sizes there")
    prompts = state.get("visual_prompt_token")
    config = {"num_group": num_group, "group_size": 4 * state["decoder.mlp.4.weight"].shape[0] // 3,
              "encoder_dims": state["encoder.second_conv.3.weight"].shape[0],
              "tokens_dims": state["codebook"].shape[1], "decoder_dims": state["dgcnn_2.layer5.0.weight"].shape[0],
              "num_tokens": state["codebook"].shape[0], "teacher": teacher, "teacher_depth": depth,
              "load_teacher_weights": False, "num_prompt_token": 0 if prompts is None else prompts.shape[1],
              "use_deep_prompt": "deep_prompt_tokens" in state,
              "dgcnn_scale": state["dgcnn_1.input_trans.weight"].shape[0] / 128,
              "decoder_hidden": state["decoder.mlp.0.weight"].shape[0],
              "fold_hidden": state["decoder.final_conv.0.weight"].shape[0],
              "patch_dims": tuple(state[f"encoder.{k}.weight"].shape[0]
                                  for k in ("first_conv.0", "first_conv.3", "second_conv.0")), **overrides}
    dvae = DiscreteVAE(**config)
    load_state_dict_checked(dvae, state, f"released dVAE checkpoint {path} (after the ACT key map)")
    return dvae
