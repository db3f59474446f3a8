"""Convert the authors' released checkpoints into Hub-ready timm folders (the library behind ``sinet-convert``).

:func:`convert` writes ``OUT_DIR/model.safetensors`` and ``OUT_DIR/config.json`` (timm's ``save_for_hf`` format,
plus re-ID fields), which load with ``timm.create_model("local-dir:OUT_DIR", pretrained=True)`` or, once uploaded,
``hf-hub:ORG/NAME``. The released files are read with ``torch.load(weights_only=True)``: nothing in them is
executed (the NumPy scalars the authors' training script stored beside the weights, such as ``rank1``, are allowed
as data).

Every family's checkpoints are read here (:data:`sinet_timm.archs.FAMILIES`; each model file has the family's
``infer_arch`` and ``checkpoint_filter_fn``), also straight from the archives users download: ``ARCHIVE.zip::MEMBER``
names one checkpoint inside a zip (read into memory on its own, nothing unpacked), :func:`convert_all` converts
every checkpoint a zip holds. The authors' run folders (VKD: ``RUN/chk/chk_end`` beside ``RUN/params/params.json``
and ``hparams.json``) tell the architecture, dataset and classifier size where present.
"""
from __future__ import annotations

import hashlib
import importlib
import io
import json
import os
import pickle
import shutil
import warnings
import zipfile
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from types import ModuleType
from typing import Any

import numpy as np
import timm
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file
from timm.models import save_for_hf

from .archs import ARCHITECTURES, FAMILIES, Family, canonical_arch, family_of
from .errors import CheckpointError, NumClassesMismatch, OutputExistsError, OutputWriteError
from .paths import write_failure_reason

__all__ = ['HEAD_PREFIXES', 'MEMBER_SEP', 'NonFiniteWeightsWarning', 'ReleasedCheckpoint', 'check_local_dir',
           'convert', 'convert_all', 'describe_mismatch', 'family_filter', 'infer_arch', 'load_checkpoint_file',
           'family_module', 'load_released', 'mismatch_summary', 'nonfinite_tensors', 'numpy_scalars_allowed',
           'read_released', 'reid_config', 'sha256_of', 'train_identities', 'zip_checkpoints']

MEMBER_SEP = '::'  # ARCHIVE.zip::path/inside/the/zip

# pretrained-cfg fields that describe the ImageNet initialisation (the untagged default), not converted weights
INIT_ONLY_CFG_KEYS = ('tag', 'notes', 'hf_hub_id', 'url', 'file', 'description')

# NumPy scalars (e.g. the ``rank1`` the released main.py saves next to the weights) as plain data, under both the
# NumPy 2 name and the ``numpy.core`` name older NumPy wrote into the pickle
_np_core = getattr(np, '_core', None) or np.core
_NUMPY_SAFE_GLOBALS = [_np_core.multiarray.scalar, (_np_core.multiarray.scalar, 'numpy.core.multiarray.scalar'),
                       np.dtype, *(type(np.dtype(c)) for c in 'fdeilqbB?')]


def numpy_scalars_allowed() -> AbstractContextManager:
    """A context in which ``torch.load(weights_only=True)`` reads the NumPy scalars the released files store beside
    their weights (as data; nothing is executed): ours, and timm's loading of ``pretrained_cfg_overlay=dict(file=)``."""
    return torch.serialization.safe_globals(_NUMPY_SAFE_GLOBALS)


