"""The authors' original checkpoint files on Google Drive: download, check, convert and cache.

The zoo entry names each file (``source.file_id``, and ``source.sha256`` once recorded). Nothing here runs unless
asked: ``sinet-hub convert`` without ``--src``, :func:`load_from_drive`, or ``SINET_TIMM_DRIVE_FALLBACK=1`` which
makes ``timm.create_model(name, pretrained=True)`` use it when the Hub cannot be reached. Downloads and converted
folders are cached under :func:`cache_root`.
"""
from __future__ import annotations

import json
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gdown
import timm
import torch.nn as nn
from timm.models import get_pretrained_cfg

from ._zoo import pretrained_cfg_fields, resolve_entry, zoo_entries
from .convert import INIT_ONLY_CFG_KEYS, convert, family_module, sha256_of
from .errors import CheckpointError, HubError
from .paths import cache_root

__all__ = ['DRIVE_FALLBACK_ENV', 'cache_root', 'check_sha256', 'converted_from_drive', 'drive_fallback_file',
           'entry_pretrained_cfg', 'fetch_from_drive', 'load_from_drive']

DRIVE_FALLBACK_ENV = 'SINET_TIMM_DRIVE_FALLBACK'
Log = Callable[[str], None]


def entry_pretrained_cfg(entry: dict[str, Any]) -> dict[str, Any]:
    """The full timm pretrained cfg of a zoo entry: the architecture's defaults (its default tag's cfg, the
    ImageNet init for the frame-wise families) with the entry's fields. A family whose cfgs read more from the
    zoo file than :func:`~sinet_timm._zoo.pretrained_cfg_fields` defines ``zoo_cfg_fields(entry)`` (TF-CLIP:
    ``num_cameras``, ``protocol`` and an embedding model's ``num_classes`` of 0)."""
    arch, _, tag = entry['name'].partition('.')
    try:
        cfg = get_pretrained_cfg(arch).to_dict()  # the architecture's default cfg (the init it builds from)
    except Exception as e:  # not registered: the architecture is unknown to timm
        raise HubError(f"{entry['name']}: architecture {arch} is not registered with timm") from e
    for k in INIT_ONLY_CFG_KEYS:  # the registry's own source and notes; tag is set below
        cfg.pop(k, None)
    fields = getattr(family_module(arch), 'zoo_cfg_fields', pretrained_cfg_fields)
    cfg.update(fields(entry), architecture=arch, tag=tag)
    return cfg


def fetch_from_drive(entry: dict[str, Any], cache_dir: str | Path | None = None, quiet: bool = False) -> Path:
    """Download the authors' file of ``entry`` from Google Drive with gdown (kept in ``cache_dir``).

    Needs internet access; the error says what to do without it. The file is not checked here (see
    :func:`check_sha256`).
    """
    src = entry['source']
    if src.get('kind') != 'google-drive':
        raise HubError(f"{entry['name']}: source.kind is {src.get('kind')!r}; only google-drive files can be "
                       'fetched, pass the file with --src')
    folder = Path(cache_dir) if cache_dir else cache_root() / 'drive'
    dest = folder / f"{entry['name']}-{src['file_id']}.pth.tar"
    if dest.is_file():
        return dest
    folder.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + '.part')
    how = (f"Download it by hand from {src.get('url') or 'https://drive.google.com/file/d/' + src['file_id']} "
           '(a browser on any machine with internet access) and pass it with --src FILE.pth.tar.')
    try:
        got = gdown.download(id=src['file_id'], output=str(part), quiet=quiet)
    except Exception as e:  # requests' ConnectionError offline, gdown's FileURLRetrievalError on quota/permission
        part.unlink(missing_ok=True)
        first = str(e).splitlines()[0] if str(e) else ''
        raise HubError(f"could not download the authors' file of {entry['name']} from Google Drive (file id "
                       f"{src['file_id']}): {type(e).__name__}: {first}\nAre you offline? {how}") from e
    if got is None or not part.is_file():
        raise HubError(f"Google Drive did not return the file of {entry['name']} (file id {src['file_id']}). {how}")
    part.replace(dest)
    return dest


