"""Training data of the SINet recipe (paper Sec. 4.2; released ``main.py``, ``transforms/``, ``utils/video_loader.py``).

* :class:`IdentityBatchSampler`: batches of P identities x K tracklets (8 x 4 = 32 clips), with torchreid's
  ``RandomIdentitySampler`` algorithm, but every epoch's batches are a function of ``(seed, epoch)`` only and are
  dealt to distributed ranks (rank r gets batches r, r + world, ...), so ranks see disjoint batches and a resumed
  epoch is identical. Each batch slot carries its own augmentation seed.
* :func:`restricted_random_crop`: 4 frames per clip by restricted random sampling (released
  ``TemporalRestrictedCrop``).
* :class:`ClipTrainTransform`: 256x128 bicubic resize, horizontal flip, ImageNet normalisation and random erasing,
  with one random draw per clip (the released transforms call ``randomize_parameters`` once per clip).
"""
from __future__ import annotations

import math
import random
from collections import defaultdict
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, Sampler

from reid_eval.errors import EmptyTrackletError, FrameReadError
from reid_eval.extraction import FrameFailure, open_frame
from sinet_timm.errors import SinetTimmError

__all__ = [
    'IMAGENET_MEAN', 'IMAGENET_STD', 'RE_VALUE', 'EmptyTrackletError', 'NotEnoughIdentitiesError', 'TrainDataError',
    'restricted_random_crop', 'ClipTrainTransform', 'TrainClipDataset', 'IdentityBatchSampler', 'check_tracklets',
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RE_VALUE = (0.4914, 0.4822, 0.4465)  # released RandomErasing fill value (written into the normalised tensor)

Tracklet = tuple[Sequence[str], int, int]


class TrainDataError(SinetTimmError, ValueError):
    """The training set cannot be used with the requested recipe."""


class NotEnoughIdentitiesError(TrainDataError):
    """Fewer training identities than one batch needs."""


def check_tracklets(tracklets: Sequence[Tracklet]) -> None:
    """Raise :class:`EmptyTrackletError` for a tracklet without frames (short ones are padded, empty ones not)."""
    for i, (paths, pid, camid) in enumerate(tracklets):
        if len(paths) == 0:
            raise EmptyTrackletError(
                f'training tracklet {i} (identity {pid}, camera {camid}) has no frames; tracklets shorter than 4 '
                'frames are padded with their last frame, but an empty one cannot be: fix or remove it')


def chunk_tracklets(tracklets: Sequence[Tracklet], step: int) -> list[Tracklet]:
    """Cut training tracklets into pieces of ``step`` frames, the last piece taking the remainder (released
    ``sampling_step``); tracklets shorter than ``step`` and ``step=0`` are kept whole."""
    if step <= 0:
        return list(tracklets)
    out: list[Tracklet] = []
    for paths, pid, camid in tracklets:
        pieces = len(paths) // step
        if pieces == 0:
            out.append((paths, pid, camid))
            continue
        for i in range(pieces):
            end = (i + 1) * step if i < pieces - 1 else len(paths)
            out.append((tuple(paths[i * step:end]), pid, camid))
    return out


def restricted_random_crop(frames: Sequence, size: int = 4, rng: random.Random | None = None) -> list:
    """Restricted random sampling: cut the tracklet into ``size`` segments and take one random frame of each.

    Released ``TemporalRestrictedCrop``: a tracklet shorter than ``size`` is padded by repeating its last frame;
    with ``block = len // size``, frame ``i < size - 1`` is drawn from ``[i * block, (i + 1) * block)`` and the
    last one from ``[(size - 1) * block, len)`` (the last segment takes the remainder).
    """
    frames = list(frames)
    if not frames:
        raise EmptyTrackletError('cannot sample frames from an empty tracklet')
    rng = rng or random.Random()
    while len(frames) < size:
        frames.append(frames[-1])
    block = len(frames) // size
    out = [frames[i * block + rng.randint(0, block - 1)] for i in range(size - 1)]
    last = (size - 1) * block
    out.append(frames[last + rng.randint(0, len(frames) - last - 1)])
    return out


class ClipTrainTransform:
    """Per-clip training augmentation: resize, flip, to tensor, normalise, random erasing (paper Sec. 4.2).

    One draw per clip decides the flip, whether to erase, and the erased box's relative top-left corner, as the
    released ``randomize_parameters``. The box's area (2-40% of the frame) and aspect ratio (0.3-3.3) are drawn
    inside ``RandomErasing.__call__`` in the released code, i.e. once per *frame*; ``same_box=True`` draws them
    once per clip instead, so every frame of an erased clip loses exactly the same rectangle. The fill value is
    the released one (CIFAR-10 means, written into the normalised tensor). ``erase_prob`` is the probability of
    erasing (the released class erases when its draw is *not* below its ``probability``: 0.5 either way).
    """

    def __init__(
            self,
            img_size: tuple[int, int] = (256, 128),
            flip_prob: float = 0.5,
            erase_prob: float = 0.5,
            erase_area: tuple[float, float] = (0.02, 0.4),
            erase_min_aspect: float = 0.3,
            erase_value: Sequence[float] = RE_VALUE,
            same_box: bool = False,
            mean: Sequence[float] = IMAGENET_MEAN,
            std: Sequence[float] = IMAGENET_STD,
    ):
        self.img_size = (int(img_size[0]), int(img_size[1]))
        self.flip_prob = flip_prob
        self.erase_prob = erase_prob
        self.erase_area = erase_area
        self.erase_min_aspect = erase_min_aspect
        self.erase_value = torch.tensor(erase_value, dtype=torch.float32).view(-1, 1, 1)
        self.same_box = same_box
        self.mean = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)

    def _box(self, rng: random.Random, h: int, w: int) -> tuple[int, int] | None:
        """Released RandomErasing: up to 100 tries for a box that fits; ``None`` when none does."""
        for _ in range(100):
            area = rng.uniform(*self.erase_area) * h * w
            aspect = rng.uniform(self.erase_min_aspect, 1 / self.erase_min_aspect)
            bh, bw = int(round(math.sqrt(area * aspect))), int(round(math.sqrt(area / aspect)))
            if bw < w and bh < h:
                return bh, bw
        return None

    def frame_to_tensor(self, img: Image.Image, flip: bool) -> torch.Tensor:
        img = img.convert('RGB').resize((self.img_size[1], self.img_size[0]), Image.BICUBIC)
        if flip:
            img = img.transpose(Image.FLIP_LEFT_RIGHT)
        x = torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1).float().div_(255)
        return (x - self.mean) / self.std

    def __call__(self, frames: Sequence[Image.Image], rng: random.Random) -> torch.Tensor:
        """Augment the frames of one clip with one draw from ``rng``; returns (T, 3, H, W)."""
        flip = rng.random() < self.flip_prob
        erase = rng.random() < self.erase_prob
        top, left = rng.random(), rng.random()
        h, w = self.img_size
        box = self._box(rng, h, w) if erase and self.same_box else None
        out = []
        for img in frames:
            x = self.frame_to_tensor(img, flip)
            if erase:
                b = box if self.same_box else self._box(rng, h, w)
                if b is not None:
                    y0, x0 = int(round(top * (h - b[0]))), int(round(left * (w - b[1])))
                    x[:, y0:y0 + b[0], x0:x0 + b[1]] = self.erase_value
            out.append(x)
        return torch.stack(out)


