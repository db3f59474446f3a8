"""SANet: Statistic Attention Network for Video-Based Person Re-Identification.

Paper: Shutao Bai, Bingpeng Ma, Hong Chang, Rui Huang, Shiguang Shan, Xilin Chen. "SANet: Statistic Attention
Network for Video-Based Person Re-Identification", IEEE TCSVT 2021 (doi:10.1109/TCSVT.2021.3119983). Authors'
code and checkpoint: https://github.com/baist/SINet (MIT), the same release as SINet.

The frame-wise ResNet-50 of :mod:`sinet_timm.framewise` with two Statistic Attention (SA) blocks after blocks 1
and 3 of ``layer2``. An SA block summarises each (reduced) channel of a clip by statistical moments over all
its t*h*w positions, then gives every position a mixture of those statistics, chosen by its similarity to them.

This file follows the released implementation, which produced the released checkpoint:

* channels are reduced by 4 (512 -> 128, 1x1 conv with bias; no BN or activation);
* the statistics are the mean, the (population) standard deviation and the standardised 4th, 5th and 6th central
  moments (no 3rd), each L2-normalised over the channels;
* the distribution keeps only the statistics (the reduced features only choose the mixture), then a 1x1 conv and
  a zero-initialised BN recover the channels, with a residual and a ReLU; the block starts as the identity;
* SANet trains with cross-entropy and triplet only: no frame projection.

Numerics: the released block divides by the standard deviation to the 6th power, which overflows or underflows
float16 and loses bfloat16's few mantissa bits, so the statistics are always computed in float32 (whatever the
model's dtype or autocast); a channel that is constant over a clip (released: 0/0, NaN everywhere) gets higher
moments of 0.
"""
from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import register_notrace_module
from timm.models import generate_default_cfgs, register_model

from ._builder import create_video_model
from ._zoo import zoo_pretrained_cfgs
from .framewise import CLIP_LEN, Plugin, VideoReIDNet, checkpoint_filter_fn, video_cfg

__all__ = ['SANet', 'StatisticAttention', 'checkpoint_filter_fn', 'infer_arch']


