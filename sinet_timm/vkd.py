"""VKD: the video re-ID networks of "Robust Re-Identification by Multiple Views Knowledge Distillation".

Paper: Angelo Porrello, Luca Bergamini, Simone Calderara. "Robust Re-Identification by Multiple Views Knowledge
Distillation", ECCV 2020 (arXiv:2007.04174). Authors' code and checkpoints: https://github.com/aimagelab/VKD (MIT).

A VKD network (the authors' ``TriNet``) is a frame-wise ImageNet backbone, a spatial average pool and the mean
over the frames of a clip; a BN-neck and a bias-free linear classifier serve training only. The teachers
(``baseline.zip``) and the distilled students (``distilled.zip``, "ResVKD", "DenseVKD", "MobileVKD") share this
architecture; distillation only changes the weights. Here the backbones are timm's ``resnet34``, ``resnet50``,
``resnet101``, ``densenet121`` and ``mobilenetv2_100``, changed as the authors' ``model/net.py`` changes
torchvision's (their checkpoints load with :func:`checkpoint_filter_fn`):

* ResNets: ``layer4`` has stride 1 without dilation (output stride 16); the last block's activations are all the
  identity (the authors replace that block's shared ReLU module, used after every BN and after the residual sum);
* ResNet-50 + BAM (``vkd_r50bam``): a Bottleneck Attention Module after ``layer1``, ``layer2`` and ``layer3``, as in
  the authors' ``model/cbam`` (which multiplies BAM's two branches; the BAM paper adds them);
* DenseNet-121: ``norm5`` without the ReLU torchvision applies after it (output stride 32);
* MobileNet-V2: the depthwise conv of the first 160-channel block gets stride 1 (output stride 16), and the last
  1x1 conv (1280 channels) has no ReLU6.

Input ``(B, T, 3, H, W)`` (any T >= 1) or a ``(B, 3, H, W)`` batch of single crops (one-frame clips). In eval mode
the model returns the re-ID embedding ``(B, D)``, the per-frame pre-BN features averaged over the frames, which is
what the authors test with (``num_classes=0``), or the logits.
"""

import re
from typing import Any

import timm
import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import register_notrace_function, register_notrace_module
from timm.models import generate_default_cfgs, register_model

from ._builder import create_video_model
from ._checkpoint import refuse_integer_weights
from ._input import check_frames
from ._pretrained import as_video_pretrained_cfg, video_pretrained_cfg
from ._zoo import zoo_pretrained_cfgs
from .errors import CheckpointError, ModelInputError
from .framewise import train_output

__all__ = ['BAM', 'BNNeck', 'FrameInput', 'VKDNet', 'as_clips', 'checkpoint_filter_fn', 'frame_vectors', 'infer_arch',
           'run_info']

MIN_FRAME_SIDE = 32  # DenseNet's three 2x2 transitions need maps of 2x2 or more: frames of at least 32x32


