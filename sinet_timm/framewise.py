"""The frame-wise ResNet-50 of the SINet release, shared by every family of this package (SINet, SANet).

The authors inflate torchvision's ResNet-50 to 3-D convs with temporal kernel 1, so every frame goes through the
backbone on its own; the temporal modules of each paper (SINet's SBM/IDM, SANet's statistic attention) are inserted
into the stages after given blocks and are the only places where the frames of a clip meet. This file holds that
backbone, the re-ID head and the timm model API; a family file (``sinet.py``, ``sanet.py``) only describes its
modules as :class:`Plugin` entries and registers its variants.

Facts of the released implementation kept here (they produced the released checkpoints):

* the stem max-pool has no padding (layer1 maps are 63x31 for a 256x128 frame), ``layer4`` has stride 1;
* every backbone conv carries a bias (the inflated convs were built with ``bias=True``); the biases are kept, so
  parameter counts equal the released ones (a plain ResNet-50 body with biases: 23.539M without classifier);
* head: per-frame spatial global max pooling, a BatchNorm1d "BN-neck", a linear classifier. The embedding is the
  BN-neck feature of the frame average (in eval mode BN is affine, so this equals the released "average of
  per-frame BN-neck features" exactly);
* the temporal modules work on clips of ``clip_len`` = 4 frames; a longer input (T a multiple of 4) is treated as
  T/4 independent clips (the released SBM does this for T=8; the released evaluation only ever feeds 4 frames), and
  the clip features are averaged.

Input is ``(B, T, 3, H, W)``. In eval mode the model returns the ``(B, 2048)`` embedding (``num_classes=0``) or
logits; in train mode it returns :class:`SINetOutput` with what the losses need.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import register_notrace_function, register_notrace_module
from timm.models import checkpoint_seq
from timm.models._features import feature_take_indices

from ._checkpoint import refuse_integer_weights
from ._input import check_frames
from .errors import ModelInputError

__all__ = [
    'CLIP_LEN', 'Bottleneck', 'ClipInput', 'Plugin', 'SINetOutput', 'VideoReIDNet', 'checkpoint_filter_fn', 'crop_maps',
    'min_frame_side', 'pool_frames', 'stage_hw', 'train_output', 'video_cfg',
]

CLIP_LEN = 4  # frames per clip the temporal modules were trained on
STAGES = ('layer1', 'layer2', 'layer3', 'layer4')


def stage_hw(img_size: tuple[int, int]) -> dict[str, tuple[int, int]]:
    """Spatial size of each stage for a frame of ``img_size`` (stem: /2 conv, 3x3/2 max-pool w/o padding)."""
    h, w = img_size
    h, w = (h + 2 * 3 - 7) // 2 + 1, (w + 2 * 3 - 7) // 2 + 1  # conv1 7x7/2 pad 3
    h, w = (h - 3) // 2 + 1, (w - 3) // 2 + 1  # max-pool 3x3/2, no padding
    out = {'layer1': (h, w)}
    h, w = (h - 1) // 2 + 1, (w - 1) // 2 + 1  # 3x3/2 pad 1
    out['layer2'] = (h, w)
    h, w = (h - 1) // 2 + 1, (w - 1) // 2 + 1
    out['layer3'] = (h, w)
    out['layer4'] = (h, w)  # last stride 1
    return out


def min_frame_side(stage: str, side: int) -> int:
    """The smallest frame side that gives feature maps at least ``side`` wide at ``stage`` (and a stem max-pool
    with something to pool: 3x3 without padding needs 3 pixels)."""
    n = 1
    while (hw := stage_hw((n, n)))['layer1'][0] < 1 or hw[stage][0] < side:
        n += 1
    return n


def _conv(in_chs: int, out_chs: int, kernel_size: int, stride: int = 1, padding: int = 0) -> nn.Conv2d:
    """Backbone conv with a (zero-initialised) bias, like the released inflated convs."""
    conv = nn.Conv2d(in_chs, out_chs, kernel_size, stride=stride, padding=padding)
    nn.init.kaiming_normal_(conv.weight, mode='fan_out', nonlinearity='relu')
    nn.init.zeros_(conv.bias)
    return conv


class Bottleneck(nn.Module):
    """ResNet-50 v1.5 bottleneck applied to every frame; convs carry biases as in the released model."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        outplanes = planes * self.expansion
        self.conv1 = _conv(inplanes, planes, 1)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv(planes, planes, 3, stride=stride, padding=1)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = _conv(planes, outplanes, 1)
        self.bn3 = nn.BatchNorm2d(outplanes)
        self.act = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        x = self.act(self.bn1(self.conv1(x)))
        x = self.act(self.bn2(self.conv2(x)))
        x = self.bn3(self.conv3(x))
        return self.act(x + shortcut)


