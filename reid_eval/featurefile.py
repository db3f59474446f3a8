"""Feature files: the embeddings ``sinet-extract`` writes (and ``sinet-search`` reads), and the query/gallery
features a ``sinet-eval --save-features`` run keeps beside its JSON (what ``sinet-viz ranks`` reads).

A features file is a safetensors file holding ``features`` (N, D) float32 and ``num_frames`` (N,), with the
tracklet ``names`` (a JSON list), the model id and the weights' sha256 (:func:`reid_eval.models.weights_sha256`) in
its metadata; read it with :func:`load_features`. It may also hold small JPEG pictures of each tracklet
(:mod:`reid_eval.thumbnails`): ``thumbnails`` (the JPEG files' bytes, concatenated, uint8), ``thumbnail_offsets``
(M + 1,) int64 (thumbnail j is ``thumbnails[offsets[j]:offsets[j + 1]]``) and ``thumbnail_counts`` (N,) int64 (how
many of them, in order, belong to each tracklet), described by the ``thumbnails`` metadata entry.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from sinet_timm.paths import replace_file

from .errors import FeatureFileError, OutputExistsError
from .results import EvalResult, versions

__all__ = ['FEATURES_FORMAT', 'RUN_FEATURES_FORMAT', 'FeatureSet', 'check_output_file', 'load_features',
           'save_features', 'save_run_features']

FEATURES_FORMAT = 'sinet-timm-features/1'
RUN_FEATURES_FORMAT = 'sinet-timm-run-features/1'


@dataclass
class FeatureSet:
    """The content of a features file: (N, D) embeddings, their tracklet names and the file's metadata."""

    features: torch.Tensor
    names: list[str]
    metadata: dict[str, str] = field(default_factory=dict)
    path: Path | None = None
    thumbnails: list[list[bytes]] | None = None  # JPEG pictures of each tracklet, when the file holds them
    num_frames: list[int] | None = None  # frames (crops) each embedding used, when the file records them

    @property
    def weights_sha256(self) -> str | None:
        return self.metadata.get('weights_sha256')

    @property
    def model(self) -> str:
        return self.metadata.get('model', 'unknown model')


def _text(value: str) -> str:
    """Metadata text as UTF-8: bytes of a path that are not UTF-8 become backslash escapes (metadata is
    informational; safetensors stores only valid UTF-8)."""
    return os.fsencode(value).decode('utf-8', 'backslashreplace') if isinstance(value, str) else str(value)


def check_output_file(path: Path) -> None:
    """An output file can be written there: not a folder, no file in the way of its folder, a UTF-8 path
    (safetensors writes only those)."""
    if path.is_dir():
        raise FeatureFileError(f'the output {path} is a folder; give a file name, e.g. '
                               f'{path / "features.safetensors"}')
    for parent in path.parents:
        if parent.exists() and not parent.is_dir():
            raise FeatureFileError(f'the output {path} lies under {parent}, which is a file; choose another path')
    try:
        os.fsencode(str(path)).decode('utf-8')
    except UnicodeDecodeError:
        raise FeatureFileError(f'the output path {_text(str(path))} holds bytes that are not UTF-8, which safetensors '
                               'cannot write to; choose a path in UTF-8') from None


def _atomic_write(tensors: dict[str, torch.Tensor], metadata: dict[str, str], path: Path) -> None:
    check_output_file(path)
    tensors = {k: v.contiguous() for k, v in tensors.items()}
    metadata = {k: _text(v) for k, v in metadata.items()}
    # beside, then renamed: a full disk or a read-only folder is one OutputWriteError, an existing file stays whole
    replace_file(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata), errors=(SafetensorError,))


