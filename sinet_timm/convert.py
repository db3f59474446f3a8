"""Convert the authors' released checkpoints into Hub-ready timm folders (the library behind ``sinet-convert``).

:func:`convert` writes ``OUT_DIR/model.safetensors`` and ``OUT_DIR/config.json`` (timm's ``save_for_hf`` format,
plus re-ID fields), which load with ``timm.create_model("local-dir:OUT_DIR", pretrained=True)`` or, once uploaded,
``hf-hub:ORG/NAME``. The released files are read with ``torch.load(weights_only=True)``: nothing in them is
executed (the NumPy scalars the authors' training script stored beside the weights, such as ``rank1``, are allowed
as data).
"""
from __future__ import annotations

import hashlib
import pickle
import sys
import zipfile
from contextlib import AbstractContextManager
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import timm
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from timm.models import save_for_hf

from .archs import ARCHITECTURES, canonical_arch
from .errors import CheckpointError, NumClassesMismatch, OutputExistsError
from .framewise import VideoReIDNet, checkpoint_filter_fn

__all__ = ['convert', 'describe_mismatch', 'infer_arch', 'load_checkpoint_file', 'load_released',
           'family_module', 'numpy_scalars_allowed', 'reid_config', 'sha256_of', 'train_identities']

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


def load_checkpoint_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a ``.pth``/``.pth.tar``/``.safetensors`` file and return its state dict, with clear errors."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f'checkpoint not found: {path}')
    if path.suffix == '.safetensors':
        try:
            return load_file(str(path))
        except (SafetensorError, OSError) as e:
            raise CheckpointError(f'{path} is not a readable safetensors file: {e}') from e
    try:
        with numpy_scalars_allowed():
            obj = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as e:  # text, truncated zips, foreign pickles: torch raises a dozen different types
        raise CheckpointError(f'{path} is not a PyTorch checkpoint that can be read safely: '
                              f'{_why_unreadable(path, e)}. Expected the authors\' .pth.tar (a dict with a '
                              '"state_dict") or a state dict saved with torch.save (or a .safetensors file).') from None
    if isinstance(obj, dict) and isinstance(obj.get('state_dict'), dict):
        obj = obj['state_dict']
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(
            f'{path} does not hold a state dict (expected a mapping of parameter names to tensors, or a dict '
            f'with a "state_dict" entry; got {type(obj).__name__}).')
    return {k.removeprefix('module.'): v for k, v in obj.items()}


def _why_unreadable(path: Path, e: BaseException) -> str:
    """What is wrong with a file torch.load(weights_only=True) refused, without torch's advice to unpickle it."""
    if isinstance(e, pickle.UnpicklingError):
        try:
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


def infer_arch(state_dict: dict[str, torch.Tensor]) -> str:
    """Guess the architecture from which modules a (released or converted) state dict contains."""
    keys = state_dict.keys()
    if 'cv_embed' in keys or any(k.startswith(('TMD.', 'image_encoder.')) for k in keys):  # TF-CLIP
        return 'tfclip_vit_b16'
    if any(('.down_channel.' in k) or ('.recover_bn.' in k) for k in keys):  # statistic attention
        return 'sanet_r50'
    has_idm = any(('thw_reduction' in k) or ('.integrate.' in k) for k in keys)
    has_sbm = any(('.kernel.0.' in k) or ('.kgm_conv.' in k) for k in keys)
    return {(True, True): 'sinet_r50', (False, True): 'sbnet_r50',
            (True, False): 'idnet_r50', (False, False): 'vreid_r50'}[(has_idm, has_sbm)]


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


def family_module(arch: str) -> ModuleType:
    """The module that registers ``arch`` with timm: its family file, found through timm's registry (a family
    file imports this module's users, so it is not imported here). Besides its entrypoint a family file may
    define ``checkpoint_filter_fn`` (default: the frame-wise families' one), ``model_kwargs_from_state_dict``
    (the constructor arguments a file needs, e.g. TF-CLIP's number of cameras) and ``released_num_classes``
    (training identities of a file whose classifiers the model drops)."""
    return sys.modules[timm.models.model_entrypoint(arch).__module__]


def train_identities(state_dict: dict[str, torch.Tensor], arch: str | None = None) -> int:
    """Training identities of a checkpoint: the rows of its classifier, or what its family reads from a file
    whose classifiers the model drops (TF-CLIP's ``classifier2``); 0 without one."""
    w = state_dict.get('classifier.weight')
    if w is not None:
        return int(w.shape[0])
    count = getattr(family_module(arch or infer_arch(state_dict)), 'released_num_classes', None)
    return count(state_dict) if count is not None else 0