@dataclass(frozen=True)
class Plugin:
    """A temporal module inserted into a stage right after one of its blocks (the released layout: the module
    takes the next index of the stage's ``nn.Sequential``, so checkpoint keys line up).

    ``build(channels, map_hw)`` makes the module for the stage's width and feature-map size.
    """

    name: str  # the paper's name, for messages ('IDM', 'SBM', 'SA')
    stage: int  # 1..4
    after: int  # 0-based block index in the stage
    build: Callable[[int, tuple[int, int]], nn.Module]
    min_map_side: int = 1  # the smallest feature map (side) the module works on
    fixed_size: bool = False  # built for one frame size (e.g. IDM's t*h*w integration)


class SINetOutput(NamedTuple):
    """Train-mode output for clips: what cross-entropy, triplet and the frame (InfoNCE) losses need."""

    logits: torch.Tensor  # (B, num_classes); the embedding itself when num_classes == 0
    embedding: torch.Tensor  # (B, C) BN-neck feature of the frame-averaged clip feature
    # (B, T, C) BN-neck per-frame features through the projection (frame loss); None for models without one
    frame_features: torch.Tensor | None


class ClipInput(nn.Module):
    """The model's input, checked and made clips: ``(B, T, C, H, W)`` clips pass (T a multiple of ``clip_len``);
    a ``(B, C, H, W)`` batch of single crops, or ``T = 1``, becomes clips of the crop repeated ``clip_len`` times,
    exactly what the dense protocol makes of a one-frame tracklet (it loop-pads it with its own frame).

    A module of its own so that ``torch.fx`` treats the shape checks as one leaf (they branch on the input's shape)
    and TorchScript compiles them.
    """

    def __init__(self, in_chans: int, clip_len: int, img_size: tuple[int, int], min_side: int, min_side_reason: str,
                 fixed_size_by: str):
        super().__init__()
        self.in_chans, self.clip_len, self.min_side = in_chans, clip_len, min_side
        self.img_size: tuple[int, int] = (int(img_size[0]), int(img_size[1]))
        self.min_side_reason, self.fixed_size_by = min_side_reason, fixed_size_by

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_frames(x, self.in_chans)
        if x.dim() == 4:
            x = x.unsqueeze(1)
        t = x.shape[1]
        if t != 1 and (t == 0 or t % self.clip_len != 0):
            raise ModelInputError(
                f'the number of frames T={t} must be a positive multiple of {self.clip_len} (or 1, a single crop): the '
                f'temporal modules work on {self.clip_len}-frame clips. Pad the tracklet (e.g. repeat its last '
                f'frames) or sample {self.clip_len} frames.')
        h, w = x.shape[-2], x.shape[-1]
        if h < self.min_side or w < self.min_side:
            raise ModelInputError(
                f'{h}x{w} frames are too small: {self.min_side_reason}. Resize frames to {self.img_size} '
                '(timm.data.resolve_data_config gives the preprocessing).')
        if self.fixed_size_by and (h != self.img_size[0] or w != self.img_size[1]):
            raise ModelInputError(
                f'this model has {self.fixed_size_by} modules sized for {self.img_size[0]}x{self.img_size[1]} frames, '
                f'got {h}x{w}. Resize frames to {self.img_size} (timm.data.resolve_data_config gives the '
                f'preprocessing) or create the model with img_size=({h}, {w}).')
        if t == 1:  # a single frame: the dense protocol's loop padding, clip_len copies of it
            x = x.expand(-1, self.clip_len, -1, -1, -1)
        return x