def sha256_of(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


@dataclass
class ReleasedCheckpoint:
    """A checkpoint as read: its state dict and what is known about where it came from."""

    state_dict: dict[str, torch.Tensor]
    name: str  # how messages name it: the path, or ARCHIVE.zip::MEMBER
    path: Path  # the file on disk (the archive for a member)
    member: str | None = None  # the member of the archive, if any
    member_sha256: str | None = None  # sha256 of the member's bytes
    run: dict[str, Any] = field(default_factory=dict)  # the authors' run files beside it: {'params.json': {...}}


def split_member(src: str | Path) -> tuple[Path, str | None]:
    """``ARCHIVE.zip::MEMBER`` -> (archive, member); any other path -> (path, None)."""
    text = str(src)
    if MEMBER_SEP in text:
        path, member = text.split(MEMBER_SEP, 1)
        return Path(path), member.lstrip('/')
    return Path(text), None


def _load_state_dict(source: Any, name: str, path: Path) -> dict[str, torch.Tensor]:
    """torch.load(weights_only=True) of a file or its bytes, unwrapped to a state dict, with clear errors."""
    try:
        with numpy_scalars_allowed():
            obj = torch.load(source, map_location='cpu', weights_only=True)
    except Exception as e:  # text, truncated zips, foreign pickles: torch raises a dozen different types
        raise CheckpointError(f'{name} is not a PyTorch checkpoint that can be read safely: '
                              f'{_why_unreadable(source, e)}. Expected the authors\' checkpoint (a state dict, or a '
                              'dict with a "state_dict") saved with torch.save (or a .safetensors file).') from None
    if isinstance(obj, dict) and isinstance(obj.get('state_dict'), dict):
        obj = obj['state_dict']
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(
            f'{name} does not hold a state dict (expected a mapping of parameter names to tensors, or a dict '
            f'with a "state_dict" entry; got {type(obj).__name__}).')
    return {k.removeprefix('module.'): v for k, v in obj.items()}


LOCAL_DIR_EXPECTED = ("expected a folder with config.json and model.safetensors, as sinet-convert, sinet-train and "
                      "timm's save_for_hf write")
_PICKLE_SUFFIXES = ('.bin', '.pth', '.pt', '.tar', '.ckpt', '.pkl')


def check_local_dir(folder: str | Path) -> dict[str, Any]:
    """What a ``local-dir:`` name needs, checked before timm reads anything: a folder, its ``config.json`` (JSON
    naming an architecture) and a complete ``model.safetensors``; returns the parsed config.

    A folder holding only pickle files (``pytorch_model.bin``, ``.pth``) is refused: unpickling can run code, and
    ``sinet-convert`` turns such a file into ``model.safetensors`` once. Raises :class:`CheckpointError`.
    """
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise CheckpointError(f'{folder} is not a folder; {LOCAL_DIR_EXPECTED}')
    config = folder / 'config.json'
    try:
        cfg = json.loads(config.read_text())
    except FileNotFoundError:
        raise CheckpointError(f'{config} is missing; {LOCAL_DIR_EXPECTED}') from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f'{config} is not a readable JSON file ({e}); {LOCAL_DIR_EXPECTED}') from None
    if not isinstance(cfg, dict) or not isinstance(cfg.get('architecture'), str):
        raise CheckpointError(f'{config} names no architecture ("architecture": "..."); {LOCAL_DIR_EXPECTED}')
    weights = folder / 'model.safetensors'
    if not weights.is_file():
        pickles = sorted(p.name for p in folder.iterdir() if p.is_file() and p.name.endswith(_PICKLE_SUFFIXES))
        if pickles:
            raise CheckpointError(
                f'{folder} has no model.safetensors, only {", ".join(pickles)}: a pickle, which is not loaded '
                f'(unpickling can run code). Convert it once: `sinet-convert {folder / pickles[0]} NEW_FOLDER` '
                '(SINet/SANet weights), then load local-dir:NEW_FOLDER')
        raise CheckpointError(f'{weights} is missing; {LOCAL_DIR_EXPECTED}')
    try:
        with safe_open(str(weights), framework='pt') as f:
            f.keys()  # the header is checked against the file's size: a truncated file fails here
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f'{weights} is truncated or not a safetensors file ({e}); write or download it '
                              'again') from None
    return cfg


def _is_checkpoint_member(name: str) -> bool:
    """A member of an archive that holds weights: the authors' ``RUN/chk/NAME`` (VKD) or a .pth/.pt/.tar file."""
    p = PurePosixPath(name)
    return not name.endswith('/') and (p.parent.name == 'chk' or p.suffix in ('.pth', '.pt', '.tar'))


def zip_checkpoints(path: str | Path) -> list[str]:
    """The members of a zip that hold checkpoints, in archive order."""
    with _open_zip(Path(path)) as zf:
        return [n for n in zf.namelist() if _is_checkpoint_member(n)]


def _open_zip(path: Path) -> zipfile.ZipFile:
    if not path.is_file():
        raise CheckpointError(f'archive not found: {path}')
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        raise CheckpointError(f'{path} is not a readable zip archive ({e}); download it again') from None