def load_released(path: str | Path, arch: str | None = None, num_classes: int | None = None,
                  img_size: tuple[int, int] | None = None) -> VideoReIDNet:
    """Build the model for a released (or converted) checkpoint and load it strictly; eval mode.

    ``img_size`` (frame height, width) defaults to the architecture's 256x128; IDM weights fit only the size
    they were trained for. A family's ``model_kwargs_from_state_dict`` reads the other constructor arguments from
    the file (TF-CLIP: an embedding model, its classifiers being training-only, with the file's cameras).
    """
    state_dict = load_checkpoint_file(path)
    guessed = infer_arch(state_dict)
    arch = canonical_arch(arch or guessed)
    if arch not in ARCHITECTURES:
        raise CheckpointError(f'unknown architecture {arch!r}; expected one of {", ".join(ARCHITECTURES)}')
    family = family_module(arch)
    kwargs: dict[str, Any] = {'img_size': tuple(img_size)} if img_size else {}
    from_file = getattr(family, 'model_kwargs_from_state_dict', None)
    if from_file is not None:
        kwargs.update(from_file(state_dict))
    elif num_classes is None:
        w = state_dict.get('classifier.weight')
        num_classes = int(w.shape[0]) if w is not None else 0
    if num_classes is not None:
        kwargs['num_classes'] = num_classes
    filter_fn = getattr(family, 'checkpoint_filter_fn', checkpoint_filter_fn)
    model = timm.create_model(arch, **kwargs)
    # on a mismatch, lead with the likely cause
    hint = f' The checkpoint looks like {guessed}.' if arch != guessed else ''
    converted = filter_fn(state_dict, model)
    problems = describe_mismatch(converted, model)
    if problems:
        raise CheckpointError(f'{path} does not match {arch}.{hint}\n{problems}')
    model.load_state_dict(converted, strict=True)
    return model.eval()


# what config.json says of each test protocol (the model's pretrained_cfg names it; 'dense' by default)
PROTOCOL_TEXT = {
    'dense': 'dense: every frame in 4-frame strided clips, clip embeddings averaged; cosine distance',
    'tfclip': 'tfclip: every frame in consecutive 8-frame clips, the last padded by cycling its own frames, clip '
              'embeddings averaged; L2-normalised Euclidean distance',
}
INPUT_LAYOUT = {
    False: '(B, T, 3, H, W), T a multiple of frames_per_clip',
    True: '(B, T, 3, H, W) and camids (B,), the camera id of each clip: model(x, camids)',
}


def reid_config(model: VideoReIDNet, dataset: str | None, source: dict[str, Any],
                num_train_identities: int | None = None) -> dict[str, Any]:
    """The re-ID fields written next to timm's own in config.json."""
    cfg = getattr(model, 'pretrained_cfg', None) or {}
    protocol = cfg.get('protocol', 'dense')
    return {
        'reid': {
            'frames_per_clip': model.clip_len,
            'embedding_dim': model.num_features,
            'num_train_identities': model.num_classes if num_train_identities is None else num_train_identities,
            'dataset': dataset,
            'protocol': PROTOCOL_TEXT.get(protocol, protocol),
            'input_layout': INPUT_LAYOUT[bool(cfg.get('camera_input', False))],
        },
        'source': source,
    }


def _model_args(model: VideoReIDNet) -> dict[str, Any]:
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
) -> Path:
    """Convert ``src`` into a Hub-ready folder (model.safetensors + config.json); returns the folder.

    ``pretrained_cfg`` (e.g. a zoo entry's cfg, with its ``tag``) becomes the ``pretrained_cfg`` of config.json;
    without it the cfg is the architecture's defaults minus the ImageNet-init tag, notes and Hub id (the weights
    are not the ImageNet init). ``expected_num_classes`` refuses a checkpoint whose classifier has another size
    (:class:`NumClassesMismatch`). ``extra_config`` is merged into config.json's ``reid`` fields.
    """
    src, out_dir = Path(src), Path(out_dir)
    _check_output_folder(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise OutputExistsError(
            f'{out_dir} already exists and is not empty; choose a new folder or pass --overwrite to replace '
            'its model.safetensors and config.json')
    digest = sha256_of(src) if src.is_file() else None
    if expected_sha256 and digest != expected_sha256.lower():
        raise CheckpointError(
            f'sha256 of {src} is {digest}, expected {expected_sha256}: the file is corrupt, truncated or not the '
            'published checkpoint. Download it again.')
    img_size = tuple(pretrained_cfg['input_size'][1:]) if pretrained_cfg and pretrained_cfg.get('input_size') else None
    model = load_released(src, arch, img_size=img_size)
    identities = model.num_classes or train_identities(load_checkpoint_file(src), model.pretrained_cfg['architecture'])
    if expected_num_classes is not None and identities != expected_num_classes:
        raise NumClassesMismatch(src, identities, expected_num_classes)
    cameras = (pretrained_cfg or {}).get('num_cameras')
    if cameras is not None and getattr(model, 'num_cameras', cameras) != cameras:
        raise CheckpointError(f'{src} has {model.num_cameras} camera embeddings, expected {cameras} (the training '
                              'set\'s cameras): it is a checkpoint of another dataset')
    src_info = dict(source or {})
    src_info.update(filename=src.name, sha256=digest)
    cfg = {k: v for k, v in model.pretrained_cfg.items() if k not in INIT_ONLY_CFG_KEYS}
    cfg.update(pretrained_cfg or {})
    cfg['architecture'] = model.pretrained_cfg['architecture']
    model.pretrained_cfg = cfg  # what save_for_hf writes as config.json's pretrained_cfg
    config = reid_config(model, dataset, src_info, identities)
    config['reid'].update(extra_config or {})
    save_for_hf(model, str(out_dir), model_config=config, model_args=_model_args(model), safe_serialization=True)
    return out_dir


if __name__ == '__main__':
    raise SystemExit('the command line of this module is now `sinet-convert SRC OUT_DIR` (same arguments)')
