"""``sinet-extract``: one re-ID embedding per tracklet of your own videos, written to a ``.safetensors`` file.

    sinet-extract --model sinet_r50.mars TRACKLETS/ --output feats.safetensors
    sinet-extract --model sinet_r50.mars tracklets.txt --output feats.safetensors

INPUT is either

* a folder of tracklets: one subfolder of frames per tracklet (named after the subfolder), or a folder that
  holds frames directly (a single tracklet named after the folder). Frames are image files (.jpg, .jpeg, .png,
  .bmp, .gif, .webp, .tif, .tiff, .ppm, .pgm) of any size, in natural name order (``f2`` before ``f10``);
  hidden files are ignored, any other file in a tracklet folder is an error (loose non-image files next to the
  tracklet subfolders are ignored). A tracklet may have any number of frames >= 1.
* a list file: one tracklet per line, ``[NAME:] FOLDER`` (the images in FOLDER) or ``[NAME:] FRAME [FRAME ...]``
  (frame paths in temporal order). Fields are split like a shell line (quote paths with spaces), ``#`` starts
  a comment, relative paths are relative to the list file's folder. Without ``NAME:`` a folder line is named
  by the folder as written and a frame line ``line<N>`` (its line number).

Every tracklet goes through the dense protocol of the paper's evaluation (:mod:`reid_eval.protocol`): all frames,
loop-padded to a multiple of 4, in strided 4-frame clips whose embeddings are averaged. The output holds the
``features`` (N, D) float32 tensor and ``num_frames`` (N,), with the tracklet ``names`` (a JSON list), the
model id and the weights' sha256 (:func:`reid_eval.engine.weights_sha256`) in the safetensors metadata; read it
with :func:`load_features`.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import re
import shlex
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .engine import (
    ExtractPlan,
    FramePreprocess,
    FrameReadError,
    WorkersDiedError,
    add_extraction_arguments,
    extract_features,
    extraction_arguments_error,
    for_inference,
    frame_error_message,
    output_taken,
    resolve_amp,
    weights_sha256,
)

__all__ = [
    'IMAGE_EXTENSIONS', 'FEATURES_FORMAT', 'InputTracklet', 'FeatureSet', 'TrackletInputError', 'FeatureFileError',
    'find_tracklets', 'list_frames', 'extract_tracklet_features', 'save_features', 'load_features',
    'save_run_features', 'main',
]

IMAGE_EXTENSIONS = frozenset({'.jpg', '.jpeg', '.png', '.bmp', '.gif', '.webp', '.tif', '.tiff', '.ppm', '.pgm'})
FEATURES_FORMAT = 'sinet-timm-features/1'
RUN_FEATURES_FORMAT = 'sinet-timm-run-features/1'
_IGNORED = frozenset({'thumbs.db', 'desktop.ini'})


class TrackletInputError(ValueError):
    """The tracklet input (folder or list file) is missing, empty or holds something that is not a frame."""


class FeatureFileError(ValueError):
    """A features file is missing, unreadable or not one that ``sinet-extract`` wrote."""


@dataclass
class InputTracklet:
    """A named tracklet: its frame paths in temporal order."""

    name: str
    frames: list[str]


@dataclass
class FeatureSet:
    """The content of a features file: (N, D) embeddings, their tracklet names and the file's metadata."""

    features: torch.Tensor
    names: list[str]
    metadata: dict[str, str] = field(default_factory=dict)
    path: Path | None = None

    @property
    def weights_sha256(self) -> str | None:
        return self.metadata.get('weights_sha256')

    @property
    def model(self) -> str:
        return self.metadata.get('model', 'unknown model')


# --------------------------------------------------------------------------------------------------------
# finding tracklets


def _natural_key(name: str) -> list[Any]:
    return [int(s) if s.isdigit() else s.lower() for s in re.split(r'(\d+)', name)]


def _is_image(p: Path) -> bool:
    return p.suffix.lower() in IMAGE_EXTENSIONS


def _is_ignored(p: Path) -> bool:
    return p.name.startswith('.') or p.name.lower() in _IGNORED