def _run_files(names: set[str], member: str, read: Callable[[str], bytes]) -> dict[str, Any]:
    """The authors' JSON files of the run a checkpoint belongs to (``RUN/params/*.json`` for ``RUN/chk/NAME``)."""
    p = PurePosixPath(member)
    if p.parent.name != 'chk':
        return {}
    out = {}
    for fname in ('params.json', 'hparams.json'):
        key = str(p.parent.parent / 'params' / fname)
        if key in names:
            try:
                out[fname] = json.loads(read(key))
            except (ValueError, OSError) as e:
                raise CheckpointError(f'{key} beside {member} is not readable JSON ({e})') from None
    return out


def read_released(src: str | Path) -> ReleasedCheckpoint:
    """Read a checkpoint: a ``.pth``/``.pth.tar``/``.safetensors`` file, the authors' ``RUN/chk/NAME`` file, or
    ``ARCHIVE.zip::MEMBER`` (a zip with one checkpoint may be named alone); with the run's JSON files if any."""
    path, member = split_member(src)
    if member is None and path.suffix.lower() == '.zip':
        found = zip_checkpoints(path)
        if len(found) != 1:
            listing = ''.join(f'\n  {path}{MEMBER_SEP}{n}' for n in found[:20])
            more = f'\n  ... and {len(found) - 20} more' if len(found) > 20 else ''
            raise CheckpointError(
                f'{path} holds {len(found)} checkpoints; name one as {path}{MEMBER_SEP}MEMBER, or convert them all '
                f'(sinet-convert {path} OUT_DIR){listing}{more}' if found else
                f'{path} holds no checkpoints (expected RUN/chk/NAME members or .pth/.pth.tar files)')
        member = found[0]
    if member is not None:
        with _open_zip(path) as zf:
            names = set(zf.namelist())
            if member not in names:
                found = [n for n in zf.namelist() if _is_checkpoint_member(n)]
                hint = ''.join(f'\n  {path}{MEMBER_SEP}{n}' for n in found[:20])
                raise CheckpointError(f'{path} has no member {member!r}; its checkpoints are:{hint or " none"}')
            try:
                data = zf.read(member)
            except (zipfile.BadZipFile, OSError, EOFError) as e:
                raise CheckpointError(f'{path}{MEMBER_SEP}{member} cannot be read: {e}; download the archive again'
                                      ) from None
            run = _run_files(names, member, zf.read)
        name = f'{path}{MEMBER_SEP}{member}'
        if member.endswith('.safetensors'):
            from safetensors.torch import load as load_bytes
            sd = load_bytes(data)
        else:
            sd = _load_state_dict(io.BytesIO(data), name, path)
        return ReleasedCheckpoint(sd, name, path, member, hashlib.sha256(data).hexdigest(), run)
    if not path.is_file():
        raise CheckpointError(f'checkpoint not found: {path}')
    if path.suffix == '.safetensors':
        try:
            return ReleasedCheckpoint(load_file(str(path)), str(path), path)
        except (SafetensorError, OSError) as e:
            raise CheckpointError(f'{path} is not a readable safetensors file: {e}') from e
    run_dir = path.parent.parent
    local = {str(q.relative_to(run_dir.parent).as_posix()) for q in (run_dir / 'params').glob('*.json')} \
        if path.parent.name == 'chk' else set()
    run = _run_files(local, f'{run_dir.name}/chk/{path.name}', lambda k: (run_dir.parent / k).read_bytes())
    return ReleasedCheckpoint(_load_state_dict(path, str(path), path), str(path), path, run=run)


def load_checkpoint_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a ``.pth``/``.pth.tar``/``.safetensors`` file (or ``ARCHIVE.zip::MEMBER``) and return its state dict,
    with clear errors."""
    return read_released(path).state_dict


def _why_unreadable(path: Any, e: BaseException) -> str:
    """What is wrong with a file torch.load(weights_only=True) refused, without torch's advice to unpickle it."""
    if isinstance(e, pickle.UnpicklingError):
        try:
            if isinstance(path, io.BytesIO):
                path.seek(0)
            unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(path)
        except Exception:  # not a zip checkpoint at all
            unsafe = []
        unsafe = [g for g in unsafe if not g.startswith('numpy')]
        if unsafe:
            return (f'it holds Python objects besides tensors and plain data ({", ".join(unsafe[:3])}), which are not '
                    'loaded because loading them would run code from the file')
    if isinstance(e, (zipfile.BadZipFile, EOFError)) or 'zip' in str(e).lower():
        return 'it is truncated or damaged'
    return f'it is not a checkpoint (torch says {type(e).__name__})'