class StatisticAttention(nn.Module):
    """Statistic Attention block (SA).

    Works on frames ``(N*L, C, H, W)`` of clips of ``clip_len`` frames; the statistics of a clip are taken over
    its L*H*W positions. Both memory layouts work (the output keeps the input's).
    """

    # the released module's attribute names -> ours (checkpoint conversion)
    released_keys = {'down_channel.': 'reduce.', 'up_channel.0.': 'recover.', 'up_channel.1.': 'recover_bn.'}

    def __init__(self, dim: int, clip_len: int = CLIP_LEN, reduction: int = 4, orders: Sequence[int] = (4, 5, 6)):
        """
        Args:
            dim: channels of the stage (512 in layer2).
            clip_len: frames per clip the statistics are taken over.
            reduction: channel reduction before the statistics (released 4).
            orders: the standardised central moments used besides the mean and the standard deviation
                (released 4, 5, 6).
        """
        super().__init__()
        if any(p < 3 for p in orders):
            raise ValueError(f'orders are the higher moments (>= 3) beside mean and std, got {tuple(orders)}')
        self.clip_len = clip_len
        self.orders: list[int] = [int(p) for p in orders]
        inter_dim = dim // reduction
        self.reduce = nn.Conv2d(dim, inter_dim, 1)
        self.recover = nn.Conv2d(inter_dim, dim, 1)
        self.recover_bn = nn.BatchNorm2d(dim)
        self._init_weights()

    def _init_weights(self) -> None:
        for conv in (self.reduce, self.recover):
            nn.init.kaiming_normal_(conv.weight)  # fan_in, ReLU gain, as released
            nn.init.zeros_(conv.bias)
        nn.init.zeros_(self.recover_bn.weight)  # the block starts as the identity (x >= 0 after a bottleneck)
        nn.init.zeros_(self.recover_bn.bias)

    def statistics(self, z: torch.Tensor) -> torch.Tensor:
        """Moments of each channel over a clip, L2-normalised over the channels (moments, then their norm).

        z: (N, L, c, P) reduced features -> (N, c, 2 + len(orders)) in float32 (or float64), columns
        [mean, std, standardised moments of ``orders``], each of unit norm.
        """
        z = z.to(torch.promote_types(z.dtype, torch.float32))
        mean = z.mean(dim=(1, 3))  # (N, c)
        d = z - mean[:, None, :, None]
        std = d.square().mean(dim=(1, 3)).sqrt()  # population std, as released
        # standardised central moments mean((z - mean)^p) / std^p, computed as mean(((z - mean) / std)^p) so that
        # std^p cannot overflow or underflow; a constant channel (std 0) gets 0 instead of the released 0/0
        u = d / torch.where(std > 0, std, torch.ones_like(std))[:, None, :, None]
        stats = [mean, std]
        for p in self.orders:
            stats.append(u.pow(p).mean(dim=(1, 3)))
        return F.normalize(torch.stack(stats, dim=-1), dim=1)

    def distribute(self, z: torch.Tensor, stats: torch.Tensor) -> torch.Tensor:
        """Distribution by similarity: each position's softmax over the statistics (its features' dot products
        with them, unscaled) weights a mixture of the statistic vectors.

        z: (N, L, c, P), stats: (N, c, m) -> (N, L, c, P).
        """
        attn = torch.matmul(stats.transpose(1, 2).unsqueeze(1), z).softmax(dim=2)  # (N, L, m, P)
        return torch.matmul(stats.unsqueeze(1), attn)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.reduce(x)  # channel reduction
        nl, c, h, w = z.shape
        # statistics in float32 at least (float64 stays float64)
        z = z.reshape(nl // self.clip_len, self.clip_len, c, h * w).to(torch.promote_types(z.dtype, torch.float32))
        o = self.distribute(z, self.statistics(z)).reshape(nl, c, h, w).to(x.dtype)
        if not x.is_contiguous():  # channels_last in, channels_last out
            o = o.contiguous(memory_format=torch.channels_last)
        return self.recover_bn(self.recover(o)).add_(x).relu_()  # channel recovery, residual, ReLU


class SANet(VideoReIDNet):
    """Frame-wise ResNet-50 with Statistic Attention blocks in ``layer2``, max-pool + BN-neck head."""

    def __init__(
            self,
            layers: Sequence[int] = (3, 4, 6, 3),
            sa_after: Sequence[int] = (1, 3),
            sa_reduction: int = 4,
            clip_len: int = CLIP_LEN,
            **kwargs: Any,
    ):
        """
        Args:
            layers: bottleneck blocks per stage (ResNet-50).
            sa_after: 0-based block indices of layer2 followed by an SA block (released: 1, 3).
            sa_reduction: SA channel reduction (released 4).
            clip_len: frames per clip the SA statistics are taken over (4 in the released evaluation; a longer
                input is treated as independent clips).
            **kwargs: :class:`~sinet_timm.framewise.VideoReIDNet` arguments (num_classes, img_size, drop_rate, ...).
        """
        plugins = [Plugin('SA', 2, i, partial(_sa, clip_len=clip_len, reduction=sa_reduction)) for i in sa_after]
        super().__init__(layers=layers, plugins=plugins, clip_len=clip_len, **kwargs)


register_notrace_module(StatisticAttention)  # branches on its input's layout: one leaf for torch.fx


def _sa(dim: int, hw: tuple[int, int], clip_len: int, reduction: int) -> StatisticAttention:
    return StatisticAttention(dim, clip_len=clip_len, reduction=reduction)


def infer_arch(state_dict: dict[str, torch.Tensor]) -> str | None:
    """'sanet_r50' for a state dict (released or converted) with statistic attention blocks, else None."""
    return 'sanet_r50' if any(('.down_channel.' in k) or ('.recover_bn.' in k) for k in state_dict) else None


# --- registry ---------------------------------------------------------------------------------------------
ARCHS = ('sanet_r50',)  # registered below (sinet_timm.archs lists them all)
_cfg = partial(video_cfg, paper_name='SANet: Statistic Attention Network for Video-Based Person Re-Identification',
               paper_ids='IEEE TCSVT 2021', fixed_input_size=False)  # SA takes any frame size

default_cfgs = generate_default_cfgs({
    # the authors initialise the backbone from torchvision's ResNet-50 weights (timm/resnet50.tv_in1k);
    # checkpoint_filter_fn maps them into the frame-wise backbone, SA blocks and biases keep their own init
    'sanet_r50.tv_in1k': _cfg(hf_hub_id='timm/resnet50.tv_in1k',
                              notes=('ImageNet backbone init; re-ID head untrained',)),
    **{name: _cfg(**extra) for name, extra in zoo_pretrained_cfgs(ARCHS).items()},
})


@register_model
def sanet_r50(pretrained: bool = False, **kwargs) -> SANet:
    """SANet: ResNet-50 + 2 Statistic Attention blocks (layer2) (the SANet paper's full model)."""
    return create_video_model(SANet, 'sanet_r50', pretrained, **kwargs)