# --- Bottleneck Attention Module ------------------------------------------------------------------------------
class ChannelGate(nn.Module):
    """BAM's channel attention branch: global average, MLP with one hidden layer (C/r, BN, ReLU) -> ``(N, C)``."""

    def __init__(self, dim: int, reduction: int = 16):
        super().__init__()
        self.fc = nn.Linear(dim, dim // reduction)
        self.bn = nn.BatchNorm1d(dim // reduction)
        self.act = nn.ReLU(inplace=True)
        self.fc_out = nn.Linear(dim // reduction, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc_out(self.act(self.bn(self.fc(x.mean(dim=(2, 3))))))


class SpatialGate(nn.Module):
    """BAM's spatial attention branch: 1x1 reduction, two dilated 3x3 convs, 1x1 to one map -> ``(N, 1, H, W)``."""

    def __init__(self, dim: int, reduction: int = 16, num_dilated: int = 2, dilation: int = 4):
        super().__init__()
        mid = dim // reduction
        layers: list[nn.Module] = [nn.Conv2d(dim, mid, 1), nn.BatchNorm2d(mid), nn.ReLU(inplace=True)]
        for _ in range(num_dilated):
            layers += [nn.Conv2d(mid, mid, 3, padding=dilation, dilation=dilation), nn.BatchNorm2d(mid),
                       nn.ReLU(inplace=True)]
        layers.append(nn.Conv2d(mid, 1, 1))
        self.gate = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gate(x)


class BAM(nn.Module):
    """Bottleneck Attention Module (Park et al., BMVC 2018) as the VKD code implements it.

    ``x * (1 + sigmoid(Mc(x) * Ms(x)))``: the authors' code multiplies the channel and spatial branches, where the
    BAM paper (its Eq. 1-2) adds them; the released checkpoints were trained with the product.
    """

    # the authors' attribute names -> ours (checkpoint conversion), for keys below a BAM module
    released_keys = {
        'channel_att.gate_c.gate_c_fc_0.': 'channel_gate.fc.',
        'channel_att.gate_c.gate_c_bn_1.': 'channel_gate.bn.',
        'channel_att.gate_c.gate_c_fc_final.': 'channel_gate.fc_out.',
        'spatial_att.gate_s.gate_s_conv_reduce0.': 'spatial_gate.gate.0.',
        'spatial_att.gate_s.gate_s_bn_reduce0.': 'spatial_gate.gate.1.',
        'spatial_att.gate_s.gate_s_conv_di_0.': 'spatial_gate.gate.3.',
        'spatial_att.gate_s.gate_s_bn_di_0.': 'spatial_gate.gate.4.',
        'spatial_att.gate_s.gate_s_conv_di_1.': 'spatial_gate.gate.6.',
        'spatial_att.gate_s.gate_s_bn_di_1.': 'spatial_gate.gate.7.',
        'spatial_att.gate_s.gate_s_conv_final.': 'spatial_gate.gate.9.',
    }

    def __init__(self, dim: int, reduction: int = 16):
        super().__init__()
        self.channel_gate = ChannelGate(dim, reduction)
        self.spatial_gate = SpatialGate(dim, reduction)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        att = self.channel_gate(x)[:, :, None, None] * self.spatial_gate(x)  # (N, C, 1, 1) * (N, 1, H, W)
        return x * (1 + torch.sigmoid(att))


# --- the network ----------------------------------------------------------------------------------------------
class BNNeck(nn.BatchNorm1d):
    """The BN-neck of the authors' classifier (training only) with its bias fixed at 0, as they train it.

    The bias is a buffer, not a frozen parameter: optimizers, DDP and timm's gradient checks see only what trains,
    and checkpoints keep their ``bottleneck.bias`` key (the authors' value, zero, loads into it).
    """

    def __init__(self, num_features: int, device: torch.device | str | None = None, dtype: torch.dtype | None = None):
        super().__init__(num_features, device=device, dtype=dtype)
        bias = self.bias.detach()
        del self.bias
        self.register_buffer('bias', torch.zeros_like(bias))


class FrameInput(nn.Module):
    """The model's input, checked, as a batch of frames: clips ``(B, T, C, H, W)`` -> ``(B*T, C, H, W)``, crops
    ``(B, C, H, W)`` as they are. A module so that ``torch.fx`` keeps the shape checks as one leaf and TorchScript
    compiles them."""

    def __init__(self, in_chans: int, min_side: int):
        super().__init__()
        self.in_chans, self.min_side = in_chans, min_side

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_frames(x, self.in_chans)
        if x.dim() == 5 and x.shape[1] == 0:
            raise ModelInputError(f'a clip needs at least one frame, got shape {list(x.shape)}')
        if x.shape[-2] < self.min_side or x.shape[-1] < self.min_side:
            raise ModelInputError(
                f'{x.shape[-2]}x{x.shape[-1]} frames are too small: frames of at least {self.min_side}x'
                f'{self.min_side} are needed. Resize frames to 256x128 (timm.data.resolve_data_config gives the '
                'preprocessing).')
        return x.flatten(0, 1) if x.dim() == 5 else x


def as_clips(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Frame-wise outputs ``y`` ``(B*T, ...)`` of input ``x`` as ``(B, T, ...)`` for clips; as they are for crops."""
    return y.unflatten(0, (x.shape[0], x.shape[1])) if x.dim() == 5 else y


def frame_vectors(maps: torch.Tensor) -> torch.Tensor:
    """Spatial average of per-frame maps: ``(B, T, C, h, w)`` -> ``(B, T, C)``; a crop's ``(B, C, h, w)`` ->
    ``(B, 1, C)``."""
    x = maps.mean(dim=(-2, -1))
    return x if x.dim() == 3 else x.unsqueeze(1)


for _fn in (as_clips, frame_vectors):  # shape-dependent branches: leaves for torch.fx
    register_notrace_function(_fn)
for _m in (FrameInput, BNNeck):  # leaves for torch.fx, as torch.nn.BatchNorm1d itself is
    register_notrace_module(_m)


# architecture -> (timm backbone, the authors' --backbone name, embedding dim)
BACKBONES: dict[str, tuple[str, str, int]] = {
    'vkd_r34': ('resnet34', 'resnet34', 512),
    'vkd_r50': ('resnet50', 'resnet50', 2048),
    'vkd_r101': ('resnet101', 'resnet101', 2048),
    'vkd_r50bam': ('resnet50', 'resnet50bam', 2048),
    'vkd_d121': ('densenet121', 'densenet121', 1024),
    'vkd_mbv2': ('mobilenetv2_100', 'mobilenet', 1280),
}
MBV2_LAST_STRIDE = (5, 0)  # blocks[5][0]: the first 160-channel block (the authors' features[14])


def _adapt_backbone(m: nn.Module, kind: str, bam: bool) -> list[dict[str, Any]]:
    """Change a timm backbone as the authors' ``Backbone`` changes torchvision's; returns its feature info."""
    info = [dict(f) for f in m.feature_info]
    if kind == 'resnet':
        first, last = m.layer4[0], m.layer4[-1]
        (first.conv2 if hasattr(first, 'conv3') else first.conv1).stride = (1, 1)  # last stride 1, no dilation
        first.downsample[0].stride = (1, 1)
        for name in ('act1', 'act2', 'act3'):  # the authors' emptied shared ReLU: every activation of the block
            if hasattr(last, name):
                setattr(last, name, nn.Identity())
        info[-1]['reduction'] = 16
        if bam:
            for stage in (1, 2, 3):
                layer = getattr(m, f'layer{stage}')
                layer.add_module('bam', BAM(info[stage]['num_chs']))
    elif kind == 'densenet':
        m.features.norm5.act = nn.Identity()  # torchvision's ReLU after norm5 is not part of their backbone
    else:  # mobilenet
        s, b = MBV2_LAST_STRIDE
        m.blocks[s][b].conv_dw.stride = (1, 1)
        m.bn2.act = nn.Identity()  # the ReLU6 of the last 1x1 conv removed
        for f in info:
            f['reduction'] = min(f['reduction'], 16)
    for f in info:
        f['module'] = f"backbone.{f['module']}"
    return info


class VKDNet(nn.Module):
    """The authors' TriNet: frame-wise backbone, spatial average, frame mean; BN-neck + classifier for training."""

    def __init__(
            self,
            backbone: str = 'resnet50',
            bam: bool = False,
            num_classes: int = 0,
            in_chans: int = 3,
            drop_rate: float = 0.0,
            global_pool: str = 'avg',
            img_size: tuple[int, int] | None = None,
            device: torch.device | str | None = None,
            dtype: torch.dtype | None = None,
            **kwargs: Any,
    ):
        """
        Args:
            backbone: the timm backbone (``resnet34``, ``resnet50``, ``resnet101``, ``densenet121``,
                ``mobilenetv2_100``), changed as the authors' code changes it.
            bam: BAM modules after layer1-3 (ResNet-50 only; the authors' ``resnet50bam``).
            num_classes: training identities (0: the model returns the re-ID embedding).
            global_pool: ``'avg'`` (spatial average per frame, then the frame mean) or ``''`` (no head:
                ``forward`` returns the per-frame maps; needs ``num_classes=0``).
            img_size: the frame size of the pretrained cfg (default 256x128), recorded only: the network takes
                any frame size (accepted so that every family is created alike).
            device, dtype: where and in which precision the parameters and buffers are made.
            **kwargs: passed to the timm backbone (e.g. ``drop_path_rate``).
        """
        super().__init__()
        kind = 'resnet' if backbone.startswith('resnet') else 'densenet' if backbone.startswith('densenet') \
            else 'mobilenet'
        if bam and kind != 'resnet':
            raise ValueError(f'BAM is placed in ResNet stages; backbone {backbone!r} has none')
        _check_pool(global_pool, num_classes)
        self.backbone_kind = kind
        self.in_chans = in_chans
        self.img_size = tuple(img_size) if img_size else (256, 128)
        self.drop_rate = drop_rate
        self.global_pool = global_pool
        self.clip_len = 8  # frames per clip of the authors' test protocol (any T works: the model is frame-wise)
        self.backbone = timm.create_model(backbone, pretrained=False, num_classes=0, global_pool='',
                                          in_chans=in_chans, **kwargs)
        self.feature_info = _adapt_backbone(self.backbone, kind, bam)
        self.num_features = self.head_hidden_size = self.backbone.num_features
        self.frames = FrameInput(in_chans, MIN_FRAME_SIDE)
        self.bottleneck = BNNeck(self.num_features)  # training only
        self.classifier: nn.Module = nn.Identity()
        self.num_classes = 0
        self.reset_classifier(num_classes)
        if device is not None or dtype is not None:
            self.to(device=device, dtype=dtype)

    # --- timm model API -------------------------------------------------------------------------------------
    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        def prefix(rule: Any) -> Any:
            if isinstance(rule, str):
                return '|'.join(r'^backbone\.' + r.lstrip('^') for r in rule.split('|'))
            return [(prefix(r), n) for r, n in rule]
        return {k: prefix(v) for k, v in self.backbone.group_matcher(coarse).items()}

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.backbone.set_grad_checkpointing(enable)

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.classifier

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """A new bias-free classifier (their init: normal, std 0.001) on the model's device and dtype;
        ``global_pool=''`` removes the head (unpooled maps)."""
        if global_pool is None and num_classes > 0 and not self.global_pool:
            global_pool = 'avg'
        _check_pool(global_pool if global_pool is not None else self.global_pool, num_classes)
        if global_pool is not None:
            self.global_pool = global_pool
        self.num_classes = num_classes
        w = self.bottleneck.weight
        if num_classes > 0:
            self.classifier = nn.Linear(self.num_features, num_classes, bias=False, device=w.device, dtype=w.dtype)
            nn.init.normal_(self.classifier.weight, std=0.001)
        else:
            self.classifier = nn.Identity()
        self.classifier.train(self.training)

    @torch.jit.ignore
    def check_input(self, x: torch.Tensor) -> None:
        """Raise a clear error for inputs the model cannot take."""
        self.frames(x)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Clips ``(B, T, C, H, W)`` -> per-frame maps ``(B, T, D, h, w)``; crops ``(B, C, H, W)`` -> maps
        ``(B, D, h, w)``."""
        return as_clips(x, self.backbone.forward_features(self.frames(x)))  # the backbone is frame-wise

    def forward_intermediates(
            self,
            x: torch.Tensor,
            indices: int | list[int] | None = None,
            norm: bool = False,
            stop_early: bool = False,
            output_fmt: str = 'NCHW',
            intermediates_only: bool = False,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """timm's intermediate features, the backbone's own taps (``feature_info``), per frame: ``(B, T, C, h, w)``
        for clips, ``(B, C, h, w)`` for crops."""
        out = self.backbone.forward_intermediates(self.frames(x), indices, norm=norm,
                                                  stop_early=stop_early, output_fmt=output_fmt,
                                                  intermediates_only=intermediates_only)

        if intermediates_only:
            return [as_clips(x, y) for y in out]
        final, inter = out
        return as_clips(x, final), [as_clips(x, y) for y in inter]

    @torch.jit.ignore
    def prune_intermediate_layers(self, indices: int | list[int] = 1, prune_norm: bool = False,
                                  prune_head: bool = True) -> list[int]:
        """Drop the backbone's layers after the last intermediate feature wanted (timm's ``features_only``)."""
        take = self.backbone.prune_intermediate_layers(indices, prune_norm=prune_norm, prune_head=True)
        if prune_head:
            self.reset_classifier(0, '')
        return take

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Per-frame maps -> the embedding ``(B, D)`` (spatial average, frame mean; before the BN-neck) if
        ``pre_logits`` else logits (the embedding when num_classes=0)."""
        if not self.global_pool:
            return x
        x = frame_vectors(x).mean(dim=1)  # spatial average, then the authors' MeanAggregator over the frames
        if pre_logits or self.num_classes == 0:
            return x
        x = self.bottleneck(x)
        if self.drop_rate > 0.0:
            x = F.dropout(x, p=self.drop_rate, training=self.training)
        return self.classifier(x)

    @torch.jit.unused
    def forward_train(self, x: torch.Tensor) -> Any:
        """Train mode, as the authors train: logits per frame (BN-neck statistics over all frames) averaged over
        the frames, and the pre-BN embedding for the triplet / distillation losses. ``SINetOutput(logits,
        embedding, None)`` for clips, the logits for crops."""
        frames = frame_vectors(self.forward_features(x))  # (B, T, C)
        emb = frames.mean(dim=1)
        y = self.bottleneck(frames.flatten(0, 1))
        if self.drop_rate > 0.0:
            y = F.dropout(y, p=self.drop_rate)
        logits = self.classifier(y).reshape(frames.shape[0], frames.shape[1], -1).mean(dim=1)
        return train_output(x, logits, emb, None)

    def forward(self, x: torch.Tensor):
        if self.training and not torch.jit.is_scripting():
            return self.forward_train(x)
        return self.forward_head(self.forward_features(x))


def _check_pool(global_pool: str, num_classes: int) -> None:
    if global_pool not in ('avg', ''):
        raise ValueError(f"the head pools with a spatial average ('avg'), or not at all (''); got global_pool="
                         f'{global_pool!r}')
    if global_pool == '' and num_classes > 0:
        raise ValueError("global_pool='' (no head) has no classifier: use num_classes=0")


# --- checkpoints ----------------------------------------------------------------------------------------------
_DENSENET_CHILDREN = ('conv0', 'norm0', 'relu0', 'pool0', 'denseblock1', 'transition1', 'denseblock2',
                      'transition2', 'denseblock3', 'transition3', 'denseblock4', 'norm5')
_MBV2_DEPTHS = (1, 2, 3, 4, 3, 3, 1)
_MBV2_BLOCKS = [(s, b) for s, n in enumerate(_MBV2_DEPTHS) for b in range(n)]  # features index 1.. -> blocks.s.b
_RELEASED = 'backbone.features_layers.'


def _mbv2_key(rest: str) -> str:
    """The authors' MobileNet-V2 key below ``features_layers.`` -> ours below ``backbone.``."""
    idx, _, tail = rest.partition('.')
    i = int(idx)
    if i == 0:
        return {'0': 'conv_stem.', '1': 'bn1.'}[tail[0]] + tail[2:]
    if i == 18:
        return {'0': 'conv_head.', '1': 'bn2.'}[tail[0]] + tail[2:]
    s, b = _MBV2_BLOCKS[i - 1]
    pos, _, param = tail.removeprefix('conv.').rpartition('.')
    names = ({'0.0': 'conv_dw', '0.1': 'bn1', '1': 'conv_pw', '2': 'bn2'} if s == 0 else
             {'0.0': 'conv_pw', '0.1': 'bn1', '1.0': 'conv_dw', '1.1': 'bn2', '2': 'conv_pwl', '3': 'bn3'})
    if tail.startswith('conv.') and pos in names:
        return f'blocks.{s}.{b}.{names[pos]}.{param}'
    raise CheckpointError(f'unexpected MobileNet-V2 key {_RELEASED}{rest} in the checkpoint')


def _released_key(k: str, kind: str) -> str:
    """One key of the authors' TriNet state dict -> ours."""
    if k.startswith('classifier.bottleneck.'):
        return 'bottleneck.' + k.removeprefix('classifier.bottleneck.')
    if k.startswith('classifier.classifier.'):
        return 'classifier.' + k.removeprefix('classifier.classifier.')
    if not k.startswith(_RELEASED):
        return k
    rest = k.removeprefix(_RELEASED)
    if kind == 'densenet':
        idx, _, tail = rest.partition('.')
        return f'backbone.features.{_DENSENET_CHILDREN[int(idx)]}.{tail}'
    if kind == 'mobilenet':
        return 'backbone.' + _mbv2_key(rest)
    idx, _, tail = rest.partition('.')  # resnet: 0 = (conv1, bn1, relu, maxpool), n = Sequential(layer n)
    if idx == '0':
        return 'backbone.' + {'0': 'conv1.', '1': 'bn1.'}[tail[0]] + tail[2:]
    tail = tail.removeprefix('0.')
    if tail.startswith('bam.'):
        for old, new in BAM.released_keys.items():
            if tail.startswith('bam.' + old):
                tail = 'bam.' + new + tail.removeprefix('bam.' + old)
                break
    return f'backbone.layer{idx}.{tail}'


_OLD_DENSENET = re.compile(r'^(.*denselayer\d+\.(?:norm|relu|conv))\.([12]\.(?:weight|bias|running_mean|running_var))$')


def _imagenet_key(k: str) -> str | None:
    """An ImageNet backbone key (timm's or torchvision's layout) -> ours; None for its 1000-class classifier."""
    if k.startswith(('fc.', 'classifier.')):
        return None
    m = _OLD_DENSENET.match(k)  # torchvision's old DenseNet names (norm.1 -> norm1)
    if m:
        k = m.group(1) + m.group(2)
    return 'backbone.' + k


def checkpoint_filter_fn(state_dict: dict[str, Any], model: VKDNet) -> dict[str, torch.Tensor]:
    """Accept our own checkpoints, the authors' TriNet state dicts (``chk_end``, ``chk_di_1`` of their zips) and
    ImageNet weights of the backbone (timm's / torchvision's layout; BAM, BN-neck and classifier keep their init).

    A classifier the model has no place for (``num_classes=0``) is dropped; other mismatches are left for
    ``load_state_dict`` to report.
    """
    if isinstance(state_dict.get('state_dict'), dict):
        state_dict = state_dict['state_dict']
    state_dict = {k.removeprefix('module.'): v for k, v in state_dict.items()}
    if any(k.startswith(_RELEASED) for k in state_dict):
        state_dict = {_released_key(k, model.backbone_kind): v for k, v in state_dict.items()}
    elif not any(k.startswith('backbone.') for k in state_dict):  # an ImageNet backbone
        own = model.state_dict()
        out = {k: v for k, v in own.items() if not k.startswith('backbone.')}  # BN-neck, classifier: own init
        out.update({k: v for k, v in own.items() if '.bam.' in k})
        for k, v in state_dict.items():
            new = _imagenet_key(k)
            if new is not None:
                out[new] = v
        state_dict = out
    if model.num_classes == 0:
        state_dict = {k: v for k, v in state_dict.items() if not k.startswith('classifier.')}
    refuse_integer_weights(state_dict, model)
    return state_dict


def infer_arch(state_dict: dict[str, Any]) -> str | None:
    """The VKD architecture of a state dict in the authors' layout or ours; None if it is not a VKD network."""
    keys = [k.removeprefix('module.') for k in state_dict]
    if any(k.startswith(_RELEASED) for k in keys):
        def has(s: str) -> bool:
            return _RELEASED + s in keys
        if has('11.weight') and not has('11.0.weight'):
            return 'vkd_d121'
        if has('18.0.weight'):
            return 'vkd_mbv2'
        layer3 = f'{_RELEASED}3.0.'
        bam = any('.bam.' in k for k in keys)
        bottleneck = has('1.0.0.conv3.weight')
    elif any(k.startswith('backbone.') for k in keys) and 'bottleneck.weight' in keys:
        if 'backbone.features.norm5.weight' in keys:
            return 'vkd_d121'
        if 'backbone.conv_head.weight' in keys:
            return 'vkd_mbv2'
        layer3 = 'backbone.layer3.'
        bam = any(k.startswith('backbone.layer1.bam.') for k in keys)
        bottleneck = 'backbone.layer1.0.conv3.weight' in keys
    else:
        return None
    blocks = {k[len(layer3):].split('.')[0] for k in keys if k.startswith(layer3)} - {'bam'}
    if not blocks:
        return None
    if not bottleneck:
        return 'vkd_r34'
    if bam:
        return 'vkd_r50bam'
    return 'vkd_r101' if len(blocks) > 6 else 'vkd_r50'


# the authors' dataset names (params.json dataset_name) -> ours
_DATASETS = {'mars': 'mars', 'duke-video-reid': 'dukev', 'veri': 'veri'}


def run_info(run: dict[str, Any]) -> dict[str, Any]:
    """What the authors' run files say: ``hparams.json`` (the TriNet's arguments: ``backbone_type``,
    ``num_classes``) and ``params.json`` (the command line: ``backbone``, ``dataset_name``). The architecture comes
    from ``hparams.json``; ``params.json``'s ``backbone`` is used only without it (a distillation run records there
    the option's default, not the network it distilled)."""
    params, hparams = run.get('params.json') or {}, run.get('hparams.json') or {}
    out: dict[str, Any] = {}
    names = {v[1]: k for k, v in BACKBONES.items()}
    if hparams.get('backbone_type') in names:
        out.update(arch=names[hparams['backbone_type']], arch_from='hparams.json (backbone_type)')
    elif params.get('backbone') in names:
        out.update(arch=names[params['backbone']], arch_from='params.json (backbone)')
    if isinstance(hparams.get('num_classes'), int):
        out['num_classes'] = hparams['num_classes']
    if params.get('dataset_name') in _DATASETS:
        out['dataset'] = _DATASETS[params['dataset_name']]
    return out


# --- registry ---------------------------------------------------------------------------------------------
ARCHS = tuple(BACKBONES)  # registered below (sinet_timm.archs lists them all)
_FIRST_CONV = {'resnet': 'backbone.conv1', 'densenet': 'backbone.features.conv0', 'mobilenet': 'backbone.conv_stem'}
_POOL = {'vkd_d121': (8, 4)}


def _cfg(arch: str, **kwargs: Any) -> Any:
    """The family's pretrained-cfg defaults: the authors' test preprocessing (256x128, bicubic, ImageNet mean/std,
    no crop) and protocol (one 8-frame clip, pre-BN embedding, cosine)."""
    backbone = BACKBONES[arch][0]
    kind = 'resnet' if backbone.startswith('resnet') else 'densenet' if backbone.startswith('densenet') \
        else 'mobilenet'
    return video_pretrained_cfg(**{
        'num_classes': 0, 'input_size': (3, 256, 128), 'pool_size': _POOL.get(arch, (16, 8)),
        'fixed_input_size': False, 'crop_pct': 1.0, 'crop_mode': 'squash', 'interpolation': 'bicubic',
        'mean': (0.485, 0.456, 0.406), 'std': (0.229, 0.224, 0.225),
        'first_conv': _FIRST_CONV[kind], 'classifier': 'classifier', 'license': 'mit',
        'origin_url': 'https://github.com/aimagelab/VKD',
        'paper_name': 'Robust Re-Identification by Multiple Views Knowledge Distillation',
        'paper_ids': 'arXiv:2007.04174, ECCV 2020', 'protocol': 'vkd',
        **kwargs,
    })


# the authors start every backbone from torchvision's ImageNet weights (timm's .tv_in1k); torchvision's
# MobileNet-V2 weights are not on the Hub, so vkd_mbv2 offers timm's own ImageNet weights instead
_IMAGENET = {'vkd_r34': 'resnet34.tv_in1k', 'vkd_r50': 'resnet50.tv_in1k', 'vkd_r101': 'resnet101.tv_in1k',
             'vkd_r50bam': 'resnet50.tv_in1k', 'vkd_d121': 'densenet121.tv_in1k', 'vkd_mbv2': 'mobilenetv2_100.ra_in1k'}


def _imagenet_cfg(arch: str) -> dict[str, Any]:
    notes = ['ImageNet backbone init; BN-neck and classifier untrained']
    if arch == 'vkd_r50bam':
        notes.append('BAM modules keep their own init')
    if arch == 'vkd_mbv2':
        notes.append("timm's ImageNet weights (the authors used torchvision's)")
    return _cfg(arch, hf_hub_id=f'timm/{_IMAGENET[arch]}', notes=tuple(notes))


default_cfgs = generate_default_cfgs({
    **{f"{arch}.{_IMAGENET[arch].split('.')[1]}": _imagenet_cfg(arch) for arch in ARCHS},
    **{name: _cfg(name.split('.')[0], **extra) for name, extra in zoo_pretrained_cfgs(ARCHS).items()},
})


def _create(variant: str, pretrained: bool, **kwargs: Any) -> VKDNet:
    backbone = BACKBONES[variant][0]
    if 'pretrained_cfg' in kwargs:  # a local-dir: / hf-hub: config.json's cfg holds the protocol field
        kwargs['pretrained_cfg'] = as_video_pretrained_cfg(kwargs['pretrained_cfg'])
    return create_video_model(VKDNet, variant, pretrained, filter_fn=checkpoint_filter_fn,
                              **dict(backbone=backbone, bam=variant == 'vkd_r50bam', **kwargs))


@register_model
def vkd_r34(pretrained: bool = False, **kwargs) -> VKDNet:
    """VKD ResNet-34 (teacher "ResNet-34", student "ResVKD-34")."""
    return _create('vkd_r34', pretrained, **kwargs)


@register_model
def vkd_r50(pretrained: bool = False, **kwargs) -> VKDNet:
    """VKD ResNet-50 (teacher "ResNet-50", student "ResVKD-50")."""
    return _create('vkd_r50', pretrained, **kwargs)


@register_model
def vkd_r101(pretrained: bool = False, **kwargs) -> VKDNet:
    """VKD ResNet-101 (teacher "ResNet-101", student "ResVKD-101")."""
    return _create('vkd_r101', pretrained, **kwargs)


@register_model
def vkd_r50bam(pretrained: bool = False, **kwargs) -> VKDNet:
    """VKD ResNet-50 with BAM after layer1-3 (teacher "ResNet-50bam", student "ResVKD-50bam")."""
    return _create('vkd_r50bam', pretrained, **kwargs)


@register_model
def vkd_d121(pretrained: bool = False, **kwargs) -> VKDNet:
    """VKD DenseNet-121 (teacher "DenseNet-121", student "DenseVKD-121")."""
    return _create('vkd_d121', pretrained, **kwargs)


@register_model
def vkd_mbv2(pretrained: bool = False, **kwargs) -> VKDNet:
    """VKD MobileNet-V2 (teacher "MobileNet-V2", student "MobileVKD-V2")."""
    return _create('vkd_mbv2', pretrained, **kwargs)