def _check_output_folder(out_dir: Path) -> None:
    """The output folder can be created: neither it nor a folder above it is a file."""
    for p in (out_dir, *out_dir.parents):
        if p.exists() and not p.is_dir():
            what = 'is a file' if p == out_dir else f'lies under {p}, which is a file'
            raise OutputExistsError(f'the output folder {out_dir} {what}; choose a folder path')


def family_module(family: Family | str) -> ModuleType:
    """The model file of a family, or of an architecture's family (imported on first use: the model files import
    this module's users). It has ``infer_arch`` and ``checkpoint_filter_fn``, and may define optional hooks:
    ``run_info`` (what the authors' run files say), ``model_kwargs_from_state_dict`` (the constructor arguments a
    file needs, e.g. TF-CLIP's cameras), ``released_num_classes`` (training identities of a file whose classifiers
    the model drops) and ``zoo_cfg_fields`` (pretrained-cfg fields of a zoo entry beyond
    :func:`~sinet_timm._zoo.pretrained_cfg_fields`)."""
    return importlib.import_module((family if isinstance(family, Family) else family_of(family)).module)


def family_filter(arch: str) -> Callable[[dict[str, Any], torch.nn.Module], dict[str, Any]]:
    """The checkpoint converter (``checkpoint_filter_fn``) of an architecture's family."""
    return family_module(family_of(arch)).checkpoint_filter_fn


def infer_arch(state_dict: dict[str, torch.Tensor]) -> str:
    """Guess the architecture from which modules a (released or converted) state dict contains; each family's
    ``infer_arch`` is asked, the last family first (see :data:`sinet_timm.archs.FAMILIES`)."""
    for family in reversed(FAMILIES):
        arch = family_module(family).infer_arch(state_dict)
        if arch is not None:
            return arch
    sample = ', '.join(list(state_dict)[:4])
    raise CheckpointError(f'the checkpoint is not one of a known family ({", ".join(f.name for f in FAMILIES)}); '
                          f'its keys begin {sample}')


def _run_info(ckpt: ReleasedCheckpoint, family: Family) -> dict[str, Any]:
    """What the authors' run files say (architecture, dataset, classes), read by the family's ``run_info``."""
    fn = getattr(family_module(family), 'run_info', None)
    return fn(ckpt.run) if fn is not None and ckpt.run else {}


def train_identities(state_dict: dict[str, torch.Tensor], arch: str | None = None) -> int:
    """Training identities of a checkpoint: the rows of its classifier, or what its family reads from a file
    whose classifiers the model drops (TF-CLIP's ``classifier2``); 0 without one."""
    w = state_dict.get('classifier.weight', state_dict.get('classifier.classifier.weight'))
    if w is not None:
        return int(w.shape[0])
    count = getattr(family_module(arch or infer_arch(state_dict)), 'released_num_classes', None)
    return count(state_dict) if count is not None else 0


def describe_mismatch(state_dict: dict[str, torch.Tensor], model: torch.nn.Module, limit: int = 8) -> str:
    """Human-readable list of missing/unexpected keys and shape differences ('' when they match)."""
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    shapes = [f'{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)}'
              for k in own if k in state_dict and state_dict[k].shape != own[k].shape]
    lines = []
    for title, items in (('missing from the checkpoint', missing), ('not in the model', unexpected),
                         ('shape differences', shapes)):
        if items:
            more = f' ... and {len(items) - limit} more' if len(items) > limit else ''
            lines.append(f'  {title} ({len(items)}): ' + ', '.join(items[:limit]) + more)
    return '\n'.join(lines)


# training heads: a checkpoint may lack them (or hold other sizes) and still load, the head being re-initialised;
# ``head.`` is TF-CLIP's new classifier (``num_classes=N`` on an embedding checkpoint, for fine-tuning)
HEAD_PREFIXES = ('classifier.', 'projection.', 'head.')