class TrainClipDataset(Dataset):
    """Training clips: item ``(index, seed)`` -> ``((T, 3, H, W) clip, pid)``, or a
    :class:`~reid_eval.extraction.FrameFailure` in place of the clip when a frame cannot be read (batch them with
    :func:`~reid_eval.extraction.collate_clips`).

    The frame choice and the augmentation of an item use ``random.Random(seed)`` only, so a batch is the same
    whatever the worker count or process it is decoded in.
    """

    def __init__(self, tracklets: Sequence[Tracklet], transform: ClipTrainTransform, clip_len: int = 4):
        check_tracklets(tracklets)
        self.tracklets = tracklets
        self.transform = transform
        self.clip_len = clip_len

    def __len__(self) -> int:
        return len(self.tracklets)

    def __getitem__(self, item: tuple[int, int]) -> tuple[torch.Tensor | FrameFailure, int]:
        index, seed = item
        paths, pid, _ = self.tracklets[index]
        rng = random.Random(seed)
        chosen = restricted_random_crop(paths, self.clip_len, rng)
        cache: dict[str, Image.Image] = {}
        try:
            frames = [cache[p] if p in cache else cache.setdefault(p, open_frame(p)) for p in chosen]
        except FrameReadError as e:
            return FrameFailure(e.path, e.reason), pid
        return self.transform(frames, rng), pid