def crop_maps(x: torch.Tensor, maps: torch.Tensor) -> torch.Tensor:
    """Per-frame maps ``(B, T, C, h, w)`` of the clips made from input ``x``: as they are for clips, averaged over
    the frames of each clip for a ``(B, C, H, W)`` batch of crops (timm's tooling expects NCHW maps for images)."""
    if x.dim() == 4:
        return maps.mean(dim=1)
    return maps


def pool_frames(x: torch.Tensor) -> torch.Tensor:
    """The head's pooling: spatial max per frame, then the average over a clip's frames; ``(B, T, C, h, w)`` ->
    ``(B, C)`` (maps of crops, ``(B, C, h, w)``, are only max-pooled)."""
    x = x.amax(dim=(-2, -1))
    if x.dim() == 3:
        x = x.mean(dim=1)
    return x


def train_output(x: torch.Tensor, logits: torch.Tensor, embedding: torch.Tensor,
                 frame_features: torch.Tensor | None) -> Any:
    """What the model returns in train mode: :class:`SINetOutput` for clips; the logits for a ``(B, C, H, W)``
    batch of crops, as timm's generic training expects (the frame projection, which only the clip loss uses, takes
    part with weight 0, so that every parameter gets a gradient: DDP without ``find_unused_parameters`` and timm's
    own tests require that)."""
    if x.dim() == 4:
        return logits if frame_features is None else logits + 0.0 * frame_features.sum()
    return SINetOutput(logits, embedding, frame_features)


for _fn in (crop_maps, pool_frames, train_output):  # shape-dependent branches: leaves for torch.fx
    register_notrace_function(_fn)
register_notrace_module(ClipInput)