def mismatch_summary(state_dict: dict[str, torch.Tensor], model: torch.nn.Module, limit: int = 3,
                     ignore: tuple[str, ...] = HEAD_PREFIXES) -> str:
    """One line naming the tensors of ``state_dict`` that do not fit ``model`` ('' when the body fits): missing,
    unexpected and differently shaped, the training heads (``ignore`` prefixes) left out."""
    own = {k: v for k, v in model.state_dict().items() if not k.startswith(ignore)}
    theirs = {k: v for k, v in state_dict.items() if not k.startswith(ignore)}
    groups = (('missing', [k for k in own if k not in theirs]),
              ('unexpected', [k for k in theirs if k not in own]),
              ('of another shape', [f'{k} {tuple(theirs[k].shape)} vs {tuple(own[k].shape)}'
                                    for k in own if k in theirs and tuple(theirs[k].shape) != tuple(own[k].shape)]))
    parts = []
    for title, items in groups:
        if items:
            more = ', ...' if len(items) > limit else ''
            parts.append(f'{len(items)} tensor(s) {title} ({", ".join(items[:limit])}{more})')
    return '; '.join(parts)


class NonFiniteWeightsWarning(UserWarning):
    """Weights holding NaN or Inf were converted because the caller allowed it (``allow_nonfinite``)."""


def nonfinite_tensors(state_dict: dict[str, torch.Tensor]) -> list[str]:
    """The floating-point tensors of ``state_dict`` holding NaN or Inf."""
    return [k for k, v in state_dict.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]


def load_released(path: str | Path | ReleasedCheckpoint, arch: str | None = None, num_classes: int | None = None,
                  img_size: tuple[int, int] | None = None) -> torch.nn.Module:
    """Build the model for a released (or converted) checkpoint and load it strictly; eval mode.

    ``path`` may be ``ARCHIVE.zip::MEMBER``. The architecture is ``arch`` (ours or the authors' name), else what
    the authors' run files say (refused if the weights say otherwise), else what the keys show. ``img_size``
    (frame height, width) defaults to the architecture's 256x128; IDM weights fit only the size they were trained
    for. A family's ``model_kwargs_from_state_dict`` reads the other constructor arguments from the file (TF-CLIP:
    an embedding model, its classifiers being training-only, with the file's cameras and depth).
    """
    ckpt = path if isinstance(path, ReleasedCheckpoint) else read_released(path)
    state_dict = ckpt.state_dict
    guessed = infer_arch(state_dict)
    family = family_of(guessed)
    info = _run_info(ckpt, family)
    declared = info.get('arch')
    if arch is None and declared is not None and declared != guessed:
        raise CheckpointError(f"{ckpt.name}: {info.get('arch_from', 'the run files')} say {declared}, but the "
                              f'weights are those of {guessed}; pass the architecture explicitly if you know better')
    arch = canonical_arch(arch or declared or guessed, family.name)
    if arch not in ARCHITECTURES:
        raise CheckpointError(f'unknown architecture {arch!r}; expected one of {", ".join(ARCHITECTURES)}')
    kwargs: dict[str, Any] = {'img_size': tuple(img_size)} if img_size else {}
    from_file = getattr(family_module(arch), 'model_kwargs_from_state_dict', None)
    if from_file is not None:
        kwargs.update(from_file(state_dict))
    elif num_classes is None:
        w = state_dict.get('classifier.weight', state_dict.get('classifier.classifier.weight'))
        num_classes = int(w.shape[0]) if w is not None else 0
    if num_classes is not None:
        kwargs['num_classes'] = num_classes
    model = timm.create_model(arch, **kwargs)
    # on a mismatch, lead with the likely cause
    hint = f' The checkpoint looks like {guessed}.' if arch != guessed else ''
    converted = family_filter(arch)(state_dict, model)
    problems = describe_mismatch(converted, model)
    if problems:
        raise CheckpointError(f'{ckpt.name} does not match {arch}.{hint}\n{problems}')
    model.load_state_dict(converted, strict=True)
    return model.eval()