def list_frames(folder: str | Path) -> list[str]:
    """The frames of a tracklet folder in natural name order; raises :class:`TrackletInputError` when the folder
    is missing, has no image, or holds a file that is not an image (hidden files and subfolders are skipped)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise TrackletInputError(f'tracklet folder {folder} does not exist (or is not a folder)')
    files = [p for p in folder.iterdir() if p.is_file() and not _is_ignored(p)]
    others = sorted(p.name for p in files if not _is_image(p))
    if others:
        shown = ', '.join(others[:5]) + (f' and {len(others) - 5} more' if len(others) > 5 else '')
        raise TrackletInputError(
            f'tracklet folder {folder} holds files that are not frames: {shown}. Expected only images '
            f'({", ".join(sorted(IMAGE_EXTENSIONS))}); move the other files out of the folder.')
    frames = sorted((p for p in files if _is_image(p)), key=lambda p: _natural_key(p.name))
    if not frames:
        sub = [p.name for p in folder.iterdir() if p.is_dir() and not _is_ignored(p)]
        hint = (f' It has subfolders ({", ".join(sorted(sub)[:3])}...): pass the folder of tracklet folders, '
                'or list the tracklets in a list file.') if sub else ''
        raise TrackletInputError(f'tracklet folder {folder} has no frames (no image files).{hint}')
    return [str(p) for p in frames]


def _from_folder(root: Path) -> list[InputTracklet]:
    entries = [p for p in root.iterdir() if not _is_ignored(p)]
    subdirs = sorted((p for p in entries if p.is_dir()), key=lambda p: _natural_key(p.name))
    images = [p for p in entries if p.is_file() and _is_image(p)]
    if images and subdirs:
        raise TrackletInputError(
            f'{root} holds both frames ({len(images)} images) and subfolders ({len(subdirs)}): it must be either '
            'a folder of tracklet subfolders or the frames of one tracklet. Move the loose images into a subfolder.')
    if images:
        return [InputTracklet(root.name or str(root), list_frames(root))]
    if not subdirs:
        raise TrackletInputError(
            f'no tracklets in {root}: it is empty (or holds no image and no subfolder). Expected one subfolder of '
            'frames per tracklet (INPUT/person1/0001.jpg ...), a folder of frames, or a list file.')
    return [InputTracklet(d.name, list_frames(d)) for d in subdirs]


def _from_list(list_file: Path) -> list[InputTracklet]:
    base = list_file.parent
    out: list[InputTracklet] = []
    try:
        text = list_file.read_text()
    except UnicodeDecodeError as e:
        raise TrackletInputError(
            f'{list_file} is not a text list file ({e.reason}). INPUT must be a folder of tracklets or a list file '
            'with one tracklet per line.') from None
    for n, line in enumerate(text.splitlines(), 1):
        try:
            fields = shlex.split(line, comments=True)
        except ValueError as e:
            raise TrackletInputError(f'{list_file}, line {n}: cannot split {line!r}: {e}') from None
        if not fields:
            continue
        name = None
        if len(fields) > 1 and fields[0].endswith(':'):
            name, fields = fields[0][:-1], fields[1:]
        paths = [Path(f).expanduser() for f in fields]
        paths = [p if p.is_absolute() else base / p for p in paths]
        missing = [f for f, p in zip(fields, paths, strict=True) if not p.exists()]
        if missing:
            raise TrackletInputError(
                f'{list_file}, line {n}: {missing[0]} does not exist (relative paths are relative to {base}). '
                'Each line is "[NAME:] FOLDER" or "[NAME:] FRAME [FRAME ...]".')
        if len(paths) == 1 and paths[0].is_dir():
            out.append(InputTracklet(name or fields[0].rstrip('/'), list_frames(paths[0])))
            continue
        dirs = [f for f, p in zip(fields, paths, strict=True) if p.is_dir()]
        if dirs:
            raise TrackletInputError(
                f'{list_file}, line {n}: {dirs[0]} is a folder among frame paths; a line is either one FOLDER or '
                'FRAME paths.')
        bad = [f for f, p in zip(fields, paths, strict=True) if not _is_image(p)]
        if bad:
            raise TrackletInputError(
                f'{list_file}, line {n}: {bad[0]} is not an image file '
                f'(expected {", ".join(sorted(IMAGE_EXTENSIONS))})')
        out.append(InputTracklet(name or f'line{n}', [str(p) for p in paths]))
    if not out:
        raise TrackletInputError(f'the list file {list_file} names no tracklet (it is empty or only comments)')
    return out


def find_tracklets(source: str | Path) -> list[InputTracklet]:
    """The tracklets of INPUT: a folder of tracklet subfolders, a folder of frames, or a list file."""
    src = Path(source).expanduser()
    if not src.exists():
        raise TrackletInputError(
            f'input {source} does not exist. Pass a folder of tracklets (one subfolder of frames each) or a list '
            'file (one tracklet per line).')
    if src.is_dir():
        tracklets = _from_folder(src)
    elif _is_image(src):
        raise TrackletInputError(
            f'input {source} is an image; pass the folder that holds the frames (or a list file naming them)')
    else:
        tracklets = _from_list(src)
    seen: dict[str, int] = {}
    for i, t in enumerate(tracklets):
        if t.name in seen:
            raise TrackletInputError(
                f'two tracklets are named {t.name!r} (#{seen[t.name]} and #{i}); names must be unique: give them '
                'explicit names in the list file ("NAME: ...")')
        seen[t.name] = i
    return tracklets


# --------------------------------------------------------------------------------------------------------
# extraction and the features file


def _frame_error_message(e: FrameReadError) -> str:
    msg = frame_error_message(e).split('\n')[0]
    if '. Replace or delete' in msg:
        msg = msg[:msg.index('. Replace or delete')]
    return msg + '. Replace the file, or delete it (and its line in a list file).'


def extract_tracklet_features(
        model: torch.nn.Module,
        tracklets: Sequence[InputTracklet],
        *,
        device: torch.device | str = 'cpu',
        batch_clips: int | None = None,
        workers: int = 0,
        amp: str = 'off',
        transform=None,
        progress: bool = False,
) -> torch.Tensor:
    """(N, D) embeddings of ``tracklets`` under the dense protocol (:class:`~reid_eval.engine.ExtractPlan`).

    ``model`` is an eval-mode SINet-family model with ``num_classes=0``; ``transform`` defaults to timm's eval
    transform resolved from the model (256x128, bicubic, ImageNet mean/std for the SINet family), applied as a
    :class:`~reid_eval.engine.FramePreprocess` (uint8 frames, normalised on ``device``; the same numbers). The model is
    used as given: ``sinet-extract`` first applies :func:`~reid_eval.engine.for_inference` (channels_last, the
    faster layout), which changes embeddings only by float rounding; do the same to get its numbers bit for bit.
    """
    if not tracklets:
        raise TrackletInputError('no tracklets to extract')
    device = torch.device(device)
    if transform is None:
        transform = FramePreprocess.for_model(model)
    items = [(tuple(t.frames), i, 0) for i, t in enumerate(tracklets)]
    plan = ExtractPlan.build(items, 'dense', getattr(model, 'clip_len', 4))
    feats, _ = extract_features(model, plan, transform, None, device, batch_clips=batch_clips, workers=workers,
                                amp=amp, shard_clips=4096, progress=progress)
    assert feats is not None  # a single process always gets the features
    return feats


def _versions() -> dict[str, str]:
    import timm
    out = {'torch': torch.__version__, 'timm': timm.__version__}
    try:
        from importlib.metadata import version
        out['sinet_timm'] = version('sinet-timm')
    except Exception:  # not installed as a distribution
        pass
    return out


def _atomic_write(tensors: dict[str, torch.Tensor], metadata: dict[str, str], path: Path) -> None:
    from safetensors.torch import save_file
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f'.{path.name}.{os.getpid()}.tmp')
    try:
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata=metadata)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def save_features(
        path: str | Path,
        features: torch.Tensor,
        names: Sequence[str],
        *,
        model: str,
        weights_sha256: str,
        num_frames: Sequence[int] | None = None,
        metadata: dict[str, str] | None = None,
        overwrite: bool = False,
) -> Path:
    """Write a features file (see the module docstring); refuses to replace an existing file unless ``overwrite``."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f'{path} exists; pass --overwrite (overwrite=True) to replace it or choose another '
                              'output')
    if features.dim() != 2 or features.shape[0] != len(names):
        raise ValueError(f'features must be (N, D) with N = {len(names)} names, got shape {list(features.shape)}')
    meta = {'format': FEATURES_FORMAT, 'model': model, 'weights_sha256': weights_sha256,
            'names': json.dumps(list(names)), 'embedding_dim': str(features.shape[1]), 'mode': 'dense',
            'created': _dt.datetime.now(_dt.timezone.utc).isoformat(timespec='seconds'),
            'versions': json.dumps(_versions())}
    meta.update(metadata or {})
    tensors = {'features': features.float().cpu()}
    if num_frames is not None:
        tensors['num_frames'] = torch.as_tensor(list(num_frames), dtype=torch.int64)
    _atomic_write(tensors, meta, path)
    return path


