"""Model creation for every family: timm's ``build_model_with_cfg`` plus errors that say what to do.

``pretrained=True`` loads through timm (Hub download and cache, ``hf-hub:`` / ``local-dir:`` names,
``pretrained_cfg_overlay=dict(file=...)``) with :func:`~sinet_timm.framewise.checkpoint_filter_fn`, so the authors'
files load directly. When that fails, the caller learns why: a file of the wrong architecture names its differences,
weights that cannot be fetched raise :class:`~sinet_timm.errors.WeightsUnavailableError` with the ways around it,
and ``SINET_TIMM_DRIVE_FALLBACK=1`` fetches the authors' Google Drive file instead (:mod:`sinet_timm.drive`).
"""
from __future__ import annotations

import os
from typing import Any

from timm.models import build_model_with_cfg, get_pretrained_cfg

from ._zoo import zoo_entries
from .convert import describe_mismatch, infer_arch, load_checkpoint_file, numpy_scalars_allowed
from .drive import DRIVE_FALLBACK_ENV, drive_fallback_file
from .errors import CheckpointError, WeightsUnavailableError
from .framewise import VideoReIDNet, checkpoint_filter_fn

__all__ = ['create_video_model']


def create_video_model(cls: type[VideoReIDNet], variant: str, pretrained: bool = False, **kwargs: Any) -> VideoReIDNet:
    """``build_model_with_cfg`` for a video re-ID family, with the errors described in the module docstring."""
    # features_only: timm's FeatureGetterNet over forward_intermediates (the stages of a clip must run together,
    # so the generic per-module wrapper would not do); stem + 4 stages
    feature_cfg = dict(feature_cls='getter') if kwargs.get('features_only') else None
    try:
        with numpy_scalars_allowed():  # timm reads pretrained_cfg_overlay=dict(file=released .pth.tar) itself
            return build_model_with_cfg(cls, variant, pretrained, pretrained_filter_fn=checkpoint_filter_fn,
                                        feature_cfg=feature_cfg, **kwargs)
    except Exception as e:
        file = (kwargs.get('pretrained_cfg_overlay') or {}).get('file')
        if pretrained and file:  # the caller's own file: say what is wrong with it (not what the Hub needs)
            _check_checkpoint_file(cls, file, variant, kwargs)
        if not pretrained or not _is_fetch_error(e):
            raise
        if os.environ.get(DRIVE_FALLBACK_ENV) == '1':  # opt-in: the authors' Drive file, converted
            return _drive_fallback(cls, variant, kwargs, e)
        raise WeightsUnavailableError(_weights_help(variant, kwargs.get('pretrained_cfg'), e)) from e


def _check_checkpoint_file(cls: type[VideoReIDNet], file: str, variant: str, kwargs: dict[str, Any]) -> None:
    """After loading ``file`` failed: raise a CheckpointError if it is missing, unreadable or made for another
    architecture (with the differing keys); return if none of these explains the failure."""
    what = f'pretrained_cfg_overlay=dict(file={file!r})'
    try:
        state_dict = load_checkpoint_file(file)
    except CheckpointError as e:
        raise CheckpointError(f'{what}: {e}') from None
    model = build_model_with_cfg(cls, variant, False, **{k: v for k, v in kwargs.items()
                                                         if k != 'pretrained_cfg_overlay'})
    try:
        problems = describe_mismatch(checkpoint_filter_fn(state_dict, model), model)
    except CheckpointError as e:
        raise CheckpointError(f'{what}: {e}') from None
    if problems:
        guess = infer_arch(state_dict) if 'conv1.weight' in state_dict else None
        hint = f' It looks like {guess}.' if guess and guess != variant else ''
        raise CheckpointError(f'{what} does not fit {variant}.{hint}\n{problems}') from None


def _drive_fallback(cls: type[VideoReIDNet], variant: str, kwargs: dict[str, Any], err: BaseException
                    ) -> VideoReIDNet:
    """SINET_TIMM_DRIVE_FALLBACK=1: build with the authors' Google Drive file, converted and cached."""
    name = _pretrained_name(variant, kwargs.get('pretrained_cfg'))
    try:
        file = drive_fallback_file(name)
    except Exception as e2:
        raise WeightsUnavailableError(
            f'{_weights_help(variant, kwargs.get("pretrained_cfg"), err)}\nThe Google Drive fallback '
            f'({DRIVE_FALLBACK_ENV}=1) failed too: {e2}') from e2
    overlay = dict(kwargs.pop('pretrained_cfg_overlay', None) or {}, file=str(file))
    return build_model_with_cfg(cls, variant, True, pretrained_filter_fn=checkpoint_filter_fn,
                                pretrained_cfg_overlay=overlay, **kwargs)


def _is_fetch_error(e: BaseException) -> bool:
    mod = type(e).__module__ or ''
    return isinstance(e, OSError) or mod.startswith(('huggingface_hub', 'requests', 'httpx', 'urllib'))


def _pretrained_name(variant: str, pretrained_cfg: Any) -> str:
    tag = pretrained_cfg if isinstance(pretrained_cfg, str) else getattr(pretrained_cfg, 'tag', None)
    return f'{variant}.{tag}' if tag else variant


def _weights_help(variant: str, pretrained_cfg: Any, err: BaseException) -> str:
    name = _pretrained_name(variant, pretrained_cfg)
    try:
        repo = get_pretrained_cfg(name).hf_hub_id
    except Exception:  # an overlay or unknown tag: no repo to name
        repo = None
    where = f' from the Hugging Face Hub repo {repo}' if repo else ''
    first_line = str(err).splitlines()[0] if str(err) else '(no message)'
    return (
        f'could not get the pretrained weights of {name}{where}: {type(err).__name__}: {first_line}\n'
        'If you are offline, download them once with network access (they are then cached), or point '
        'HF_HUB_CACHE at a cache that has them. Without the Hub, convert the authors\' released file: '
        '`sinet-convert CHECKPOINT.pth.tar OUT_DIR` and load it with '
        "timm.create_model('local-dir:OUT_DIR', pretrained=True). Use pretrained=False for random init."
        + (f' For this zoo entry, `sinet-hub convert {name} --out OUT_DIR` downloads the authors\' Google Drive '
           f'file and converts it; or set {DRIVE_FALLBACK_ENV}=1 to do that on the fly (cached) when the Hub '
           'cannot be reached.' if name in zoo_entries() else ''))
