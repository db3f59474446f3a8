"""Functional stand-in for the released TF-CLIP code, used as the reference in CI tests.

An independent re-implementation of the *eval-mode* computation of the model released with "TF-CLIP: Learning
Text-Free CLIP for Video-Based Person Re-identification" (Yu et al., AAAI 2024; github.com/AsuradaYuci/TF-CLIP,
``model/make_model_clipreid.py`` with the ViT-B/16 CLIP image encoder of ``model/clip/model.py``), working
directly on a state dict in the *released* layout: the training model's ``state_dict()`` as their training
script saves it (``best_model.pth.tar``, a plain state dict; ``module.`` prefixes when trained under
DataParallel). No authors' code is used or needed.

Released layout (``make_released_state_dict`` writes exactly these keys, in this order):

* ``cv_embed``: one learned 768-d vector per training camera (``SIE_CAMERA: True``);
* ``classifier2`` / ``classifier_proj`` / ``classifier_proj_temp`` / ``classifier_proj_temp2``: bias-free linear
  identity classifiers (training only);
* ``bottleneck``, ``bottleneck_proj``, ``bottleneck_proj_temp``, ``bottleneck_proj_temp2``: BatchNorm1d necks
  (training only with ``TEST.NECK_FEAT: before``, the released configs' choice);
* ``image_encoder.*``: CLIP's visual tower with its own names (``conv1`` without bias, ``class_embedding``,
  ``positional_embedding`` already resized to the 16x8 grid of a 256x128 frame + 1, ``ln_pre``,
  ``transformer.resblocks.N.{ln_1, attn.in_proj_weight/in_proj_bias/out_proj, ln_2, mlp.c_fc, mlp.c_proj}``,
  ``ln_post``, ``proj`` of shape (768, 512) applied as ``x @ proj``);
* ``SSP.*``: the sequence-specific prompt generator (training only);
* ``TMD.resblocks.0.*``: the Temporal Memory Diffusion block.

The CLIP-Memory of the paper is not a parameter: the training script computes it from the training set, so it
is absent from the checkpoint.

Facts of the released eval computation reproduced here (``cfg.TEST.NECK_FEAT == 'before'``, ``SIE_COE: 1.0``,
``SEQ_LEN: 8``):

* clips ``(B, T, 3, 256, 128)`` are flattened to frames; every frame is split into 16x16 patches by the
  bias-free conv; the class token is ``class_embedding`` plus ``SIE_COE * cv_embed[camera of the clip]`` (the
  camera vector is added *before* the positional embedding and ``ln_pre``; all frames of a clip share it);
* the positional embedding is added, then ``ln_pre``, 12 pre-norm residual blocks (12 heads, QuickGELU
  ``x * sigmoid(1.702 x)``), then ``ln_post`` on *every* token; every LayerNorm has eps 1e-5;
* ``img_feature``: the frame average of the class token after ``ln_post`` (768-d); ``img_feature_proj``: the
  frame average of that token times ``proj`` (512-d);
* TMD, on all tokens after ``ln_post`` (it reads them detached, which changes nothing at eval): per frame the
  token mean goes through ``message_fc``; these T message tokens of a clip attend to each other (pre-norm
  ``message_ln``, 12-head attention, residual); each frame's message token is appended to its own tokens, and
  the frame's L+1 tokens go through one pre-norm block (``ln_1``, ``attn``, ``ln_2``, ``mlp`` with QuickGELU).
  The output is the mean over the L+1 tokens of each frame, then over the frames (768-d);
* the eval output is ``cat([img_feature, img_feature_proj, tmd_feature])``: 2048-d, no BN, no normalisation.

The released code builds TMD with ``T = cfg.INPUT.SEQ_LEN`` (8) and regroups the frames of a batch by that
number; the frames of one clip are regrouped correctly when each clip has 8 frames, which is what its
evaluation feeds (here T is the clip's own length). Its evaluation loop passes one camera id per *tracklet*
while splitting the tracklet into several clips, which fails for tracklets of more than 8 frames; here each clip
carries its own camera id (:func:`released_forward` takes one per clip).

Checked by hand against the authors' code outside this repository (it cannot be a CI dependency): their
``build_transformer`` was constructed offline, its ``load_clip_to_cpu`` given a random OpenAI-layout CLIP state
dict instead of the download (and the ``.to('cuda')`` made a no-op), every state dict made by
:func:`make_released_state_dict` loaded into it with ``load_state_dict(strict=True)`` (which proves the keys and
shapes are theirs), and both run in eval mode on the same random clips of shape (2, 8, 3, 256, 128) with camera
ids (1, 4): over seeds 0-2 the max abs difference of the 2048-d outputs was at most 7.2e-7, with outputs of
magnitude up to ~4.4 (max relative error 2.0e-7).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor

StateDict = dict[str, Tensor]

WIDTH = 768  # ViT-B/16 width
LAYERS = 12
HEAD_DIM = 64  # CLIP: heads = width // 64
PATCH = 16
PROJ_DIM = 512  # CLIP ViT-B/16 embedding size
RELEASED_SIZE = (256, 128)
SEQ_LEN = 8  # frames per clip (cfg.INPUT.SEQ_LEN)
SIE_COE = 1.0  # cfg.MODEL.SIE_COE of the released configs
LN_EPS = 1e-5
SSP_LAYERS = 2
NUM_CAMERAS = {'mars': 6, 'lsvid': 15, 'ilidsvid': 2}  # cameras of each training set (num_train_cams)
NUM_CLASSES = {'mars': 625, 'lsvid': 842, 'ilidsvid': 150}  # training identities

# the tensors only training uses: identity classifiers, BN necks (NECK_FEAT 'before'), the prompt generator
TRAINING_ONLY_PREFIXES = ('classifier2.', 'classifier_proj.', 'classifier_proj_temp.', 'classifier_proj_temp2.',
                          'bottleneck.', 'bottleneck_proj.', 'bottleneck_proj_temp.', 'bottleneck_proj_temp2.',
                          'SSP.')


# ----------------------------------------------------------------------------- layout


def _linear(keys: dict, name: str, out_f: int, in_f: int, bias: bool = True) -> None:
    keys[f'{name}.weight'] = (out_f, in_f)
    if bias:
        keys[f'{name}.bias'] = (out_f,)


def _ln(keys: dict, name: str, c: int) -> None:
    keys[f'{name}.weight'] = (c,)
    keys[f'{name}.bias'] = (c,)


def _bn(keys: dict, name: str, c: int) -> None:
    for p in ('weight', 'bias', 'running_mean', 'running_var'):
        keys[f'{name}.{p}'] = (c,)
    keys[f'{name}.num_batches_tracked'] = ()


def _mha(keys: dict, name: str, c: int) -> None:
    keys[f'{name}.in_proj_weight'] = (3 * c, c)
    keys[f'{name}.in_proj_bias'] = (3 * c,)
    _linear(keys, f'{name}.out_proj', c, c)


def _resblock(keys: dict, p: str, c: int) -> None:
    _mha(keys, f'{p}.attn', c)
    _ln(keys, f'{p}.ln_1', c)
    _linear(keys, f'{p}.mlp.c_fc', 4 * c, c)
    _linear(keys, f'{p}.mlp.c_proj', c, 4 * c)
    _ln(keys, f'{p}.ln_2', c)


def released_keys(num_cameras: int = 6, num_classes: int = 625, layers: int = LAYERS, width: int = WIDTH,
                  img_size: tuple[int, int] = RELEASED_SIZE) -> dict[str, tuple[int, ...]]:
    """Keys and shapes of a released state dict, in the order the released ``model.state_dict()`` lists them."""
    keys: dict[str, tuple[int, ...]] = {'cv_embed': (num_cameras, width)}  # a parameter of the model itself: first
    _linear(keys, 'classifier2', num_classes, width, bias=False)
    _linear(keys, 'classifier_proj', num_classes, PROJ_DIM, bias=False)
    _linear(keys, 'classifier_proj_temp', num_classes, width, bias=False)
    _linear(keys, 'classifier_proj_temp2', num_classes, width, bias=False)
    _bn(keys, 'bottleneck', width)
    _bn(keys, 'bottleneck_proj', PROJ_DIM)
    _bn(keys, 'bottleneck_proj_temp', width)
    _bn(keys, 'bottleneck_proj_temp2', width)
    grid = (img_size[0] // PATCH) * (img_size[1] // PATCH)
    keys['image_encoder.class_embedding'] = (width,)
    keys['image_encoder.positional_embedding'] = (grid + 1, width)
    keys['image_encoder.proj'] = (width, PROJ_DIM)
    keys['image_encoder.conv1.weight'] = (width, 3, PATCH, PATCH)
    _ln(keys, 'image_encoder.ln_pre', width)
    for i in range(layers):
        _resblock(keys, f'image_encoder.transformer.resblocks.{i}', width)
    _ln(keys, 'image_encoder.ln_post', width)
    # SSP: the sequence-specific prompt generator (512-d, 2 decoder layers of 8 heads), training only
    keys['SSP.alpha'] = (PROJ_DIM,)
    _ln(keys, 'SSP.norm', PROJ_DIM)
    _ln(keys, 'SSP.memory_proj.0', PROJ_DIM)
    _linear(keys, 'SSP.memory_proj.1', PROJ_DIM, PROJ_DIM)
    _ln(keys, 'SSP.memory_proj.2', PROJ_DIM)
    _ln(keys, 'SSP.text_proj.0', PROJ_DIM)
    _linear(keys, 'SSP.text_proj.1', PROJ_DIM, PROJ_DIM)
    _ln(keys, 'SSP.out_proj.0', PROJ_DIM)
    _linear(keys, 'SSP.out_proj.1', PROJ_DIM, PROJ_DIM)
    for i in range(SSP_LAYERS):
        p = f'SSP.decoder.{i}'
        for attn in ('self_attn', 'cross_attn'):
            for q in ('q_proj', 'k_proj', 'v_proj'):
                _linear(keys, f'{p}.{attn}.{q}', PROJ_DIM, PROJ_DIM, bias=False)
            _linear(keys, f'{p}.{attn}.proj', PROJ_DIM, PROJ_DIM)
        for n in ('norm1', 'norm2', 'norm3'):
            _ln(keys, f'{p}.{n}', PROJ_DIM)
        _linear(keys, f'{p}.mlp.0', 4 * PROJ_DIM, PROJ_DIM)
        _linear(keys, f'{p}.mlp.3', PROJ_DIM, 4 * PROJ_DIM)
    # TMD: one cross-frame block
    p = 'TMD.resblocks.0'
    _linear(keys, f'{p}.message_fc', width, width)
    _ln(keys, f'{p}.message_ln', width)
    _mha(keys, f'{p}.message_attn', width)
    _mha(keys, f'{p}.attn', width)
    _ln(keys, f'{p}.ln_1', width)
    _linear(keys, f'{p}.mlp.c_fc', 4 * width, width)
    _linear(keys, f'{p}.mlp.c_proj', width, 4 * width)
    _ln(keys, f'{p}.ln_2', width)
    return keys


# ----------------------------------------------------------------------------- random weights


def _random(key: str, shape: tuple[int, ...], g: torch.Generator, width: int, layers: int) -> Tensor:
    """CLIP-like scales (its own init: attention std width^-0.5, residual outputs scaled by (2 * layers)^-0.5)
    with non-trivial LayerNorm gains and biases, so every part of the computation is exercised."""
    def randn(*s: int) -> Tensor:
        return torch.randn(s, generator=g)

    name = key.rsplit('.', 1)[-1]
    if name == 'num_batches_tracked':
        return torch.tensor(1000, dtype=torch.int64)
    if name == 'running_var':
        return 0.5 + torch.rand(shape, generator=g)
    if name in ('running_mean', 'bias', 'in_proj_bias'):
        return 0.02 * randn(*shape)
    if key.endswith(('ln_1.weight', 'ln_2.weight', 'ln_pre.weight', 'ln_post.weight', '_ln.weight')) or (
            len(shape) == 1 and name == 'weight'):
        return 1.0 + 0.1 * randn(*shape)
    scale = width ** -0.5
    if key == 'cv_embed':
        return 0.1 * randn(*shape)  # trained camera vectors are far from their 0.02 init; visible on purpose
    if key in ('image_encoder.class_embedding', 'image_encoder.positional_embedding', 'image_encoder.proj'):
        return scale * randn(*shape)
    if key == 'SSP.alpha':
        return torch.full(shape, 0.1)
    if key == 'image_encoder.conv1.weight':
        return (3 * PATCH * PATCH) ** -0.5 * randn(*shape)
    residual_out = key.endswith(('out_proj.weight', 'c_proj.weight'))
    std = scale * (2 * layers) ** -0.5 if residual_out else (
        (2 * width) ** -0.5 if key.endswith('c_fc.weight') else scale)
    if key.startswith('classifier'):
        std = 0.001
    return std * randn(*shape)


def make_released_state_dict(seed: int = 0, num_cameras: int = 6, num_classes: int = 625, layers: int = LAYERS,
                             width: int = WIDTH, img_size: tuple[int, int] = RELEASED_SIZE,
                             module_prefix: bool = False) -> StateDict:
    """A random float32 state dict in exactly the released layout (what their training saves as
    ``best_model.pth.tar``), deterministic for a given ``seed``; ``module_prefix`` adds DataParallel's
    ``module.`` to every key. ``layers`` and ``width`` shrink the ViT for fast tests (the released model: 12,
    768). Nothing is downloaded: the CLIP weights are random, at CLIP's own initialisation scales."""
    g = torch.Generator().manual_seed(seed)
    sd = {k: _random(k, shape, g, width, layers)
          for k, shape in released_keys(num_cameras, num_classes, layers, width, img_size).items()}
    return {f'module.{k}': v for k, v in sd.items()} if module_prefix else sd


