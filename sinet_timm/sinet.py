"""SINet: Salient-to-Broad Transition for Video Person Re-identification.

Paper: Shutao Bai, Bingpeng Ma, Hong Chang, Rui Huang, Xilin Chen. "Salient-to-Broad Transition for Video
Person Re-identification", CVPR 2022. Authors' code: https://github.com/baist/SINet (MIT).

The frame-wise ResNet-50 of :mod:`sinet_timm.framewise` with two temporal plug-ins:

* the Salient-to-Broad Module (SBM, Sec. 3.2) after blocks 1, 3, 5 of ``layer3``: channel attention (CAL),
  kernel generation (KGM), the suppression operation (SO) and cross propagation (CPM);
* the Integration-and-Distribution Module (IDM, Sec. 3.3, Eq. 7) after blocks 1 and 3 of ``layer2``.

This file follows the released implementation, which produced the released checkpoints (the backbone's facts are
listed in :mod:`sinet_timm.framewise`):

* IDM reduces channels and the t*h*w axis by 16 (``idm_reduction=4`` gives the paper's Fig. 5b variant);
* SBM uses k=3, beta=5, alpha=0.1 and works on 4-frame clips; a longer input is treated as independent clips;
* SBNet and SINet carry the frame projection of the frame InfoNCE loss.

Both memory layouts work; ``model.to(memory_format=torch.channels_last)`` is the faster one on GPUs and CPUs alike
(SBM works on (N, L, H*W, C) token views, which are free in either layout).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from contextlib import nullcontext
from functools import partial
from typing import Any, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import register_notrace_module
from timm.models import generate_default_cfgs, register_model

from ._builder import create_video_model
from ._zoo import zoo_pretrained_cfgs
from .framewise import CLIP_LEN, Plugin, VideoReIDNet, checkpoint_filter_fn, video_cfg

__all__ = ['IntegrationDistribution', 'SINet', 'SalientToBroad', 'checkpoint_filter_fn', 'infer_arch']

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

    # the released module's attribute names -> ours (checkpoint conversion)
    released_keys = {'chl_reduction.0.': 'reduce.', 'chl_reduction.1.': 'reduce_bn.',
                     'thw_reduction.0.': 'integrate.', 'thw_reduction.1.': 'integrate_bn.',
                     'thw_expansion.0.': 'distribute.', 'chl_expansion.0.': 'expand.'}

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

    # the released module's attribute names -> ours (checkpoint conversion)
    released_keys = {'se.1.': 'cal_fc1.', 'se.3.': 'cal_fc2.', 'kernel.0.': 'kgm_conv.', 'kernel.1.': 'kgm_bn.'}

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
        dt = tokens.dtype  # the module's weights in the dtype of the (float32) attention arithmetic
        fc1, fc2 = self.cal_fc1, self.cal_fc2
        se = torch.sigmoid(F.linear(F.relu(F.linear(mean_all, fc1.weight.to(dt), fc1.bias.to(dt))),
                                    fc2.weight.to(dt), fc2.bias.to(dt)))
        return se * central, frame_sums

    def generate_kernel(self, former: torch.Tensor, cal: torch.Tensor, h: int, w: int, cl: bool) -> torch.Tensor:
        """KGM (Eq. 2-3): k*k kernel from the CAL-weighted former frames relu(x * cal).

        former: (N, Tf, H*W, C) tokens, cal: (N, C) -> (N, k*k, C).
        """
        n, tf, hw, c = former.shape
        kk, dt = self.k * self.k, former.dtype
        weight = self.kgm_conv.weight.reshape(1, kk, c).to(dt)
        bias = self.kgm_conv.bias
        assert bias is not None  # (for TorchScript's Optional refinement)
        bias = bias.to(dt)
        if self.nonneg_input:
            # relu(x * cal) == x * cal for x >= 0, cal >= 0: fold cal into the 1x1 conv's weights per sample
            weight = weight * cal[:, None, :]
        else:
            former = torch.relu(former * cal[:, None, None, :])
            weight = weight.expand(n, kk, c)
        maps = _project(former, weight, cl) + bias[:, None]  # (N, Tf, k*k, H*W)
        maps = F.relu(self._kgm_bn(maps.reshape(n * tf, kk, h, w))).reshape(n, tf, kk, hw)
        if self.k != 1:
            maps = maps / maps.sum(dim=2, keepdim=True).clamp_min(1e-12)  # L1 over the k*k maps
        maps = maps / maps.sum(dim=(1, 3), keepdim=True).clamp_min(1e-12)  # L1 over positions
        kernel = _pool(former, maps, cl)
        return kernel * cal[:, None, :] if self.nonneg_input else kernel

    def _kgm_bn(self, x: torch.Tensor) -> torch.Tensor:
        """KGM's BatchNorm, its parameters and statistics cast to ``x``'s dtype when they differ (a ``.half()``
        model whose attention runs in float32)."""
        bn = self.kgm_bn
        w, b, mean, var = bn.weight, bn.bias, bn.running_mean, bn.running_var
        assert w is not None and b is not None and mean is not None and var is not None  # (TorchScript)
        if w.dtype == x.dtype:
            return bn(x)
        dt = x.dtype
        return F.batch_norm(x, mean.to(dt), var.to(dt), w.to(dt), b.to(dt), bn.training, 0.0, bn.eps)

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

    def attention(self, tokens: torch.Tensor, h: int, w: int, cl: bool
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """CAL, KGM, SO (Eq. 1-5) and the statistics CPM adds (Eq. 6): S (N, Tl, H*W), context and broad (N, C).

        Small tensors with divisions and exponentials: :meth:`forward` runs this in float32 whenever the model
        computes in float16 or bfloat16 (their epsilons underflow there and 0/0 gives NaN).
        """
        pos, hw = self.split_pos + 1, h * w
        former, later = tokens[:, :pos], tokens[:, pos:]
        cal, frame_sums = self.channel_attention(tokens, h, w)
        s = self.suppression(later, self.generate_kernel(former, cal, h, w, cl), cal, h, w, cl)  # (N, Tl, H*W)
        # CPM (Eq. 6): later frames keep what was not salient before and see the former frames' context;
        # former frames receive the later frames' broad (suppressed) regions
        context = (self.alpha / (pos * hw)) * frame_sums[:, :pos].sum(dim=1)  # alpha * GAP(former), (N, C)
        inv = 1.0 - s
        broad = _pool(later, inv.unsqueeze(2), cl).squeeze(1)  # sum of (1-S) * x_later, (N, C)
        broad = (self.alpha * broad) / inv.sum(dim=(1, 2)).unsqueeze(1).clamp_min(1e-12)  # 0/0 -> 0
        return s, context, broad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nl, c, h, w = x.shape
        cl = not x.is_contiguous()  # channels_last: tokens are contiguous (N, L, H*W, C)
        if cl and not x.is_contiguous(memory_format=torch.channels_last):
            x, cl = x.contiguous(), False
        n, seq, hw, pos = nl // self.clip_len, self.clip_len, h * w, self.split_pos + 1
        tokens = x.permute(0, 2, 3, 1).reshape(n, seq, hw, c)  # a view in both layouts
        former, later = tokens[:, :pos], tokens[:, pos:]
        if torch.jit.is_scripting():
            s, context, broad = self.attention(tokens, h, w, cl)
        else:  # (TorchScript compiles only the branch above)
            s, context, broad = _attention_any_precision(self, x, tokens, h, w, cl)
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


_AUTOCAST_DEVICES = ('cpu', 'cuda', 'xpu', 'mps')


@torch.jit.unused
def _low_precision(x: torch.Tensor) -> bool:
    """Whether ``x`` is float16/bfloat16 or autocast may lower the precision of the ops that follow."""
    if x.dtype in (torch.float16, torch.bfloat16):
        return True
    if x.device.type not in _AUTOCAST_DEVICES:  # (e.g. 'meta': no autocast there)
        return False
    try:
        return torch.is_autocast_enabled(x.device.type)
    except TypeError:  # torch < 2.4: no device argument
        return torch.is_autocast_cpu_enabled() if x.device.type == 'cpu' else torch.is_autocast_enabled()


@torch.jit.unused
def _attention_any_precision(sbm: SalientToBroad, x: torch.Tensor, tokens: torch.Tensor, h: int, w: int, cl: bool
                             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """SBM's attention, in float32 with autocast off when the model computes in float16/bfloat16: fp16's smallest
    values underflow its epsilons (1e-8, 1e-12) and the KGM normalisation then divides 0 by 0. The clip features
    stay in their dtype; only this copy of the SBM input (about 2 MB per 256x128 clip) is float32."""
    if not _low_precision(x):
        return sbm.attention(tokens, h, w, cl)
    off = torch.autocast(x.device.type, enabled=False) if x.device.type in _AUTOCAST_DEVICES else nullcontext()
    with off:
        s, context, broad = sbm.attention(tokens.float(), h, w, cl)
    return s.to(x.dtype), context.to(x.dtype), broad.to(x.dtype)


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


class SINet(VideoReIDNet):
    """Frame-wise ResNet-50 with optional IDM (layer2) and SBM (layer3) modules, max-pool + BN-neck head."""

    def __init__(
            self,
            layers: Sequence[int] = (3, 4, 6, 3),
            idm_after: Sequence[int] = (),
            sbm_after: Sequence[int] = (),
            sbm_split_pos: Sequence[int] = (0, 1, 2),
            idm_reduction: int = 16,
            clip_len: int = CLIP_LEN,
            **kwargs: Any,
    ):
        """
        Args:
            layers: bottleneck blocks per stage (ResNet-50).
            idm_after: 0-based block indices of layer2 followed by an IDM (released SINet/IDNet: 1, 3).
            sbm_after: 0-based block indices of layer3 followed by an SBM (released SINet/SBNet: 1, 3, 5).
            sbm_split_pos: former/later split position of each SBM.
            idm_reduction: IDM reduction of channels and t*h*w (released 16; the paper's Fig. 5b uses 4).
            clip_len: frames per clip seen by SBM/IDM (4 in all released models).
            **kwargs: :class:`~sinet_timm.framewise.VideoReIDNet` arguments (num_classes, img_size,
                frame_projection, drop_rate, ...).
        """
        if len(sbm_split_pos) < len(sbm_after):
            raise ValueError('one sbm_split_pos per SBM is needed')
        plugins = [Plugin('IDM', 2, i, partial(_idm, clip_len=clip_len, reduction=idm_reduction), fixed_size=True)
                   for i in idm_after]
        plugins += [Plugin('SBM', 3, i, partial(_sbm, split_pos=pos, clip_len=clip_len), min_map_side=3)
                    for i, pos in zip(sbm_after, sbm_split_pos, strict=False)]
        super().__init__(layers=layers, plugins=plugins, clip_len=clip_len, **kwargs)


# the modules branch on their input's layout and on autocast: torch.fx keeps each as one leaf
register_notrace_module(IntegrationDistribution)
register_notrace_module(SalientToBroad)


def _idm(dim: int, hw: tuple[int, int], clip_len: int, reduction: int) -> IntegrationDistribution:
    return IntegrationDistribution(dim, thw=clip_len * hw[0] * hw[1], clip_len=clip_len, reduction=reduction)


def _sbm(dim: int, hw: tuple[int, int], split_pos: int, clip_len: int) -> SalientToBroad:
    # in place at inference: SBM inputs are fresh block outputs
    return SalientToBroad(dim, split_pos=split_pos, clip_len=clip_len, inplace=True)


def infer_arch(state_dict: dict[str, torch.Tensor]) -> str | None:
    """The architecture of a frame-wise ResNet-50 state dict (released or converted) from the modules it holds;
    None if it is no such state dict. Any frame-wise ResNet-50 without IDM and SBM is the baseline."""
    keys = [k.removeprefix('module.') for k in state_dict]
    if 'conv1.weight' not in keys and 'layer1.0.conv1.weight' not in keys:
        return None
    has_idm = any(('thw_reduction' in k) or ('.integrate.' in k) for k in keys)
    has_sbm = any(('.kernel.0.' in k) or ('.kgm_conv.' in k) for k in keys)
    return {(True, True): 'sinet_r50', (False, True): 'sbnet_r50',
            (True, False): 'idnet_r50', (False, False): 'vreid_r50'}[(has_idm, has_sbm)]


# --- registry ---------------------------------------------------------------------------------------------
ARCHS = ('sinet_r50', 'sbnet_r50', 'idnet_r50', 'vreid_r50')  # registered below (sinet_timm.archs lists them all)
_WITH_IDM = ('sinet_r50', 'idnet_r50')  # IDM is sized for its frame size; the others take any size


def _cfg(arch: str, **kwargs: Any) -> dict[str, Any]:
    return video_cfg(paper_name='Salient-to-Broad Transition for Video Person Re-identification',
                     paper_ids='CVPR 2022', fixed_input_size=arch in _WITH_IDM, **kwargs)


def _imagenet_cfg(arch: str) -> dict[str, Any]:
    # the authors initialise the backbone from torchvision's ResNet-50 weights (timm/resnet50.tv_in1k);
    # checkpoint_filter_fn maps them into the frame-wise backbone, modules and biases keep their own init
    return _cfg(arch, hf_hub_id='timm/resnet50.tv_in1k', notes=('ImageNet backbone init; re-ID head untrained',))


default_cfgs = generate_default_cfgs({
    **{f'{arch}.tv_in1k': _imagenet_cfg(arch) for arch in ARCHS},
    **{name: _cfg(name.split('.')[0], **extra) for name, extra in zoo_pretrained_cfgs(ARCHS).items()},
})

_IDM = dict(idm_after=(1, 3))
_SBM = dict(sbm_after=(1, 3, 5), sbm_split_pos=(0, 1, 2), frame_projection=True)


@register_model
def sinet_r50(pretrained: bool = False, **kwargs) -> SINet:
    """SINet: ResNet-50 + 2 IDM (layer2) + 3 SBM (layer3) (paper Table 1/2, 'SINet')."""
    return create_video_model(SINet, 'sinet_r50', pretrained, **dict(_IDM, **_SBM, **kwargs))


@register_model
def sbnet_r50(pretrained: bool = False, **kwargs) -> SINet:
    """SBNet: ResNet-50 + 3 SBM (paper Table 2, 'base.+SBM')."""
    return create_video_model(SINet, 'sbnet_r50', pretrained, **dict(_SBM, **kwargs))


@register_model
def idnet_r50(pretrained: bool = False, **kwargs) -> SINet:
    """IDNet: ResNet-50 + 2 IDM (paper Table 2, 'base.+IDM')."""
    return create_video_model(SINet, 'idnet_r50', pretrained, **dict(_IDM, **kwargs))


@register_model
def vreid_r50(pretrained: bool = False, **kwargs) -> SINet:
    """The video re-ID baseline: frame-wise ResNet-50, max pooling, BN-neck (paper Table 2, 'base.')."""
    return create_video_model(SINet, 'vreid_r50', pretrained, **kwargs)