def reid_config(model: torch.nn.Module, dataset: str | None, source: dict[str, Any],
                num_train_identities: int | None = None) -> dict[str, Any]:
    """The re-ID fields written next to timm's own in config.json; ``num_train_identities`` defaults to the
    model's classifier size (an embedding model's file tells it otherwise, see :func:`train_identities`)."""
    family = family_of(model.pretrained_cfg['architecture'])
    layout = ('(B, T, 3, H, W), T a multiple of frames_per_clip' if family.protocol == 'dense' else
              '(B, T, 3, H, W), any T (frames are embedded one by one and averaged)' if family.protocol == 'vkd' else
              '(B, T, 3, H, W), any T (clips of frames_per_clip in the protocol)')
    if model.pretrained_cfg.get('camera_input', False):
        layout += ', and camids (B,), the camera id of each clip: model(x, camids)'
    return {
        'reid': {
            'frames_per_clip': model.clip_len,
            'embedding_dim': model.num_features,
            'num_train_identities': model.num_classes if num_train_identities is None else num_train_identities,
            'dataset': dataset,
            'protocol': family.protocol_summary,
            'input_layout': layout,
        },
        'source': source,
    }


def _model_args(model: torch.nn.Module) -> dict[str, Any]:
    """The architecture arguments config.json records (timm < 1.0.31 records none by itself): the frame size,
    and what a model's ``architecture_args()`` adds (TF-CLIP: its cameras and ViT shape)."""
    extra = getattr(model, 'architecture_args', None)
    return {'img_size': list(model.img_size), **(extra() if extra is not None else {})}


def convert(
        src: str | Path,
        out_dir: str | Path,
        arch: str | None = None,
        dataset: str | None = None,
        expected_sha256: str | None = None,
        overwrite: bool = False,
        source: dict[str, Any] | None = None,
        pretrained_cfg: dict[str, Any] | None = None,
        expected_num_classes: int | None = None,
        extra_config: dict[str, Any] | None = None,
        allow_nonfinite: bool = False,
        file_sha256: str | None = None,
) -> Path:
    """Convert ``src`` into a Hub-ready folder (model.safetensors + config.json); returns the folder.

    ``src`` is a checkpoint file or ``ARCHIVE.zip::MEMBER``; ``expected_sha256`` is checked against the file on
    disk (the archive, for a member: what was downloaded), whose sha256 ``file_sha256`` gives when already known.
    config.json's ``source`` records that sha256 and, for a member, the member's path and its own sha256.
    ``pretrained_cfg`` (e.g. a zoo entry's cfg, with its ``tag``) becomes the ``pretrained_cfg`` of config.json;
    without it the cfg is the architecture's defaults minus the ImageNet-init tag, notes and Hub id (the weights
    are not the ImageNet init). ``expected_num_classes`` refuses a checkpoint whose classifier has another size
    (:class:`NumClassesMismatch`). ``extra_config`` is merged into config.json's ``reid`` fields. ``dataset``
    defaults to what the authors' run files say. Weights holding NaN or Inf are refused (:class:`CheckpointError`:
    their embeddings would not be finite) unless ``allow_nonfinite``, which writes them with a
    :class:`NonFiniteWeightsWarning`.
    """
    out_dir = Path(out_dir)
    path, member = split_member(src)
    _check_output_folder(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise OutputExistsError(
            f'{out_dir} already exists and is not empty; choose a new folder or pass --overwrite to replace '
            'its model.safetensors and config.json')
    digest = file_sha256 or (sha256_of(path) if path.is_file() else None)
    if expected_sha256 and digest != expected_sha256.lower():
        raise CheckpointError(
            f'sha256 of {path} is {digest}, expected {expected_sha256}: the file is corrupt, truncated or not the '
            'published file. Download it again.')
    img_size = tuple(pretrained_cfg['input_size'][1:]) if pretrained_cfg and pretrained_cfg.get('input_size') else None
    ckpt = read_released(src)
    model = load_released(ckpt, arch, img_size=img_size)
    identities = model.num_classes or train_identities(ckpt.state_dict, model.pretrained_cfg['architecture'])
    if expected_num_classes is not None and identities != expected_num_classes:
        raise NumClassesMismatch(ckpt.name, identities, expected_num_classes)
    cameras = (pretrained_cfg or {}).get('num_cameras')
    if cameras is not None and getattr(model, 'num_cameras', cameras) != cameras:
        raise CheckpointError(f"{ckpt.name} has {model.num_cameras} camera embeddings, expected {cameras} (the "
                              "training set's cameras): it is a checkpoint of another dataset")
    if bad := nonfinite_tensors(model.state_dict()):
        what = (f'{ckpt.name} holds NaN or Inf values in {len(bad)} tensor(s) (e.g. {bad[0]}): a training run that '
                'diverged or a damaged file, whose embeddings would not be finite')
        if not allow_nonfinite:
            raise CheckpointError(f'{what}. Convert another checkpoint, or pass --allow-nonfinite to write it anyway')
        warnings.warn(f'{what}; written anyway (--allow-nonfinite)', NonFiniteWeightsWarning, stacklevel=2)
    info = _run_info(ckpt, family_of(model.pretrained_cfg['architecture']))
    src_info = dict(source or {})
    src_info.update(filename=path.name, sha256=digest)
    if ckpt.member is not None:
        src_info.update(member=ckpt.member, member_sha256=ckpt.member_sha256)
    cfg = {k: v for k, v in model.pretrained_cfg.items() if k not in INIT_ONLY_CFG_KEYS}
    cfg.update(pretrained_cfg or {})
    cfg['architecture'] = model.pretrained_cfg['architecture']
    model.pretrained_cfg = cfg  # what save_for_hf writes as config.json's pretrained_cfg
    config = reid_config(model, dataset or info.get('dataset'), src_info, identities)
    config['reid'].update(extra_config or {})
    # written into a folder beside, then moved in: a full disk or a read-only folder is one OutputWriteError and
    # leaves the files already in out_dir whole (only the two files written are replaced)
    tmp_dir = out_dir.with_name(f'.{out_dir.name}.{os.getpid()}.tmp')
    try:
        save_for_hf(model, str(tmp_dir), model_config=config, model_args=_model_args(model),
                    safe_serialization=True)
        out_dir.mkdir(parents=True, exist_ok=True)
        for f in sorted(tmp_dir.iterdir()):
            os.replace(f, out_dir / f.name)
    except (OSError, SafetensorError) as e:
        raise OutputWriteError(out_dir, write_failure_reason(e)) from None
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)  # the temporary folder made above, nothing else
    return out_dir


