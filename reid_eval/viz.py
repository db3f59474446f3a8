"""Pictures of what a video re-ID model sees and retrieves (PNG, matplotlib's Agg renderer); the library behind
``sinet-viz``.

``cam``: the tracklet's frames (evenly spaced, ``--frames`` of them, a multiple of 4; repeated when the tracklet
is shorter) go through each model as consecutive 4-frame clips; the activation of a frame is the channel mean
(``--reduce norm``: the L2 norm over channels) of its ``forward_features`` map, bilinearly upsampled to the frame
and min-max normalised per frame, overlaid on the frame. Row 1 shows the frames, then one row per model: with
SBM the later frames of a clip attend to broader regions than the first (the salient-to-broad transition).

``ranks``: reads a ``sinet-eval --save-features`` run: reloads its dataset with ``load_dataset`` (the JSON's
``dataset_format``/``root``/split) and its features from the saved file, and shows each chosen query tracklet (a
few frames) beside its top-k gallery tracklets, ranked by cosine distance with the evaluation's rule (gallery
entries of the query's identity *and* camera are removed); green borders mark the query's identity, red others.

``ranks`` on two ``sinet-extract`` feature files (:func:`plot_matches`; ``--query`` / ``--gallery``, e.g. two
cameras' videos) shows each query tracklet's strip of crops beside its top-k gallery tracklets by cosine distance,
as ``sinet-search`` ranks them. No identities are known, so the colours say something else: a green border marks
mutual nearest neighbours (the gallery tracklet is the query's closest, and the query is the gallery tracklet's
closest among all queries: the usual cue for "same person" across two cameras), grey the others. The strips come
from the thumbnails the files hold (:mod:`reid_eval.thumbnails`); a file without them (made before they existed,
or with ``--thumbnails 0``) is drawn from its frames on disk, found again from its ``input`` metadata (a folder
or list file; a video needs its thumbnails).

Picture sizes are exact (100 dpi): ``cam`` is ``(LABEL_W + F*fw + (F+1)*PAD) x (HEADER_H + TITLE_H + R*fh +
(R+1)*PAD)`` px for F frames of ``fw x fh`` px and R = 1 + models rows; ``ranks`` is ``((k+1)*(n*fw + 2*BORDER) +
(k+2)*PAD) x (HEADER_H + Q*(TITLE_H + fh + 2*BORDER + PAD) + PAD)`` for Q queries, top-k and n frames per
tracklet. An existing PNG is replaced.
"""
from __future__ import annotations

import json
import textwrap
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import timm.data
import torch
import torch.nn.functional as F
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from PIL import Image
from safetensors.torch import load_file

from sinet_timm.paths import replace_file

from .datasets import load_dataset
from .errors import TrackletInputError, VizError
from .extraction import open_frame
from .featurefile import FeatureSet, load_features
from .models import load_model
from .results import model_label
from .search import cosine_distance_matrix, weights_warning
from .thumbnails import decode_thumbnail
from .tracklets import find_tracklets, list_frames

__all__ = [
    'DPI', 'PAD', 'LABEL_W', 'HEADER_H', 'TITLE_H', 'BORDER', 'select_frames', 'activation_maps',
    'cam_picture_size', 'load_run', 'ranks_picture_size', 'plot_cam', 'plot_ranks', 'plot_matches',
    'plot_cmc', 'write_cmc_plot', 'DEFAULT_MATCH_QUERIES',
]

DPI = 100
PAD = 6  # px between cells
LABEL_W = 140  # px of the row-label column (cam)
HEADER_H = 24  # px of the title line
TITLE_H = 16  # px of the column / cell titles
BORDER = 4  # px of the coloured border around a tracklet (ranks)

_QUERY_COLOR = (0.15, 0.35, 0.95)
_HIT_COLOR = (0.0, 0.70, 0.0)
_MISS_COLOR = (0.85, 0.0, 0.0)
_OTHER_COLOR = (0.55, 0.55, 0.55)
DEFAULT_MATCH_QUERIES = 10  # queries drawn by plot_matches when none are chosen (the first ones)


def _load_rgb(path: str, size_hw: tuple[int, int]) -> np.ndarray:
    img = open_frame(path).resize((size_hw[1], size_hw[0]), Image.Resampling.BICUBIC)
    return np.asarray(img, dtype=np.float32) / 255.0