def save_features(
        path: str | Path,
        features: torch.Tensor,
        names: Sequence[str],
        *,
        model: str,
        weights_sha256: str,
        num_frames: Sequence[int] | None = None,
        metadata: dict[str, str] | None = None,
        thumbnails: Sequence[Sequence[bytes]] | None = None,
        overwrite: bool = False,
) -> Path:
    """Write a features file (see the module docstring); refuses to replace an existing file unless ``overwrite``.
    ``thumbnails``: JPEG bytes per tracklet (:func:`reid_eval.thumbnails.make_thumbnails`), or None."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise OutputExistsError(f'{path} exists; pass --overwrite (overwrite=True) to replace it or choose another '
                                'output')
    if features.dim() != 2 or features.shape[0] != len(names):
        raise FeatureFileError(f'features must be (N, D) with N = {len(names)} names, got shape {list(features.shape)}')
    meta = {'format': FEATURES_FORMAT, 'model': model, 'weights_sha256': weights_sha256,
            'names': json.dumps(list(names)), 'embedding_dim': str(features.shape[1]), 'mode': 'dense',
            'created': _dt.datetime.now(_dt.timezone.utc).isoformat(timespec='seconds'),
            'versions': json.dumps(versions())}
    meta.update(metadata or {})
    tensors = {'features': features.float().cpu()}
    if num_frames is not None:
        tensors['num_frames'] = torch.as_tensor(list(num_frames), dtype=torch.int64)
    if thumbnails is not None:
        if len(thumbnails) != len(names):
            raise FeatureFileError(f'{len(thumbnails)} lists of thumbnails for {len(names)} tracklets')
        flat = [bytes(t) for per in thumbnails for t in per]
        offsets = [0]
        for t in flat:
            offsets.append(offsets[-1] + len(t))
        # (one zero byte when there is no thumbnail at all: torch.frombuffer takes no empty buffer)
        tensors['thumbnails'] = torch.frombuffer(bytearray(b''.join(flat)) or bytearray(1), dtype=torch.uint8)
        tensors['thumbnail_offsets'] = torch.tensor(offsets, dtype=torch.int64)
        tensors['thumbnail_counts'] = torch.tensor([len(per) for per in thumbnails], dtype=torch.int64)
        meta.setdefault('thumbnails', json.dumps({'format': 'jpeg', 'per_tracklet': max(
            (len(per) for per in thumbnails), default=0)}))
    _atomic_write(tensors, meta, path)
    return path


def load_features(path: str | Path) -> FeatureSet:
    """Read a features file written by ``sinet-extract`` / :func:`save_features`."""
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
            num_frames = f.get_tensor('num_frames').tolist() if 'num_frames' in keys else None
            thumbs = (tuple(f.get_tensor(k) for k in ('thumbnails', 'thumbnail_offsets', 'thumbnail_counts'))
                      if {'thumbnails', 'thumbnail_offsets', 'thumbnail_counts'} <= keys else None)
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
    bad = (~torch.isfinite(feats).all(dim=1)).nonzero().flatten().tolist()
    if bad:
        shown = ', '.join(str(names[i]) for i in bad[:5]) + (f' and {len(bad) - 5} more' if len(bad) > 5 else '')
        raise FeatureFileError(f'{path} holds NaN or Inf embeddings for {len(bad)} tracklet(s) ({shown}): distances '
                               'to them mean nothing. Extract them again (sinet-extract stops on such values now).')
    return FeatureSet(feats.float(), [str(n) for n in names], meta, path,
                      _split_thumbnails(path, thumbs, len(names)) if thumbs is not None else None,
                      num_frames if num_frames is not None and len(num_frames) == len(names) else None)


def _split_thumbnails(path: Path, tensors: tuple[torch.Tensor, ...], n: int) -> list[list[bytes]]:
    data, offsets, counts = (t.flatten() for t in tensors)
    offsets, counts = offsets.tolist(), counts.tolist()
    if (len(counts) != n or len(offsets) != sum(counts) + 1 or any(b < a for a, b in pairwise(offsets))
            or offsets[0] != 0 or offsets[-1] > data.numel()):
        raise FeatureFileError(f'{path}: its thumbnail tensors do not fit together; extract the features again')
    blob = data.numpy().tobytes()
    flat = [blob[a:b] for a, b in pairwise(offsets)]
    out, k = [], 0
    for c in counts:
        out.append(flat[k:k + c])
        k += c
    return out


def run_features_path(json_path: str | Path, split: int | None = None) -> Path:
    """Where :func:`save_run_features` puts a split's features: ``<json stem>.features.safetensors``, or
    ``<json stem>.split<N>.features.safetensors`` when the run has several splits (``split`` given)."""
    json_path = Path(json_path)
    suffix = f'.split{split}' if split is not None else ''
    return json_path.with_name(f'{json_path.stem}{suffix}.features.safetensors')


def save_run_features(json_path: str | Path, result: EvalResult) -> dict[int, str]:
    """Write the query/gallery features of an evaluation next to its results JSON; returns split -> file name.

    One file per split: ``<json stem>.features.safetensors`` (``<json stem>.split<N>.features.safetensors`` for
    several splits); record the names in the JSON (``EvalResult.to_json(features_files=...)``). Tensors:
    ``query_features``, ``gallery_features`` (the gallery as ranked; for MARS the query tracklets come first),
    ``{query,gallery}_{pids,camids,tracklets}``; tracklet ids index the dataset's query list followed by its
    gallery list (``load_dataset(...).query + .gallery``).
    """
    written: dict[int, str] = {}
    for entry in result.per_split:
        q, g = entry.query, entry.gallery
        if q is None or g is None:
            continue
        path = run_features_path(json_path, entry.split if len(result.per_split) > 1 else None)
        meta = {'format': RUN_FEATURES_FORMAT, 'model': str(result.model), 'weights_sha256': str(result.weights_sha256),
                'dataset': str(result.dataset), 'dataset_format': str(result.dataset_format),
                'root': str(Path(result.root).resolve()), 'split': str(entry.split), 'mode': str(result.mode),
                'tracklet_ids': 'index into load_dataset(dataset_format, root, split).query + .gallery'}
        tensors = {'query_features': q.features, 'gallery_features': g.features, 'query_pids': q.pids,
                   'query_camids': q.camids, 'gallery_pids': g.pids, 'gallery_camids': g.camids,
                   'query_tracklets': q.tracklet_ids, 'gallery_tracklets': g.tracklet_ids}
        _atomic_write(tensors, meta, path)
        written[entry.split] = path.name
    return written