def check_sha256(path: str | Path, entry: dict[str, Any], entry_file: str | Path | None = None) -> str:
    """sha256 of ``path``; :class:`CheckpointError` naming both hashes when the entry records another one."""
    digest = sha256_of(path)
    expected = entry['source'].get('sha256')
    if expected and digest != expected.lower():
        where = f' ({entry_file})' if entry_file else ''
        raise CheckpointError(
            f"sha256 mismatch for {path}: the file has {digest}, the zoo entry {entry['name']}{where} records "
            f'{expected}. The file is corrupt, truncated, or not the published checkpoint: download it again.')
    return digest


def converted_from_drive(name: str, cache_dir: str | Path | None = None, log: Log = print) -> Path:
    """Folder with the converted weights of zoo entry ``name``, made from the authors' Drive file and cached.

    The download (:func:`fetch_from_drive`) needs internet access; its sha256 is checked when the entry records
    one (a warning says so when it does not). Both the download and the conversion are cached under
    ``cache_dir`` (default :func:`cache_root`).
    """
    entry, _ = resolve_entry(name)
    root = Path(cache_dir) if cache_dir else cache_root()
    out = root / 'converted' / entry['name']
    if (out / 'model.safetensors').is_file() and (out / 'config.json').is_file():
        made_from = json.loads((out / 'config.json').read_text()).get('source', {})
        if made_from.get('file_id') == entry['source'].get('file_id') and (
                not entry['source'].get('sha256') or made_from.get('sha256') == entry['source']['sha256']):
            return out  # converted from the file the entry names
    src = fetch_from_drive(entry, root / 'drive', quiet=True)
    try:
        digest = check_sha256(src, entry)
    except CheckpointError:
        src.unlink()  # do not keep a bad download in the cache
        raise
    if not entry['source'].get('sha256'):
        warnings.warn(f"{entry['name']}: the zoo entry records no sha256, so the downloaded {src} (sha256 {digest}) "
                      'could not be checked', stacklevel=2)
    tmp = out.with_name(out.name + '.tmp')
    shutil.rmtree(tmp, ignore_errors=True)
    source = {k: entry['source'][k] for k in ('kind', 'file_id', 'url') if entry['source'].get(k)}
    convert(src, tmp, arch=entry['architecture'], dataset=entry['dataset'], source=source,
            pretrained_cfg=entry_pretrained_cfg(entry), expected_num_classes=int(entry['num_classes']))
    shutil.rmtree(out, ignore_errors=True)
    tmp.replace(out)
    log(f"converted the authors' Google Drive file of {entry['name']} into {out}")
    return out


def load_from_drive(name: str, cache_dir: str | Path | None = None, **kwargs: Any) -> nn.Module:
    """``timm.create_model(name, pretrained=True, **kwargs)`` with weights from the authors' Drive file.

    An explicit alternative to the Hub (see :func:`converted_from_drive`); the result is cached.
    """
    folder = converted_from_drive(name, cache_dir)
    overlay = dict(kwargs.pop('pretrained_cfg_overlay', None) or {}, file=str(folder / 'model.safetensors'))
    return timm.create_model(name, pretrained=True, pretrained_cfg_overlay=overlay, **kwargs)


def drive_fallback_file(name: str) -> tuple[Path, str]:
    """For ``pretrained=True`` when the Hub has no repo for zoo entry ``name`` (or with
    ``SINET_TIMM_DRIVE_FALLBACK=1``): the cached converted weights file (made if needed, from the authors' Drive
    file read with ``torch.load(weights_only=True)``), and one sentence saying where it came from and whether it was
    checked."""
    if name not in zoo_entries():
        raise HubError(f'{name} is not a zoo entry, so it has no Google Drive source')
    entry, _ = resolve_entry(name)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # said in the sentence below instead
        folder = converted_from_drive(name, log=lambda m: None)
    checked = ('its sha256 matches the zoo entry' if entry['source'].get('sha256') else
               'the zoo entry records no sha256, so the file was not checked')
    note = (f"using the authors' Google Drive file (id {entry['source']['file_id']}; {checked}), converted and "
            f'cached in {folder}')
    return folder / 'model.safetensors', note