def save_released_checkpoint(path, seed: int = 0, **kw) -> StateDict:
    """Write a checkpoint the way their training does (``torch.save(model.state_dict(), path)`` of the model
    wrapped in DataParallel) and return its state dict (with the prefixes)."""
    sd = make_released_state_dict(seed, module_prefix=True, **kw)
    torch.save(sd, path)
    return sd


# ----------------------------------------------------------------------------- forward pieces


def _layer_norm(sd: Mapping[str, Tensor], name: str, x: Tensor) -> Tensor:
    mean = x.mean(-1, keepdim=True)
    var = (x - mean).square().mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + LN_EPS) * sd[f'{name}.weight'] + sd[f'{name}.bias']


def _quick_gelu(x: Tensor) -> Tensor:
    return x * torch.sigmoid(1.702 * x)


def _attention(sd: Mapping[str, Tensor], name: str, x: Tensor) -> Tensor:
    """Multi-head self-attention over dim 1 of ``x`` (N, L, C): heads of 64 channels, softmax(q k^T / 8) v."""
    n, length, c = x.shape
    heads = c // HEAD_DIM
    qkv = x @ sd[f'{name}.in_proj_weight'].t() + sd[f'{name}.in_proj_bias']
    q, k, v = (t.reshape(n, length, heads, HEAD_DIM).transpose(1, 2) for t in qkv.split(c, dim=-1))
    weights = torch.softmax((q @ k.transpose(-2, -1)) / math.sqrt(HEAD_DIM), dim=-1)
    out = (weights @ v).transpose(1, 2).reshape(n, length, c)
    return out @ sd[f'{name}.out_proj.weight'].t() + sd[f'{name}.out_proj.bias']