class VideoReIDNet(nn.Module):
    """Frame-wise ResNet-50 with temporal plug-ins, max-pool + BN-neck head (the base of every family here)."""

    def __init__(
            self,
            layers: Sequence[int] = (3, 4, 6, 3),
            plugins: Sequence[Plugin] = (),
            num_classes: int = 0,
            in_chans: int = 3,
            img_size: tuple[int, int] = (256, 128),
            clip_len: int = CLIP_LEN,
            frame_projection: bool = False,
            drop_rate: float = 0.0,
            global_pool: str = 'max',
            device: torch.device | str | None = None,
            dtype: torch.dtype | None = None,
    ):
        """
        Args:
            layers: bottleneck blocks per stage (ResNet-50).
            plugins: the temporal modules and where they go.
            num_classes: training identities (0: the model returns the re-ID embedding).
            img_size: frame size (H, W); modules with ``fixed_size`` are sized for it.
            clip_len: frames per clip seen by the temporal modules (4 in all released models).
            frame_projection: add the 1x1 projection of per-frame features used by the frame InfoNCE loss
                (present in released SBNet/SINet checkpoints); only built when num_classes > 0.
            global_pool: ``'max'`` (the released head: spatial max per frame, frame average, BN-neck) or ``''`` (no
                head: ``forward`` returns the per-frame maps; needs ``num_classes=0``).
            device, dtype: where and in which precision the parameters and buffers are made (timm's factory
                arguments).
        """
        super().__init__()
        _check_pool(global_pool, num_classes)
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.img_size = tuple(img_size)
        self.clip_len = clip_len
        self.plugins = tuple(plugins)
        sized = [p.name for p in self.plugins if p.fixed_size]
        self.fixed_size_by = sized[0] if sized else ''  # a module sized for img_size (IDM), or ''
        # the stem needs maps of at least 1x1 everywhere; a module may need larger maps at its stage
        needs = [(min_frame_side('layer3', 1), '', None)] + [
            (min_frame_side(f'layer{p.stage}', p.min_map_side), p.name, p) for p in self.plugins if p.min_map_side > 1]
        self.min_frame_side, _, by = max(needs, key=lambda need: need[:2])  # a module wins a tie with the stem
        n = self.min_frame_side
        reason = (f'{by.name} needs layer{by.stage} feature maps of at least {by.min_map_side}x{by.min_map_side}, '
                  f'i.e. frames of at least {n}x{n}' if by else f"the stem's max-pool needs frames of at least {n}x{n}")
        if min(self.img_size) < self.min_frame_side:
            raise ModelInputError(f'img_size={self.img_size} is too small: {reason}')
        self.use_frame_projection = frame_projection
        self.drop_rate = drop_rate
        self.grad_checkpointing = False
        self.num_features = self.head_hidden_size = 512 * Bottleneck.expansion
        self.global_pool = global_pool
        self.to_clips = ClipInput(in_chans, clip_len, self.img_size, self.min_frame_side, reason, self.fixed_size_by)

        self.conv1 = _conv(in_chans, 64, 7, stride=2, padding=3)
        self.bn1 = nn.BatchNorm2d(64)
        self.act1 = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=0)  # released: no padding

        hw = stage_hw(self.img_size)
        inplanes = 64
        self.feature_info = [dict(num_chs=64, reduction=2, module='act1')]
        for stage, (planes, depth, stride) in enumerate(zip((64, 128, 256, 512), layers, (1, 2, 2, 1), strict=True), 1):
            after = {p.after: p for p in self.plugins if p.stage == stage}
            downsample = None
            if stride != 1 or inplanes != planes * Bottleneck.expansion:
                downsample = nn.Sequential(
                    _conv(inplanes, planes * Bottleneck.expansion, 1, stride=stride),
                    nn.BatchNorm2d(planes * Bottleneck.expansion))
            blocks: list[nn.Module] = []
            for b in range(depth):
                blocks.append(Bottleneck(inplanes, planes, stride if b == 0 else 1, downsample if b == 0 else None))
                inplanes = planes * Bottleneck.expansion
                if b in after:
                    blocks.append(after[b].build(inplanes, hw[f'layer{stage}']))  # released layout: in the stage
            self.add_module(f'layer{stage}', nn.Sequential(*blocks))
            reduction = 4 * 2 ** min(stage - 1, 2)
            self.feature_info.append(dict(num_chs=inplanes, reduction=reduction, module=f'layer{stage}'))

        self.bn = nn.BatchNorm1d(self.num_features)  # BN-neck
        self.classifier: nn.Module = nn.Identity()
        self.projection: nn.Module | None = None
        self.reset_classifier(num_classes)
        nn.init.normal_(self.bn.weight, 1.0, 0.02)
        nn.init.zeros_(self.bn.bias)
        if device is not None or dtype is not None:  # initialised as usual, then placed as asked
            self.to(device=device, dtype=dtype)

    # --- timm model API -------------------------------------------------------------------------------------
    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        return dict(stem=r'^conv1|bn1', blocks=r'^layer(\d+)' if coarse else r'^layer(\d+)\.(\d+)')

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.classifier

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """Replace the identity classifier (and the frame projection, part of the training head); new layers are
        made on the model's device and dtype and follow its train/eval mode. ``global_pool=''`` removes the
        head (unpooled maps; no classifier); a classifier asked for without a pool brings back the max pool."""
        if global_pool is None and num_classes > 0 and not self.global_pool:
            global_pool = 'max'  # a classifier needs the pooled embedding: an unpooled model gets its head back
        _check_pool(global_pool if global_pool is not None else self.global_pool, num_classes)
        if global_pool is not None:
            self.global_pool = global_pool
        self.num_classes = num_classes
        factory = {'device': self.bn.weight.device, 'dtype': self.bn.weight.dtype}  # where the model is now
        if num_classes > 0:
            self.classifier = nn.Linear(self.num_features, num_classes, **factory)
            nn.init.normal_(self.classifier.weight, std=0.001)
            nn.init.zeros_(self.classifier.bias)
        else:
            self.classifier = nn.Identity()
        if self.use_frame_projection and num_classes > 0:
            self.projection = nn.Conv1d(self.num_features, self.num_features, 1, **factory)
            nn.init.kaiming_normal_(self.projection.weight, mode='fan_out')
            nn.init.zeros_(self.projection.bias)
        else:
            self.projection = None
        self.classifier.train(self.training)
        if self.projection is not None:
            self.projection.train(self.training)

    @torch.jit.ignore
    def check_input(self, x: torch.Tensor) -> None:
        """Raise a clear error for inputs the model cannot handle (shape, frame count, frame size)."""
        self.to_clips(x)

    def _frame_maps(self, clips: torch.Tensor) -> torch.Tensor:
        """Clips ``(B, T, C, H, W)`` -> per-frame maps ``(B, T, 2048, H/16, W/16)``."""
        b, t = clips.shape[0], clips.shape[1]
        x = clips.flatten(0, 1)  # the backbone is frame-wise (temporal kernel 1)
        x = self.maxpool(self.act1(self.bn1(self.conv1(x))))
        if self.grad_checkpointing and not torch.jit.is_scripting():
            x = checkpoint_seq(self.layer1, x)
            x = checkpoint_seq(self.layer2, x)
            x = checkpoint_seq(self.layer3, x)
            x = checkpoint_seq(self.layer4, x)
        else:
            x = self.layer1(x)
            x = self.layer2(x)
            x = self.layer3(x)
            x = self.layer4(x)
        return x.unflatten(0, (b, t))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Clips ``(B, T, C, H, W)`` -> per-frame maps ``(B, T, 2048, H/16, W/16)``; crops ``(B, C, H, W)`` (each
        seen as a clip of itself repeated) -> ``(B, 2048, H/16, W/16)``, the average of the clip's frame maps."""
        return crop_maps(x, self._frame_maps(self.to_clips(x)))

    def forward_intermediates(
            self,
            x: torch.Tensor,
            indices: int | list[int] | None = None,
            norm: bool = False,
            stop_early: bool = False,
            output_fmt: str = 'NCHW',
            intermediates_only: bool = False,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """timm's intermediate features: the stem (index 0, after its ReLU) and the four stages (1-4).

        The temporal modules see the frames of each clip together, as in ``forward`` (a crop is a clip of itself
        repeated ``clip_len`` times). Each feature is ``(B, T, C, h, w)`` per frame for clips and ``(B, C, h, w)``
        for crops (averaged over the clip's frames). ``norm`` has no effect (there is no final norm layer).
        """
        if output_fmt != 'NCHW':
            raise ValueError(f"output_fmt must be 'NCHW' (per frame), got {output_fmt!r}")
        take_indices, max_index = feature_take_indices(5, indices)
        clips = self.to_clips(x)
        b, t = clips.shape[0], clips.shape[1]
        intermediates = []
        y = self.act1(self.bn1(self.conv1(clips.flatten(0, 1))))
        if 0 in take_indices:
            intermediates.append(crop_maps(x, y.unflatten(0, (b, t))))
        y = self.maxpool(y)
        stages = [self.layer1, self.layer2, self.layer3, self.layer4]
        for i, stage in enumerate(stages[:max_index] if stop_early else stages, 1):
            y = checkpoint_seq(stage, y) if self.grad_checkpointing and not torch.jit.is_scripting() else stage(y)
            if i in take_indices:
                intermediates.append(crop_maps(x, y.unflatten(0, (b, t))))
        if intermediates_only:
            return intermediates
        return crop_maps(x, y.unflatten(0, (b, t))), intermediates

    @torch.jit.ignore
    def prune_intermediate_layers(self, indices: int | list[int] = 1, prune_norm: bool = False,
                                  prune_head: bool = True) -> list[int]:
        """Drop the layers after the last intermediate feature wanted (timm's ``features_only`` uses this)."""
        take_indices, max_index = feature_take_indices(5, indices)
        for name in ('layer1', 'layer2', 'layer3', 'layer4')[max_index:]:
            setattr(self, name, nn.Sequential())
        if max_index == 0:
            self.maxpool = nn.Identity()
        prune_end = max_index < 4
        if prune_end:
            self.num_features = self.head_hidden_size = self.feature_info[max_index]['num_chs']
        if prune_head or prune_end:
            self.reset_classifier(0, '')
        return take_indices

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Per-frame maps ``(B, T, C, h, w)`` (or a crop's ``(B, C, h, w)``) -> embedding ``(B, C)`` if
        ``pre_logits`` else logits (the embedding when num_classes=0); unpooled maps with ``global_pool=''``."""
        if not self.global_pool:
            return x
        x = self.bn(pool_frames(x))  # spatial max per frame, average over frames, BN-neck
        if pre_logits:
            return x
        if self.drop_rate > 0.0:
            x = F.dropout(x, p=self.drop_rate, training=self.training)
        return self.classifier(x)

    @torch.jit.unused
    def forward_train(self, x: torch.Tensor) -> Any:
        """Train-mode outputs: :class:`SINetOutput` for clips (what the losses need), logits for crops (see
        :func:`train_output`). Not available in TorchScript, which is for inference."""
        frames = self._frame_maps(self.to_clips(x)).amax(dim=(-2, -1))  # (B, T, C)
        emb = self.bn(frames.mean(dim=1))
        logits = self.classifier(F.dropout(emb, p=self.drop_rate) if self.drop_rate > 0.0 else emb)
        frame_features: torch.Tensor | None = None
        if self.projection is not None:
            # the released frame loss: BN-neck per frame (a second BN call, as in training), then the projection
            frame_features = self.projection(self.bn(frames.transpose(1, 2))).transpose(1, 2)
        return train_output(x, logits, emb, frame_features)

    def forward(self, x: torch.Tensor):
        """Clips ``(B, T, C, H, W)`` or crops ``(B, C, H, W)`` -> embeddings / logits ``(B, ...)``; a crop is
        embedded exactly as the dense protocol embeds a one-frame tracklet (``model(x) == model(x[:, None])``)."""
        if self.training and not torch.jit.is_scripting():
            return self.forward_train(x)
        if not self.global_pool:
            return self.forward_features(x)
        return self.forward_head(self._frame_maps(self.to_clips(x)))


def _check_pool(global_pool: str, num_classes: int) -> None:
    if global_pool not in ('max', ''):
        raise ValueError(f"the head pools with a spatial max ('max'), or not at all (''); got global_pool="
                         f'{global_pool!r}')
    if global_pool == '' and num_classes > 0:
        raise ValueError("global_pool='' (no head) has no classifier: use num_classes=0")


# --- checkpoints ---------------------------------------------------------------------------------------------
def plugin_positions(model: VideoReIDNet) -> dict[str, dict[int, int]]:
    """For each stage, the Sequential index of every backbone block, i.e. block number -> module index."""
    out = {}
    for stage in STAGES:
        seq = getattr(model, stage)
        out[stage] = {b: i for b, i in enumerate(i for i, m in enumerate(seq) if isinstance(m, Bottleneck))}
    return out


def is_released(state_dict: dict[str, torch.Tensor]) -> bool:
    """The authors' layout: 3-D (inflated) convs."""
    w = state_dict.get('conv1.weight')
    return w is not None and w.ndim == 5


def _is_torchvision_resnet(state_dict: dict[str, torch.Tensor]) -> bool:
    return 'fc.weight' in state_dict and 'conv1.weight' in state_dict and 'conv1.bias' not in state_dict


def released_module_keys(model: nn.Module) -> dict[str, str]:
    """Released module attribute names -> ours, for every plug-in class of ``model`` (``released_keys``)."""
    out: dict[str, str] = {}
    for m in model.modules():
        out.update(getattr(type(m), 'released_keys', {}))
    return out


def _convert_released(state_dict: dict[str, torch.Tensor], model: VideoReIDNet) -> dict[str, torch.Tensor]:
    """Released layout (3-D convs, same module order) -> ours: rename module attributes, squeeze the kernel dims."""
    own = model.state_dict()
    renames = released_module_keys(model)
    out = {}
    for k, v in state_dict.items():
        for old, new in renames.items():
            if old in k:
                k = k.replace(old, new)
                break
        target = own.get(k)
        if target is not None and v.shape != target.shape and v.numel() == target.numel():
            v = v.reshape(target.shape)  # (O, I, 1, kh, kw) -> (O, I, kh, kw); 1x1(x1) -> linear/conv1d
        out[k] = v
    return out


def _convert_torchvision(state_dict: dict[str, torch.Tensor], model: VideoReIDNet) -> dict[str, torch.Tensor]:
    """ImageNet ResNet-50 (torchvision/timm layout) -> backbone init; modules and biases keep their init."""
    pos = plugin_positions(model)
    out = dict(model.state_dict())  # modules, conv biases (zero), BN-neck, head keep the model's own init
    for k, v in state_dict.items():
        if k.startswith('fc.'):
            continue
        parts = k.split('.')
        if parts[0] in pos:
            parts[1] = str(pos[parts[0]][int(parts[1])])
        out['.'.join(parts)] = v
    return out


def checkpoint_filter_fn(state_dict: dict[str, Any], model: VideoReIDNet) -> dict[str, torch.Tensor]:
    """Accept our own checkpoints, the authors' released ``.pth.tar`` state dicts and ImageNet ResNet-50 weights.

    Training-head tensors the model has no place for (``projection.*`` of an embedding model, a classifier
    when ``num_classes=0``) are dropped; other mismatches are left for ``load_state_dict`` to report.
    """
    if 'state_dict' in state_dict and isinstance(state_dict['state_dict'], dict):
        state_dict = state_dict['state_dict']
    state_dict = {k.removeprefix('module.'): v for k, v in state_dict.items()}
    if is_released(state_dict):
        state_dict = _convert_released(state_dict, model)
    elif _is_torchvision_resnet(state_dict):
        state_dict = _convert_torchvision(state_dict, model)
    if model.projection is None:
        state_dict = {k: v for k, v in state_dict.items() if not k.startswith('projection.')}
    if model.num_classes == 0:
        state_dict = {k: v for k, v in state_dict.items() if not k.startswith('classifier.')}
    refuse_integer_weights(state_dict, model)
    return state_dict


def video_cfg(**kwargs: Any) -> dict[str, Any]:
    """The pretrained-cfg defaults of the family: per-frame re-ID preprocessing (256x128, bicubic, ImageNet
    mean/std, no crop), exactly the released preprocessing."""
    return {
        'num_classes': 0, 'input_size': (3, 256, 128), 'pool_size': (16, 8), 'fixed_input_size': True,
        'crop_pct': 1.0, 'crop_mode': 'squash', 'interpolation': 'bicubic',
        'mean': (0.485, 0.456, 0.406), 'std': (0.229, 0.224, 0.225),
        'first_conv': 'conv1', 'classifier': 'classifier', 'license': 'mit',
        'origin_url': 'https://github.com/baist/SINet',
        **kwargs,
    }
