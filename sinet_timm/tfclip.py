"""TF-CLIP: Learning Text-Free CLIP for Video-Based Person Re-identification.

Paper: Chenyang Yu, Xuehu Liu, Yingquan Wang, Pingping Zhang, Huchuan Lu. "TF-CLIP: Learning Text-Free CLIP for
Video-Based Person Re-identification", AAAI 2024 (arXiv:2312.09627). Authors' code and checkpoints:
https://github.com/AsuradaYuci/TF-CLIP (MIT).

The test-time model: CLIP's ViT-B/16 image tower (timm's ``vit_base_patch16_clip_quickgelu_224``: QuickGELU, pre-
and post-norm, 16x16 patches) at 256x128 frames (a 16x8 grid), a learned embedding per camera added to each
frame's class token, and the Temporal Memory Diffusion (TMD) block on the tokens of a clip. The eval embedding is
the released one (``TEST.NECK_FEAT: before``), 2048-d: the frame mean of the class token after ``ln_post``
(768), the frame mean of its CLIP projection (512) and the frame mean of the TMD token mean (768).

This file follows the released implementation, which produced the released checkpoints:

* the camera vector (``cv_embed[camid]`` times ``SIE_COE`` = 1.0) is added to the class token before the
  positional embedding and ``ln_pre``; every frame of a clip gets its clip's camera;
* TMD reads all tokens after ``ln_post``; LayerNorms have eps 1e-5; MLPs use QuickGELU;
* what only training uses is not built: the CLIP-Memory (computed from the training set, not a parameter), the
  Sequence-Specific Prompt generator (``SSP.*``), the four identity classifiers and the four BN necks.
  :func:`checkpoint_filter_fn` drops those tensors from the authors' ``best_model.pth.tar`` (and the
  ``module.`` prefixes of DataParallel) and maps CLIP's visual names to timm's; TMD keeps the authors' names.

Differences from the released code, none of which changes a number: TMD takes the clip length from its input
(released: fixed at ``SEQ_LEN`` = 8 and regrouping a batch's frames by it), attention runs through PyTorch's
``scaled_dot_product_attention`` (released: ``nn.MultiheadAttention``), and each clip carries its own camera id
(the released evaluation passes one id per tracklet while splitting it into clips, which fails on tracklets of
more than 8 frames).

Input: clips ``(B, T, 3, 256, 128)`` (any T >= 1; the authors test with 8) or crops ``(B, 3, 256, 128)`` (a
one-frame clip, which embeds exactly as that frame repeated: the protocol's padding), and ``camids`` (B,) camera
indices in ``0..num_cameras-1``. Without camera ids the model raises :class:`~sinet_timm.errors.ModelInputError`
unless ``model.camera_fallback = 'mean'`` (then every clip gets the mean of the camera embeddings). For tools that
can only call ``model(x)`` (timm's scripts and test suite), the environment variable ``SINET_TIMM_CAMERA_FALLBACK``
(:data:`CAMERA_FALLBACK_ENV`) sets the fallback of models created without a ``camera_fallback`` argument: unset or
empty, camera ids are required; ``mean``, the mean camera embedding; any other value is an error. An explicit
argument wins: ``camera_fallback=None`` requires ids whatever the environment says (``'none'`` through
``timm.create_model``, which drops arguments that are None); timm's scripts also take ``--model-kwargs
camera_fallback=mean``. ``reid_eval`` does not follow the variable: it passes each tracklet's camera
id, and uses the mean embedding only when its own ``camera_fallback='mean'`` option (``--camera-fallback mean``) is
given.

timm's split of the forward pass: :meth:`TFCLIP.forward_features` runs everything that needs the frames of a clip
together (the ViT with the camera, ``ln_post``, the projection, TMD across the clip's frames) and returns per-frame
embeddings, ``(B, T, 2048)`` for clips and ``(B, 2048)`` for crops, so that its last dimension is
``num_features``; :meth:`TFCLIP.forward_head` averages them over the frames (the embedding, ``pre_logits``) and
applies a classifier when there is one. A frame's embedding depends on the other frames of its clip (TMD), so the
per-frame embeddings of a clip are not those of its frames run alone. The tokens of every ViT block are available
through :meth:`TFCLIP.forward_intermediates` (timm's ``features_only=True`` builds on it).

Pretrained tags: ``.mars`` (the default), ``.lsvid`` and ``.ilidsvid`` are the authors' checkpoints (zoo files
``hub_configs/tfclip_vit_b16.*.yaml``); ``.openai`` is their initialisation, OpenAI's CLIP image tower. Their cfgs
(:class:`~sinet_timm._pretrained.VideoPretrainedCfg`) say ``protocol='tfclip'``, ``camera_input=True`` and
``num_cameras``, which ``timm.create_model`` passes to the model unless ``num_cameras`` is given. The model
returns the embedding (or a new classifier's logits) in train mode too: the paper's training (CLIP-Memory, SSP,
its losses) is not reproduced here.

No ``from __future__ import annotations`` here: TorchScript reads the annotations of what it compiles, and string
annotations are unknown types to it.
"""
import os
from collections import OrderedDict
from enum import Enum
from functools import partial
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import LayerNorm, QuickGELU, register_notrace_function, register_notrace_module, trunc_normal_
from timm.models import (
    VisionTransformer,
    checkpoint,
    checkpoint_seq,
    generate_default_cfgs,
    register_model,
    resolve_pretrained_cfg,
)
from timm.models._features import feature_take_indices