def load_features(path: str | Path) -> FeatureSet:
    """Read a features file written by ``sinet-extract`` / :func:`save_features`."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise FeatureFileError(f'features file {path} does not exist; make one with `sinet-extract INPUT --output '
                               f'{path.name}`')
    try:
        with safe_open(str(path), framework='pt') as f:
            meta = dict(f.metadata() or {})
            keys = set(f.keys())
            if 'features' not in keys:
                hint = (' (it is a sinet-eval --save-features file: use sinet-viz ranks on its run JSON)'
                        if 'query_features' in keys else '')
                raise FeatureFileError(f"{path} has no 'features' tensor: it is not a sinet-extract features file"
                                       f'{hint}')
            feats = f.get_tensor('features')
    except FeatureFileError:
        raise
    except Exception as e:  # safetensors raises its own error types for a damaged or foreign file
        raise FeatureFileError(f'cannot read {path} as a safetensors features file: {e}') from None
    if feats.dim() != 2:
        raise FeatureFileError(f"{path}: 'features' must be (N, D), got shape {list(feats.shape)}")
    try:
        names = json.loads(meta['names']) if 'names' in meta else [str(i) for i in range(feats.shape[0])]
    except json.JSONDecodeError as e:
        raise FeatureFileError(f"{path}: the 'names' metadata is not a JSON list ({e})") from None
    if len(names) != feats.shape[0]:
        raise FeatureFileError(f'{path}: {len(names)} names for {feats.shape[0]} feature rows')
    return FeatureSet(feats.float(), [str(n) for n in names], meta, path)


def save_run_features(json_path: str | Path, summary: dict[str, Any]) -> list[Path]:
    """Write the features a ``sinet-eval --save-features`` run kept in its split results next to its JSON.

    Each ``per_split`` entry's ``_features`` (tensors) is removed from ``summary`` and written to
    ``<json stem>.features.safetensors`` (``<json stem>.split<N>.features.safetensors`` for several splits); the
    file name, relative to the JSON's folder, is recorded as the entry's ``features_file`` (and at the top level
    for a single split). Tensors: ``query_features``, ``gallery_features`` (the gallery as ranked; for MARS the
    query tracklets come first), ``{query,gallery}_{pids,camids,tracklets}``; tracklet ids index the dataset's
    query list followed by its gallery list (``load_dataset(...).query + .gallery``).
    """
    json_path = Path(json_path)
    written: list[Path] = []
    splits = summary.get('per_split') or []
    for entry in splits:
        tensors = entry.pop('_features', None)
        if tensors is None:
            continue
        suffix = f'.split{entry["split"]}' if len(splits) > 1 else ''
        path = json_path.with_name(f'{json_path.stem}{suffix}.features.safetensors')
        meta = {'format': RUN_FEATURES_FORMAT, 'model': str(summary.get('model')),
                'weights_sha256': str(summary.get('weights_sha256')), 'dataset': str(summary.get('dataset')),
                'dataset_format': str(summary.get('dataset_format')), 'root': str(summary.get('root')),
                'split': str(entry['split']), 'mode': str(summary.get('mode')),
                'tracklet_ids': 'index into load_dataset(dataset_format, root, split).query + .gallery'}
        _atomic_write({k: torch.as_tensor(v) for k, v in tensors.items()}, meta, path)
        entry['features_file'] = path.name
        written.append(path)
    if len(written) == 1:
        summary['features_file'] = written[0].name
    return written


# --------------------------------------------------------------------------------------------------------
# command line


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog='sinet-extract', description=__doc__.split('\n\n')[0].replace('``', ''),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog='INPUT: a folder with one subfolder of frames per tracklet, a folder of frames (one tracklet), or a '
               'list file with one tracklet per line: "[NAME:] FOLDER" or "[NAME:] FRAME [FRAME ...]" (shell '
               'quoting, # comments, paths relative to the list file). All frames of a tracklet are used (dense '
               'protocol: loop-padded 4-frame strided clips, averaged).')
    p.add_argument('input', help='folder of tracklets, folder of frames, or list file')
    p.add_argument('--output', '-o', type=Path, required=True, help='features file to write (.safetensors)')
    p.add_argument('--model', default=None,
                   help='timm model name (default sinet_r50.mars), e.g. sinet_r50.lsvid, vreid_r50, '
                        'local-dir:FOLDER, hf-hub:ORG/NAME')
    p.add_argument('--checkpoint', help="a released .pth.tar or converted .safetensors instead of Hub weights "
                                        "(architecture inferred from its keys unless --model names one)")
    p.add_argument('--no-pretrained', action='store_true', help='random weights drawn with --seed (offline tests)')
    p.add_argument('--seed', type=int, default=0, help='seed of the --no-pretrained weights')
    add_extraction_arguments(p, workers_help='image decoding processes')
    p.add_argument('--overwrite', action='store_true', help='replace an existing --output file')
    p.add_argument('--no-progress', action='store_true')
    return p


def main(argv: list[str] | None = None) -> int:
    """``sinet-extract``: returns 0 on success, 2 on a user error (printed as one ``error:`` message)."""
    from .cli import EvalError, load_model, resolve_device

    args = build_parser().parse_args(argv)
    if taken := output_taken(args.output, args.overwrite):
        print(f'error: {taken}', file=sys.stderr)
        return 2
    if msg := extraction_arguments_error(args):
        print(f'error: {msg}', file=sys.stderr)
        return 2
    try:
        tracklets = find_tracklets(args.input)
        device = resolve_device(args.device)
        if args.model is None and not args.checkpoint:
            args.model = 'sinet_r50.mars'
        if args.no_pretrained:
            torch.manual_seed(args.seed)
        model, source, arch = load_model(args)
        model = for_inference(model, device)
        sha = weights_sha256(model)
        amp = resolve_amp(args.amp, device)
        n_frames = sum(len(t.frames) for t in tracklets)
        print(f'{len(tracklets)} tracklet(s), {n_frames} frames; model {source} on {device}', file=sys.stderr)
        feats = extract_tracklet_features(model, tracklets, device=device, batch_clips=args.batch_clips,
                                          workers=args.workers, amp=amp, progress=not args.no_progress)
        model_id = args.model or arch or 'unknown'
        save_features(args.output, feats, [t.name for t in tracklets], model=model_id, weights_sha256=sha,
                      num_frames=[len(t.frames) for t in tracklets], overwrite=args.overwrite,
                      metadata={'weights': source, 'architecture': str(arch), 'input': str(Path(args.input).resolve()),
                                'clip_len': str(getattr(model, 'clip_len', 4))})
    except FrameReadError as e:
        print(f'error: {_frame_error_message(e)}', file=sys.stderr)
        return 2
    except (TrackletInputError, EvalError, FileExistsError, WorkersDiedError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    print(f'wrote {feats.shape[0]} x {feats.shape[1]} embeddings to {args.output}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
