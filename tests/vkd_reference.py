"""Functional stand-in for the VKD authors' TriNet, used as the reference in CI tests.

An independent re-implementation of the *eval-mode* computation of the models released with "Robust
Re-Identification by Multiple Views Knowledge Distillation" (Porrello, Bergamini, Calderara, ECCV 2020;
github.com/aimagelab/VKD, ``model/net.py``): a ``TriNet`` made of a torchvision backbone cut into
``features_layers``, a spatial average pool, the mean over the frames of a clip (``MeanAggregator``) and a
BN-neck classifier used only in training. It works directly on a state dict in *their* layout (what their
``Saver.save_net`` writes: ``torch.save(net.state_dict())`` of the bare TriNet, no ``module.`` prefix)::

    backbone.features_layers.<i>.<...>     the backbone, cut into a ModuleList (layout per backbone below)
    classifier.bottleneck.*                BatchNorm1d "BN-neck" (training only; bias frozen at 0)
    classifier.classifier.weight           Linear without bias, one row per training identity

No authors' code is used or needed. It was written from a reading of their code, and checked outside this
repository against it: their ``model/net.py`` and ``model/cbam`` run with today's torchvision (their MobileNet-V2
is torchvision's, fetched with torch.hub in their code; built here with ``torchvision.models.mobilenet_v2``),
each state dict of :func:`make_released_state_dict` loaded into their ``TriNet`` with
``load_state_dict(strict=True)`` (which proves that layout and shapes are theirs), both run in eval mode on the
same random clips (B=2, T=3, 256x128): max relative difference of the embeddings (max |a - b| / max |b|) below
3e-7 for all six backbones, seeds 0-1.

Facts of their eval computation reproduced here (``TriNet.forward`` without ``return_logits``):

* every frame goes through the backbone on its own; the output is the spatial average of the last feature map,
  averaged over the frames: the **pre-BN** embedding (the BN-neck and the classifier are not used at test time);
  a ``(B, 3, H, W)`` batch is a batch of one-frame clips;
* ResNet-34/50/101 (torchvision v1.5: stride on the 3x3 conv of a bottleneck, on ``conv1`` of a basic block):
  ``layer4`` has stride 1 **without dilation** (the first block's strided conv and its shortcut conv set to stride
  1); their last block's shared ``relu`` module is replaced by an empty ``nn.Sequential``, so **all** activations
  of that block (two in a basic block, three in a bottleneck, the one after the residual sum included) are the
  identity. Layout: ``0`` = Sequential(conv1, bn1, relu, maxpool) -> ``0.0`` / ``0.1``; ``1``..``4`` =
  Sequential(layerN) -> ``<n>.0.<block>.<...>``;
* ResNet-50 + BAM (their ``model/cbam``): the same ResNet-50 with a BAM module appended to ``layer1``, ``layer2``
  and ``layer3`` (``<n>.0.bam``); BAM's attention is ``1 + sigmoid(channel * spatial)`` (their code multiplies the
  two branches; the BAM paper adds them), the output ``attention * x``. Channel branch: global average, Linear
  C -> C/16, BatchNorm1d, ReLU, Linear C/16 -> C. Spatial branch: 1x1 conv C -> C/16, BN, ReLU, two 3x3 convs with
  dilation 4 (padding 4), each with BN and ReLU, a 1x1 conv to one channel (all convs with biases);
* DenseNet-121: the children of torchvision's ``features``, ``norm5`` included and **no ReLU after it** (torchvision
  applies that ReLU in ``DenseNet.forward``, which their code does not call); no stride change (output stride 32);
* MobileNet-V2 (torchvision's): the children of ``features``; the depthwise conv of block 14 (first block of the
  160-channel stage) gets stride 1 (output stride 16), and the **ReLU6 of the last 1x1 conv (1280 channels) is
  removed**.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor

ARCHS = ("resnet34", "resnet50", "resnet101", "resnet50bam", "densenet121", "mobilenet")
FEAT_DIM = {"resnet34": 512, "resnet50": 2048, "resnet101": 2048, "resnet50bam": 2048, "densenet121": 1024,
            "mobilenet": 1280}
P = "backbone.features_layers"
BN_EPS = 1e-5

RESNET_DEPTHS = {"resnet34": (3, 4, 6, 3), "resnet50": (3, 4, 6, 3), "resnet101": (3, 4, 23, 3),
                 "resnet50bam": (3, 4, 6, 3)}
RESNET_WIDTHS = (64, 128, 256, 512)
BAM_REDUCTION = 16
BAM_DILATION = 4
DENSE_BLOCKS = (6, 12, 24, 16)
DENSE_GROWTH = 32
DENSE_BN_SIZE = 4
# MobileNet-V2 (expansion t, channels c, blocks n, stride s) per stage; stem 32, last conv 1280
MBV2_STAGES = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
               (6, 320, 1, 1))
MBV2_LAST_STRIDE_BLOCK = 14  # features index whose depthwise conv their code sets to stride 1


def _check_arch(arch: str) -> None:
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; expected one of {ARCHS}")


def _is_bottleneck(arch: str) -> bool:
    return arch in ("resnet50", "resnet101", "resnet50bam")


# ----------------------------------------------------------------------------- key layout


def _conv(keys: dict, name: str, c_out: int, c_in: int, k: int = 1, bias: bool = False) -> None:
    keys[f"{name}.weight"] = (c_out, c_in, k, k)
    if bias:
        keys[f"{name}.bias"] = (c_out,)


def _bn(keys: dict, name: str, c: int) -> None:
    for suffix in ("weight", "bias", "running_mean", "running_var"):
        keys[f"{name}.{suffix}"] = (c,)
    keys[f"{name}.num_batches_tracked"] = ()


def _resnet_keys(keys: dict, arch: str) -> None:
    _conv(keys, f"{P}.0.0", 64, 3, 7)
    _bn(keys, f"{P}.0.1", 64)
    expansion = 4 if _is_bottleneck(arch) else 1
    c_in = 64
    for stage, (width, depth) in enumerate(zip(RESNET_WIDTHS, RESNET_DEPTHS[arch], strict=True), 1):
        c_out = width * expansion
        for b in range(depth):
            p = f"{P}.{stage}.0.{b}"
            block_in = c_in if b == 0 else c_out
            if expansion == 4:
                _conv(keys, f"{p}.conv1", width, block_in)
                _bn(keys, f"{p}.bn1", width)
                _conv(keys, f"{p}.conv2", width, width, 3)
                _bn(keys, f"{p}.bn2", width)
                _conv(keys, f"{p}.conv3", c_out, width)
                _bn(keys, f"{p}.bn3", c_out)
            else:
                _conv(keys, f"{p}.conv1", width, block_in, 3)
                _bn(keys, f"{p}.bn1", width)
                _conv(keys, f"{p}.conv2", width, width, 3)
                _bn(keys, f"{p}.bn2", width)
            if b == 0 and (stage > 1 or c_in != c_out):
                _conv(keys, f"{p}.downsample.0", c_out, c_in)
                _bn(keys, f"{p}.downsample.1", c_out)
        if arch == "resnet50bam" and stage < 4:
            q, r = f"{P}.{stage}.0.bam", c_out // BAM_REDUCTION
            keys[f"{q}.channel_att.gate_c.gate_c_fc_0.weight"] = (r, c_out)
            keys[f"{q}.channel_att.gate_c.gate_c_fc_0.bias"] = (r,)
            _bn(keys, f"{q}.channel_att.gate_c.gate_c_bn_1", r)
            keys[f"{q}.channel_att.gate_c.gate_c_fc_final.weight"] = (c_out, r)
            keys[f"{q}.channel_att.gate_c.gate_c_fc_final.bias"] = (c_out,)
            _conv(keys, f"{q}.spatial_att.gate_s.gate_s_conv_reduce0", r, c_out, 1, bias=True)
            _bn(keys, f"{q}.spatial_att.gate_s.gate_s_bn_reduce0", r)
            for i in range(2):
                _conv(keys, f"{q}.spatial_att.gate_s.gate_s_conv_di_{i}", r, r, 3, bias=True)
                _bn(keys, f"{q}.spatial_att.gate_s.gate_s_bn_di_{i}", r)
            _conv(keys, f"{q}.spatial_att.gate_s.gate_s_conv_final", 1, r, 1, bias=True)
        c_in = c_out


def _densenet_keys(keys: dict) -> None:
    _conv(keys, f"{P}.0", 64, 3, 7)
    _bn(keys, f"{P}.1", 64)
    c = 64
    for i, n in enumerate(DENSE_BLOCKS):
        block = f"{P}.{4 + 2 * i}"
        inter = DENSE_BN_SIZE * DENSE_GROWTH
        for j in range(n):
            p = f"{block}.denselayer{j + 1}"
            _bn(keys, f"{p}.norm1", c + j * DENSE_GROWTH)
            _conv(keys, f"{p}.conv1", inter, c + j * DENSE_GROWTH)
            _bn(keys, f"{p}.norm2", inter)
            _conv(keys, f"{p}.conv2", DENSE_GROWTH, inter, 3)
        c += n * DENSE_GROWTH
        if i < len(DENSE_BLOCKS) - 1:
            t = f"{P}.{5 + 2 * i}"
            _bn(keys, f"{t}.norm", c)
            _conv(keys, f"{t}.conv", c // 2, c)
            c //= 2
    _bn(keys, f"{P}.11", c)  # norm5


def _mbv2_plan() -> list[tuple[int, int, int, int]]:
    """(features index, in channels, out channels, stride, expansion) of every inverted residual block, as used
    at eval (block 14's stride already 1)."""
    plan, c_in, idx = [], 32, 1
    for t, c, n, s in MBV2_STAGES:
        for b in range(n):
            stride = s if b == 0 else 1
            if idx == MBV2_LAST_STRIDE_BLOCK:
                stride = 1
            plan.append((idx, c_in, c, stride, t))
            c_in, idx = c, idx + 1
    return plan


def _mbv2_keys(keys: dict) -> None:
    _conv(keys, f"{P}.0.0", 32, 3, 3)
    _bn(keys, f"{P}.0.1", 32)
    for idx, c_in, c_out, _, t in _mbv2_plan():
        p, hidden, j = f"{P}.{idx}.conv", c_in * t, 0
        if t != 1:
            _conv(keys, f"{p}.0.0", hidden, c_in)
            _bn(keys, f"{p}.0.1", hidden)
            j = 1
        _conv(keys, f"{p}.{j}.0", hidden, 1, 3)  # depthwise
        _bn(keys, f"{p}.{j}.1", hidden)
        _conv(keys, f"{p}.{j + 1}", c_out, hidden)
        _bn(keys, f"{p}.{j + 2}", c_out)
    _conv(keys, f"{P}.18.0", 1280, 320)
    _bn(keys, f"{P}.18.1", 1280)


def released_keys(arch: str, num_classes: int = 625) -> dict[str, tuple[int, ...]]:
    """Keys and shapes of their TriNet state dict, in the order ``state_dict()`` lists them."""
    _check_arch(arch)
    keys: dict[str, tuple[int, ...]] = {}
    if arch.startswith("resnet"):
        _resnet_keys(keys, arch)
    elif arch == "densenet121":
        _densenet_keys(keys)
    else:
        _mbv2_keys(keys)
    _bn(keys, "classifier.bottleneck", FEAT_DIM[arch])
    keys["classifier.classifier.weight"] = (num_classes, FEAT_DIM[arch])
    return keys


# ----------------------------------------------------------------------------- random weights


def _random_bn(name: str, c: int, g: torch.Generator, arch: str) -> dict[str, Tensor]:
    # the last BN of a residual branch (and of a shortcut, and of a dense layer) gets a smaller gain so that the
    # features grow slowly over the depth; everything else is close to unit gain
    branch_end = ".bn3" if _is_bottleneck(arch) else ".bn2"
    damped = name.endswith((branch_end, ".downsample.1", ".norm2"))
    lo, hi = (0.2, 0.5) if damped else (0.6, 1.2)
    return {
        "weight": lo + (hi - lo) * torch.rand(c, generator=g),
        "bias": 0.1 * torch.randn(c, generator=g),
        "running_mean": 0.1 * torch.randn(c, generator=g),
        "running_var": 0.5 + 1.5 * torch.rand(c, generator=g),
        "num_batches_tracked": torch.tensor(1000, dtype=torch.int64),
    }


def make_released_state_dict(arch: str, seed: int = 0, num_classes: int = 625) -> dict[str, Tensor]:
    """A random, well-conditioned float32 state dict in exactly their layout (deterministic for ``seed``).

    Conv / linear weights are He-scaled, biases non-zero, BN running statistics non-trivial; the classifier is
    small, as their init makes it.
    """
    g = torch.Generator().manual_seed(seed)
    shapes = released_keys(arch, num_classes)
    sd: dict[str, Tensor] = {}
    for key, shape in shapes.items():
        module, param = key.rsplit(".", 1)
        if f"{module}.running_var" in shapes:  # a BN, made as a whole at its first key
            if param == "weight":
                sd.update({f"{module}.{k}": v for k, v in _random_bn(module, shape[0], g, arch).items()})
        elif param == "weight":
            std = 0.001 if key.startswith("classifier.") else math.sqrt(2.0 / math.prod(shape[1:]))
            sd[key] = std * torch.randn(shape, generator=g)
        else:
            sd[key] = 0.05 * torch.randn(shape, generator=g)
    return {key: sd[key] for key in shapes}


# ----------------------------------------------------------------------------- forward pieces


def _c(sd: Mapping[str, Tensor], name: str, x: Tensor, stride: int = 1, dilation: int = 1, groups: int = 1
       ) -> Tensor:
    w = sd[f"{name}.weight"]
    pad = dilation * (w.shape[-1] // 2)
    return F.conv2d(x, w, sd.get(f"{name}.bias"), stride=stride, padding=pad, dilation=dilation, groups=groups)


def _b(sd: Mapping[str, Tensor], name: str, x: Tensor) -> Tensor:
    return F.batch_norm(x, sd[f"{name}.running_mean"], sd[f"{name}.running_var"], sd[f"{name}.weight"],
                        sd[f"{name}.bias"], training=False, eps=BN_EPS)


def _bam(sd: Mapping[str, Tensor], p: str, x: Tensor) -> Tensor:
    c = f"{p}.channel_att.gate_c"
    v = x.mean(dim=(2, 3))
    v = F.linear(v, sd[f"{c}.gate_c_fc_0.weight"], sd[f"{c}.gate_c_fc_0.bias"])
    v = F.relu(_b(sd, f"{c}.gate_c_bn_1", v))
    v = F.linear(v, sd[f"{c}.gate_c_fc_final.weight"], sd[f"{c}.gate_c_fc_final.bias"])
    s = f"{p}.spatial_att.gate_s"
    m = F.relu(_b(sd, f"{s}.gate_s_bn_reduce0", _c(sd, f"{s}.gate_s_conv_reduce0", x)))
    for i in range(2):
        m = F.relu(_b(sd, f"{s}.gate_s_bn_di_{i}", _c(sd, f"{s}.gate_s_conv_di_{i}", m, dilation=BAM_DILATION)))
    m = _c(sd, f"{s}.gate_s_conv_final", m)  # (N, 1, H, W)
    return (1 + torch.sigmoid(v[:, :, None, None] * m)) * x  # their product of the branches


def _resnet(sd: Mapping[str, Tensor], x: Tensor, arch: str) -> Tensor:
    x = F.relu(_b(sd, f"{P}.0.1", _c(sd, f"{P}.0.0", x, stride=2)))
    x = F.max_pool2d(x, 3, stride=2, padding=1)
    for stage, depth in enumerate(RESNET_DEPTHS[arch], 1):
        for b in range(depth):
            p = f"{P}.{stage}.0.{b}"
            stride = 2 if b == 0 and stage in (2, 3) else 1  # layer4: stride 1, no dilation
            last = stage == 4 and b == depth - 1
            act = (lambda t: t) if last else F.relu  # their emptied shared ReLU: every activation of the block
            if _is_bottleneck(arch):
                y = act(_b(sd, f"{p}.bn1", _c(sd, f"{p}.conv1", x)))
                y = act(_b(sd, f"{p}.bn2", _c(sd, f"{p}.conv2", y, stride=stride)))
                y = _b(sd, f"{p}.bn3", _c(sd, f"{p}.conv3", y))
            else:
                y = act(_b(sd, f"{p}.bn1", _c(sd, f"{p}.conv1", x, stride=stride)))
                y = _b(sd, f"{p}.bn2", _c(sd, f"{p}.conv2", y))
            if f"{p}.downsample.0.weight" in sd:
                x = _b(sd, f"{p}.downsample.1", _c(sd, f"{p}.downsample.0", x, stride=stride))
            x = act(y + x)
        if f"{P}.{stage}.0.bam.channel_att.gate_c.gate_c_fc_0.weight" in sd:
            x = _bam(sd, f"{P}.{stage}.0.bam", x)
    return x


def _densenet(sd: Mapping[str, Tensor], x: Tensor) -> Tensor:
    x = F.relu(_b(sd, f"{P}.1", _c(sd, f"{P}.0", x, stride=2)))
    x = F.max_pool2d(x, 3, stride=2, padding=1)
    for i, n in enumerate(DENSE_BLOCKS):
        feats = [x]
        for j in range(n):
            p = f"{P}.{4 + 2 * i}.denselayer{j + 1}"
            y = _c(sd, f"{p}.conv1", F.relu(_b(sd, f"{p}.norm1", torch.cat(feats, 1))))
            feats.append(_c(sd, f"{p}.conv2", F.relu(_b(sd, f"{p}.norm2", y))))
        x = torch.cat(feats, 1)
        if i < len(DENSE_BLOCKS) - 1:
            t = f"{P}.{5 + 2 * i}"
            x = F.avg_pool2d(_c(sd, f"{t}.conv", F.relu(_b(sd, f"{t}.norm", x))), 2, stride=2)
    return _b(sd, f"{P}.11", x)  # norm5, no ReLU


def _mobilenet(sd: Mapping[str, Tensor], x: Tensor) -> Tensor:
    x = F.relu6(_b(sd, f"{P}.0.1", _c(sd, f"{P}.0.0", x, stride=2)))
    for idx, c_in, c_out, stride, t in _mbv2_plan():
        p, y, j = f"{P}.{idx}.conv", x, 0
        if t != 1:
            y = F.relu6(_b(sd, f"{p}.0.1", _c(sd, f"{p}.0.0", y)))
            j = 1
        y = F.relu6(_b(sd, f"{p}.{j}.1", _c(sd, f"{p}.{j}.0", y, stride=stride, groups=y.shape[1])))
        y = _b(sd, f"{p}.{j + 2}", _c(sd, f"{p}.{j + 1}", y))
        # residual where the block was built with stride 1 and equal widths (block 14 was built with stride 2)
        built_stride = 2 if idx == MBV2_LAST_STRIDE_BLOCK else stride
        x = x + y if built_stride == 1 and c_in == c_out else y
    return _b(sd, f"{P}.18.1", _c(sd, f"{P}.18.0", x))  # the last ReLU6 removed


# ----------------------------------------------------------------------------- forward


def released_frame_features(state_dict: Mapping[str, Tensor], clips: Tensor, arch: str) -> Tensor:
    """Per-frame pre-BN features ``(B, T, D)`` of clips ``(B, T, 3, H, W)`` (a ``(B, 3, H, W)`` batch is a batch
    of one-frame clips): the backbone's last map, spatially averaged."""
    _check_arch(arch)
    if clips.dim() == 4:
        clips = clips.unsqueeze(1)
    b, t = clips.shape[:2]
    sd = {k: v.float() for k, v in state_dict.items() if v.is_floating_point()}
    x = clips.float().flatten(0, 1)
    with torch.no_grad():
        if arch.startswith("resnet"):
            x = _resnet(sd, x, arch)
        elif arch == "densenet121":
            x = _densenet(sd, x)
        else:
            x = _mobilenet(sd, x)
    return x.mean(dim=(2, 3)).unflatten(0, (b, t))


def released_forward(state_dict: Mapping[str, Tensor], clips: Tensor, arch: str) -> Tensor:
    """Their eval output for clips ``(B, T, 3, H, W)``: the pre-BN features averaged over the frames, ``(B, D)``."""
    return released_frame_features(state_dict, clips, arch).mean(dim=1)


def released_logits(state_dict: Mapping[str, Tensor], clips: Tensor, arch: str) -> Tensor:
    """Their ``return_logits`` output in eval mode: BN-neck and classifier per frame, averaged over the frames."""
    f = released_frame_features(state_dict, clips, arch)
    sd = state_dict
    y = F.batch_norm(f.flatten(0, 1), sd["classifier.bottleneck.running_mean"], sd["classifier.bottleneck.running_var"],
                     sd["classifier.bottleneck.weight"], sd["classifier.bottleneck.bias"], training=False, eps=BN_EPS)
    return F.linear(y, sd["classifier.classifier.weight"]).unflatten(0, f.shape[:2]).mean(dim=1)