from ._builder import create_video_model
from ._checkpoint import refuse_integer_weights
from ._input import check_frames
from ._pretrained import as_video_pretrained_cfg, video_pretrained_cfg
from ._zoo import pretrained_cfg_fields, zoo_entries
from .errors import CheckpointError, ModelInputError

__all__ = ['CAMERA_FALLBACK_ENV', 'TFCLIP', 'ClipFrames', 'TemporalMemoryDiffusion', 'TemporalMemoryDiffusionBlock',
           'camera_fallback_from_env', 'camera_vectors', 'checkpoint_filter_fn', 'frame_mean', 'infer_arch',
           'model_kwargs_from_state_dict', 'per_input', 'released_num_classes', 'zoo_cfg_fields']

BACKBONE = 'vit_base_patch16_clip_quickgelu_224'  # timm's CLIP ViT-B/16 image tower with QuickGELU
# its architecture (timm's entrypoint of that name), built here at the re-ID frame size
CLIP_VIT_B16_ARGS: dict[str, Any] = dict(patch_size=16, embed_dim=768, depth=12, num_heads=12, pre_norm=True,
                                         norm_layer=partial(LayerNorm, eps=1e-5), act_layer='quick_gelu')
CLIP_LEN = 8  # frames per clip of the released training and test (cfg.INPUT.SEQ_LEN)
CAMERA_FALLBACKS = (None, 'none', 'mean')  # 'none' is None spelt so that timm.create_model (which drops None) passes it
# the camera fallback of models created without a camera_fallback argument (for tools that can only call model(x))
CAMERA_FALLBACK_ENV = 'SINET_TIMM_CAMERA_FALLBACK'


class _Unset(Enum):
    """The default of ``TFCLIP(camera_fallback=...)``: not given, so :data:`CAMERA_FALLBACK_ENV` decides (``None``
    given explicitly means "camera ids required")."""

    FROM_ENV = 'from the environment'


def camera_fallback_from_env() -> str | None:
    """The camera fallback that ``$SINET_TIMM_CAMERA_FALLBACK`` asks for: ``None`` (unset or empty: camera ids
    required) or ``'mean'``; any other value is a :class:`~sinet_timm.errors.ModelInputError` naming the variable."""
    value = os.environ.get(CAMERA_FALLBACK_ENV, '')
    if value == '':
        return None
    if value != 'mean':
        raise ModelInputError(f"{CAMERA_FALLBACK_ENV}={value!r} is not a camera fallback: leave it unset or empty "
                              "(TF-CLIP models need camera ids) or set it to 'mean' (without ids, the mean camera "
                              'embedding)')
    return value
# tensors of the released checkpoints that only training uses: identity classifiers, BN necks (the eval embedding
# is taken before them), the Sequence-Specific Prompt generator
TRAINING_ONLY_PREFIXES = ('classifier2.', 'classifier_proj.', 'classifier_proj_temp.', 'classifier_proj_temp2.',
                          'bottleneck.', 'bottleneck_proj.', 'bottleneck_proj_temp.', 'bottleneck_proj_temp2.',
                          'SSP.')


class MultiheadSelfAttention(nn.Module):
    """Self-attention with ``nn.MultiheadAttention``'s parameter names (``in_proj_weight``, ``in_proj_bias``,
    ``out_proj``), batch first, computed by ``F.scaled_dot_product_attention`` (fused kernels, bf16-safe)."""

    def __init__(self, dim: int, num_heads: int, device=None, dtype=None):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f'dim={dim} is not a multiple of num_heads={num_heads}')
        self.num_heads = num_heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim, device=device, dtype=dtype))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * dim, device=device, dtype=dtype))
        self.out_proj = nn.Linear(dim, dim, device=device, dtype=dtype)
        nn.init.xavier_uniform_(self.in_proj_weight)  # nn.MultiheadAttention's init
        nn.init.zeros_(self.out_proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, length, c = x.shape
        qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias)
        q, k, v = qkv.reshape(n, length, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4).unbind(0)
        x = F.scaled_dot_product_attention(q, k, v)
        return self.out_proj(x.transpose(1, 2).reshape(n, length, c))


def _clip_mlp(dim: int, device=None, dtype=None) -> nn.Sequential:
    return nn.Sequential(OrderedDict([
        ('c_fc', nn.Linear(dim, 4 * dim, device=device, dtype=dtype)),
        ('gelu', QuickGELU()),
        ('c_proj', nn.Linear(4 * dim, dim, device=device, dtype=dtype)),
    ]))