def _mlp(sd: Mapping[str, Tensor], name: str, x: Tensor) -> Tensor:
    h = _quick_gelu(x @ sd[f'{name}.c_fc.weight'].t() + sd[f'{name}.c_fc.bias'])
    return h @ sd[f'{name}.c_proj.weight'].t() + sd[f'{name}.c_proj.bias']


def _block(sd: Mapping[str, Tensor], p: str, x: Tensor) -> Tensor:
    x = x + _attention(sd, f'{p}.attn', _layer_norm(sd, f'{p}.ln_1', x))
    return x + _mlp(sd, f'{p}.mlp', _layer_norm(sd, f'{p}.ln_2', x))


def image_encoder_tokens(sd: Mapping[str, Tensor], frames: Tensor, camera: Tensor) -> Tensor:
    """CLIP's visual tower with the camera vector on the class token: frames (N, 3, H, W), camera (N, C) ->
    every token after ``ln_post``, (N, 1 + h*w, C)."""
    p = 'image_encoder'
    patches = F.conv2d(frames, sd[f'{p}.conv1.weight'], stride=PATCH).flatten(2).transpose(1, 2)
    cls = sd[f'{p}.class_embedding'] + camera  # the camera joins the class token before the positions
    x = torch.cat([cls[:, None, :], patches], dim=1) + sd[f'{p}.positional_embedding']
    x = _layer_norm(sd, f'{p}.ln_pre', x)
    i = 0
    while f'{p}.transformer.resblocks.{i}.ln_1.weight' in sd:
        x = _block(sd, f'{p}.transformer.resblocks.{i}', x)
        i += 1
    return _layer_norm(sd, f'{p}.ln_post', x)