def convert_all(
        archive: str | Path,
        out_dir: str | Path,
        expected_sha256: str | None = None,
        overwrite: bool = False,
        log: Callable[[str], None] | None = None,
        allow_nonfinite: bool = False,
) -> list[Path]:
    """Convert every checkpoint of a zip (e.g. the VKD authors' ``baseline.zip`` / ``distilled.zip``), each into
    ``OUT_DIR/<its path in the archive>/`` (``RUN/chk/chk_end`` -> ``OUT_DIR/RUN/chk_end``); architecture and
    dataset from the run files or the keys. The archive is hashed once; members are read one at a time."""
    archive, out_dir = Path(archive), Path(out_dir)
    members = zip_checkpoints(archive)
    if not members:
        raise CheckpointError(f'{archive} holds no checkpoints (expected RUN/chk/NAME members or .pth/.pth.tar files)')
    digest = sha256_of(archive)
    if expected_sha256 and digest != expected_sha256.lower():
        raise CheckpointError(
            f'sha256 of {archive} is {digest}, expected {expected_sha256}: the file is corrupt, truncated or not the '
            'published file. Download it again.')
    outs = []
    for member in members:
        p = PurePosixPath(member)
        rel = (p.parent.parent / p.name) if p.parent.name == 'chk' else p.with_suffix('')
        out = out_dir / rel
        convert(f'{archive}{MEMBER_SEP}{member}', out, overwrite=overwrite, file_sha256=digest,
                allow_nonfinite=allow_nonfinite)
        if log is not None:
            cfg = json.loads((out / 'config.json').read_text())
            ids = cfg.get('reid', {}).get('num_train_identities', cfg['num_classes'])
            log(f"{member} -> {out}: {cfg['architecture']}, {ids} training identities"
                + (f", {cfg['reid']['dataset']}" if cfg['reid'].get('dataset') else ''))
        outs.append(out)
    return outs


if __name__ == '__main__':
    raise SystemExit('the command line of this module is now `sinet-convert SRC OUT_DIR` (same arguments)')
