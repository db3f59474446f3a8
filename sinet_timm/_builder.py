"""Model creation for every family: timm's ``build_model_with_cfg`` plus errors that say what to do.

``pretrained=True`` loads through timm (Hub download and cache, ``hf-hub:`` / ``local-dir:`` names,
``pretrained_cfg_overlay=dict(file=...)``) with :func:`~sinet_timm.framewise.checkpoint_filter_fn`, so the authors'
files load directly. When that fails, the caller learns why: a file of the wrong architecture names its differences,
weights that cannot be fetched raise :class:`~sinet_timm.errors.WeightsUnavailableError` with the ways around it.

* A zoo entry whose Hub repo does not exist (the Hub answers "repository not found", not a network failure) is
  loaded from the authors' Google Drive file instead, converted and cached (:mod:`sinet_timm.drive`), with one line
  saying so; ``SINET_TIMM_DRIVE_FALLBACK=0`` turns that off, ``=1`` uses the Drive file whenever the Hub fails.
* An unreachable network is found out at once (:mod:`sinet_timm.network`): cached weights are used, missing ones
  are an error within seconds instead of a minute of retries.
"""
from __future__ import annotations

import contextlib
import functools
import os
import sys
from collections.abc import Callable
from typing import Any

import torch.nn as nn
from huggingface_hub import constants
from huggingface_hub.errors import RepositoryNotFoundError
from safetensors import SafetensorError
from timm.models import build_model_with_cfg, get_pretrained_cfg

from ._zoo import zoo_entries
from .convert import (
    MEMBER_SEP,
    check_local_dir,
    describe_mismatch,
    infer_arch,
    load_checkpoint_file,
    mismatch_summary,
    numpy_scalars_allowed,
)
from .drive import DRIVE_FALLBACK_ENV, drive_fallback_file
from .errors import CheckpointError, WeightsUnavailableError
from .framewise import checkpoint_filter_fn
from .network import hub_or_cache

__all__ = ['create_video_model']


FilterFn = Callable[[dict[str, Any], nn.Module], dict[str, Any]]


