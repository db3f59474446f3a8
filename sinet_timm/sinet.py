"""SINet: Salient-to-Broad Transition for Video Person Re-identification.

Paper: Shutao Bai, Bingpeng Ma, Hong Chang, Rui Huang, Xilin Chen. "Salient-to-Broad Transition for Video
Person Re-identification", CVPR 2022. Authors' code: https://github.com/baist/SINet (MIT).

A frame-wise ResNet-50 (the authors inflate 2-D convs to 3-D with temporal kernel 1, so frames are processed
independently) with two temporal plug-ins:

* the Salient-to-Broad Module (SBM, Sec. 3.2) after blocks 1, 3, 5 of ``layer3``: channel attention (CAL),
  kernel generation (KGM), the suppression operation (SO) and cross propagation (CPM);
* the Integration-and-Distribution Module (IDM, Sec. 3.3, Eq. 7) after blocks 1 and 3 of ``layer2``.

This file follows the released implementation, which produced the released checkpoints:

* the stem max-pool has no padding (layer1 maps are 63x31 for a 256x128 frame), ``layer4`` has stride 1;
* every backbone conv carries a bias (the inflated convs were built with ``bias=True``); the biases are kept,
  so parameter counts equal the released ones (26.263M / 25.143M / 24.659M / 23.539M without classifier);
* IDM reduces channels and the t*h*w axis by 16 (``idm_reduction=4`` gives the paper's Fig. 5b variant);
* SBM and IDM work on clips of ``clip_len`` = 4 frames; a longer input (T a multiple of 4) is treated as
  T/4 independent clips, as the released SBM does for T=8, and the clip features are averaged;
* head: per-frame spatial global max pooling, a BatchNorm1d "BN-neck", a linear classifier. The embedding is
  the BN-neck feature of the frame average (in eval mode BN is affine, so this equals the released
  "average of per-frame BN-neck features" exactly).

Input is ``(B, T, 3, H, W)``. In eval mode the model returns the ``(B, 2048)`` embedding (``num_classes=0``) or
logits; in train mode it returns :class:`SINetOutput` with what the losses need. Both memory layouts work;
``model.to(memory_format=torch.channels_last)`` is the faster one on GPUs and CPUs alike (SBM works on
(N, L, H*W, C) token views, which are free in either layout).
"""
from __future__ import annotations

import math
import os
from collections.abc import Sequence
from functools import partial
from typing import Any, NamedTuple, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.models import build_model_with_cfg, checkpoint_seq, register_model
from timm.models._registry import generate_default_cfgs

__all__ = [
    'SINet', 'SINetOutput', 'WeightsUnavailableError', 'SalientToBroad', 'IntegrationDistribution',
    'checkpoint_filter_fn',
]

CLIP_LEN = 4  # frames per clip the temporal modules were trained on


def _stage_hw(img_size: tuple[int, int]) -> dict[str, tuple[int, int]]:
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


def _min_frame_side(stage: str, side: int) -> int:
    """The smallest frame side that gives feature maps at least ``side`` wide at ``stage`` (and a stem max-pool
    with something to pool: 3x3 without padding needs 3 pixels)."""
    n = 1
    while (hw := _stage_hw((n, n)))['layer1'][0] < 1 or hw[stage][0] < side:
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


def pointwise_conv(
        x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],  # noqa: UP045 (TorchScript)
        residual: Optional[torch.Tensor] = None,  # noqa: UP045
) -> torch.Tensor:
    """A 1x1 conv of an NCHW tensor as one batched matmul, plus ``residual`` in the same kernel if given.

    On CPUs this avoids the layout reorders oneDNN does around every convolution, which dominate 1x1 convs
    with few channels (IDM).
    """
    n, cin, h, w = x.shape
    cout = weight.shape[0]
    assert bias is not None  # (for TorchScript's Optional refinement)
    w3 = weight.reshape(1, cout, cin)
    xf = x.reshape(n, cin, h * w)
    if residual is None:
        out = torch.baddbmm(bias.reshape(1, cout, 1), w3.expand(n, cout, cin), xf)
    else:  # residual + W x + b: the bias rides along as an extra input channel of ones
        w3 = torch.cat([w3, bias.reshape(1, cout, 1)], dim=2)
        xf = torch.cat([xf, xf.new_ones(n, 1, h * w)], dim=1)
        out = torch.baddbmm(residual.reshape(n, cout, h * w), w3.expand(n, cout, cin + 1), xf)
    return out.reshape(n, cout, h, w)