def select_frames(num: int, wanted: int, clip_len: int = 4) -> list[int]:
    """Indices of ``wanted`` evenly spaced frames of a ``num``-frame tracklet (a multiple of ``clip_len``; fewer,
    with repeats, when the tracklet is shorter than ``wanted``), in temporal order."""
    if wanted < clip_len or wanted % clip_len:
        raise VizError(f'--frames must be a positive multiple of {clip_len} (the model sees {clip_len}-frame clips), '
                       f'got {wanted}')
    count = min(wanted, -(-num // clip_len) * clip_len)
    return [int(round(v)) for v in np.linspace(0, num - 1, count)]


def activation_maps(model: torch.nn.Module, clip: torch.Tensor, reduce: str = 'mean') -> torch.Tensor:
    """(T, h, w) activation of each frame of ``clip`` (1, T, 3, H, W): channel mean or L2 norm of
    ``forward_features``."""
    with torch.inference_mode():
        maps = model.forward_features(clip)[0].float()  # (T, C, h, w)
    if maps.dim() != 4:  # e.g. TF-CLIP, whose forward_features are per-frame embeddings (B, T, D)
        raise VizError(f'{type(model).__name__} gives no per-frame maps (its forward_features are '
                       f'{tuple(maps.shape)} per clip, not (T, C, h, w)): cam draws the activation maps of the SINet '
                       'family and other map models')
    if reduce == 'mean':
        return maps.mean(dim=1)
    if reduce == 'norm':
        return maps.norm(dim=1)
    raise VizError(f"unknown --reduce {reduce!r}; use 'mean' or 'norm'")


def _normalise(a: torch.Tensor) -> torch.Tensor:
    """Min-max to [0, 1] per frame (a constant map becomes 0)."""
    flat = a.flatten(1)
    lo, hi = flat.min(dim=1, keepdim=True).values, flat.max(dim=1, keepdim=True).values
    return ((flat - lo) / (hi - lo).clamp_min(1e-12)).view_as(a)


def cam_picture_size(num_frames: int, num_models: int, frame_size: tuple[int, int] = (128, 64)) -> tuple[int, int]:
    """(width, height) in px of a ``cam`` picture."""
    fh, fw = frame_size
    rows = 1 + num_models
    return (LABEL_W + num_frames * fw + (num_frames + 1) * PAD,
            HEADER_H + TITLE_H + rows * fh + (rows + 1) * PAD)


def ranks_picture_size(num_queries: int, topk: int, frames: int = 4,
                       frame_size: tuple[int, int] = (96, 48)) -> tuple[int, int]:
    """(width, height) in px of a ``ranks`` picture."""
    fh, fw = frame_size
    return ((topk + 1) * (frames * fw + 2 * BORDER) + (topk + 2) * PAD,
            HEADER_H + num_queries * (TITLE_H + fh + 2 * BORDER + PAD) + PAD)


def _figure(canvas: np.ndarray) -> Figure:
    h, w = canvas.shape[:2]
    fig = Figure(figsize=(w / DPI, h / DPI), dpi=DPI)
    FigureCanvasAgg(fig)
    fig.figimage(np.clip(canvas, 0.0, 1.0), xo=0, yo=0, origin='upper')
    return fig


def _text(fig, canvas_shape: tuple[int, ...], x: float, y: float, s: str, **kw) -> None:
    """Text at pixel (x, y) from the top-left corner."""
    h, w = canvas_shape[:2]
    kw.setdefault('fontsize', 7)
    fig.text(x / w, 1.0 - y / h, s, **kw)


def _save(fig, output: Path) -> Path:
    """The PNG, written beside and renamed (a failure is an OutputWriteError; an existing file stays whole)."""
    return replace_file(output, lambda tmp: fig.savefig(str(tmp), dpi=DPI, format='png'))


def _load_models(models: Sequence[str], pretrained: bool, seed: int, device: torch.device) -> list[tuple[str, Any]]:
    out = []
    for name in models:
        is_file = Path(name).is_file()
        torch.manual_seed(seed)
        loaded = load_model(name, pretrained=pretrained or is_file)
        label = Path(name).name if is_file else name
        if loaded.random_weights:
            label += ' (random init)'
        out.append((label, loaded.module.to(device).eval()))
    return out


def plot_cam(
        tracklet_dir: str | Path,
        models: Sequence[str],
        output: str | Path,
        *,
        frames: int = 8,
        reduce: str = 'mean',
        pretrained: bool = True,
        seed: int = 0,
        device: torch.device | str = 'cpu',
        frame_size: tuple[int, int] = (128, 64),
        alpha: float = 0.5,
) -> Path:
    """Per-frame activation maps of one tracklet, one row per model, overlaid on the frames (paper Fig. 1/6).

    ``models``: timm names (``sinet_r50.mars``, ``vreid_r50``, ``local-dir:...``) or checkpoint files.
    """
    if not models:
        raise VizError('give at least one model (--models idnet_r50.mars sinet_r50.mars)')
    try:
        paths = list_frames(tracklet_dir)
    except TrackletInputError as e:
        raise VizError(str(e)) from e
    idx = select_frames(len(paths), frames)
    chosen = [paths[i] for i in idx]
    device = torch.device(device)
    loaded = _load_models(models, pretrained, seed, device)
    fh, fw = frame_size
    shown = np.stack([_load_rgb(p, frame_size) for p in chosen])  # (T, fh, fw, 3)
    W, H = cam_picture_size(len(chosen), len(loaded), frame_size)
    canvas = np.ones((H, W, 3), dtype=np.float32)
    top = HEADER_H + TITLE_H

    def put(row: int, col: int, img: np.ndarray) -> None:
        y = top + PAD + row * (fh + PAD)
        x = LABEL_W + PAD + col * (fw + PAD)
        canvas[y:y + fh, x:x + fw] = img

    cmap = matplotlib.colormaps['jet']
    for t in range(len(chosen)):
        put(0, t, shown[t])
    for r, (_, model) in enumerate(loaded, 1):
        transform = timm.data.create_transform(**timm.data.resolve_data_config({}, model=model))
        clip = [transform(open_frame(p)) for p in chosen]
        act = activation_maps(model, torch.stack(clip)[None].to(device), reduce).cpu()
        act = F.interpolate(act[:, None], size=(fh, fw), mode='bilinear', align_corners=False)[:, 0]
        act = _normalise(act).numpy()
        for t in range(len(chosen)):
            heat = cmap(act[t])[..., :3].astype(np.float32)
            put(r, t, (1.0 - alpha) * shown[t] + alpha * heat)

    fig = _figure(canvas)
    name = Path(tracklet_dir).name
    how = 'channel mean' if reduce == 'mean' else 'channel L2 norm'
    header = (f'{name}: {len(paths)} frames, {len(chosen)} shown as {len(chosen) // 4} clips of 4; '
              f'activation = {how} of forward_features, min-max per frame')
    lines = textwrap.wrap(header, max(20, canvas.shape[1] // 5))  # fit the figure's width (about 5 px a char)
    _text(fig, canvas.shape, PAD, HEADER_H / 2, '\n'.join(lines[:2]), fontsize=7 if len(lines) > 1 else 8,
          va='center')
    for t, i in enumerate(idx):
        _text(fig, canvas.shape, LABEL_W + PAD + t * (fw + PAD) + fw / 2, HEADER_H + TITLE_H / 2,
              f'clip {t // 4 + 1} · t{t % 4 + 1} (#{i + 1})', ha='center', va='center', fontsize=6)
    labels = ['frames'] + [label for label, _ in loaded]
    for r, label in enumerate(labels):
        y = top + PAD + r * (fh + PAD) + fh / 2
        _text(fig, canvas.shape, PAD, y, '\n'.join(textwrap.wrap(label, 22, break_on_hyphens=False)) or label,
              va='center', fontsize=7)
    return _save(fig, output)


# --------------------------------------------------------------------------------------------------------
# ranks


def load_run(path: str | Path) -> dict[str, Any]:
    """A sinet-eval results JSON, or a :class:`VizError` saying why it is not one."""
    path = Path(path)
    if not path.is_file():
        raise VizError(f'run file {path} does not exist; make one with sinet-eval (--save-features for ranks)')
    try:
        summary = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise VizError(f'{path} is not a sinet-eval results JSON: it is not JSON text ({e})') from None
    if not isinstance(summary, dict) or not isinstance(summary.get('per_split'), list):
        raise VizError(f'{path} is not a sinet-eval results JSON (no per_split results)')
    return summary


def _run_features(run_json: Path, summary: dict[str, Any], split_index: int) -> tuple[dict[str, Any], Path]:
    splits = summary.get('per_split') or []
    if not splits or 'dataset_format' not in summary or 'root' not in summary:
        raise VizError(f'{run_json} is not a sinet-eval results JSON (no per_split / dataset_format / root)')
    if not 0 <= split_index < len(splits):
        raise VizError(f'--split-index {split_index} is out of range: the run has {len(splits)} split(s)')
    entry = splits[split_index]
    name = entry.get('features_file') or (summary.get('features_file') if len(splits) == 1 else None)
    if not name:
        raise VizError(f'{run_json} has no saved features: rerun sinet-eval with --save-features (it writes '
                       f'{run_json.stem}.features.safetensors next to the JSON)')
    path = Path(name) if Path(name).is_absolute() else run_json.parent / name
    if not path.is_file():
        raise VizError(f'the features file {path} recorded in {run_json} is missing; rerun sinet-eval with '
                       '--save-features')
    return entry, path


def plot_ranks(
        run_json: str | Path,
        output: str | Path,
        *,
        queries: Sequence[int] = (0,),
        topk: int = 5,
        frames: int = 4,
        split_index: int = 0,
        frame_size: tuple[int, int] = (96, 48),
) -> Path:
    """Query tracklets beside their top-k gallery tracklets, green = same identity, red = other (paper Fig. 7)."""
    run_json = Path(run_json)
    summary = load_run(run_json)
    entry, feat_path = _run_features(run_json, summary, split_index)
    if topk < 1 or frames < 1:
        raise VizError('--topk and --frames must be >= 1')
    try:
        t = load_file(str(feat_path))
    except Exception as e:  # safetensors' own error types for damaged files
        raise VizError(f'{feat_path} is not a readable features file ({e}); rerun sinet-eval with --save-features') \
            from None
    bad = [k for k in ('query_features', 'gallery_features') if k in t and not bool(torch.isfinite(t[k]).all())]
    if bad:
        raise VizError(f'{feat_path}: {bad[0]} holds NaN or Inf values, so its distances mean nothing; rerun '
                       'sinet-eval (it now stops on such values)')
    need = {'query_features', 'gallery_features', 'query_pids', 'query_camids', 'gallery_pids', 'gallery_camids',
            'query_tracklets', 'gallery_tracklets'}
    if not need <= set(t):
        raise VizError(f'{feat_path} lacks {", ".join(sorted(need - set(t)))}: not a sinet-eval --save-features file')
    nq = t['query_features'].shape[0]
    bad = [q for q in queries if not 0 <= q < nq]
    if bad:
        raise VizError(f'query index {bad[0]} is out of range: the run has {nq} queries (0..{nq - 1})')
    if not queries:
        raise VizError('give at least one query index (--queries 0 3)')

    data = load_dataset(summary['dataset_format'], summary['root'], int(entry['split']))
    tracklets = list(data.query) + list(data.gallery)
    ids = torch.cat([t['query_tracklets'], t['gallery_tracklets']])
    if int(ids.max()) >= len(tracklets):
        raise VizError(f'the dataset at {summary["root"]} has {len(tracklets)} tracklets but the run refers to '
                       f'tracklet {int(ids.max())}: it is not the dataset this run evaluated')
    stored = torch.cat([t['query_pids'], t['gallery_pids']]).tolist()
    if [tracklets[i][1] for i in ids.tolist()] != stored:
        raise VizError(f'the identities of the dataset at {summary["root"]} differ from the ones saved by the run: '
                       'it is not the dataset this run evaluated')

    q_pids, q_cams = t['query_pids'].tolist(), t['query_camids'].tolist()
    g_pids, g_cams = np.asarray(t['gallery_pids']), np.asarray(t['gallery_camids'])
    dist = cosine_distance_matrix(t['query_features'][list(queries)], t['gallery_features']).numpy()

    fh, fw = frame_size
    cell_w, cell_h = frames * fw + 2 * BORDER, fh + 2 * BORDER
    W, H = ranks_picture_size(len(queries), topk, frames, frame_size)
    canvas = np.ones((H, W, 3), dtype=np.float32)
    titles: list[tuple[float, float, str]] = []

    def cell(tracklet_id: int, color: tuple[float, float, float]) -> np.ndarray:
        paths = tracklets[tracklet_id][0]
        pick = [int(round(v)) for v in np.linspace(0, len(paths) - 1, frames)]
        img = np.empty((cell_h, cell_w, 3), dtype=np.float32)
        img[:] = color
        img[BORDER:BORDER + fh, BORDER:BORDER + frames * fw] = np.concatenate(
            [_load_rgb(paths[i], frame_size) for i in pick], axis=1)
        return img

    for row, q in enumerate(queries):
        keep = ~((g_pids == q_pids[q]) & (g_cams == q_cams[q]))
        cand = np.flatnonzero(keep)
        order = cand[np.argsort(dist[row, cand], kind='stable')][:topk]
        y = HEADER_H + row * (TITLE_H + cell_h + PAD) + TITLE_H
        canvas[y:y + cell_h, PAD:PAD + cell_w] = cell(int(t['query_tracklets'][q]), _QUERY_COLOR)
        titles.append((PAD, y - TITLE_H / 2, f'query {q}: id {q_pids[q]}, cam {q_cams[q]}'))
        for r, j in enumerate(order.tolist()):
            x = PAD + (r + 1) * (cell_w + PAD)
            color = _HIT_COLOR if g_pids[j] == q_pids[q] else _MISS_COLOR
            canvas[y:y + cell_h, x:x + cell_w] = cell(int(t['gallery_tracklets'][j]), color)
            titles.append((x, y - TITLE_H / 2, f'{r + 1}. id {g_pids[j]} cam {g_cams[j]}  d={dist[row, j]:.4f}'))

    fig = _figure(canvas)
    _text(fig, canvas.shape, PAD, HEADER_H / 2,
          f'{model_label(summary)} on {summary.get("dataset")} (split {entry["split"]}): top-{topk} of '
          f'{len(g_pids)} gallery tracklets by cosine distance d; same identity+camera removed; green = same identity',
          fontsize=8, va='center')
    for x, y, s in titles:
        _text(fig, canvas.shape, x, y, s, va='center', fontsize=6.5)
    return _save(fig, output)


# --------------------------------------------------------------------------------------------------------
# matches between two feature files


def _strip(images: Sequence[np.ndarray], frames: int, frame_size: tuple[int, int]) -> np.ndarray:
    """``frames`` of ``images`` (evenly spaced, repeated when there are fewer) side by side at ``frame_size``, float
    RGB in [0, 1]."""
    fh, fw = frame_size
    pick = [int(round(v)) for v in np.linspace(0, len(images) - 1, frames)]
    cells = []
    for i in pick:
        img = Image.fromarray(images[i])
        if img.size != (fw, fh):
            img = img.resize((fw, fh), Image.Resampling.BICUBIC)
        cells.append(np.asarray(img, dtype=np.float32) / 255.0)
    return np.concatenate(cells, axis=1)


class _Pictures:
    """The pictures of each tracklet of a feature file: its stored thumbnails, or else its frames on disk."""

    def __init__(self, fs: FeatureSet, role: str):
        self.fs, self.role, self._frames = fs, role, None

    def _frames_on_disk(self) -> dict[str, list[str]]:
        if self._frames is None:
            meta, path = self.fs.metadata, self.fs.path
            source = meta.get('input')
            if meta.get('input_kind') == 'video' or not source:
                what = 'was made from a video' if source else 'records no input'
                raise VizError(f'the {self.role} file {path} holds no thumbnails and {what}, so there is nothing to '
                               'draw: extract it again with sinet-extract (--thumbnails 4, the default)')
            try:
                found = find_tracklets(source)
            except TrackletInputError as e:
                raise VizError(f'the {self.role} file {path} holds no thumbnails and its frames cannot be read '
                               f'again: {e}. Extract it again with sinet-extract (it stores thumbnails)') from None
            self._frames = {t.name: t.frames for t in found}
        return self._frames

    def images(self, i: int, count: int) -> list[np.ndarray]:
        """Pictures of tracklet ``i``: its thumbnails, or ``count`` of its frames on disk, evenly spaced."""
        thumbs = self.fs.thumbnails[i] if self.fs.thumbnails is not None else None
        if thumbs:
            return [decode_thumbnail(b) for b in thumbs]
        name = self.fs.names[i]
        paths = self._frames_on_disk().get(name)
        if not paths:
            raise VizError(f'tracklet {name!r} of the {self.role} file {self.fs.path} is no longer in '
                           f'{self.fs.metadata.get("input")}; extract the file again')
        pick = sorted({int(round(v)) for v in np.linspace(0, len(paths) - 1, count)})
        return [np.asarray(open_frame(paths[k])) for k in pick]


def _query_indices(fs: FeatureSet, queries: Sequence[int | str] | None) -> list[int]:
    if queries is None:
        return list(range(min(DEFAULT_MATCH_QUERIES, len(fs.names))))
    if not queries:
        raise VizError('give at least one query (--queries 0 3, or names such as cam1:7)')
    index = {n: i for i, n in enumerate(fs.names)}
    out = []
    for q in queries:
        if isinstance(q, str) and q in index:
            out.append(index[q])
            continue
        try:
            i = int(q)
        except (TypeError, ValueError):
            shown = ', '.join(fs.names[:5]) + (', ...' if len(fs.names) > 5 else '')
            raise VizError(f'query {q!r} is neither a tracklet name of {fs.path} ({shown}) nor an index') from None
        if not 0 <= i < len(fs.names):
            raise VizError(f'query index {i} is out of range: {fs.path} has {len(fs.names)} tracklets '
                           f'(0..{len(fs.names) - 1})')
        out.append(i)
    return out


def plot_matches(
        query: str | Path | FeatureSet,
        gallery: str | Path | FeatureSet,
        output: str | Path,
        *,
        queries: Sequence[int | str] | None = None,
        topk: int = 5,
        frames: int = 4,
        frame_size: tuple[int, int] = (96, 48),
) -> Path:
    """Query tracklets of one feature file beside their top-k tracklets of another (cosine distance, as
    ``sinet-search``), each as a strip of ``frames`` crops; green = mutual nearest neighbours (see the module
    docstring). ``queries``: indices or names (default: the first :data:`DEFAULT_MATCH_QUERIES`). The picture's
    size is :func:`ranks_picture_size`."""
    q = query if isinstance(query, FeatureSet) else load_features(query)
    g = gallery if isinstance(gallery, FeatureSet) else load_features(gallery)
    if topk < 1 or frames < 1:
        raise VizError('--topk and --frames must be >= 1')
    if q.features.shape[1] != g.features.shape[1]:
        raise VizError(f'query embeddings are {q.features.shape[1]}-d but gallery embeddings '
                       f'{g.features.shape[1]}-d: they were made by different models')
    if not g.names:
        raise VizError(f'the gallery file {g.path} holds no tracklet')
    if (warning := weights_warning(q, g)) is not None:
        warnings.warn(warning, stacklevel=2)
    chosen = _query_indices(q, queries)
    dist = cosine_distance_matrix(q.features, g.features).numpy()
    best_g = dist.argmin(axis=1)  # each query's closest gallery tracklet
    best_q = dist.argmin(axis=0)  # each gallery tracklet's closest query
    qpics, gpics = _Pictures(q, 'query'), _Pictures(g, 'gallery')
    k = min(topk, len(g.names))

    fh, fw = frame_size
    cell_w, cell_h = frames * fw + 2 * BORDER, fh + 2 * BORDER
    W, H = ranks_picture_size(len(chosen), k, frames, frame_size)
    canvas = np.ones((H, W, 3), dtype=np.float32)
    titles: list[tuple[float, float, str]] = []

    def cell(images: list[np.ndarray], color: tuple[float, float, float]) -> np.ndarray:
        img = np.empty((cell_h, cell_w, 3), dtype=np.float32)
        img[:] = color
        img[BORDER:BORDER + fh, BORDER:BORDER + frames * fw] = _strip(images, frames, frame_size)
        return img

    num_frames = q.num_frames
    for row, i in enumerate(chosen):
        order = np.argsort(dist[i], kind='stable')[:k]
        y = HEADER_H + row * (TITLE_H + cell_h + PAD) + TITLE_H
        canvas[y:y + cell_h, PAD:PAD + cell_w] = cell(qpics.images(i, frames), _QUERY_COLOR)
        n = f', {num_frames[i]} frames' if num_frames is not None else ''
        titles.append((PAD, y - TITLE_H / 2, f'query {q.names[i]}{n}'))
        for r, j in enumerate(order.tolist()):
            x = PAD + (r + 1) * (cell_w + PAD)
            mutual = best_g[i] == j and best_q[j] == i
            canvas[y:y + cell_h, x:x + cell_w] = cell(gpics.images(j, frames), _HIT_COLOR if mutual else _OTHER_COLOR)
            titles.append((x, y - TITLE_H / 2, f'{r + 1}. {g.names[j]}  d={dist[i, j]:.4f}'))

    fig = _figure(canvas)
    qn = q.path.name if q.path else 'query'
    gn = g.path.name if g.path else 'gallery'
    model = q.metadata.get('weights') or q.model
    header = (f'{model}: top-{k} of {len(g.names)} tracklets of {gn} for {len(chosen)} of {len(q.names)} of {qn} by '
              'cosine distance d; green = mutual nearest neighbours')
    _text(fig, canvas.shape, PAD, HEADER_H / 2, header, fontsize=8 if len(header) * 5 < W else 6.5, va='center')
    for x, y, s in titles:
        _text(fig, canvas.shape, x, y, s, va='center', fontsize=6.5)
    return _save(fig, output)


# --------------------------------------------------------------------------------------------------------
# CMC


def plot_cmc(summary: dict[str, Any], output: str | Path, max_rank: int = 50) -> Path:
    """CMC curve of a sinet-eval result (mean over splits), with the paper's CMC points when known."""
    curves = [s['metrics']['cmc'] for s in summary.get('per_split') or [] if s.get('metrics', {}).get('cmc')]
    if not curves:
        raise VizError('the results hold no CMC curve (metrics.cmc): rerun sinet-eval')
    n = min(min(len(c) for c in curves), max_rank)
    cmc = np.mean([c[:n] for c in curves], axis=0)
    ranks = np.arange(1, n + 1)
    fig = Figure(figsize=(6.4, 4.2), dpi=DPI)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    m_ap = (summary.get('metrics') or {}).get('mAP')
    label = 'ours' + (f' (mAP {m_ap:.1f})' if m_ap is not None else '')
    ax.plot(ranks, cmc, '-', color='tab:blue', lw=2, label=label)
    for r in (1, 5, 10, 20):
        if r <= n:
            ax.plot(r, cmc[r - 1], 'o', color='tab:blue')
            ax.annotate(f'{cmc[r - 1]:.1f}', (r, cmc[r - 1]), textcoords='offset points', xytext=(4, -11),
                        fontsize=8)
    paper = summary.get('paper') or {}
    pts = [(r, paper[f'rank{r}']) for r in (1, 5, 10, 20) if f'rank{r}' in paper and r <= n]
    if pts:
        ax.plot(*zip(*pts, strict=True), 'x', color='k', ms=8, mew=2, label='paper')
    ax.set_xlabel('rank')
    ax.set_ylabel('matching rate (%)')
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlim(0.5, max(n, 2) + 0.5)
    low = min([float(cmc.min())] + [v for _, v in pts])
    ax.set_ylim(max(0.0, min(80.0, 10.0 * np.floor((low - 5.0) / 10.0))), 101.0)
    ax.grid(True, alpha=0.3)
    ax.legend(loc='lower right')
    which = f' ({len(curves)} splits)' if len(curves) > 1 else ''
    ax.set_title(f'CMC: {model_label(summary)} on {summary.get("dataset")}, {summary.get("mode")}{which}', fontsize=10)
    fig.tight_layout()
    return _save(fig, output)


def write_cmc_plot(json_path: str | Path, summary: dict[str, Any]) -> Path | None:
    """Write ``<json stem>.cmc.png`` next to a sinet-eval JSON and record it as ``summary['cmc_plot']`` (the file
    name, relative to the JSON's folder). Returns None when there is no curve."""
    if not any((s.get('metrics') or {}).get('cmc') for s in summary.get('per_split') or []):
        return None
    json_path = Path(json_path)
    path = plot_cmc(summary, json_path.with_name(f'{json_path.stem}.cmc.png'))
    summary['cmc_plot'] = path.name
    return path
