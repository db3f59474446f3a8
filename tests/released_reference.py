"""Functional stand-in for the released SINet code, used as the reference in CI tests.

This module is an independent re-implementation of the *eval-mode* computation of the models
released with "Salient-to-Broad Transition for Video Person Re-identification" (Bai et al.,
CVPR 2022; github.com/baist/SINet): the I3D-style inflated ResNet-50 baseline (``resnet50``),
the Integration-and-Distribution Module (``idnet``), the Salient-to-Broad Module (``sbnet``),
both together (``sinet``), and SANet ("SANet: Statistic Attention Network for Video-Based Person
Re-Identification", Bai et al., IEEE TCSVT 2021; ``sanet``), released in the same repository.
It works directly on a state dict in the *released* layout: 5-D
``Conv3d`` weights with biases, BatchNorm layers keyed like torchvision's, plug-in modules
inserted into the ``layerN`` ``nn.Sequential`` containers (so the block indices after a plug-in
are shifted), a ``bn.*`` BatchNorm1d neck, ``classifier.*`` and, for the archs trained with the
InfoNCE loss, ``projection.*``.  No authors' code is used or needed.

It was written from a reading of the released model code and checked by hand against it, outside
this repository (the released code cannot be a CI dependency): the authors' models were built
offline with a randomly initialised torchvision ResNet-50, each state dict produced by
:func:`make_released_state_dict` was loaded into the corresponding authors' model with
``load_state_dict(strict=True)`` (which proves the key layout and shapes are theirs), and both
were run in eval mode on the same random clips of shape (2, 3, T, 256, 128), comparing every stage
and the output.  Max abs output differences (outputs of magnitude up to ~4) over seeds 0-3 were
below 4e-7 for ``resnet50``, 1.2e-6 for ``idnet`` and 3.2e-5 for ``sbnet`` / ``sinet`` with T=4
and T=8 (``sinet`` with T=8 needs a state dict made with ``seq_len=8``, as the released code
does).  The SBM residue is float32 rounding amplified by its softmax/exponential suppression: the
authors' model itself moves by a similar amount under 1e-6 relative input noise.

Facts of the released eval computation reproduced here:

* stem: 7x7 stride-2 conv (padding 3), BN, ReLU, then a 3x3 stride-2 max pool with **no padding**
  (a 256x128 frame becomes 63x31 after the pool; then 32x16 after layer2, 16x8 after layer3 and
  layer4, because layer4 has stride 1);
* bottlenecks are torchvision's v1.5 design (stride on the 3x3 conv), every conv has a bias;
* IDM (after blocks 1 and 3 of layer2): channel reduction 512 -> 32 (conv + BN), mixing of the
  ``t*h*w`` positions through a bottleneck of ``t*h*w/16`` (linear + BN, linear, residual),
  channel expansion 32 -> 512 and ``relu(x + .)``; the position count is baked into the weights
  (``seq_len * 32 * 16``), so the clip length must equal the training ``seq_len``;
* SBM (after blocks 1, 3, 5 of layer3 with split positions 0, 1, 2; k=3, beta=5, alpha=0.1):
  channel attention = SE gate times a binary centrality mask (interior mean / (mean + 1e-8) > 1),
  a kernel generated from the first ``pos+1`` frames, a replicate-padded dynamic 3x3 convolution
  of the later frames divided by k*k, per-frame softmax over h*w clamped at 1e-4, the
  suppression map, and the cross propagation between the two frame groups.  A clip of 8 frames
  is processed by the SBM as two independent groups of 4 consecutive frames;
* SA, the Statistic Attention block of SANet (after blocks 1 and 3 of layer2): a 1x1x1 conv with
  bias reduces 512 -> 128 channels; per sample and reduced channel, the moments over all T*H*W
  positions of the input are the mean, the population standard deviation and the 4th, 5th and 6th
  central moments divided by the standard deviation to that power; each moment vector is
  L2-normalised over the channels; every position takes a softmax over the 5 dot products of its
  (unnormalised) reduced feature with them and outputs that mixture of the normalised moment
  vectors; a 1x1x1 conv with bias and a BatchNorm3d bring back 512 channels, then ``relu(x + .)``.
  The released block pools its statistics over whatever T it is given (the released evaluation
  only feeds 4-frame clips).  Written from a fact sheet of the released code (checked by running
  it: a float64 formulation matched the released block to 4e-16), not from the code itself;
* head: global spatial max pool per frame, then the BatchNorm1d neck applied per frame, giving
  the released eval output of shape (B, 2048, T).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

ARCHS = ("sinet", "sbnet", "idnet", "resnet50", "sanet")
StateDict = dict[str, Tensor]

BN_EPS = 1e-5
STAGE_BLOCKS = (3, 4, 6, 3)
STAGE_WIDTHS = (64, 128, 256, 512)  # inner (3x3 conv) width of each stage's bottlenecks
STAGE_STRIDES = (1, 2, 2, 1)  # layer4 stride is 1 in the released models
EXPANSION = 4
FEAT_DIM = 2048

IDM_AFTER_BLOCKS = (1, 3)  # in layer2
IDM_REDUCTION = 16
SBM_AFTER_BLOCKS = {1: 0, 3: 1, 5: 2}  # in layer3: block index -> split position
SBM_K = 3
SBM_BETA = 5.0
SBM_ALPHA = 0.1
SBM_GROUP = 4  # the released SBM works on groups of 4 frames
SA_AFTER_BLOCKS = (1, 3)  # in layer2
SA_REDUCTION = 4
SA_ORDERS = (4, 5, 6)  # standardised central moments beside mean and std (no 3rd)

RELEASED_SEQ_LEN = 4
RELEASED_SIZE = (256, 128)


def _check_arch(arch: str) -> None:
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; expected one of {ARCHS}")


def _has_idm(arch: str) -> bool:
    return arch in ("sinet", "idnet")


def _has_sbm(arch: str) -> bool:
    return arch in ("sinet", "sbnet")


def _has_sa(arch: str) -> bool:
    return arch == "sanet"


def _stage_plan(arch: str, stage: int) -> list[tuple[str, int]]:
    """Entries of ``layer{stage}`` in Sequential order: ("block", block_idx), ("idm", 0), ("sbm", pos),
    ("sa", 0)."""
    plan: list[tuple[str, int]] = []
    for i in range(STAGE_BLOCKS[stage - 1]):
        plan.append(("block", i))
        if stage == 2 and _has_idm(arch) and i in IDM_AFTER_BLOCKS:
            plan.append(("idm", 0))
        if stage == 3 and _has_sbm(arch) and i in SBM_AFTER_BLOCKS:
            plan.append(("sbm", SBM_AFTER_BLOCKS[i]))
        if stage == 2 and _has_sa(arch) and i in SA_AFTER_BLOCKS:
            plan.append(("sa", 0))
    return plan


# ----------------------------------------------------------------------------- key layout


def _add_conv(keys: dict, name: str, c_out: int, c_in: int, k: int = 1) -> None:
    keys[f"{name}.weight"] = (c_out, c_in, 1, k, k)
    keys[f"{name}.bias"] = (c_out,)


def _add_bn(keys: dict, name: str, c: int) -> None:
    for suffix in ("weight", "bias", "running_mean", "running_var"):
        keys[f"{name}.{suffix}"] = (c,)
    keys[f"{name}.num_batches_tracked"] = ()


def _idm_positions(seq_len: int) -> int:
    # the released IDM sizes its position-mixing layers for 256x128 inputs (32x16 in layer2)
    return seq_len * (RELEASED_SIZE[0] // 8) * (RELEASED_SIZE[1] // 8)


def released_keys(
    arch: str,
    num_classes: int = 625,
    with_projection: bool | None = None,
    seq_len: int = RELEASED_SEQ_LEN,
) -> dict[str, tuple[int, ...]]:
    """Keys and shapes of a released state dict, in the order ``model.state_dict()`` lists them.

    ``with_projection`` defaults to True for sinet/sbnet (trained with the InfoNCE loss, which adds
    the 1x1 ``projection`` Conv1d) and False otherwise.  ``seq_len`` only changes the IDM shapes.
    """
    _check_arch(arch)
    if with_projection is None:
        with_projection = _has_sbm(arch)
    keys: dict[str, tuple[int, ...]] = {}
    _add_conv(keys, "conv1", 64, 3, 7)
    _add_bn(keys, "bn1", 64)
    c_in = 64
    for stage in range(1, 5):
        width = STAGE_WIDTHS[stage - 1]
        c_out = width * EXPANSION
        for idx, (kind, arg) in enumerate(_stage_plan(arch, stage)):
            p = f"layer{stage}.{idx}"
            if kind == "block":
                block_in = c_in if arg == 0 else c_out
                _add_conv(keys, f"{p}.conv1", width, block_in)
                _add_bn(keys, f"{p}.bn1", width)
                _add_conv(keys, f"{p}.conv2", width, width, 3)
                _add_bn(keys, f"{p}.bn2", width)
                _add_conv(keys, f"{p}.conv3", c_out, width)
                _add_bn(keys, f"{p}.bn3", c_out)
                if arg == 0:
                    _add_conv(keys, f"{p}.downsample.0", c_out, c_in)
                    _add_bn(keys, f"{p}.downsample.1", c_out)
            elif kind == "idm":
                n_pos = _idm_positions(seq_len)
                c_red = c_out // IDM_REDUCTION
                keys[f"{p}.thw_reduction.0.weight"] = (n_pos // IDM_REDUCTION, n_pos, 1, 1)
                keys[f"{p}.thw_reduction.0.bias"] = (n_pos // IDM_REDUCTION,)
                _add_bn(keys, f"{p}.thw_reduction.1", n_pos // IDM_REDUCTION)
                keys[f"{p}.thw_expansion.0.weight"] = (n_pos, n_pos // IDM_REDUCTION, 1, 1)
                keys[f"{p}.thw_expansion.0.bias"] = (n_pos,)
                _add_conv(keys, f"{p}.chl_reduction.0", c_red, c_out)
                _add_bn(keys, f"{p}.chl_reduction.1", c_red)
                _add_conv(keys, f"{p}.chl_expansion.0", c_out, c_red)
            elif kind == "sa":
                _add_conv(keys, f"{p}.down_channel", c_out // SA_REDUCTION, c_out)
                _add_conv(keys, f"{p}.up_channel.0", c_out, c_out // SA_REDUCTION)
                _add_bn(keys, f"{p}.up_channel.1", c_out)
            else:  # sbm
                _add_conv(keys, f"{p}.kernel.0", SBM_K * SBM_K, c_out)
                _add_bn(keys, f"{p}.kernel.1", SBM_K * SBM_K)
                _add_conv(keys, f"{p}.se.1", c_out // 4, c_out)
                _add_conv(keys, f"{p}.se.3", c_out, c_out // 4)
        c_in = c_out
    _add_bn(keys, "bn", FEAT_DIM)
    keys["classifier.weight"] = (num_classes, FEAT_DIM)
    keys["classifier.bias"] = (num_classes,)
    if with_projection:
        keys["projection.weight"] = (FEAT_DIM, FEAT_DIM, 1)
        keys["projection.bias"] = (FEAT_DIM,)
    return keys


# ----------------------------------------------------------------------------- random weights


def _random_bn(name: str, c: int, g: torch.Generator) -> dict[str, Tensor]:
    # Last BN of a residual branch (and of a shortcut) gets a smaller gain so that the residual
    # stream grows slowly over 16 blocks; everything else is close to unit gain.
    residual_end = name.endswith(".bn3") or name.endswith(".downsample.1")
    lo, hi = (0.2, 0.5) if residual_end else (0.6, 1.2)
    out = {
        "weight": lo + (hi - lo) * torch.rand(c, generator=g),
        "bias": 0.1 * torch.randn(c, generator=g),
        "running_mean": 0.1 * torch.randn(c, generator=g),
        "running_var": 0.5 + 1.5 * torch.rand(c, generator=g),
        "num_batches_tracked": torch.tensor(1000, dtype=torch.int64),
    }
    if name.endswith(".kernel.1"):
        # keep the SBM kernel maps (ReLU after this BN) mostly positive, i.e. non-degenerate
        out["bias"] = 0.5 + 0.5 * torch.rand(c, generator=g)
    return out


def _random_weight(name: str, shape: tuple[int, ...], g: torch.Generator) -> Tensor:
    fan_in = math.prod(shape[1:])
    std = math.sqrt(2.0 / fan_in)  # He initialisation keeps ReLU activations at a stable scale
    if ".chl_expansion." in name:
        std *= 0.2  # zero-initialised in the released code; non-zero (but modest) to exercise the IDM
    if ".thw_expansion." in name:
        std *= 0.5
    if ".up_channel.0." in name:
        std *= 4.0  # SA's recovery (zero BN in the released init): the unit-norm statistics weigh in visibly
    if name.startswith("classifier."):
        std = 0.01
    return std * torch.randn(shape, generator=g)


def make_released_state_dict(
    arch: str,
    num_classes: int = 625,
    seed: int = 0,
    with_projection: bool | None = None,
    seq_len: int = RELEASED_SEQ_LEN,
) -> dict[str, Tensor]:
    """A random, well-conditioned float32 state dict in exactly the released layout.

    Conv weights are He-scaled, conv biases non-zero, BN running statistics non-trivial
    (random mean, positive random variance), the IDM expansions (zero at the start of the
    released training) non-zero, and the SBM kernel-map BN biased positive so that the
    generated kernels are not degenerate.  Deterministic for a given ``seed``.
    """
    g = torch.Generator().manual_seed(seed)
    shapes = released_keys(arch, num_classes, with_projection, seq_len)
    sd: dict[str, Tensor] = {}
    for key, shape in shapes.items():
        if key in sd:
            continue
        module, param = key.rsplit(".", 1)
        if param == "running_mean":  # first BN key seen is "weight"; BN handled as a whole there
            continue
        is_bn = f"{module}.running_var" in shapes
        if is_bn:
            for suffix, value in _random_bn(module, shapes[f"{module}.weight"][0], g).items():
                sd[f"{module}.{suffix}"] = value
        elif param == "weight":
            sd[key] = _random_weight(key, shape, g)
        elif key.endswith(".se.3.bias"):
            # a negative SE bias (gate ~0.2) keeps the SBM response logits at a moderate scale,
            # so that its per-frame softmax is smooth rather than nearly one-hot
            sd[key] = -1.5 + 0.05 * torch.randn(shape, generator=g)
        else:  # bias of a conv / linear layer
            sd[key] = 0.05 * torch.randn(shape, generator=g)
    return {key: sd[key] for key in shapes}  # released order


def save_released_checkpoint(path, arch: str, rank1: float = 0.5, epoch: int = 149, **kw) -> StateDict:
    """Write a checkpoint the way the released training script does and return its state dict.

    The file is a plain ``torch.save`` of ``{'state_dict': ..., 'rank1': np.float64, 'epoch': int}``
    (conventionally named ``*.pth.tar``): the released ``main.py`` stores ``cmc[0]`` of a NumPy
    array, a NumPy scalar that ``torch.load(weights_only=True)`` refuses unless allowed.  ``kw`` is
    passed to :func:`make_released_state_dict`.
    """
    state_dict = make_released_state_dict(arch, **kw)
    torch.save({"state_dict": state_dict, "rank1": np.float64(rank1), "epoch": int(epoch)}, path)
    return state_dict


# ----------------------------------------------------------------------------- forward pieces


def _conv(sd: Mapping[str, Tensor], name: str, x: Tensor, stride: int = 1) -> Tensor:
    """An inflated conv: 5-D weight (out, in, 1, k, k) with bias, 'same' spatial padding."""
    weight = sd[f"{name}.weight"]
    k = weight.shape[-1]
    return F.conv3d(x, weight, sd[f"{name}.bias"], stride=(1, stride, stride), padding=(0, k // 2, k // 2))


def _bn(sd: Mapping[str, Tensor], name: str, x: Tensor) -> Tensor:
    """Eval-mode batch norm over dim 1 using the running statistics."""
    return F.batch_norm(
        x,
        sd[f"{name}.running_mean"],
        sd[f"{name}.running_var"],
        sd[f"{name}.weight"],
        sd[f"{name}.bias"],
        training=False,
        eps=BN_EPS,
    )


def _bottleneck(sd: Mapping[str, Tensor], p: str, x: Tensor, stride: int) -> Tensor:
    out = F.relu(_bn(sd, f"{p}.bn1", _conv(sd, f"{p}.conv1", x)))
    out = F.relu(_bn(sd, f"{p}.bn2", _conv(sd, f"{p}.conv2", out, stride)))
    out = _bn(sd, f"{p}.bn3", _conv(sd, f"{p}.conv3", out))
    if f"{p}.downsample.0.weight" in sd:
        shortcut = _bn(sd, f"{p}.downsample.1", _conv(sd, f"{p}.downsample.0", x, stride))
    else:
        shortcut = x
    return F.relu(out + shortcut)


def _idm(sd: Mapping[str, Tensor], p: str, x: Tensor) -> Tensor:
    """Integration-and-Distribution Module on x of shape (B, C, T, H, W)."""
    b, c, t, h, w = x.shape
    n_pos = sd[f"{p}.thw_reduction.0.weight"].shape[1]
    if n_pos != t * h * w:
        raise ValueError(
            f"IDM {p} was built for {n_pos} positions (T*H*W) but got T={t}, H={h}, W={w}; "
            "the released IDM only runs with T == training seq_len on 256x128 inputs"
        )
    # integrate over channels
    z = _bn(sd, f"{p}.chl_reduction.1", _conv(sd, f"{p}.chl_reduction.0", x))  # (B, C', T, H, W)
    tokens = z.flatten(2)  # (B, C', T*H*W)
    # mix the T*H*W positions through a bottleneck: linear maps acting along the position axis;
    # the BN between them normalises each reduced position (its channel axis is the position axis)
    mixed = F.linear(tokens, sd[f"{p}.thw_reduction.0.weight"].flatten(1), sd[f"{p}.thw_reduction.0.bias"])
    mixed = _bn(sd, f"{p}.thw_reduction.1", mixed.transpose(1, 2)).transpose(1, 2)
    mixed = F.linear(mixed, sd[f"{p}.thw_expansion.0.weight"].flatten(1), sd[f"{p}.thw_expansion.0.bias"])
    z = (tokens + mixed).reshape(z.shape)
    # distribute back to all channels
    return F.relu(x + _conv(sd, f"{p}.chl_expansion.0", z))


def _sa(sd: Mapping[str, Tensor], p: str, x: Tensor) -> Tensor:
    """Statistic Attention block on x of shape (B, C, T, H, W); statistics over all of T*H*W."""
    z = _conv(sd, f"{p}.down_channel", x)  # (B, c, T, H, W)
    b, c = z.shape[:2]
    flat = z.reshape(b, c, -1)  # (B, c, N)
    n = flat.shape[-1]
    mean = flat.sum(dim=-1) / n
    centred = flat - mean.unsqueeze(-1)
    std = torch.sqrt((centred**2).sum(dim=-1) / n)
    moments = [mean, std] + [(centred**k).sum(dim=-1) / n / std**k for k in SA_ORDERS]
    stats = torch.stack(moments, dim=-1)  # (B, c, 5)
    stats = stats / torch.linalg.vector_norm(stats, dim=1, keepdim=True).clamp_min(1e-12)
    weights = torch.einsum("bcn,bcm->bnm", flat, stats).softmax(dim=-1)  # (B, N, 5)
    out = torch.einsum("bnm,bcm->bcn", weights, stats).reshape(z.shape)
    up = _bn(sd, f"{p}.up_channel.1", _conv(sd, f"{p}.up_channel.0", out))
    return F.relu(x + up)


def _sbm_group(sd: Mapping[str, Tensor], p: str, x: Tensor, pos: int) -> Tensor:
    """Salient-to-Broad Module on one group of frames, x of shape (B, C, 4, H, W)."""
    b, c, t, h, w = x.shape
    k = SBM_K
    head, tail = x[:, :, : pos + 1], x[:, :, pos + 1 :]

    # channel attention: SE gate (on the whole group) times a binary "centre-heavy channel" mask
    mean_all = x.mean(dim=(2, 3, 4), keepdim=True)
    se = F.relu(_conv(sd, f"{p}.se.1", mean_all))
    se = torch.sigmoid(_conv(sd, f"{p}.se.3", se))
    mean_inner = x[:, :, :, 1:-1, 1:-1].mean(dim=(2, 3, 4), keepdim=True)
    central = (mean_inner / (mean_all + 1e-8) > 1).to(x.dtype)
    gate = se * central
    head_att = F.relu(head * gate)
    tail_att = F.relu(tail * gate)

    # kernel generation: k*k non-negative maps over the head positions, each L1-normalised first
    # over the k*k taps (per position) and then over the positions (per tap); the kernel tap is
    # the map-weighted sum of the head features
    maps = F.relu(_bn(sd, f"{p}.kernel.1", _conv(sd, f"{p}.kernel.0", head_att))).flatten(2)  # (B, kk, N)
    maps = maps / maps.abs().sum(dim=1, keepdim=True).clamp_min(1e-12)
    maps = maps / maps.abs().sum(dim=2, keepdim=True).clamp_min(1e-12)
    kernels = torch.bmm(head_att.flatten(2), maps.transpose(1, 2)).reshape(b, c, k, k)  # (B, C, k, k)

    # salient-region response of every tail frame: per-sample dynamic conv summed over channels
    frames = tail_att.permute(2, 0, 1, 3, 4).reshape(t - pos - 1, b * c, h, w)  # frames as batch
    frames = F.pad(frames, [(k - 1) // 2] * 4, mode="replicate")
    response = F.conv2d(frames, kernels, groups=b) / (k * k)  # (T_tail, B, H, W)
    prob = response.permute(1, 0, 2, 3).flatten(2).softmax(dim=-1).clamp_min(1e-4)  # over H*W

    # suppression: positions more salient than uniform (ratio < 1) are damped, the rest kept
    ratio = 1.0 / (prob * (h * w))
    keep = torch.where(ratio < 1, torch.exp(SBM_BETA * (ratio - 1)), torch.ones_like(ratio))
    keep = keep.reshape(b, 1, t - pos - 1, h, w)

    # cross propagation between the two frame groups
    tail_out = tail * keep + SBM_ALPHA * head.mean(dim=(2, 3, 4), keepdim=True)
    drop = 1 - keep
    head_out = head + SBM_ALPHA * (drop * tail).mean(dim=(2, 3, 4), keepdim=True) / drop.mean(
        dim=(2, 3, 4), keepdim=True
    )
    return torch.cat([head_out, tail_out], dim=2)


def _sbm(sd: Mapping[str, Tensor], p: str, x: Tensor, pos: int) -> Tensor:
    b, c, t, h, w = x.shape
    if t == SBM_GROUP:
        return _sbm_group(sd, p, x, pos)
    if t != 2 * SBM_GROUP:
        raise ValueError(f"the released SBM handles T=4 or T=8 (two groups of 4), got T={t}")
    # two independent groups of 4 consecutive frames, folded into the batch
    groups = x.reshape(b, c, 2, SBM_GROUP, h, w).transpose(1, 2).reshape(b * 2, c, SBM_GROUP, h, w)
    out = _sbm_group(sd, p, groups, pos)
    return out.reshape(b, 2, c, SBM_GROUP, h, w).transpose(1, 2).reshape(b, c, t, h, w)


# ----------------------------------------------------------------------------- forward


def released_forward_stages(state_dict: Mapping[str, Tensor], clips: Tensor, arch: str) -> dict[str, Tensor]:
    """Eval forward returning intermediate maps: 'stem' (after the max pool), 'layer1'..'layer4'
    (each (B, C, T, H, W)) and 'out' (B, 2048, T), the released eval output."""
    _check_arch(arch)
    if clips.dim() != 5 or clips.shape[1] != 3:
        raise ValueError(f"clips must be (B, 3, T, H, W), got {tuple(clips.shape)}")
    sd = {k: v.float() for k, v in state_dict.items() if v.is_floating_point()}
    x = clips.float()
    stages: dict[str, Tensor] = {}
    with torch.no_grad():
        x = F.relu(_bn(sd, "bn1", _conv(sd, "conv1", x, stride=2)))
        x = F.max_pool3d(x, kernel_size=(1, 3, 3), stride=(1, 2, 2))  # no padding, as released
        stages["stem"] = x
        for stage in range(1, 5):
            for idx, (kind, arg) in enumerate(_stage_plan(arch, stage)):
                p = f"layer{stage}.{idx}"
                if kind == "block":
                    x = _bottleneck(sd, p, x, STAGE_STRIDES[stage - 1] if arg == 0 else 1)
                elif kind == "idm":
                    x = _idm(sd, p, x)
                elif kind == "sa":
                    x = _sa(sd, p, x)
                else:
                    x = _sbm(sd, p, x, arg)
            stages[f"layer{stage}"] = x
        feats = x.amax(dim=(3, 4))  # global spatial max pool per frame: (B, 2048, T)
        stages["out"] = _bn(sd, "bn", feats)
    return stages


def released_forward(state_dict: Mapping[str, Tensor], clips: Tensor, arch: str) -> Tensor:
    """Released eval output for ``clips`` (B, 3, T, H, W): BN-neck per-frame features (B, 2048, T).

    T must be 4 (or 8 for sbnet, whose SBMs then see two groups of 4 frames); for the IDM archs
    (sinet, idnet) T*H*W at layer2 must match the state dict (T == training seq_len, 256x128).
    sanet takes any T, and its SA blocks pool over all T frames of the input at once.
    The released evaluation averages this output over the last axis to get a clip descriptor.
    """
    return released_forward_stages(state_dict, clips, arch)["out"]