class IntegrationDistribution(nn.Module):
    """Integration-and-Distribution Module (IDM, Sec. 3.3).

    Works on frames ``(N*L, C, H, W)`` of clips of ``clip_len`` frames. Channels are reduced, then every
    channel's t*h*w response vector is integrated into a few tokens and distributed back (Eq. 7), with a
    residual on the reduced tensor; channels are expanded by a zero-initialised 1x1 conv and added to the input.
    """

    def __init__(self, dim: int, thw: int, clip_len: int = CLIP_LEN, reduction: int = 16):
        super().__init__()
        self.clip_len = clip_len
        self.thw = thw
        inter_dim, inter_thw = dim // reduction, thw // reduction
        self.reduce = nn.Conv2d(dim, inter_dim, 1)
        self.reduce_bn = nn.BatchNorm2d(inter_dim)
        self.integrate = nn.Conv1d(thw, inter_thw, 1)
        self.integrate_bn = nn.BatchNorm1d(inter_thw)
        self.distribute = nn.Conv1d(inter_thw, thw, 1)
        self.expand = nn.Conv2d(inter_dim, dim, 1)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, (nn.Conv1d, nn.Conv2d)):
                fan_out = m.kernel_size[0] * (m.kernel_size[-1] if m.weight.ndim == 4 else 1) * m.out_channels
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
                nn.init.zeros_(m.bias)
        nn.init.zeros_(self.expand.weight)  # the module starts as identity
        nn.init.zeros_(self.expand.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        plain = x.is_contiguous()  # NCHW: 1x1 convs as batched matmuls; channels_last (GPU): cuDNN convs
        z = self.reduce_bn(pointwise_conv(x, self.reduce.weight, self.reduce.bias) if plain else self.reduce(x))
        nl, c, h, w = z.shape
        n = nl // self.clip_len
        # (N*L, c, H, W) -> (N, L*H*W, c): one "channel" per space-time position, as Eq. 7 integrates over them
        z = z.reshape(n, self.clip_len, c, h * w).permute(0, 1, 3, 2).reshape(n, self.clip_len * h * w, c)
        # Eq. 7: integrate the t*h*w positions into t*h*w/r tokens, distribute them back (1x1 convs over the
        # position axis, computed as matmuls: CPU backends lower 1x1 Conv1d to a slow generic path)
        b_i, b_d = self.integrate.bias, self.distribute.bias
        assert b_i is not None and b_d is not None  # (for TorchScript's Optional refinement)
        y = self.integrate_bn(torch.matmul(self.integrate.weight.squeeze(-1), z) + b_i.unsqueeze(-1))
        z = torch.baddbmm(z + b_d.unsqueeze(-1), self.distribute.weight.squeeze(-1).expand(n, -1, -1), y)
        z = z.reshape(n, self.clip_len, h * w, c).permute(0, 1, 3, 2).reshape(nl, c, h, w)
        if plain:
            return torch.relu_(pointwise_conv(z, self.expand.weight, self.expand.bias, residual=x))
        return self.expand(z).add_(x).relu_()  # in place: no second full-size buffer


class SalientToBroad(nn.Module):
    """Salient-to-Broad Module (SBM, Sec. 3.2).

    Frames ``0..split_pos`` of each 4-frame clip are the *former* frames; the rest are the *later* frames. The
    former frames describe their salient regions as a k x k kernel (CAL + KGM); the later frames are convolved
    with it and the matched (salient) regions are suppressed (SO), so that later frames attend to broader
    regions; CPM exchanges information between the two groups.
    """

    def __init__(
            self,
            dim: int,
            split_pos: int = 0,
            clip_len: int = CLIP_LEN,
            k: int = 3,
            beta: float = 5.0,
            alpha: float = 0.1,
            se_reduction: int = 4,
            inplace: bool = False,
    ):
        """``inplace``: at inference, write the output into the input's memory (like ``nn.ReLU(inplace=True)``;
        SINet sets it, its SBM inputs being fresh block outputs). Never done when autograd records."""
        super().__init__()
        if not 0 <= split_pos < clip_len - 1:
            raise ValueError(f'split_pos must be in [0, {clip_len - 2}], got {split_pos}')
        self.split_pos = split_pos
        self.clip_len = clip_len
        self.k = k
        self.beta = beta
        self.alpha = alpha
        self.inplace = inplace
        # the SBM's input follows a bottleneck's ReLU in every SINet placement; with x >= 0 (and CAL >= 0)
        # relu(x * cal) == x * cal, so CAL can scale the kernels instead of the feature maps (set False to use
        # the module after something that can be negative)
        self.nonneg_input = True
        # CAL: squeeze-and-excitation weights (Eq. 1)
        self.cal_fc1 = nn.Linear(dim, dim // se_reduction)
        self.cal_fc2 = nn.Linear(dim // se_reduction, dim)
        # KGM: k*k aggregation maps (Eq. 2)
        self.kgm_conv = nn.Conv2d(dim, k * k, 1)
        self.kgm_bn = nn.BatchNorm2d(k * k)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in (self.cal_fc1, self.cal_fc2, self.kgm_conv):
            nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / m.weight.shape[0]))
            nn.init.uniform_(m.bias, -1.0 / math.sqrt(m.weight.shape[1]), 1.0 / math.sqrt(m.weight.shape[1]))

    def channel_attention(self, tokens: torch.Tensor, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
        """CAL (Eq. 1): SE weights masked to channels whose response is central.

        tokens: (N, L, H*W, C) -> CAL weights (N, C) and per-frame sums over positions (N, L, C), shared with CPM.
        """
        t, hw = tokens.shape[1], h * w
        # sums over all positions and over the inner (H-2)x(W-2) ones, as one matmul with two masks
        inner = tokens.new_zeros(h, w)
        inner[1:-1, 1:-1] = 1.0
        sums = torch.matmul(torch.stack([torch.ones_like(inner), inner]).reshape(2, hw), tokens)  # (N, L, 2, C)
        frame_sums = sums[:, :, 0]
        mean_all = frame_sums.sum(dim=1) / (t * hw)
        mean_inner = sums[:, :, 1].sum(dim=1) / (t * (h - 2) * (w - 2))
        central = (mean_inner / (mean_all + 1e-8) > 1).to(tokens.dtype)
        se = torch.sigmoid(self.cal_fc2(F.relu(self.cal_fc1(mean_all))))
        return se * central, frame_sums

    def generate_kernel(self, former: torch.Tensor, cal: torch.Tensor, h: int, w: int, cl: bool) -> torch.Tensor:
        """KGM (Eq. 2-3): k*k kernel from the CAL-weighted former frames relu(x * cal).

        former: (N, Tf, H*W, C) tokens, cal: (N, C) -> (N, k*k, C).
        """
        n, tf, hw, c = former.shape
        kk = self.k * self.k
        weight = self.kgm_conv.weight.reshape(1, kk, c)
        bias = self.kgm_conv.bias
        assert bias is not None  # (for TorchScript's Optional refinement)
        if self.nonneg_input:
            # relu(x * cal) == x * cal for x >= 0, cal >= 0: fold cal into the 1x1 conv's weights per sample
            weight = weight * cal[:, None, :]
        else:
            former = torch.relu(former * cal[:, None, None, :])
            weight = weight.expand(n, kk, c)
        maps = _project(former, weight, cl) + bias[:, None]  # (N, Tf, k*k, H*W)
        maps = F.relu(self.kgm_bn(maps.reshape(n * tf, kk, h, w))).reshape(n, tf, kk, hw)
        if self.k != 1:
            maps = maps / maps.sum(dim=2, keepdim=True).clamp_min(1e-12)  # L1 over the k*k maps
        maps = maps / maps.sum(dim=(1, 3), keepdim=True).clamp_min(1e-12)  # L1 over positions
        kernel = _pool(former, maps, cl)
        return kernel * cal[:, None, :] if self.nonneg_input else kernel

    def suppression(self, later: torch.Tensor, kernel: torch.Tensor, cal: torch.Tensor, h: int, w: int,
                    cl: bool) -> torch.Tensor:
        """SO (Eq. 4-5): suppression map S of the CAL-weighted later frames.

        later: (N, Tl, H*W, C) tokens, kernel: (N, k*k, C), cal: (N, C) -> S: (N, Tl, H*W).
        """
        n, tl, hw, c = later.shape
        k, pad = self.k, (self.k - 1) // 2
        if self.nonneg_input:
            kernel = kernel * cal[:, None, :]  # relu(x * cal) == x * cal: scale the kernel, not the frames
        else:
            later = torch.relu(later * cal[:, None, None, :])
        # correlate each later frame with its sample's kernel: project channels onto the k*k taps first, then
        # replicate-pad and sum the shifted taps (replicate padding commutes with the per-pixel projection)
        taps = _project(later, kernel, cl).reshape(n * tl, k * k, h, w)
        if pad > 0:
            taps = F.pad(taps, (pad, pad, pad, pad), mode='replicate')
        # resp[y, x] = sum over taps (i, j) of taps[i * k + j, y + i, x + j]: one strided view, one reduction
        st = taps.stride()
        shifted = taps.as_strided((n * tl, k, k, h, w), (st[0], k * st[1] + st[2], st[1] + st[3], st[2], st[3]))
        resp = shifted.sum(dim=(1, 2))
        prob = torch.softmax(resp.reshape(n, tl, hw) / (k * k), dim=-1).clamp_min(1e-4)
        ratio = 1.0 / (prob * hw)  # R: >1 where the response is below uniform
        return torch.exp(self.beta * torch.clamp(ratio - 1.0, max=0.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nl, c, h, w = x.shape
        cl = not x.is_contiguous()  # channels_last: tokens are contiguous (N, L, H*W, C)
        if cl and not x.is_contiguous(memory_format=torch.channels_last):
            x, cl = x.contiguous(), False
        n, seq, hw, pos = nl // self.clip_len, self.clip_len, h * w, self.split_pos + 1
        tokens = x.permute(0, 2, 3, 1).reshape(n, seq, hw, c)  # a view in both layouts
        former, later = tokens[:, :pos], tokens[:, pos:]
        cal, frame_sums = self.channel_attention(tokens, h, w)
        s = self.suppression(later, self.generate_kernel(former, cal, h, w, cl), cal, h, w, cl)  # (N, Tl, H*W)
        # CPM (Eq. 6): later frames keep what was not salient before and see the former frames' context;
        # former frames receive the later frames' broad (suppressed) regions
        context = (self.alpha / (pos * hw)) * frame_sums[:, :pos].sum(dim=1)  # alpha * GAP(former), (N, C)
        inv = 1.0 - s
        broad = _pool(later, inv.unsqueeze(2), cl).squeeze(1)  # sum of (1-S) * x_later, (N, C)
        broad = (self.alpha * broad) / inv.sum(dim=(1, 2)).unsqueeze(1).clamp_min(1e-12)  # 0/0 -> 0
        # in the layout's own order: (N, L, H*W, C) for channels_last, (N, L, C, H*W) for NCHW
        if cl:
            s, context, broad = s.unsqueeze(3), context[:, None, None, :], broad[:, None, None, :]
        else:
            former, later, s = former.transpose(2, 3), later.transpose(2, 3), s.unsqueeze(2)
            context, broad = context[:, None, :, None], broad[:, None, :, None]
        if not torch.jit.is_scripting():  # (TorchScript compiles only the torch.cat path)
            if _may_write_in_place():
                out = x if self.inplace else torch.empty_like(x)
                dst = out.permute(0, 2, 3, 1).reshape(n, seq, hw, c) if cl else out.reshape(n, seq, c, hw)
                _cpm_into(dst, former, later, s, context, broad, pos)
                return out
        y = torch.cat([former + broad, torch.addcmul(context, later, s)], dim=1)
        if cl:
            return y.reshape(nl, h, w, c).permute(0, 3, 1, 2)
        return y.reshape(nl, c, h, w)


def _project(tokens: torch.Tensor, weight: torch.Tensor, cl: bool) -> torch.Tensor:
    """Per-sample 1x1 projection: tokens (N, T, P, C), weight (N, K, C) -> (N, T, K, P).

    The matmul is oriented for the memory layout (MKL's skinny GEMMs are several times faster this way).
    """
    n, t, p, c = tokens.shape
    if cl:
        out = torch.bmm(tokens.reshape(n, t * p, c), weight.transpose(1, 2))
        return out.reshape(n, t, p, -1).transpose(2, 3)
    return torch.matmul(weight.unsqueeze(1), tokens.transpose(2, 3))


def _pool(tokens: torch.Tensor, maps: torch.Tensor, cl: bool) -> torch.Tensor:
    """Weighted sums over frames and positions: tokens (N, T, P, C), maps (N, T, K, P) -> (N, K, C)."""
    n, t, p, c = tokens.shape
    if cl:
        return torch.bmm(maps.transpose(1, 2).reshape(n, -1, t * p), tokens.reshape(n, t * p, c))
    return torch.matmul(tokens.transpose(2, 3), maps.transpose(2, 3)).sum(dim=1).transpose(1, 2)


@torch.jit.unused
def _may_write_in_place() -> bool:
    """Inference in eager mode: outputs can be written into one buffer (no autograd graph, no tracing)."""
    return not torch.is_grad_enabled() and not torch.compiler.is_compiling()


@torch.jit.unused
def _cpm_into(dst: torch.Tensor, former: torch.Tensor, later: torch.Tensor, s: torch.Tensor, context: torch.Tensor,
              broad: torch.Tensor, pos: int) -> None:
    """CPM outputs written straight into the output buffer (which may be the input's own memory: every read of
    the input is done by now), saving torch.cat's extra pass over the features."""
    torch.add(former, broad, out=dst[:, :pos])
    torch.addcmul(context, later, s, out=dst[:, pos:])


class SINetOutput(NamedTuple):
    """Train-mode output: what cross-entropy, triplet and the frame (InfoNCE) losses need."""

    logits: torch.Tensor  # (B, num_classes); the embedding itself when num_classes == 0
    embedding: torch.Tensor  # (B, C) BN-neck feature of the frame-averaged clip feature
    # (B, T, C) BN-neck per-frame features through the projection (frame loss); None for models without one
    frame_features: torch.Tensor | None


class SINet(nn.Module):
    """Frame-wise ResNet-50 with optional IDM (layer2) and SBM (layer3) modules, max-pool + BN-neck head."""

    def __init__(
            self,
            layers: Sequence[int] = (3, 4, 6, 3),
            idm_after: Sequence[int] = (),
            sbm_after: Sequence[int] = (),
            sbm_split_pos: Sequence[int] = (0, 1, 2),
            idm_reduction: int = 16,
            num_classes: int = 0,
            in_chans: int = 3,
            img_size: tuple[int, int] = (256, 128),
            clip_len: int = CLIP_LEN,
            frame_projection: bool = False,
            drop_rate: float = 0.0,
            global_pool: str = 'max',
    ):
        """
        Args:
            layers: bottleneck blocks per stage (ResNet-50).
            idm_after: 0-based block indices of layer2 followed by an IDM (released SINet/IDNet: 1, 3).
            sbm_after: 0-based block indices of layer3 followed by an SBM (released SINet/SBNet: 1, 3, 5).
            sbm_split_pos: former/later split position of each SBM.
            idm_reduction: IDM reduction of channels and t*h*w (released 16; the paper's Fig. 5b uses 4).
            num_classes: training identities (0: the model returns the re-ID embedding).
            img_size: frame size (H, W); IDM's t*h*w integration is sized for it.
            clip_len: frames per clip seen by SBM/IDM (4 in all released models).
            frame_projection: add the 1x1 projection of per-frame features used by the frame InfoNCE loss
                (present in released SBNet/SINet checkpoints); only built when num_classes > 0.
        """
        super().__init__()
        if global_pool != 'max':
            raise ValueError(f"SINet's head uses spatial global max pooling; got global_pool={global_pool!r}")
        if len(sbm_split_pos) < len(sbm_after):
            raise ValueError('one sbm_split_pos per SBM is needed')
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.img_size = tuple(img_size)
        self.clip_len = clip_len
        self.has_idm = len(idm_after) > 0
        self.has_sbm = len(sbm_after) > 0
        # SBM's CAL compares the inner (H-2)x(W-2) positions of its layer3 maps with all of them: >= 3x3 needed
        self.min_frame_side = _min_frame_side('layer3', 3 if self.has_sbm else 1)
        if min(self.img_size) < self.min_frame_side:
            raise ValueError(f'img_size={self.img_size} is too small: {self._min_side_reason()}')
        self.use_frame_projection = frame_projection
        self.drop_rate = drop_rate
        self.grad_checkpointing = False
        self.num_features = self.head_hidden_size = 512 * Bottleneck.expansion
        self.global_pool = global_pool

        self.conv1 = _conv(in_chans, 64, 7, stride=2, padding=3)
        self.bn1 = nn.BatchNorm2d(64)
        self.act1 = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=0)  # released: no padding

        hw = _stage_hw(self.img_size)
        plugins: dict[int, dict[int, Any]] = {1: {}, 2: {}, 3: {}, 4: {}}
        for i in idm_after:
            plugins[2][i] = partial(
                IntegrationDistribution,
                thw=clip_len * hw['layer2'][0] * hw['layer2'][1], clip_len=clip_len, reduction=idm_reduction)
        for i, pos in zip(sbm_after, sbm_split_pos, strict=False):
            plugins[3][i] = partial(SalientToBroad, split_pos=pos, clip_len=clip_len, inplace=True)

        inplanes = 64
        self.feature_info = []
        for stage, (planes, depth, stride) in enumerate(zip((64, 128, 256, 512), layers, (1, 2, 2, 1), strict=True), 1):
            downsample = None
            if stride != 1 or inplanes != planes * Bottleneck.expansion:
                downsample = nn.Sequential(
                    _conv(inplanes, planes * Bottleneck.expansion, 1, stride=stride),
                    nn.BatchNorm2d(planes * Bottleneck.expansion))
            blocks: list[nn.Module] = []
            for b in range(depth):
                blocks.append(Bottleneck(inplanes, planes, stride if b == 0 else 1, downsample if b == 0 else None))
                inplanes = planes * Bottleneck.expansion
                if b in plugins[stage]:
                    blocks.append(plugins[stage][b](inplanes))  # released layout: modules inserted in the stage
            self.add_module(f'layer{stage}', nn.Sequential(*blocks))
            reduction = 4 * 2 ** min(stage - 1, 2)
            self.feature_info.append(dict(num_chs=inplanes, reduction=reduction, module=f'layer{stage}'))

        self.bn = nn.BatchNorm1d(self.num_features)  # BN-neck
        self.classifier: nn.Module = nn.Identity()
        self.projection: nn.Module | None = None
        self.reset_classifier(num_classes)
        nn.init.normal_(self.bn.weight, 1.0, 0.02)
        nn.init.zeros_(self.bn.bias)

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
        """Replace the identity classifier (and the frame projection, part of the training head)."""
        if global_pool is not None and global_pool != 'max':
            raise ValueError(f"SINet's head uses spatial global max pooling; got global_pool={global_pool!r}")
        self.num_classes = num_classes
        if num_classes > 0:
            self.classifier = nn.Linear(self.num_features, num_classes)
            nn.init.normal_(self.classifier.weight, std=0.001)
            nn.init.zeros_(self.classifier.bias)
        else:
            self.classifier = nn.Identity()
        if self.use_frame_projection and num_classes > 0:
            self.projection = nn.Conv1d(self.num_features, self.num_features, 1)
            nn.init.kaiming_normal_(self.projection.weight, mode='fan_out')
            nn.init.zeros_(self.projection.bias)
        else:
            self.projection = None

    def _min_side_reason(self) -> str:
        n = self.min_frame_side
        if self.has_sbm:
            return f'SBM needs layer3 feature maps of at least 3x3, i.e. frames of at least {n}x{n}'
        return f"the stem's max-pool needs frames of at least {n}x{n}"

    def check_input(self, x: torch.Tensor) -> None:
        """Raise a clear error for inputs the model cannot handle (shape, frame count, frame size)."""
        if x.dim() != 5:
            raise ValueError(
                f'SINet expects clips of shape (B, T, {self.in_chans}, H, W); got a {x.dim()}-D tensor of shape '
                f'{list(x.shape)}. Add a batch dimension with x[None] for a single clip.')
        if x.shape[2] != self.in_chans:
            raise ValueError(
                f'expected {self.in_chans} channels at dim 2 of (B, T, C, H, W), got shape {list(x.shape)}; '
                f'(B, C, T, H, W) inputs need x.transpose(1, 2)')
        if not x.is_floating_point():
            raise TypeError(
                f'expected float frames normalised as timm.data.resolve_data_config says (ImageNet mean/std), got '
                f'{x.dtype}. Convert uint8 frames with x.float() / 255, then subtract the mean and divide by the std.')
        if x.shape[1] == 0 or x.shape[1] % self.clip_len != 0:
            raise ValueError(
                f'the number of frames T={x.shape[1]} must be a positive multiple of {self.clip_len}: SBM/IDM work on '
                f'{self.clip_len}-frame clips. Pad the tracklet (e.g. repeat its last frames) or sample '
                f'{self.clip_len} frames.')
        if x.shape[-2] < self.min_frame_side or x.shape[-1] < self.min_frame_side:
            raise ValueError(f'{x.shape[-2]}x{x.shape[-1]} frames are too small: {self._min_side_reason()}. Resize '
                             f'frames to {self.img_size} (timm.data.resolve_data_config gives the preprocessing).')
        if self.has_idm and (x.shape[-2], x.shape[-1]) != self.img_size:
            raise ValueError(
                f'this model has IDM modules sized for {self.img_size[0]}x{self.img_size[1]} frames, got '
                f'{x.shape[-2]}x{x.shape[-1]}. Resize frames to {self.img_size} (timm.data.resolve_data_config '
                f'gives the preprocessing) or create the model with img_size=({x.shape[-2]}, {x.shape[-1]}).')

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, C, H, W) clips -> (B, T, 2048, H/16, W/16) per-frame feature maps."""
        self.check_input(x)
        b, t = x.shape[0], x.shape[1]
        x = x.flatten(0, 1)  # the backbone is frame-wise (temporal kernel 1)
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

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """(B, T, C, h, w) -> embedding (B, C) if pre_logits else logits (the embedding when num_classes=0)."""
        x = x.amax(dim=(-2, -1)).mean(dim=1)  # spatial max per frame, then average over frames
        x = self.bn(x)
        if pre_logits:
            return x
        if self.drop_rate > 0.0:
            x = F.dropout(x, p=self.drop_rate, training=self.training)
        return self.classifier(x)

    @torch.jit.unused
    def forward_train(self, x: torch.Tensor) -> SINetOutput:
        """Train-mode outputs for the losses (not available in TorchScript, which is for inference)."""
        frames = self.forward_features(x).amax(dim=(-2, -1))  # (B, T, C)
        emb = self.bn(frames.mean(dim=1))
        logits = self.classifier(F.dropout(emb, p=self.drop_rate) if self.drop_rate > 0.0 else emb)
        frame_features: torch.Tensor | None = None
        if self.projection is not None:
            # the released frame loss: BN-neck per frame (a second BN call, as in training), then the projection
            frame_features = self.projection(self.bn(frames.transpose(1, 2))).transpose(1, 2)
        return SINetOutput(logits, emb, frame_features)

    def forward(self, x: torch.Tensor):
        if self.training and not torch.jit.is_scripting():
            return self.forward_train(x)
        return self.forward_head(self.forward_features(x))


# --- checkpoint conversion ----------------------------------------------------------------------------------
def _plugin_positions(model: SINet) -> dict[str, dict[int, int]]:
    """For each stage, the Sequential index of every backbone block, i.e. block number -> module index."""
    out = {}
    for stage in ('layer1', 'layer2', 'layer3', 'layer4'):
        seq = getattr(model, stage)
        out[stage] = {b: i for b, i in enumerate(i for i, m in enumerate(seq) if isinstance(m, Bottleneck))}
    return out


def _is_released(state_dict: dict[str, torch.Tensor]) -> bool:
    w = state_dict.get('conv1.weight')
    return w is not None and w.ndim == 5


def _is_torchvision_resnet(state_dict: dict[str, torch.Tensor]) -> bool:
    return 'fc.weight' in state_dict and 'conv1.weight' in state_dict and 'conv1.bias' not in state_dict


_RELEASED_MODULE_KEYS = {
    # IDM: released name -> ours
    'chl_reduction.0.': 'reduce.', 'chl_reduction.1.': 'reduce_bn.',
    'thw_reduction.0.': 'integrate.', 'thw_reduction.1.': 'integrate_bn.',
    'thw_expansion.0.': 'distribute.', 'chl_expansion.0.': 'expand.',
    # SBM
    'se.1.': 'cal_fc1.', 'se.3.': 'cal_fc2.', 'kernel.0.': 'kgm_conv.', 'kernel.1.': 'kgm_bn.',
}


def _convert_released(state_dict: dict[str, torch.Tensor], model: SINet) -> dict[str, torch.Tensor]:
    """Released layout (3-D convs, same module order) -> ours: squeeze the temporal/1x1 kernel dims."""
    own = model.state_dict()
    out = {}
    for k, v in state_dict.items():
        for old, new in _RELEASED_MODULE_KEYS.items():
            if old in k:
                k = k.replace(old, new)
                break
        target = own.get(k)
        if target is not None and v.shape != target.shape and v.numel() == target.numel():
            v = v.reshape(target.shape)  # (O, I, 1, kh, kw) -> (O, I, kh, kw); 1x1(x1) -> linear/conv1d
        out[k] = v
    return out


def _convert_torchvision(state_dict: dict[str, torch.Tensor], model: SINet) -> dict[str, torch.Tensor]:
    """ImageNet ResNet-50 (torchvision/timm layout) -> backbone init; modules and biases keep their init."""
    pos = _plugin_positions(model)
    out = dict(model.state_dict())  # modules, conv biases (zero), BN-neck, head keep the model's own init
    for k, v in state_dict.items():
        if k.startswith('fc.'):
            continue
        parts = k.split('.')
        if parts[0] in pos:
            parts[1] = str(pos[parts[0]][int(parts[1])])
        out['.'.join(parts)] = v
    return out


def checkpoint_filter_fn(state_dict: dict[str, Any], model: SINet) -> dict[str, torch.Tensor]:
    """Accept our own checkpoints, the authors' released ``.pth.tar`` state dicts and ImageNet ResNet-50 weights.

    Training-head tensors the model has no place for (``projection.*`` of an embedding model, a classifier
    when ``num_classes=0``) are dropped; other mismatches are left for ``load_state_dict`` to report.
    """
    if 'state_dict' in state_dict and isinstance(state_dict['state_dict'], dict):
        state_dict = state_dict['state_dict']
    state_dict = {k.removeprefix('module.'): v for k, v in state_dict.items()}
    if _is_released(state_dict):
        state_dict = _convert_released(state_dict, model)
    elif _is_torchvision_resnet(state_dict):
        state_dict = _convert_torchvision(state_dict, model)
    if model.projection is None:
        state_dict = {k: v for k, v in state_dict.items() if not k.startswith('projection.')}
    if model.num_classes == 0:
        state_dict = {k: v for k, v in state_dict.items() if not k.startswith('classifier.')}
    return state_dict


# --- registry ---------------------------------------------------------------------------------------------
def _create_sinet(variant: str, pretrained: bool = False, **kwargs) -> SINet:
    if kwargs.get('features_only'):
        raise NotImplementedError(
            f'{variant} does not support features_only: its stages exchange information across frames. Use '
            'model.forward_features(clips) for the (B, T, 2048, h, w) maps.')
    try:
        return build_model_with_cfg(SINet, variant, pretrained, pretrained_filter_fn=checkpoint_filter_fn, **kwargs)
    except Exception as e:
        file = (kwargs.get('pretrained_cfg_overlay') or {}).get('file')
        if pretrained and file:  # the caller's own file: say what is wrong with it (not what the Hub needs)
            _check_checkpoint_file(file, variant, kwargs)
        if not pretrained or not _is_fetch_error(e):
            raise
        if os.environ.get('SINET_TIMM_DRIVE_FALLBACK') == '1':  # opt-in: the authors' Drive file, converted
            return _drive_fallback(variant, kwargs, e)
        raise WeightsUnavailableError(_weights_help(variant, kwargs.get('pretrained_cfg'), e)) from e


def _check_checkpoint_file(file: str, variant: str, kwargs: dict[str, Any]) -> None:
    """After loading ``file`` failed: raise a CheckpointError if it is missing, unreadable or made for another
    architecture (with the differing keys); return if none of these explains the failure."""
    from .convert import CheckpointError, describe_mismatch, infer_arch, load_checkpoint_file

    what = f'pretrained_cfg_overlay=dict(file={file!r})'
    try:
        state_dict = load_checkpoint_file(file)
    except CheckpointError as e:
        raise CheckpointError(f'{what}: {e}') from None
    model = build_model_with_cfg(SINet, variant, False, **{k: v for k, v in kwargs.items()
                                                            if k != 'pretrained_cfg_overlay'})
    problems = describe_mismatch(checkpoint_filter_fn(state_dict, model), model)
    if problems:
        guess = infer_arch(state_dict) if 'conv1.weight' in state_dict else None
        hint = f' It looks like {guess}.' if guess and guess != variant else ''
        raise CheckpointError(f'{what} does not fit {variant}.{hint}\n{problems}') from None


def _drive_fallback(variant: str, kwargs: dict[str, Any], err: BaseException) -> SINet:
    """SINET_TIMM_DRIVE_FALLBACK=1: build with the authors' Google Drive file, converted and cached (sinet_timm.hub)."""
    from .hub import drive_fallback_file

    name = _pretrained_name(variant, kwargs.get('pretrained_cfg'))
    try:
        file = drive_fallback_file(name)
    except Exception as e2:
        raise WeightsUnavailableError(
            f'{_weights_help(variant, kwargs.get("pretrained_cfg"), err)}\nThe Google Drive fallback '
            f'(SINET_TIMM_DRIVE_FALLBACK=1) failed too: {e2}') from e2
    overlay = dict(kwargs.pop('pretrained_cfg_overlay', None) or {}, file=str(file))
    return build_model_with_cfg(SINet, variant, True, pretrained_filter_fn=checkpoint_filter_fn,
                                pretrained_cfg_overlay=overlay, **kwargs)


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights could not be downloaded or found in the local Hub cache."""


def _is_fetch_error(e: BaseException) -> bool:
    mod = type(e).__module__ or ''
    return isinstance(e, OSError) or mod.startswith(('huggingface_hub', 'requests', 'httpx', 'urllib'))


def _pretrained_name(variant: str, pretrained_cfg: Any) -> str:
    tag = pretrained_cfg if isinstance(pretrained_cfg, str) else getattr(pretrained_cfg, 'tag', None)
    return f'{variant}.{tag}' if tag else variant


def _weights_help(variant: str, pretrained_cfg: Any, err: BaseException) -> str:
    name = _pretrained_name(variant, pretrained_cfg)
    try:
        from timm.models import get_pretrained_cfg
        repo = get_pretrained_cfg(name).hf_hub_id
    except Exception:  # an overlay or unknown tag: no repo to name
        repo = None
    where = f' from the Hugging Face Hub repo {repo}' if repo else ''
    first_line = str(err).splitlines()[0] if str(err) else '(no message)'
    return (
        f'could not get the pretrained weights of {name}{where}: {type(err).__name__}: {first_line}\n'
        'If you are offline, download them once with network access (they are then cached), or point '
        'HF_HUB_CACHE at a cache that has them. Without the Hub, convert the authors\' released file: '
        '`python -m sinet_timm.convert CHECKPOINT.pth.tar OUT_DIR` and load it with '
        "timm.create_model('local-dir:OUT_DIR', pretrained=True). Use pretrained=False for random init."
        + (f' For this zoo entry, `sinet-hub convert {name} --out OUT_DIR` downloads the authors\' Google Drive '
           'file and converts it; or set SINET_TIMM_DRIVE_FALLBACK=1 to do that on the fly (cached) when the Hub '
           'cannot be reached.' if _is_zoo_entry(name) else ''))


def _is_zoo_entry(name: str) -> bool:
    from ._zoo import zoo_entries

    return name in zoo_entries()


def _cfg(**kwargs) -> dict[str, Any]:
    return {
        'num_classes': 0, 'input_size': (3, 256, 128), 'pool_size': (16, 8), 'fixed_input_size': True,
        'crop_pct': 1.0, 'crop_mode': 'squash', 'interpolation': 'bicubic',
        'mean': (0.485, 0.456, 0.406), 'std': (0.229, 0.224, 0.225),
        'first_conv': 'conv1', 'classifier': 'classifier', 'license': 'mit',
        'paper_name': 'Salient-to-Broad Transition for Video Person Re-identification',
        'paper_ids': 'CVPR 2022', 'origin_url': 'https://github.com/baist/SINet',
        **kwargs,
    }


_ARCHS = ('sinet_r50', 'sbnet_r50', 'idnet_r50', 'vreid_r50')


def _imagenet_cfg() -> dict[str, Any]:
    # the authors initialise the backbone from torchvision's ResNet-50 weights (timm/resnet50.tv_in1k);
    # checkpoint_filter_fn maps them into the frame-wise backbone, modules and biases keep their own init
    return _cfg(hf_hub_id='timm/resnet50.tv_in1k', notes=('ImageNet backbone init; re-ID head untrained',))


def _build_default_cfgs() -> dict[str, Any]:
    from ._zoo import zoo_pretrained_cfgs

    cfgs: dict[str, Any] = {f'{arch}.tv_in1k': _imagenet_cfg() for arch in _ARCHS}
    for name, extra in zoo_pretrained_cfgs().items():
        cfgs[name] = _cfg(**extra)
    return cfgs


default_cfgs = generate_default_cfgs(_build_default_cfgs())

_IDM = dict(idm_after=(1, 3))
_SBM = dict(sbm_after=(1, 3, 5), sbm_split_pos=(0, 1, 2), frame_projection=True)


@register_model
def sinet_r50(pretrained: bool = False, **kwargs) -> SINet:
    """SINet: ResNet-50 + 2 IDM (layer2) + 3 SBM (layer3) (paper Table 1/2, 'SINet')."""
    return _create_sinet('sinet_r50', pretrained, **dict(_IDM, **_SBM, **kwargs))


@register_model
def sbnet_r50(pretrained: bool = False, **kwargs) -> SINet:
    """SBNet: ResNet-50 + 3 SBM (paper Table 2, 'base.+SBM')."""
    return _create_sinet('sbnet_r50', pretrained, **dict(_SBM, **kwargs))


@register_model
def idnet_r50(pretrained: bool = False, **kwargs) -> SINet:
    """IDNet: ResNet-50 + 2 IDM (paper Table 2, 'base.+IDM')."""
    return _create_sinet('idnet_r50', pretrained, **dict(_IDM, **kwargs))


@register_model
def vreid_r50(pretrained: bool = False, **kwargs) -> SINet:
    """The video re-ID baseline: frame-wise ResNet-50, max pooling, BN-neck (paper Table 2, 'base.')."""
    return _create_sinet('vreid_r50', pretrained, **kwargs)