def create_video_model(cls: type[nn.Module], variant: str, pretrained: bool = False,
                       filter_fn: FilterFn = checkpoint_filter_fn, feature_cfg: dict[str, Any] | None = None,
                       **kwargs: Any) -> nn.Module:
    """``build_model_with_cfg`` for a video re-ID family, with the errors described in the module docstring.

    ``filter_fn`` is the family's checkpoint converter (default: the SINet families' frame-wise ResNet-50 one).
    ``feature_cfg``: the family's ``features_only`` defaults (e.g. ``out_indices``), over the getter wrapper.
    """
    # features_only: timm's FeatureGetterNet over forward_intermediates (the stages of a clip must run together,
    # so the generic per-module wrapper would not do); by default timm's out_indices (0-4: stem + 4 stages here)
    feature_cfg = dict(feature_cls='getter', **(feature_cfg or {})) if kwargs.get('features_only') else None
    file = (kwargs.get('pretrained_cfg_overlay') or {}).get('file')
    cfg = kwargs.get('pretrained_cfg')  # a local-dir: name arrives as a cfg with the folder as its file
    local = file or (cfg.get('file') if isinstance(cfg, dict) else getattr(cfg, 'file', None))
    source = cfg.get('source') if isinstance(cfg, dict) else getattr(cfg, 'source', None)
    if pretrained and source == 'local-dir' and not file:  # a missing, truncated or pickle-only folder: said first
        check_local_dir(local)
    what = (f'pretrained_cfg_overlay=dict(file={file!r})' if file else
            f'local-dir:{local} (config.json names {variant})' if source == 'local-dir' else
            f'the pretrained weights of {_pretrained_name(variant, cfg)}')
    strict_filter = functools.partial(_strict_filter, variant=variant, what=what, filter_fn=filter_fn)
    hub = hub_or_cache() if pretrained and not local else contextlib.nullcontext()  # local files: no probe
    build_kwargs = kwargs
    if pretrained and file and MEMBER_SEP in str(file):  # ARCHIVE.zip::MEMBER: read here, handed to timm as weights
        try:
            state_dict = load_checkpoint_file(file)
        except CheckpointError as e:
            raise CheckpointError(f'pretrained_cfg_overlay=dict(file={file!r}): {e}') from None
        build_kwargs = dict(kwargs, pretrained_cfg_overlay=dict(kwargs['pretrained_cfg_overlay'], file=None,
                                                                state_dict=state_dict))
    with hub as unreachable:  # an unreachable Hub: cached weights at once, or a clear error at once
        try:
            with numpy_scalars_allowed():  # timm reads pretrained_cfg_overlay=dict(file=released .pth.tar) itself
                model = build_model_with_cfg(cls, variant, pretrained, pretrained_filter_fn=strict_filter,
                                             feature_cfg=feature_cfg, **build_kwargs)
            if isinstance(getattr(model, 'pretrained_cfg', None), dict):
                model.pretrained_cfg.pop('state_dict', None)  # the weights are in the model; not kept twice
            return model
        except Exception as e:
            error = e
    if pretrained and file:  # the caller's own file: say what is wrong with it (not what the Hub needs)
        _check_checkpoint_file(cls, file, variant, kwargs, filter_fn)
    if isinstance(error, SafetensorError):  # a truncated or damaged download (a local folder was checked above)
        raise CheckpointError(f'{what}: the weights file is truncated or damaged ({error}); delete it (from the '
                              f'Hugging Face cache, {constants.HF_HUB_CACHE}) and download it again') from None
    if not pretrained or not _is_fetch_error(error):
        raise error
    name = _pretrained_name(variant, kwargs.get('pretrained_cfg'))
    fallback = os.environ.get(DRIVE_FALLBACK_ENV)
    if name in zoo_entries() and (fallback == '1' or (fallback != '0' and _repo_not_found(error))):
        # the zoo repo is not on the Hub (yet): the authors' Drive file, converted and cached, says so in one line
        return _drive_fallback(cls, variant, kwargs, error, filter_fn)
    raise WeightsUnavailableError(_weights_help(variant, kwargs.get('pretrained_cfg'), error, unreachable)) from error


# the architectures infer_arch tells apart (its guess means nothing for other families)
_INFERABLE = frozenset({'sinet_r50', 'sbnet_r50', 'idnet_r50', 'vreid_r50', 'sanet_r50'})


def _strict_filter(state_dict: dict[str, Any], model: nn.Module, variant: str, what: str,
                   filter_fn: FilterFn = checkpoint_filter_fn) -> dict[str, Any]:
    """The family's ``filter_fn`` (checkpoint converter), then a strict check: every tensor of the model's body
    must come from the weights and every tensor of the weights must have a place. timm loads non-strictly
    whenever the classifier sizes differ (``num_classes=0`` for embeddings), which would leave missing tensors at
    their random init and drop a file of another architecture silently; only the training heads may be absent or
    of another size."""
    out = filter_fn(state_dict, model)
    problems = mismatch_summary(out, model)
    if problems:
        guess = infer_arch(out) if variant in _INFERABLE and 'conv1.weight' in out else None
        hint = f' The weights look like {guess}.' if guess and guess != variant else ''
        raise CheckpointError(f'{what} does not fit {variant}: {problems}.{hint} Nothing was loaded; give the '
                              'weights of this architecture (or convert the original checkpoint again)')
    return out


def _repo_not_found(e: BaseException | None) -> bool:
    """Whether the Hub answered that the repository does not exist (not a network failure)."""
    while e is not None:
        if isinstance(e, RepositoryNotFoundError):
            return True
        e = e.__cause__ or e.__context__
    return False