class IdentityBatchSampler(Sampler[list[tuple[int, int]]]):
    """P identities x K tracklets per batch; every epoch's batches depend only on ``(seed, epoch)``.

    The batches of an epoch are made as torchreid's ``RandomIdentitySampler`` makes them: each identity's
    tracklets are shuffled and cut into groups of K (an identity with fewer than K tracklets gets K drawn with
    replacement, a remainder smaller than K is dropped), then batches take one group from each of P distinct
    identities drawn from those with groups left, until fewer than P remain. The random draws come from a
    generator seeded with ``(seed, epoch)`` instead of the global ``random`` module. With ``world_size`` ranks
    the epoch's batches are cut to a multiple of ``world_size`` and rank r takes batches r, r + world_size, ...
    (like ``DistributedSampler``): all ranks make the same list and take disjoint parts of it.

    Yields lists of ``(tracklet index, augmentation seed)``: K consecutive entries per identity.
    """

    def __init__(
            self,
            pids: Sequence[int],
            num_instances: int = 4,
            num_identities: int = 8,
            seed: int = 0,
            rank: int = 0,
            world_size: int = 1,
    ):
        if num_instances < 1 or num_identities < 1:
            raise ValueError('num_instances and num_identities must be positive')
        if not 0 <= rank < world_size:
            raise ValueError(f'rank {rank} is not in [0, {world_size})')
        self.num_instances = num_instances
        self.num_identities = num_identities
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        index = defaultdict(list)
        for i, pid in enumerate(pids):
            index[int(pid)].append(i)
        self.index = dict(sorted(index.items()))
        if len(self.index) < num_identities:
            raise NotEnoughIdentitiesError(
                f'a batch of {num_identities * num_instances} clips needs {num_identities} identities x '
                f'{num_instances} tracklets (num_identities x num_instances), but the training set has only '
                f'{len(self.index)} identit{"y" if len(self.index) == 1 else "ies"}; lower --num-identities or '
                'use a larger training set')
        self._cache: tuple[int, list[list[tuple[int, int]]]] | None = None

    @property
    def batch_size(self) -> int:
        return self.num_identities * self.num_instances

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose batches are produced (call before iterating, as with DistributedSampler)."""
        self.epoch = int(epoch)

    def epoch_batches(self, epoch: int) -> list[list[tuple[int, int]]]:
        """All batches of ``epoch`` (every rank's), before they are dealt to the ranks."""
        rng = np.random.default_rng([self.seed, epoch])
        k = self.num_instances
        groups: dict[int, list[list[int]]] = {}
        for pid, idxs in self.index.items():
            chosen = rng.choice(idxs, size=k, replace=True) if len(idxs) < k else rng.permutation(idxs)
            chosen = [int(i) for i in chosen]
            groups[pid] = [chosen[j:j + k] for j in range(0, len(chosen) - len(chosen) % k, k)]
        available = list(self.index)
        batches = []
        while len(available) >= self.num_identities:
            picked = [available[j] for j in rng.choice(len(available), size=self.num_identities, replace=False)]
            batch: list[int] = []
            for pid in picked:
                batch += groups[pid].pop(0)
                if not groups[pid]:
                    available.remove(pid)
            batches.append(batch)
        seeds = rng.integers(0, 2 ** 63 - 1, size=(len(batches), self.batch_size))
        return [list(zip(b, (int(s) for s in row), strict=True)) for b, row in zip(batches, seeds, strict=True)]

    def rank_batches(self, epoch: int) -> list[list[tuple[int, int]]]:
        """This rank's batches of ``epoch``."""
        if self._cache is None or self._cache[0] != epoch:
            everything = self.epoch_batches(epoch)
            usable = len(everything) - len(everything) % self.world_size
            self._cache = (epoch, everything[self.rank:usable:self.world_size])
        return self._cache[1]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        return iter(self.rank_batches(self.epoch))

    def __len__(self) -> int:
        return len(self.rank_batches(self.epoch))
