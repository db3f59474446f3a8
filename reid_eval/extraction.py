"""Feature extraction: clips batched across tracklets, decoded by one worker pool, cached and resumable.

Every tracklet is turned into clips by the test protocol (:mod:`reid_eval.protocol`). All clips of all tracklets
are batched together (the released code ran one tracklet per batch) and decoded by DataLoader workers. Clip
embeddings are written to the feature cache (:mod:`reid_eval.cache`) in shards with an atomic rename, so an
interrupted run resumes from the last finished shard, and a rerun with the same weights, dataset, split and mode
reuses the features. With ``torchrun`` the shards are divided between ranks; rank 0 gathers them from the cache.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import re
import sys
import time
import warnings

try:
    import resource
except ImportError:  # not on Windows: there is no file size limit to check there
    resource = None
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import timm.data
import torch
import torch.distributed as dist
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from ._checks import is_int, is_number
from .cache import CacheWarning, FeatureCache, shard_range
from .errors import (
    DatasetLayoutError,
    EvalError,
    FrameReadError,
    ModelOutputError,
    NonFiniteFeaturesError,
    TrackletInputError,
    WorkersDiedError,
    WorkersStuckError,
)
from .models import check_materialised, nonfinite_weights
from .protocol import make_clips

__all__ = [
    'AMP_CHOICES', 'ClipDataset', 'ExtractPlan', 'ExtractStats', 'FrameFailure', 'FrameImage', 'FramePreprocess',
    'check_frame_image', 'collate_clips', 'default_batch_clips', 'extract_features', 'frame_image_to_pil',
    'open_frame', 'reporting_worker_death', 'resolve_amp',
]

# An in-memory frame (see :func:`frame_image_to_pil`): a PIL image, an (H, W, 3) uint8 RGB array, or a tensor:
# uint8 (3, H, W) or (H, W, 3), or floating-point (3, H, W) in [0, 1].
FrameImage = Image.Image | np.ndarray | torch.Tensor
Tracklet = tuple[Sequence[Any], int, int]  # (frame paths or in-memory frames, pid, camid), as torchreid's datasets give
AMP_CHOICES = ('auto', 'bf16', 'fp16', 'off')

_WORKER_DEATH = re.compile(r'DataLoader worker \(pid[^\n]*')  # torch's report, whichever of its forms


WORKER_TIMEOUT_S = 120  # seconds the main process waits for a batch before saying the workers are stuck


def check_worker_transfer(workers: int, batch_bytes: int) -> None:
    """DataLoader workers hand each batch over in a shared-memory file: under a file size limit (``ulimit -f``)
    smaller than a batch they fail in a background thread and the main process would wait forever. Say so first."""
    if not workers or resource is None:
        return
    soft = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    if soft != resource.RLIM_INFINITY and soft < batch_bytes:
        raise WorkersStuckError(
            f'the file size limit (ulimit -f: {soft} bytes) is smaller than one batch of frames ({batch_bytes} '
            'bytes), which the frame-decoding workers pass to the main process as shared-memory files: raise it '
            '(ulimit -f unlimited) or decode in the main process with --workers 0 (workers=0)')


@contextlib.contextmanager
def reporting_worker_death(advice: str | Callable[[], str]) -> Iterator[None]:
    """Turn torch's report of a dead DataLoader worker into a :class:`WorkersDiedError` carrying ``advice``
    (a callable is asked when it happens). torch raises it from a SIGCHLD handler, i.e. wherever the main
    process happens to be (often deep inside the model's forward), so everything that runs while the loader's
    workers live goes under this. Nested, the outermost advice wins: it knows what a rerun can resume.

    (torch's report is a plain RuntimeError: recognising it by its text is the only way there is.)"""
    try:
        yield
    except RuntimeError as e:
        if 'DataLoader timed out after' in str(e):
            raise WorkersStuckError(
                f'the frame-decoding workers handed over no batch for {WORKER_TIMEOUT_S} s: they are stuck or cannot '
                'pass batches through shared memory (full or limited: check `df -h /dev/shm` and `ulimit -f`); '
                'decode in the main process with --workers 0 (workers=0)') from None
        if isinstance(e, WorkersDiedError):
            report = e.report
        elif m := _WORKER_DEATH.search(str(e)):
            report = m.group().strip()
        else:
            raise
        raise WorkersDiedError(report, advice() if callable(advice) else advice) from None


class FrameFailure(NamedTuple):
    """A frame that could not be read, handed back as data by a DataLoader worker (an exception raised in a worker
    reaches the main process as text only)."""

    path: str
    reason: str


def open_frame(path: str) -> Image.Image:
    """An RGB image, or :class:`FrameReadError` naming the file."""
    try:
        with Image.open(path) as img:
            return img.convert('RGB')
    except Image.DecompressionBombError as e:  # not an OSError: PIL's guard against images of absurd size
        size = str(e).split(',')[0].removeprefix('Image size').strip()  # '(N pixels) exceeds limit of M pixels'
        raise FrameReadError(path, f'its size {size}: PIL refuses to decode it (a guard against decompression '
                                   'bombs)', 'Frames are person crops: crop or downscale it') from None
    except (OSError, SyntaxError, ValueError) as e:
        raise FrameReadError(path, str(e)) from None


def check_frame_image(frame: Any) -> str | None:
    """What is wrong with ``frame`` as an in-memory frame (None when :func:`frame_image_to_pil` takes it). A float
    tensor is checked for values outside [0, 1] here, so a worker never meets a frame it cannot convert."""
    if isinstance(frame, Image.Image):
        return None
    if isinstance(frame, np.ndarray):
        if frame.dtype != np.uint8:
            return (f'a {frame.dtype} array; arrays must be uint8 (H, W, 3) RGB (convert floats in [0, 1] with '
                    '(a * 255).round().astype(np.uint8))')
        if frame.ndim != 3 or frame.shape[2] != 3:
            return f'an array of shape {tuple(frame.shape)}; arrays must be (H, W, 3) RGB'
        return None if frame.shape[0] and frame.shape[1] else f'an empty array of shape {tuple(frame.shape)}'
    if isinstance(frame, torch.Tensor):
        shape = tuple(frame.shape)
        if frame.dim() != 3 or 3 not in (shape[0], shape[2]) or (shape[0] != 3 and frame.is_floating_point()):
            return (f'a tensor of shape {shape}; tensors must be (3, H, W) (or uint8 (H, W, 3))')
        if frame.numel() == 0:
            return f'an empty tensor of shape {shape}'
        if frame.is_floating_point():
            lo, hi = float(frame.min()), float(frame.max())
            if not (0.0 <= lo and hi <= 1.0):  # also catches NaN
                return (f'a {frame.dtype} tensor with values in [{lo:g}, {hi:g}]; floating-point tensors must lie '
                        'in [0, 1] (ToTensor scale)')
            return None
        if frame.dtype != torch.uint8:
            return f'a {frame.dtype} tensor; tensors must be uint8, or floating-point in [0, 1]'
        return None
    return f'a {type(frame).__name__}; expected a frame path, a PIL image, a uint8 array or a tensor'


def frame_image_to_pil(frame: FrameImage) -> Image.Image:
    """An in-memory frame as the RGB PIL image that :func:`open_frame` gives for the same pixels on disk, so the
    preprocessing after it (PIL resize, then :class:`FramePreprocess`) is the same, bit for bit.

    * a PIL image: converted to RGB, as :func:`open_frame` converts what it reads;
    * a NumPy array: (H, W, 3) uint8, RGB channel order (OpenCV's frames are BGR: pass ``frame[..., ::-1]``);
    * a tensor: uint8 (3, H, W) (torchvision's layout) or (H, W, 3); a (3, H, 3) uint8 tensor is read as
      (3, H, W). Floating-point tensors are (3, H, W) in [0, 1] and become uint8 by ``round(x * 255)``: exact
      for tensors made as ``uint8 / 255`` (``ToTensor``), otherwise the nearest 8-bit value, as any image file
      would store them.

    Check the frame first with :func:`check_frame_image` (this function assumes a valid one).
    """
    if isinstance(frame, Image.Image):
        return frame.convert('RGB')
    if isinstance(frame, torch.Tensor):
        t = frame.detach().cpu()
        if t.is_floating_point():
            t = t.to(torch.float32).mul(255).round_().clamp_(0, 255).to(torch.uint8)
        if t.shape[0] == 3:
            t = t.permute(1, 2, 0)
        frame = t.contiguous().numpy()
    return Image.fromarray(np.ascontiguousarray(frame), 'RGB')


def collate_clips(items: list[tuple[Any, int]]) -> tuple[torch.Tensor, torch.Tensor] | tuple[FrameFailure, None]:
    """Stack ``(clip, index)`` items; a batch with an unreadable frame becomes ``(FrameFailure, None)``."""
    for x, _ in items:
        if isinstance(x, FrameFailure):
            return x, None
    return torch.stack([x for x, _ in items]), torch.tensor([i for _, i in items])


class ClipDataset(Dataset):
    """Decodes and preprocesses the frames of one clip per item: returns ((T, 3, H, W) tensor, clip index), or a
    :class:`FrameFailure` in place of the tensor (see :func:`collate_clips`).

    A clip entry is a frame path (read with :func:`open_frame`) or an index into ``images``, the in-memory frames
    (converted with :func:`frame_image_to_pil`); both then go through the same ``transform``."""

    def __init__(self, clips: Sequence[tuple[str | int, ...]], transform: Callable,
                 images: Sequence[FrameImage] | None = None):
        self.clips = clips
        self.transform = transform
        self.images = images

    def __len__(self) -> int:
        return len(self.clips)

    def _read(self, ref: str | int) -> Image.Image:
        return open_frame(ref) if isinstance(ref, str) else frame_image_to_pil(self.images[ref])

    def __getitem__(self, i: int) -> tuple[torch.Tensor | FrameFailure, int]:
        try:
            return torch.stack([self.transform(self._read(p)) for p in self.clips[i]]), i
        except FrameReadError as e:
            return FrameFailure(e.path, e.reason), i


@dataclass(frozen=True)
class FramePreprocess:
    """timm's eval preprocessing split in two: resize/crop to a uint8 tensor in the DataLoader workers, then
    scaling and normalisation on the model's device.

    Collate, pinning and the host-to-device copy move a quarter of the bytes of float32 frames (a 64-clip batch
    of 256x128 frames: 25 MB instead of 100 MB), and the workers skip two float passes per frame. The numbers are
    timm's ``ToTensor`` + ``Normalize`` exactly: the same operations in the same order.
    """

    to_uint8: Callable  # PIL image -> (3, H, W) uint8 tensor
    mean: tuple[float, ...]
    std: tuple[float, ...]
    data_config: dict[str, Any] = field(default_factory=dict, compare=False)  # the timm data config it came from
    _stats: dict = field(default_factory=dict, init=False, repr=False, compare=False)  # device -> (mean, std)

    @classmethod
    def for_model(cls, model: torch.nn.Module) -> FramePreprocess:
        """The preprocessing of the model's data config (``timm.data.resolve_data_config``); a ``torch.compile``d
        model is read through to the module it wraps."""
        return cls.from_data_config(timm.data.resolve_data_config({}, model=getattr(model, '_orig_mod', model)))

    @classmethod
    def from_data_config(cls, cfg: dict[str, Any]) -> FramePreprocess:
        """The preprocessing of a timm data config (``input_size``, ``interpolation``, ``mean``, ``std``, ...);
        a field that cannot work is an :class:`EvalError` naming it."""
        check_data_config(cfg)
        return cls(timm.data.create_transform(**cfg, normalize=False), tuple(cfg['mean']), tuple(cfg['std']),
                   dict(cfg))

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 frames (..., 3, H, W) -> float32, scaled to [0, 1] and normalised, on ``x``'s device."""
        stats = self._stats.get(x.device)
        if stats is None:  # made once per device: a host-to-device copy of a new tensor would wait for the GPU
            stats = self._stats[x.device] = tuple(
                torch.tensor(v, dtype=torch.float32, device=x.device).reshape(3, 1, 1) for v in (self.mean, self.std))
        mean, std = stats
        return x.to(torch.float32).div_(255).sub_(mean).div_(std)


INTERPOLATIONS = ('nearest', 'bilinear', 'bicubic', 'box', 'hamming', 'lanczos')  # PIL's, as timm names them


def check_data_config(cfg: dict[str, Any]) -> None:
    """Refuse a timm data config that would fail deep inside the transforms or silently preprocess wrongly."""
    def bad(key: str, expected: str) -> EvalError:
        return EvalError(f'data_config {key}={cfg.get(key)!r} cannot work: expected {expected}')

    size = cfg.get('input_size')
    if not (isinstance(size, (tuple, list)) and len(size) == 3 and all(is_int(v) and v >= 1 for v in size)
            and size[0] == 3):
        raise bad('input_size', '(3, H, W) with positive integer H and W, e.g. (3, 256, 128)')
    for key in ('mean', 'std'):
        v = cfg.get(key)
        if not (isinstance(v, (tuple, list)) and len(v) == 3 and all(is_number(x) for x in v)):
            raise bad(key, 'three finite numbers, one per RGB channel, e.g. (0.485, 0.456, 0.406)')
        if key == 'std' and min(v) <= 0:
            raise bad(key, 'three positive numbers')
    if cfg.get('interpolation') not in INTERPOLATIONS:
        raise bad('interpolation', f'one of {", ".join(INTERPOLATIONS)}')
    crop = cfg.get('crop_pct', 1.0)
    if not (is_number(crop) and crop > 0):
        raise bad('crop_pct', 'a positive number (1.0: no crop)')


@dataclass
class ExtractPlan:
    """The clips of a list of tracklets, which tracklet each clip belongs to, and the tracklets' names.

    A clip holds frame paths, or for tracklets given as in-memory frames indices into ``images`` (the frames of
    all such tracklets, in order). Indices of a tracklet increase with time, so the protocol's sort of the padded
    frame list (:func:`~reid_eval.protocol.loop_pad`) keeps them in temporal order, as it keeps zero-padded frame
    names: the same frames as files named ``000001.png ...`` give the same clips."""

    clips: list[tuple[str | int, ...]]
    owner: list[int]
    num_tracklets: int
    mode: str
    clip_len: int = 4
    names: list[str] | None = None  # for messages (default: the tracklet's index)
    images: list[FrameImage] | None = None  # in-memory frames the clips' integer entries index
    camids: list[int] | None = None  # each tracklet's camera id, for models that take them (None: not passed)

    @classmethod
    def build(cls, tracklets: Sequence[Tracklet], mode: str, clip_len: int = 4,
              names: Sequence[str] | None = None, cameras: bool = False) -> ExtractPlan:
        """The clips of ``tracklets`` under protocol ``mode``. A tracklet's frames are all paths (``str``) or all
        in-memory frames (:data:`FrameImage`, checked here with :func:`check_frame_image`: a bad one is a
        :class:`~reid_eval.errors.TrackletInputError` naming the tracklet and frame). ``cameras``: keep each
        tracklet's camera id, which the model then gets with every clip (``model(x, camids=...)``)."""
        clips, owner = [], []
        images: list[FrameImage] = []

        def label(t: int) -> str:
            return repr(names[t]) if names is not None else f'#{t}'

        for t, (frames, pid, _camid) in enumerate(tracklets):
            if len(frames) == 0:
                raise EvalError(f'tracklet {t} (identity {pid}) has no frames; fix or remove it from the dataset')
            if not all(isinstance(f, str) for f in frames):
                if any(isinstance(f, str) for f in frames):
                    raise TrackletInputError(f'tracklet {label(t)} mixes frame paths and in-memory frames; give '
                                             'one kind per tracklet')
                for k, f in enumerate(frames):
                    if (why := check_frame_image(f)) is not None:
                        raise TrackletInputError(f'frame {k} of tracklet {label(t)} is {why}')
                start = len(images)
                images.extend(frames)
                frames = list(range(start, len(images)))
            for c in make_clips(frames, mode, clip_len):
                clips.append(c)
                owner.append(t)
        camids = None
        if cameras:
            camids = [c for _, _, c in tracklets]
            if not all(is_int(c) and c >= 0 for c in camids):
                raise TrackletInputError(f'camera ids must be integers >= 0, got {sorted(set(map(repr, camids)))[:5]}')
        return cls(clips, owner, len(tracklets), mode, clip_len, list(names) if names is not None else None,
                   images or None, [int(c) for c in camids] if camids is not None else None)

    def name(self, t: int) -> str:
        return self.names[t] if self.names is not None else f'#{t}'

    def digest(self) -> str:
        """The clips (which frames, in which order, of which tracklet), as a hash."""
        h = hashlib.sha256()
        for o, c in zip(self.owner, self.clips, strict=True):
            h.update(f'{o}|{"|".join(map(str, c))}\n'.encode('utf-8', 'surrogateescape'))
        if self.camids is not None:  # the model sees them: they are part of what the features are
            h.update(f'cameras:{",".join(map(str, self.camids))}'.encode())
        return h.hexdigest()

    def files_digest(self, lo: int = 0, hi: int | None = None) -> str:
        """The frame files of clips ``lo..hi`` as they are on disk: path, size, modification and status-change
        time and inode of each, as a hash. A frame replaced or rewritten in place changes it, even when its
        modification time is set back (``touch -r``, ``cp -p``, ``rsync -t``): the status-change time cannot be
        set back."""
        h = hashlib.sha256()
        for path in dict.fromkeys(p for c in self.clips[lo:hi] for p in c if isinstance(p, str)):
            try:
                st = os.stat(path)
            except OSError as e:
                raise DatasetLayoutError(f'frame {path} cannot be read: {e.strerror or e}') from None
            h.update(f'{path}|{st.st_size}|{st.st_mtime_ns}|{st.st_ctime_ns}|{st.st_ino}\n'.encode(
                'utf-8', 'surrogateescape'))
        return h.hexdigest()

    @property
    def num_frames(self) -> int:
        return sum(len(c) for c in self.clips)


@dataclass
class ExtractStats:
    frames: int = 0
    clips: int = 0
    seconds: float = 0.0
    model_seconds: float = 0.0
    cached_shards: int = 0
    computed_shards: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def frames_per_s(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else float('nan')


def _dist_info() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def check_amp(amp: str) -> None:
    if amp not in AMP_CHOICES:
        raise EvalError(f'amp must be one of {", ".join(AMP_CHOICES)}; got {amp!r}')


def resolve_amp(amp: str, device: torch.device) -> str:
    """The autocast setting the command-line tools use: ``auto`` is bf16 on CUDA; autocast is off on CPUs (their
    float32 path is the tested, faster one there)."""
    check_amp(amp)
    if device.type != 'cuda':
        return 'off'
    return 'bf16' if amp == 'auto' else amp


def default_batch_clips(device: torch.device) -> int:
    """Clips per forward pass when none is given: 32 on a GPU; 4 on a CPU, where larger batches no longer fit
    the caches and run slower per clip (sinet_r50, channels_last, 2-core EPYC VM: 86-92 ms per clip at 2-4
    clips, 106 at 8, 122 at 32)."""
    return 32 if device.type == 'cuda' else 4


def _nonfinite_error(model: torch.nn.Module, plan: ExtractPlan, bad_clips: list[int]) -> NonFiniteFeaturesError:
    """What to say when the model produced NaN/Inf embeddings for some clips."""
    owners = list(dict.fromkeys(plan.owner[c] for c in bad_clips))
    names = [plan.name(t) for t in owners]
    bad_weights = nonfinite_weights(model)
    shown = ', '.join(names[:5]) + (f' and {len(names) - 5} more' if len(names) > 5 else '')
    if bad_weights:
        why = (f'The weights themselves hold non-finite values ({len(bad_weights)} tensors, e.g. {bad_weights[0]}): '
               'the checkpoint is damaged; convert or download it again.')
    else:
        why = ('The weights are all finite, so the arithmetic overflowed or the frames are unusual: with --amp fp16 '
               'use --amp bf16 or --amp off, and look at the frames of these tracklets.')
    return NonFiniteFeaturesError(f'the model produced non-finite (NaN or Inf) embeddings for {len(names)} '
                                  f'tracklet(s): {shown}. {why}', names, not bad_weights)


def module_dtype(model: torch.nn.Module) -> torch.dtype:
    """The floating-point dtype of the model's weights (float32 for a model without floating-point weights); a
    model on the meta device (not materialised) is a :class:`ModelOutputError`."""
    check_materialised(model)
    tensors = [*model.parameters(), *model.buffers()]
    return next((t.dtype for t in tensors if t.is_floating_point()), torch.float32)


def check_embeddings(model: torch.nn.Module, emb: Any, clips: int, width: int | None) -> torch.Tensor:
    """``emb``, the output of ``model`` for ``clips`` clips, if it is a (clips, D) floating-point tensor with
    ``D`` > 0 (and ``D == width`` when a width was seen before); else a :class:`ModelOutputError` naming the
    module, what it returned and what is expected."""
    name = type(getattr(model, '_orig_mod', model)).__name__
    expected = (f'a ({clips}, D) floating-point tensor of embeddings, one row per clip of the batch'
                + (f', D = {width} as in the earlier batches' if width is not None else ''))
    if not isinstance(emb, torch.Tensor):
        got = type(emb).__name__ + (f' of {len(emb)}' if isinstance(emb, (tuple, list, dict)) else '')
        hint = (' (a training-mode output? the model must be in eval mode with num_classes=0)'
                if isinstance(emb, (tuple, list, dict)) else '')
        raise ModelOutputError(f'{name} returned a {got} for {clips} clips; expected {expected}{hint}')
    shape = tuple(emb.shape)
    if emb.dim() != 2 or shape[0] != clips:
        hint = {0: ' (a scalar: a loss?)', 1: ' (one value per clip: logits of one class?)',
                3: ' (unpooled features or a trailing singleton dimension: pool or squeeze them)',
                4: ' (feature maps: pool them)'}.get(emb.dim(), '')
        raise ModelOutputError(f'{name} returned shape {shape} for {clips} clips; expected {expected}{hint}')
    if shape[1] == 0:
        raise ModelOutputError(f'{name} returned zero-width embeddings {shape}; expected {expected} with D > 0')
    if width is not None and shape[1] != width:
        raise ModelOutputError(f'{name} returned {shape[1]}-wide embeddings after {width}-wide ones; expected '
                               f'{expected}')
    if not emb.is_floating_point():
        raise ModelOutputError(f'{name} returned {emb.dtype} values; expected {expected}')
    return emb


def extract_features(
        model: torch.nn.Module,
        plan: ExtractPlan,
        transform: FramePreprocess | Callable,
        cache: FeatureCache | None,
        device: torch.device,
        batch_clips: int | None = None,
        workers: int = 4,
        amp: str = 'off',
        shard_clips: int = 2048,
        progress: bool = True,
        label: str = '',
) -> tuple[torch.Tensor | None, ExtractStats]:
    """Embed every tracklet of ``plan``: the mean of its clip embeddings. Returns (num_tracklets, D) on rank 0.

    ``progress``: a progress bar on stderr named after ``label`` (e.g. 'split 3/10') that says how many shards came
    from the cache; when every shard did, one line saying so instead.

    ``amp``: autocast dtype (``bf16``, ``fp16``, ``off``; ``auto``: bf16 on CUDA, off elsewhere).
    ``transform``: a :class:`FramePreprocess` (frames travel as uint8 and are normalised on ``device``; what the
    command-line tools use) or any per-frame transform returning a float (3, H, W) tensor.
    ``cache`` (a :class:`~reid_eval.cache.FeatureCache`, whose shard size then wins over ``shard_clips``) holds
    the clip embeddings in shards; shards that check out are reused, others recomputed. Non-finite embeddings stop
    the run at the first shard that has them (:class:`~reid_eval.errors.NonFiniteFeaturesError`, naming the
    tracklets). Other ranks return ``None`` after writing their shards. ``batch_clips``: see
    :func:`default_batch_clips`. The device is synchronised once per shard, not per batch: embeddings stay on it
    until the shard is complete. One set of DataLoader workers serves all shards, so decoding runs on across shard
    boundaries.
    """
    if not plan.clips:
        raise EvalError('there are no tracklets to embed')
    check_amp(amp)
    if amp == 'auto':
        amp = resolve_amp(amp, device)
    if shard_clips < 1:
        raise EvalError(f'--shard-clips must be a positive number of clips, got {shard_clips}')
    batch_clips = batch_clips or default_batch_clips(device)
    shard_clips = cache.shard_clips if cache is not None else shard_clips
    rank, world = _dist_info()
    stats = ExtractStats()
    n_shards = max(1, -(-len(plan.clips) // shard_clips))
    mine = [s for s in range(n_shards) if s % world == rank]
    results: dict[int, torch.Tensor] = {}
    def files(s: int) -> str:  # the frames a shard was computed from, as they are on disk now
        return plan.files_digest(*shard_range(s, shard_clips, len(plan.clips)))

    for s in mine if cache is not None else ():
        if not cache.path(s).exists():
            continue  # not cached: its frames are digested once, when it is saved
        emb = cache.load(s, files(s))  # None when unusable (then recomputed; a warning says why)
        if emb is not None:
            results[s] = emb
    todo = [s for s in mine if s not in results]
    stats.cached_shards = len(results)
    autocast_dtype = {'bf16': torch.bfloat16, 'fp16': torch.float16}.get(amp)
    use_cuda = device.type == 'cuda'
    pre = transform if isinstance(transform, FramePreprocess) else None
    frame_transform = pre.to_uint8 if pre is not None else transform

    bar = None
    what = f'{label + ": " if label else ""}{plan.mode} features'
    cached = f'{stats.cached_shards} of {len(mine)} shards cached' if cache is not None else 'no cache'
    if progress and rank == 0 and todo:
        total = sum(hi - lo for lo, hi in (shard_range(s, shard_clips, len(plan.clips)) for s in todo))
        total *= len(plan.clips[0])
        bar = tqdm(total=total, unit='frame', unit_scale=True, desc=f'{what} ({cached})', dynamic_ncols=True)
    elif progress and rank == 0 and cache is not None:  # nothing to compute: say where the features came from
        tqdm.write(f'{what}: all {len(mine)} shards from the cache ({cache.folder})', file=sys.stderr)
    t0 = time.perf_counter()
    model.eval()
    dtype = module_dtype(model)  # a half / bfloat16 model gets its input in its dtype (autocast aside)
    cast = dtype if dtype != torch.float32 and autocast_dtype is None else None
    width = None  # the embedding width, once the first batch has shown it
    # one DataLoader (one set of workers, prefetching across shard boundaries) for every shard still to do;
    # batches never straddle two shards, so a shard is written as soon as its last batch is embedded
    batches = [(s, list(range(b, min(b + batch_clips, hi))))
               for s in todo for lo, hi in [shard_range(s, shard_clips, len(plan.clips))]
               for b in range(lo, hi, batch_clips)]
    if batches and pre is not None:
        h, w = pre.data_config.get('input_size', (3, 256, 128))[1:]
        check_worker_transfer(workers, batch_clips * len(plan.clips[0]) * 3 * h * w)
    loader = DataLoader(ClipDataset(plan.clips, frame_transform, plan.images), batch_sampler=[b for _, b in batches],
                        num_workers=workers, pin_memory=use_cuda, collate_fn=collate_clips,
                        timeout=WORKER_TIMEOUT_S if workers else 0) if batches else []
    embs, events = [], []
    kept = (f'Finished feature shards are kept in {cache.folder}: a rerun resumes from them.' if cache is not None
            else 'Nothing was cached, so a rerun starts again.')
    advice = (f'it was most likely killed for lack of memory: use fewer workers (--workers, now {workers}) or '
              f'fewer clips per batch (--batch-clips, now {batch_clips}). {kept}')
    # (the bar is closed whatever happens: tqdm would otherwise print it again below the error)
    with bar if bar is not None else contextlib.nullcontext(), reporting_worker_death(advice), torch.inference_mode():
        for k, (x, idx) in enumerate(loader):
            if isinstance(x, FrameFailure):
                raise FrameReadError(x.path, x.reason, 'Replace or delete the file (and its entry in the dataset '
                                     f'lists). {kept}')
            x = x.to(device, non_blocking=True)
            if pre is not None:
                x = pre.normalize(x)
            if use_cuda:  # timed with events: no host sync per batch
                events.append((torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)))
                events[-1][0].record()
            tm = time.perf_counter()
            if cast is not None:
                x = x.to(cast)
            with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
                if plan.camids is None:
                    out = model(x)
                else:
                    out = model(x, camids=torch.tensor([plan.camids[plan.owner[i]] for i in idx], device=device))
                emb = check_embeddings(model, out, len(idx), width)
            width = emb.shape[1]
            embs.append(emb.float())
            if use_cuda:
                events[-1][1].record()
            else:
                stats.model_seconds += time.perf_counter() - tm
            stats.clips += len(idx)
            stats.frames += x.shape[0] * x.shape[1]
            if bar is not None:
                bar.update(x.shape[0] * x.shape[1] * world)
                bar.set_postfix(fps=f'{stats.frames * world / (time.perf_counter() - t0):.0f}')
            s = batches[k][0]
            if k + 1 < len(batches) and batches[k + 1][0] == s:
                continue
            # the shard is complete (its batches came in order): gather it on the host (waits for the device)
            out = torch.cat(embs).cpu()
            stats.model_seconds += sum(a.elapsed_time(b) for a, b in events) / 1e3
            embs, events = [], []
            finite = torch.isfinite(out).all(dim=1)
            if not bool(finite.all()):  # stop here: a NaN would spread through every metric
                lo = shard_range(s, shard_clips, len(plan.clips))[0]
                raise _nonfinite_error(model, plan, [lo + int(i) for i in torch.nonzero(~finite).flatten()])
            if cache is not None:
                cache.save(s, out, files(s))
            results[s] = out
            stats.computed_shards += 1
    stats.seconds = time.perf_counter() - t0
    if world > 1:
        dist.barrier()
        if rank != 0:
            return None, stats
        for s in range(n_shards):  # the other ranks' shards, from the cache
            if s not in results:
                emb = cache.load(s, files(s))
                if emb is None:
                    raise EvalError(f'feature shard {cache.path(s)} of another rank is missing or unusable; rerun')
                results[s] = emb
    widths = {s: int(results[s].shape[1]) for s in range(n_shards)}
    if len(set(widths.values())) > 1 and cache is not None:  # cached shards that disagree with the model or each other
        bad = [s for s in widths if widths[s] != width] if width is not None else list(widths)
        warnings.warn(f'cached feature shards {", ".join(str(cache.path(s)) for s in bad[:3])}'
                      f'{" ..." if len(bad) > 3 else ""} hold embeddings of another width than '
                      f'{"the model gives (" + str(width) + ")" if width is not None else "each other"}; '
                      'recomputing them', CacheWarning, stacklevel=2)
        for s in bad:
            cache.path(s).unlink(missing_ok=True)
        return extract_features(model, plan, transform, cache, device, batch_clips=batch_clips, workers=workers,
                                amp=amp, shard_clips=shard_clips, progress=progress, label=label)
    if len(set(widths.values())) > 1:
        raise ModelOutputError(f'the shards of embeddings have different widths: {sorted(set(widths.values()))}')
    clip_emb = torch.cat([results[s] for s in range(n_shards)])
    owner = torch.tensor(plan.owner, dtype=torch.long)
    feats = torch.zeros(plan.num_tracklets, clip_emb.shape[1]).index_add_(0, owner, clip_emb)
    counts = torch.bincount(owner, minlength=plan.num_tracklets).clamp_min(1).unsqueeze(1)
    return feats / counts, stats
