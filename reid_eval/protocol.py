"""The video re-ID test protocols, as data: one :class:`Protocol` per family's released evaluation.

A protocol states how a tracklet becomes clips (which frames, how many per clip), which distance ranks the
embeddings and whether the queries join the gallery. A model's pretrained cfg names its protocol
(``pretrained_cfg['protocol']``, default ``dense``); ``EvalOptions.protocol`` / ``--protocol`` override it to
compare models under one protocol. Adding one is a clip rule and an entry in :data:`PROTOCOLS`.

* ``dense`` (SINet / SANet, the paper's numbers): every frame of a tracklet is used. The frame list is loop-padded
  to a multiple of 4 by appending its own last frames (the whole list again when it is shorter than the gap), the
  padded list is sorted by path, and with ``n = len / 4`` clip ``j`` takes frames ``j, j+n, j+2n, j+3n`` (strided,
  not consecutive). The tracklet embedding is the mean of its clip embeddings.
* ``sampled``: one 4-frame clip per tracklet: the list is padded with its last frame to at least 4, then frames
  ``0, b, 2b, 3b`` with ``b = len // 4`` are taken (sorted).
* ``vkd`` (VKD, ECCV 2020, ``TemporalChunkCrop``): one 8-frame clip: the tracklet is cut into 8 chunks of
  ``ceil(len / 8)`` frames (the last padded with the last frame) and the first frame of each is taken; cosine
  distance; the queries join the gallery on MARS only (as their evaluation does).
* ``tfclip`` (TF-CLIP, AAAI 2024, ``sample='dense'``): consecutive 8-frame clips over every frame, the last one
  padded by cycling its own frames; clip embeddings averaged; Euclidean distance of L2-normalised embeddings,
  which ranks exactly as the cosine distance does (``|a - b|^2 = 2 - 2 cos``), so it is ranked as cosine; the
  queries join the gallery on every dataset.

Image-to-video evaluation (``--query-frames N``) first cuts each query tracklet down to N frames by the protocol's
``query_frame`` rule: the middles of N equal segments (:func:`evenly_spaced`; N = 1: the middle frame), or for
``vkd`` the first frame of each segment (:func:`segment_firsts`; N = 1: the first frame, as VKD's evaluation
queries); the clips of those frames then follow the protocol's clip rule (one frame: one clip of that frame
repeated). The gallery keeps whole tracklets, the queries' own included where the gallery rule adds them.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .errors import EvalError

__all__ = ['MODES', 'PROTOCOLS', 'QUERY_FRAME_RULES', 'Protocol', 'chunk_first_clip', 'consecutive_clips',
           'dense_clips', 'evenly_spaced', 'get_protocol', 'loop_pad', 'make_clips', 'query_frames', 'sampled_clip',
           'segment_firsts']

def loop_pad(paths: Sequence[str], size: int = 4) -> list[str]:
    """Pad ``paths`` to a multiple of ``size`` with its own last frames, then sort (released dense protocol)."""
    out = list(paths)
    if not out:
        raise EvalError('cannot pad an empty tracklet')
    target = math.ceil(len(out) / size) * size
    while len(out) != target:
        lack = target - len(out)
        out.extend(out[-lack:] if len(out) > lack else list(out))
    out.sort()
    return out


def dense_clips(paths: Sequence[str], clip_len: int = 4) -> list[tuple[str, ...]]:
    """All strided clips of a tracklet under the dense protocol."""
    padded = loop_pad(paths, clip_len)
    n = len(padded) // clip_len
    return [tuple(padded[j + i * n] for i in range(clip_len)) for j in range(n)]


def sampled_clip(paths: Sequence[str], clip_len: int = 4) -> list[tuple[str, ...]]:
    """The single evenly spaced clip of the sampled protocol (as a one-element list)."""
    frames = list(paths)
    if not frames:
        raise EvalError('cannot sample from an empty tracklet')
    while len(frames) < clip_len:
        frames.append(frames[-1])
    block = len(frames) // clip_len
    return [tuple(sorted(frames[i * block] for i in range(clip_len)))]


def chunk_first_clip(paths: Sequence[str], clip_len: int = 8) -> list[tuple[str, ...]]:
    """VKD's test clip: the first frame of each of ``clip_len`` chunks of ``ceil(len / clip_len)`` frames, the
    frame list padded with its last frame (frame ``min(i * ceil(len / clip_len), len - 1)`` for ``i < clip_len``;
    in the tracklet's order, not re-sorted)."""
    frames = list(paths)
    if not frames:
        raise EvalError('cannot sample from an empty tracklet')
    step = max(1, math.ceil(len(frames) / clip_len))
    return [tuple(frames[min(i * step, len(frames) - 1)] for i in range(clip_len))]


def consecutive_clips(paths: Sequence[str], clip_len: int = 8) -> list[tuple[str, ...]]:
    """TF-CLIP's test clips: consecutive runs of ``clip_len`` frames; the last run (1 to ``clip_len`` frames) is
    padded by cycling its own frames (``[24, 25]`` -> ``[24, 25, 24, 25, ...]``)."""
    frames = list(paths)
    if not frames:
        raise EvalError('cannot cut an empty tracklet into clips')
    starts = range(0, len(frames), clip_len)
    runs = [frames[i:i + clip_len] for i in starts]
    last = runs[-1]
    runs[-1] = [last[i % len(last)] for i in range(clip_len)]
    return [tuple(r) for r in runs]


@dataclass(frozen=True)
class Protocol:
    """A test protocol: how tracklets become clips, how embeddings are ranked, who is in the gallery."""

    name: str
    clip_rule: Callable[[Sequence[str], int], list[tuple[str, ...]]]  # (frames, clip_len) -> clips
    clip_len: int | None  # frames per clip; None: the model's (4 for the SINet family)
    clips: str  # the clip rule in words
    distance: str  # the distance in words; every protocol here ranks as the cosine distance does
    gallery: str  # 'auto': the dataset's released rule (MARS adds the queries); 'yes': always added
    source: str  # whose evaluation this is
    query_frame: str = 'middle'  # image-to-video queries: 'middle' (evenly_spaced) or 'first' (segment_firsts)

    def describe(self) -> str:
        return f'{self.name}: {self.clips} ({self.source})'


PROTOCOLS: dict[str, Protocol] = {p.name: p for p in (
    Protocol('dense', dense_clips, None, 'every frame, in strided clips after loop padding, clip embeddings averaged',
             'cosine distance', 'auto', 'the SINet / SANet release'),
    Protocol('sampled', sampled_clip, None, 'one evenly spaced clip per tracklet', 'cosine distance', 'auto',
             'the SINet release, its quick mode'),
    Protocol('vkd', chunk_first_clip, 8, 'one 8-frame clip of the first frame of each of 8 chunks',
             'cosine distance', 'auto', 'VKD, Porrello et al., ECCV 2020', query_frame='first'),
    Protocol('tfclip', consecutive_clips, 8,
             'consecutive 8-frame clips over every frame, the last padded by cycling, clip embeddings averaged',
             'Euclidean distance of L2-normalised embeddings (the same ranking as the cosine distance)', 'yes',
             'TF-CLIP, Yu et al., AAAI 2024'),
)}
MODES = tuple(PROTOCOLS)  # the protocol names, also accepted as EvalOptions.mode / --mode


def get_protocol(name: str) -> Protocol:
    """The protocol called ``name``, or an :class:`EvalError` listing them."""
    try:
        return PROTOCOLS[name]
    except (KeyError, TypeError):
        raise EvalError(f'unknown test protocol {name!r}; expected one of {", ".join(PROTOCOLS)}') from None


def make_clips(paths: Sequence[str], mode: str, clip_len: int = 4) -> list[tuple[str, ...]]:
    """The clips of one tracklet under protocol ``mode``."""
    return get_protocol(mode).clip_rule(paths, clip_len)


def query_frames(paths: Sequence[str], n: int, rule: str = 'middle') -> list[str]:
    """The ``n`` frames an image-to-video query keeps under a protocol's ``query_frame`` rule."""
    if rule not in QUERY_FRAME_RULES:
        raise EvalError(f'unknown query frame rule {rule!r}; expected one of {", ".join(QUERY_FRAME_RULES)}')
    return QUERY_FRAME_RULES[rule](paths, n)


def segment_firsts(paths: Sequence[str], n: int) -> list[str]:
    """The first frame of each of ``n`` equal segments of a tracklet, frame ``i * len // n`` for ``i < n``
    (``n = 1``: the first frame, the image VKD's evaluation queries with; its loaders take the first frame of each
    query tracklet). A tracklet of ``n`` frames or fewer keeps all of them."""
    frames = _checked_frames(paths, n)
    return frames if len(frames) <= n else [frames[i * len(frames) // n] for i in range(n)]


def _checked_frames(paths: Sequence[str], n: int) -> list[str]:
    frames = list(paths)
    if not frames:
        raise EvalError('cannot take frames from an empty tracklet')
    if n < 1:
        raise EvalError(f'the number of query frames must be >= 1, got {n}')
    return frames


def evenly_spaced(paths: Sequence[str], n: int) -> list[str]:
    """``n`` evenly spaced frames of a tracklet (image-to-video queries): frame ``(2i+1) * len // (2n)`` for
    ``i < n``, the middle of each of ``n`` equal segments (``n = 1``: the middle frame, ``len // 2``). A tracklet of
    ``n`` frames or fewer keeps all of them."""
    frames = _checked_frames(paths, n)
    return frames if len(frames) <= n else [frames[(2 * i + 1) * len(frames) // (2 * n)] for i in range(n)]


QUERY_FRAME_RULES: dict[str, Callable[[Sequence[str], int], list[str]]] = {
    'middle': evenly_spaced, 'first': segment_firsts}