def temporal_memory_diffusion(sd: Mapping[str, Tensor], tokens: Tensor, clip_len: int) -> Tensor:
    """TMD on the tokens of clips of ``clip_len`` frames: (B*T, L, C) -> (B*T, L + 1, C)."""
    p = 'TMD.resblocks.0'
    bt, _, c = tokens.shape
    message = tokens.mean(dim=1) @ sd[f'{p}.message_fc.weight'].t() + sd[f'{p}.message_fc.bias']
    message = message.reshape(bt // clip_len, clip_len, c)  # the clip's frames attend to each other
    message = message + _attention(sd, f'{p}.message_attn', _layer_norm(sd, f'{p}.message_ln', message))
    x = torch.cat([tokens, message.reshape(bt, 1, c)], dim=1)  # the frame's memory token after its own
    return _block(sd, p, x)


def released_forward_parts(state_dict: Mapping[str, Tensor], clips: Tensor, camids: Tensor,
                           sie_coe: float = SIE_COE) -> dict[str, Tensor]:
    """The three parts of the eval embedding: ``img_feature`` (B, 768), ``img_feature_proj`` (B, 512),
    ``tmd_feature`` (B, 768); ``clips`` (B, T, 3, H, W), ``camids`` (B,) camera index of each clip."""
    sd = {k.removeprefix('module.'): v for k, v in state_dict.items()}
    b, t = clips.shape[:2]
    camera = sie_coe * sd['cv_embed'][camids]  # (B, C), shared by the frames of a clip
    tokens = image_encoder_tokens(sd, clips.flatten(0, 1), camera.repeat_interleave(t, dim=0))
    cls = tokens[:, 0]
    tmd = temporal_memory_diffusion(sd, tokens, t).mean(dim=1)
    return {
        'img_feature': cls.reshape(b, t, -1).mean(dim=1),
        'img_feature_proj': (cls @ sd['image_encoder.proj']).reshape(b, t, -1).mean(dim=1),
        'tmd_feature': tmd.reshape(b, t, -1).mean(dim=1),
    }


def released_forward(state_dict: Mapping[str, Tensor], clips: Tensor, camids: Tensor,
                     sie_coe: float = SIE_COE) -> Tensor:
    """The released eval output (``NECK_FEAT: before``): (B, 2048) = cat(img_feature, img_feature_proj,
    tmd_feature)."""
    parts = released_forward_parts(state_dict, clips, camids, sie_coe)
    return torch.cat([parts['img_feature'], parts['img_feature_proj'], parts['tmd_feature']], dim=1)