def _check_checkpoint_file(cls: type[nn.Module], file: str, variant: str, kwargs: dict[str, Any],
                           filter_fn: FilterFn) -> None:
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
        problems = describe_mismatch(filter_fn(state_dict, model), model)
    except CheckpointError as e:
        raise CheckpointError(f'{what}: {e}') from None
    if problems:
        try:
            guess = infer_arch(state_dict)
        except CheckpointError:  # no family recognises the keys
            guess = None
        hint = f' It looks like {guess}.' if guess and guess != variant else ''
        raise CheckpointError(f'{what} does not fit {variant}.{hint}\n{problems}') from None


def _drive_fallback(cls: type[nn.Module], variant: str, kwargs: dict[str, Any], err: BaseException,
                    filter_fn: FilterFn) -> nn.Module:
    """The authors' Google Drive file of a zoo entry, converted and cached (:mod:`sinet_timm.drive`), used when the
    entry's Hub repo does not exist (or always with SINET_TIMM_DRIVE_FALLBACK=1); one line says so."""
    name = _pretrained_name(variant, kwargs.get('pretrained_cfg'))
    try:
        file, note = drive_fallback_file(name)
    except Exception as e2:
        raise WeightsUnavailableError(
            f'{_weights_help(variant, kwargs.get("pretrained_cfg"), err)}\nThe authors\' Google Drive file could not '
            f'be used instead either: {e2}') from e2
    why = ('its Hub repo does not exist yet' if _repo_not_found(err) else
           f'{DRIVE_FALLBACK_ENV}=1 and the Hub gave {type(err).__name__}')
    print(f'{name}: {why}; {note} ({DRIVE_FALLBACK_ENV}=0 turns this off)', file=sys.stderr)
    overlay = dict(kwargs.pop('pretrained_cfg_overlay', None) or {}, file=str(file))
    strict_filter = functools.partial(_strict_filter, variant=variant, what=f"the authors' file of {name} ({file})",
                                      filter_fn=filter_fn)
    return build_model_with_cfg(cls, variant, True, pretrained_filter_fn=strict_filter,
                                pretrained_cfg_overlay=overlay, **kwargs)


def _is_fetch_error(e: BaseException) -> bool:
    mod = type(e).__module__ or ''
    return isinstance(e, OSError) or mod.startswith(('huggingface_hub', 'requests', 'httpx', 'urllib'))


def _pretrained_name(variant: str, pretrained_cfg: Any) -> str:
    tag = pretrained_cfg if isinstance(pretrained_cfg, str) else getattr(pretrained_cfg, 'tag', None)
    return f'{variant}.{tag}' if tag else variant


def _weights_help(variant: str, pretrained_cfg: Any, err: BaseException, unreachable: str | None = None) -> str:
    name = _pretrained_name(variant, pretrained_cfg)
    try:
        repo = get_pretrained_cfg(name).hf_hub_id
    except Exception:  # an overlay or unknown tag: no repo to name
        repo = None
    where = f' from the Hugging Face Hub repo {repo}' if repo else ''
    if unreachable:
        what = (f'the Hub cannot be reached ({unreachable}) and the local Hugging Face cache '
                f'({constants.HF_HUB_CACHE}) does not have them')
    else:
        what = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else '(no message)'}"
    return (
        f'could not get the pretrained weights of {name}{where}: {what}.\n'
        'Download them once with network access (they are then cached), or point HF_HUB_CACHE at a cache that has '
        'them. Without the Hub, convert the authors\' released file: `sinet-convert CHECKPOINT.pth.tar OUT_DIR` and '
        "load it with timm.create_model('local-dir:OUT_DIR', pretrained=True). Use pretrained=False for random init."
        + (f' For this zoo entry, `sinet-hub convert {name} --out OUT_DIR` downloads the authors\' Google Drive '
           f'file and converts it; {DRIVE_FALLBACK_ENV}=1 does that on the fly (cached) whenever the Hub fails.'
           if name in zoo_entries() else ''))