class TemporalMemoryDiffusionBlock(nn.Module):
    """One TMD block (the released ``CrossFramelAttentionBlock``; its parameter names).

    The two steps the released code names TMC and MD. Temporal memory construction: each frame's token mean,
    through ``message_fc``, is that frame's memory token; the memory tokens of a clip attend to each other
    (pre-norm ``message_ln``, residual). Memory diffusion: each frame's memory token joins the frame's own tokens
    and one pre-norm
    transformer block (``ln_1``/``attn``, ``ln_2``/``mlp``) runs over them, spreading the clip's temporal
    information to every token. ``(B*T, L, C)`` -> ``(B*T, L + 1, C)`` (the memory token last).
    """

    def __init__(self, dim: int, num_heads: int, device=None, dtype=None):
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        self.message_fc = nn.Linear(dim, dim, **dd)
        self.message_ln = nn.LayerNorm(dim, eps=1e-5, **dd)
        self.message_attn = MultiheadSelfAttention(dim, num_heads, **dd)
        self.attn = MultiheadSelfAttention(dim, num_heads, **dd)
        self.ln_1 = nn.LayerNorm(dim, eps=1e-5, **dd)
        self.mlp = _clip_mlp(dim, **dd)
        self.ln_2 = nn.LayerNorm(dim, eps=1e-5, **dd)

    def forward(self, x: torch.Tensor, clip_len: int) -> torch.Tensor:
        bt, _, c = x.shape
        memory = self.message_fc(x.mean(dim=1)).reshape(bt // clip_len, clip_len, c)
        memory = memory + self.message_attn(self.message_ln(memory))  # the frames of a clip communicate
        x = torch.cat([x, memory.reshape(bt, 1, c)], dim=1)  # diffusion: the memory joins its frame's tokens
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class TemporalMemoryDiffusion(nn.Module):
    """The TMD module: ``resblocks`` of :class:`TemporalMemoryDiffusionBlock` (one in the released model)."""

    def __init__(self, dim: int, num_heads: int, layers: int = 1, device=None, dtype=None):
        super().__init__()
        self.resblocks = nn.ModuleList(
            [TemporalMemoryDiffusionBlock(dim, num_heads, device=device, dtype=dtype) for _ in range(layers)])

    def forward(self, x: torch.Tensor, clip_len: int) -> torch.Tensor:
        for block in self.resblocks:
            x = block(x, clip_len)
        return x


class ClipFrames(nn.Module):
    """The model's input, checked and made clips: ``(B, T, C, H, W)`` clips pass (any T >= 1); a ``(B, C, H, W)``
    batch of crops becomes one-frame clips ``(B, 1, C, H, W)``. Frames must have the size the positional embedding
    was made for.

    A module of its own so that ``torch.fx`` treats the shape checks as one leaf (they branch on the input's shape)
    and TorchScript compiles them.
    """

    def __init__(self, in_chans: int, img_size: tuple[int, int]):
        super().__init__()
        self.in_chans = in_chans
        self.img_size: tuple[int, int] = (int(img_size[0]), int(img_size[1]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_frames(x, self.in_chans)
        if x.dim() == 4:
            x = x.unsqueeze(1)
        if x.shape[1] == 0:
            raise ModelInputError('a clip needs at least one frame, got T=0')
        h, w = x.shape[-2], x.shape[-1]
        if h != self.img_size[0] or w != self.img_size[1]:
            raise ModelInputError(
                f'the positional embedding is sized for {self.img_size[0]}x{self.img_size[1]} frames, got {h}x{w}. '
                f'Resize frames to {self.img_size} (timm.data.resolve_data_config gives the preprocessing) or '
                f'create the model with img_size=({h}, {w}).')
        return x


def camera_vectors(cv_embed: torch.Tensor, camids: torch.Tensor | None, batch: int, fallback: str | None,
                   sie_coe: float) -> torch.Tensor:
    """The vector added to the class tokens of each clip: ``sie_coe * cv_embed[camids]``, ``(B, D)``; without
    ``camids``, ``sie_coe`` times the mean camera embedding, ``(1, D)``, when ``fallback`` is ``'mean'``, else a
    :class:`~sinet_timm.errors.ModelInputError`.

    A function of its own so that ``torch.fx`` keeps it as one call (it branches on whether there are camera ids,
    which tracing cannot see) and TorchScript compiles it; the checks of ``camids`` run outside TorchScript (the
    range check outside tracing and compiling too, as it reads the values).
    """
    num_cameras = cv_embed.shape[0]
    if camids is None:
        if not torch.jit.is_scripting():
            _check_fallback(fallback)
        if fallback is not None and fallback == 'mean':
            return sie_coe * cv_embed.mean(dim=0, keepdim=True)
        raise ModelInputError(
            f'this TF-CLIP model needs the camera id of each clip: call model(x, camids) with camids a LongTensor '
            f"of shape ({batch},) in 0..{num_cameras - 1}, or set model.camera_fallback = 'mean' to use the "
            'mean camera embedding instead (less accurate)')
    if not torch.jit.is_scripting() and not isinstance(camids, torch.Tensor):
        camids = torch.as_tensor(camids)
    if camids.dim() == 0:
        camids = camids.expand(batch)
    if not torch.jit.is_scripting():
        _check_camids(camids, batch, num_cameras)
    return sie_coe * cv_embed[camids.to(cv_embed.device)]


def _check_camids(camids: torch.Tensor, batch: int, num_cameras: int) -> None:
    if camids.shape != (batch,) or camids.is_floating_point() or camids.dtype == torch.bool or camids.is_complex():
        raise ModelInputError(f'camids must be an integer tensor of shape ({batch},), one camera id per clip; '
                              f'got {camids.dtype} of shape {tuple(camids.shape)}')
    if not (torch.jit.is_tracing() or torch.compiler.is_compiling()) and camids.numel() and not camids.is_meta:
        lo, hi = int(camids.min()), int(camids.max())
        if lo < 0 or hi >= num_cameras:
            raise ModelInputError(
                f'camera id {lo if lo < 0 else hi} is out of range: this model has {num_cameras} camera '
                f'embeddings (ids 0..{num_cameras - 1}, the training set\'s cameras counted from 0)')


def per_input(x: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
    """What the model returns per frame, ``(B, T, ...)``, for input ``x``: as it is for clips, the only frame
    ``(B, ...)`` for a ``(B, C, H, W)`` batch of crops (one-frame clips)."""
    if x.dim() == 4:
        return frames[:, 0]
    return frames


def frame_mean(x: torch.Tensor) -> torch.Tensor:
    """Per-frame embeddings ``(B, T, D)`` -> their mean over the frames, ``(B, D)``; a crop's ``(B, D)`` as it is."""
    if x.dim() == 3:
        return x.mean(dim=1)
    return x


for _fn in (camera_vectors, per_input, frame_mean):  # branch on the input (its shape, or whether ids were given)
    register_notrace_function(_fn)
register_notrace_module(ClipFrames)


class TFCLIP(nn.Module):
    """CLIP ViT-B/16 with camera embeddings and Temporal Memory Diffusion; the released TF-CLIP at test time.

    ``torch.fx`` (timm's tracer, which keeps :class:`ClipFrames` and the shape-dependent helpers as leaves) and
    TorchScript (inference) work; the fallback for calls without camera ids is read when the graph is made.
    """

    camera_fallback: str | None  # the attribute's type for TorchScript (None or 'mean')

    def __init__(
            self,
            num_cameras: int = 6,
            num_classes: int = 0,
            in_chans: int = 3,
            img_size: tuple[int, int] = (256, 128),
            clip_len: int = CLIP_LEN,
            sie_coe: float = 1.0,
            camera_fallback: str | None | _Unset = _Unset.FROM_ENV,
            tmd_layers: int = 1,
            embed_dim: int = 768,
            depth: int = 12,
            num_heads: int = 12,
            proj_dim: int = 512,
            drop_rate: float = 0.0,
            drop_path_rate: float = 0.0,
            global_pool: str = 'token',
            device: torch.device | str | None = None,
            dtype: torch.dtype | None = None,
    ):
        """
        Args:
            num_cameras: cameras of the training set (MARS 6, LS-VID 15, iLIDS-VID 2): rows of ``cv_embed``.
            num_classes: 0 (the re-ID embedding, as released) or a new linear classifier on it for fine-tuning.
            img_size: frame size (H, W); the positional embedding is sized for it (released: 256x128).
            clip_len: frames per clip of the released protocol (8); any T works, this is what it was trained on.
            sie_coe: scale of the camera embedding (the released configs' ``MODEL.SIE_COE``: 1.0).
            camera_fallback: ``None`` (camera ids are required) or ``'mean'`` (without ids, the mean camera
                embedding); also settable later as ``model.camera_fallback``. When not given,
                ``$SINET_TIMM_CAMERA_FALLBACK`` decides (unset or empty: ``None``; ``mean``: ``'mean'``; other
                values are an error), for tools that can only call ``model(x)``; an explicit value, ``None``
                included, wins over the variable. ``'none'`` is ``None`` (``timm.create_model`` drops arguments
                that are None, so ``camera_fallback='none'`` is how it requires ids whatever the variable says).
            tmd_layers: TMD blocks (released: 1).
            embed_dim, depth, num_heads: the ViT (released: CLIP ViT-B/16, 768, 12, 12); smaller ones for tests.
            proj_dim: CLIP's projection width (512 for ViT-B/16).
            drop_rate: dropout before the classifier; drop_path_rate: stochastic depth of the ViT blocks.
            global_pool: ``'token'`` (the released embedding); there is no other pooling.
            device, dtype: where and in which precision the parameters are made (timm's factory arguments).
        """
        super().__init__()
        if global_pool != 'token':
            raise ValueError(f"TF-CLIP's embedding pools class tokens and TMD tokens ('token'); got "
                             f'global_pool={global_pool!r}')
        if num_cameras < 1:
            raise ValueError(f'num_cameras must be at least 1, got {num_cameras}')
        if camera_fallback is _Unset.FROM_ENV:
            camera_fallback = camera_fallback_from_env()
        _check_fallback(camera_fallback)
        if camera_fallback == 'none':
            camera_fallback = None
        dd = dict(device=device, dtype=dtype)
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.img_size = (int(img_size[0]), int(img_size[1]))
        self.clip_len = clip_len
        self.num_cameras = num_cameras
        self.sie_coe = sie_coe
        self.camera_fallback = camera_fallback
        self.drop_rate = drop_rate
        self.global_pool = global_pool
        self.grad_checkpointing = False
        self.to_clips = ClipFrames(in_chans, self.img_size)
        self.embed_dim = embed_dim
        self.proj_dim = proj_dim
        self.tmd_layers = tmd_layers
        self.num_heads = num_heads
        self.num_features = self.head_hidden_size = 2 * embed_dim + proj_dim  # 2048 for ViT-B/16

        vit_args = dict(CLIP_VIT_B16_ARGS, embed_dim=embed_dim, depth=depth, num_heads=num_heads)
        self.image_encoder = VisionTransformer(img_size=self.img_size, in_chans=in_chans, num_classes=0,
                                               drop_path_rate=drop_path_rate, **vit_args, **dd)
        # timm's features: the tokens after each ViT block (as timm's ViT lists them), maps at 1/16 of the frame
        reduction = self.image_encoder.patch_embed.feat_ratio()
        self.feature_info = [dict(module=f'image_encoder.blocks.{i}', num_chs=embed_dim, reduction=reduction)
                             for i in range(depth)]
        self.proj = nn.Linear(embed_dim, proj_dim, bias=False, **dd)  # CLIP's visual projection
        nn.init.normal_(self.proj.weight, std=embed_dim ** -0.5)
        self.cv_embed = nn.Parameter(torch.zeros(num_cameras, embed_dim, **dd))  # side information embedding
        trunc_normal_(self.cv_embed, std=0.02)
        self.TMD = TemporalMemoryDiffusion(embed_dim, num_heads, tmd_layers, **dd)
        self.head: nn.Module = nn.Identity()
        self.reset_classifier(num_classes)

    # --- timm model API -------------------------------------------------------------------------------------
    @torch.jit.ignore
    def architecture_args(self) -> dict[str, Any]:
        """The constructor arguments a saved copy needs besides the frame size (config.json's ``model_args``)."""
        return dict(num_cameras=self.num_cameras, depth=len(self.image_encoder.blocks), embed_dim=self.embed_dim,
                    num_heads=self.num_heads, proj_dim=self.proj_dim, tmd_layers=self.tmd_layers)

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        return {'cv_embed', 'image_encoder.pos_embed', 'image_encoder.cls_token'}

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        # no capturing group in the stem pattern: timm's grouping turns every captured group into a number
        return dict(stem=r'^image_encoder\.(?:cls_token|pos_embed|patch_embed|norm_pre)|^cv_embed',
                    blocks=[(r'^image_encoder\.blocks\.(\d+)', None), (r'^image_encoder\.norm|^proj|^TMD', (99999,))])

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """A new linear classifier on the 2048-d embedding (``num_classes=0``: none, the model returns the
        embedding); made on the model's device and dtype."""
        if global_pool not in (None, 'token'):
            raise ValueError(f"TF-CLIP has one pooling ('token'); got global_pool={global_pool!r}")
        self.num_classes = num_classes
        ref = self.proj.weight
        self.head = nn.Linear(self.num_features, num_classes, device=ref.device, dtype=ref.dtype) \
            if num_classes > 0 else nn.Identity()
        self.head.train(self.training)

    # --- input --------------------------------------------------------------------------------------------
    @torch.jit.ignore
    def check_input(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` as clips ``(B, T, C, H, W)`` (a crop batch becomes one-frame clips), or a clear error."""
        return self.to_clips(x)

    def camera_embedding(self, camids: torch.Tensor | None, batch: int) -> torch.Tensor:
        """The vector added to the class tokens of each clip: ``(B, C)``, or ``(1, C)`` for the mean fallback."""
        return camera_vectors(self.cv_embed, camids, batch, self.camera_fallback, self.sie_coe)

    # --- forward ------------------------------------------------------------------------------------------
    def _frame_tokens(self, clips: torch.Tensor, camera: torch.Tensor) -> torch.Tensor:
        """Clips ``(B, T, C, H, W)`` and each clip's camera vector (``(B, D)`` or ``(1, D)``) -> the tokens of every
        frame after the patch embedding, the camera, the positional embedding and ``ln_pre``: ``(B*T, 1 + h*w, D)``."""
        b, t = clips.shape[0], clips.shape[1]
        camera = camera.expand(b, -1).repeat_interleave(t, dim=0)  # (B*T, D): every frame gets its clip's camera
        tokens = self.image_encoder.patch_embed(clips.flatten(0, 1))  # (B*T, h*w, D)
        # SIE (side information embedding): the camera joins each frame's class token before the positional
        # embedding and ln_pre
        cls = self.image_encoder.cls_token + camera[:, None, :]
        tokens = self.image_encoder.pos_drop(torch.cat([cls, tokens], dim=1) + self.image_encoder.pos_embed)
        return self.image_encoder.norm_pre(self.image_encoder.patch_drop(tokens))

    def _frame_embeddings(self, tokens: torch.Tensor, b: int, t: int) -> torch.Tensor:
        """Every token of every frame after ``ln_post``, ``(B*T, L, D)`` -> per-frame embeddings ``(B, T, 2048)``:
        cat(class token, its CLIP projection, the token mean after Temporal Memory Diffusion over the clip)."""
        cls = tokens[:, 0]
        memory = self.TMD(tokens, t).mean(dim=1)  # Temporal Memory Diffusion, then the token mean per frame
        return torch.cat([cls, self.proj(cls), memory], dim=-1).unflatten(0, (b, t))

    def forward_features(self, x: torch.Tensor, camids: torch.Tensor | None = None) -> torch.Tensor:
        """Everything that needs the frames of a clip together: clips ``(B, T, C, H, W)`` -> per-frame embeddings
        ``(B, T, 2048)`` (class token after ``ln_post``, its CLIP projection, the TMD token mean: TMD mixes the
        frames of a clip, so a frame's embedding depends on its clip); crops ``(B, C, H, W)`` (one-frame clips)
        -> ``(B, 2048)``. ``camids`` (B,): each clip's camera. :meth:`forward_head` averages over the frames; the
        tokens of every block are available through :meth:`forward_intermediates`."""
        clips = self.to_clips(x)
        b, t = clips.shape[0], clips.shape[1]
        tokens = self._frame_tokens(clips, self.camera_embedding(camids, b))
        if self.grad_checkpointing and not torch.jit.is_scripting():
            tokens = checkpoint_seq(self.image_encoder.blocks, tokens)
        else:
            tokens = self.image_encoder.blocks(tokens)
        return per_input(x, self._frame_embeddings(self.image_encoder.norm(tokens), b, t))

    def forward_intermediates(
            self,
            x: torch.Tensor,
            indices: int | list[int] | None = None,
            return_prefix_tokens: bool = False,
            norm: bool = False,
            stop_early: bool = False,
            output_fmt: str = 'NCHW',
            intermediates_only: bool = False,
            *,
            camids: torch.Tensor | None = None,
    ) -> list[Any] | tuple[torch.Tensor, list[Any]]:
        """timm's intermediate features: the patch tokens after ViT blocks (``indices``: the last n if an int, all
        if None, else those listed), with timm's ViT arguments.

        The camera embedding joins the class tokens exactly as in ``forward`` (``camids`` (B,), keyword-only; without
        them, the model's ``camera_fallback``). Each feature is per frame: ``(B, T, C, h, w)`` for clips and
        ``(B, C, h, w)`` for crops with ``output_fmt='NCHW'``, ``(B, T, h*w, C)`` / ``(B, h*w, C)`` with ``'NLC'``;
        ``norm`` applies ``ln_post`` to each, ``return_prefix_tokens`` pairs each with its class tokens
        (``(B, T, 1, C)`` / ``(B, 1, C)``), ``stop_early`` skips the blocks after the last one wanted. The
        blocks see each frame on its own (only TMD mixes the frames of a clip). Unless ``intermediates_only``,
        the first item returned is what ``forward_features`` returns, from the last block run.
        """
        if output_fmt not in ('NCHW', 'NLC'):
            raise ValueError(f"output_fmt must be 'NCHW' or 'NLC', got {output_fmt!r}")
        vit = self.image_encoder
        take_indices, max_index = feature_take_indices(len(vit.blocks), indices)
        clips = self.to_clips(x)
        b, t = clips.shape[0], clips.shape[1]
        tokens = self._frame_tokens(clips, self.camera_embedding(camids, b))
        blocks = vit.blocks if torch.jit.is_scripting() or not stop_early else vit.blocks[:max_index + 1]
        intermediates = []
        for i, block in enumerate(blocks):
            if self.grad_checkpointing and not torch.jit.is_scripting():
                tokens = checkpoint(block, tokens)
            else:
                tokens = block(tokens)
            if i in take_indices:
                intermediates.append(vit.norm(tokens) if norm else tokens)
        prefix = [per_input(x, y[:, :vit.num_prefix_tokens].unflatten(0, (b, t))) for y in intermediates]
        patches = [y[:, vit.num_prefix_tokens:] for y in intermediates]
        if output_fmt == 'NCHW':
            h, w = vit.patch_embed.grid_size
            patches = [y.reshape(b * t, h, w, -1).permute(0, 3, 1, 2).contiguous() for y in patches]
        features: list[Any] = [per_input(x, y.unflatten(0, (b, t))) for y in patches]
        if return_prefix_tokens:
            features = list(zip(features, prefix, strict=True))
        if intermediates_only:
            return features
        return per_input(x, self._frame_embeddings(vit.norm(tokens), b, t)), features

    @torch.jit.ignore
    def prune_intermediate_layers(self, indices: int | list[int] = 1, prune_norm: bool = False,
                                  prune_head: bool = True) -> list[int]:
        """Drop the ViT blocks after the last intermediate feature wanted (timm's ``features_only`` uses this),
        ``ln_post`` with ``prune_norm`` and the classifier with ``prune_head``. TMD and the projection stay (the
        final output of :meth:`forward_intermediates` uses them)."""
        take_indices, max_index = feature_take_indices(len(self.image_encoder.blocks), indices)
        self.image_encoder.blocks = self.image_encoder.blocks[:max_index + 1]
        if prune_norm:
            self.image_encoder.norm = nn.Identity()
        if prune_head:
            self.reset_classifier(0)
        return take_indices

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Per-frame embeddings ``(B, T, 2048)`` (or a crop's ``(B, 2048)``) -> the clip embedding, their frame mean
        (``pre_logits``, or ``num_classes=0``), or a new classifier's logits on it."""
        x = frame_mean(x)
        if pre_logits:
            return x
        if self.drop_rate > 0.0:
            x = F.dropout(x, p=self.drop_rate, training=self.training)
        return self.head(x)

    def forward(self, x: torch.Tensor, camids: torch.Tensor | None = None) -> torch.Tensor:
        """Clips ``(B, T, 3, H, W)`` or crops ``(B, 3, H, W)`` and their cameras ``camids`` (B,) -> the
        ``(B, 2048)`` embedding (compare with L2-normalised Euclidean / cosine distance) or logits."""
        return self.forward_head(self.forward_features(x, camids))


def _check_fallback(value: Any) -> None:
    if value not in CAMERA_FALLBACKS:
        raise ModelInputError(f"camera_fallback must be None or 'none' (camera ids required) or 'mean' (without ids, "
                              f'the mean camera embedding), got {value!r}')


# --- checkpoints ---------------------------------------------------------------------------------------------
def is_released(state_dict: dict[str, Any]) -> bool:
    """The authors' layout: CLIP's visual tower under ``image_encoder`` with its own names."""
    return 'image_encoder.conv1.weight' in state_dict


def _released_key(k: str) -> str | None:
    """A released (CLIP) key -> ours; None for keys kept as they are."""
    p = 'image_encoder.'
    if not k.startswith(p):
        return None
    rest = k[len(p):]
    fixed = {'conv1.weight': 'patch_embed.proj.weight', 'class_embedding': 'cls_token',
             'positional_embedding': 'pos_embed', 'ln_pre.weight': 'norm_pre.weight', 'ln_pre.bias': 'norm_pre.bias',
             'ln_post.weight': 'norm.weight', 'ln_post.bias': 'norm.bias'}
    if rest in fixed:
        return p + fixed[rest]
    if rest.startswith('transformer.resblocks.'):
        i, name = rest[len('transformer.resblocks.'):].split('.', 1)
        name = {'ln_1.weight': 'norm1.weight', 'ln_1.bias': 'norm1.bias', 'ln_2.weight': 'norm2.weight',
                'ln_2.bias': 'norm2.bias', 'attn.in_proj_weight': 'attn.qkv.weight',
                'attn.in_proj_bias': 'attn.qkv.bias', 'attn.out_proj.weight': 'attn.proj.weight',
                'attn.out_proj.bias': 'attn.proj.bias', 'mlp.c_fc.weight': 'mlp.fc1.weight',
                'mlp.c_fc.bias': 'mlp.fc1.bias', 'mlp.c_proj.weight': 'mlp.fc2.weight',
                'mlp.c_proj.bias': 'mlp.fc2.bias'}.get(name, name)
        return f'{p}blocks.{i}.{name}'
    return None


def _convert_released(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for k, v in state_dict.items():
        if k.startswith(TRAINING_ONLY_PREFIXES):
            continue
        if k == 'image_encoder.proj':  # x @ proj (D, 512) -> Linear weight (512, D)
            out['proj.weight'] = v.t().contiguous()
            continue
        new = _released_key(k)
        if new is None:
            out[k] = v
        elif new.endswith(('cls_token', 'pos_embed')):
            out[new] = v.reshape(1, -1, v.shape[-1])  # (D,) / (L, D) -> timm's (1, 1, D) / (1, L, D)
        else:
            out[new] = v
    return out


def is_timm_clip(state_dict: dict[str, Any]) -> bool:
    """timm's CLIP ViT image tower (``timm/vit_base_patch16_clip_224.openai``): our backbone's keys, unprefixed."""
    return 'patch_embed.proj.weight' in state_dict and 'cls_token' in state_dict


def _convert_timm_clip(state_dict: dict[str, torch.Tensor], model: TFCLIP) -> dict[str, torch.Tensor]:
    """CLIP's image tower -> the backbone and projection; the camera embeddings and TMD keep their own init.

    The positional embedding of the 14x14 grid (224x224) is resized to the model's grid (16x8 for 256x128) by
    bilinear interpolation, as the authors do when they load CLIP (``resize_pos_embed``)."""
    out = dict(model.state_dict())
    for k, v in state_dict.items():
        if k == 'head.weight':  # CLIP's projection, stored by timm as a bias-free head
            out['proj.weight'] = v
        elif k != 'head.bias':
            out[f'image_encoder.{k}'] = v
    pos, own = out['image_encoder.pos_embed'], model.image_encoder.pos_embed
    if pos.shape != own.shape:
        gh, gw = model.image_encoder.patch_embed.grid_size
        side = int(round((pos.shape[1] - 1) ** 0.5))
        grid = pos[:, 1:].reshape(1, side, side, -1).permute(0, 3, 1, 2).float()
        grid = F.interpolate(grid, size=(gh, gw), mode='bilinear', align_corners=False)
        out['image_encoder.pos_embed'] = torch.cat([pos[:, :1], grid.permute(0, 2, 3, 1).reshape(1, gh * gw, -1)
                                                    .to(pos.dtype)], dim=1)
    return out


def checkpoint_filter_fn(state_dict: dict[str, Any], model: TFCLIP) -> dict[str, torch.Tensor]:
    """Accept our own checkpoints, the authors' ``best_model.pth.tar`` (a plain state dict, ``module.``
    prefixes when trained under DataParallel, or one inside ``{'state_dict': ...}``) and timm's CLIP ViT-B/16
    image tower (the ``.openai`` init: its positional embedding resized to the frame grid).

    The authors' file: CLIP's visual names become timm's, ``proj`` becomes a linear layer, TMD and ``cv_embed``
    keep their names, and what only training uses is dropped (identity classifiers, BN necks, the prompt generator
    ``SSP``). A classifier (``head.*``) is dropped when the model has none. Other mismatches are left for
    ``load_state_dict`` to report.
    """
    if 'state_dict' in state_dict and isinstance(state_dict['state_dict'], dict):
        state_dict = state_dict['state_dict']
    state_dict = {k.removeprefix('module.'): v for k, v in state_dict.items()}
    if is_released(state_dict):
        state_dict = _convert_released(state_dict)
    elif is_timm_clip(state_dict):
        state_dict = _convert_timm_clip(state_dict, model)
    if model.num_classes == 0:
        state_dict = {k: v for k, v in state_dict.items() if not k.startswith('head.')}
    refuse_integer_weights(state_dict, model)
    return state_dict


def infer_arch(state_dict: dict[str, Any]) -> str | None:
    """``'tfclip_vit_b16'`` for a TF-CLIP state dict (the authors' or ours: a camera embedding, TMD or the
    ``image_encoder`` tower), else None."""
    keys = [k.removeprefix('module.') for k in state_dict]
    if 'cv_embed' in keys or any(k.startswith(('TMD.', 'image_encoder.')) for k in keys):
        return 'tfclip_vit_b16'
    return None


def model_kwargs_from_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, Any]:
    """The constructor arguments a (released or converted) state dict needs: its cameras and ViT depth."""
    sd = {k.removeprefix('module.'): v for k, v in state_dict.items()}
    if 'cv_embed' not in sd:
        raise CheckpointError('not a TF-CLIP state dict: it has no camera embedding (cv_embed)')
    blocks = {k.split('.')[2] if k.startswith('image_encoder.blocks.') else k.split('.')[3] for k in sd
              if k.startswith(('image_encoder.blocks.', 'image_encoder.transformer.resblocks.'))}
    # an embedding model: the released classifiers are training-only
    return {'num_cameras': int(sd['cv_embed'].shape[0]), 'depth': len(blocks), 'num_classes': 0}


def released_num_classes(state_dict: dict[str, torch.Tensor]) -> int:
    """Training identities of an authors' file (rows of its ``classifier2``), 0 when it has none."""
    w = {k.removeprefix('module.'): v for k, v in state_dict.items()}.get('classifier2.weight')
    return int(w.shape[0]) if w is not None else 0


# --- registry ---------------------------------------------------------------------------------------------
ARCHS = ('tfclip_vit_b16',)  # registered below (sinet_timm.archs lists them all)


def _cfg(**kwargs: Any) -> Any:
    return video_pretrained_cfg(**{
        'num_classes': 0, 'input_size': (3, 256, 128), 'pool_size': None, 'fixed_input_size': True,
        'crop_pct': 1.0, 'crop_mode': 'squash', 'interpolation': 'bilinear',
        'mean': (0.485, 0.456, 0.406), 'std': (0.229, 0.224, 0.225),  # the released test transform (not 0.5)
        'first_conv': 'image_encoder.patch_embed.proj', 'classifier': 'head', 'license': 'mit',
        'origin_url': 'https://github.com/AsuradaYuci/TF-CLIP',
        'paper_name': 'TF-CLIP: Learning Text-Free CLIP for Video-Based Person Re-identification',
        'paper_ids': 'arXiv:2312.09627', 'protocol': 'tfclip', 'camera_input': True,
        **kwargs})


def zoo_cfg_fields(entry: dict[str, Any]) -> dict[str, Any]:
    """Pretrained-cfg fields of a TF-CLIP zoo entry. The zoo's ``num_classes`` counts the training identities,
    but the released classifiers are training-only, so the model is an embedding model (``num_classes`` 0);
    ``num_cameras`` is the training set's (MARS 6, LS-VID 15, iLIDS-VID 2, as the released datasets count
    them)."""
    return {**pretrained_cfg_fields(entry), 'num_classes': 0, 'num_cameras': entry.get('num_cameras'),
            'protocol': entry.get('protocol', 'tfclip')}


# the first tag with weights is timm's default: MARS's, the headline checkpoint
_entries = sorted(((n, e) for n, e in zoo_entries().items() if e['architecture'] in ARCHS),
              key=lambda item: not item[0].endswith('.mars'))
default_cfgs = generate_default_cfgs({
    **{name: _cfg(**zoo_cfg_fields(entry)) for name, entry in _entries},
    # the authors' initialisation: OpenAI's CLIP ViT-B/16 image tower (timm's copy); MARS's 6 cameras unless
    # num_cameras is given; camera embeddings and TMD untrained
    'tfclip_vit_b16.openai': _cfg(hf_hub_id='timm/vit_base_patch16_clip_224.openai', num_cameras=6,
                                  notes=('CLIP image tower init; camera embeddings and TMD untrained',)),
})


@register_model
def tfclip_vit_b16(pretrained: bool = False, **kwargs) -> TFCLIP:
    """TF-CLIP: CLIP ViT-B/16 (QuickGELU) at 256x128 + camera embedding + Temporal Memory Diffusion (AAAI 2024)."""
    kwargs['pretrained_cfg'] = as_video_pretrained_cfg(kwargs.get('pretrained_cfg'))
    if 'num_cameras' not in kwargs:  # the cameras of the checkpoint's training set
        cfg = resolve_pretrained_cfg('tfclip_vit_b16', kwargs['pretrained_cfg'], kwargs.get('pretrained_cfg_overlay'))
        if getattr(cfg, 'num_cameras', None):
            kwargs['num_cameras'] = int(cfg.num_cameras)
    # features_only: the last three blocks by default, as timm's ViTs
    feature_cfg = dict(out_indices=min(3, int(kwargs.get('depth', 12))))
    return create_video_model(TFCLIP, 'tfclip_vit_b16', pretrained, filter_fn=checkpoint_filter_fn,
                              feature_cfg=feature_cfg, **kwargs)
