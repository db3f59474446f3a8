"""The video re-ID test protocols of the released SINet evaluation, as frame-index plans.

* ``dense`` (the paper's numbers): every frame of a tracklet is used. The frame list is loop-padded to a multiple
  of 4 by appending its own last frames (the whole list again when it is shorter than the gap), the padded list is
  sorted by path, and with ``n = len / 4`` clip ``j`` takes frames ``j, j+n, j+2n, j+3n`` (strided, not
  consecutive). The tracklet embedding is the mean of its clip embeddings.
* ``sampled``: one 4-frame clip per tracklet: the list is padded with its last frame to at least 4, then frames
  ``0, b, 2b, 3b`` with ``b = len // 4`` are taken (sorted).

Image-to-video evaluation (``--query-frames N``) first cuts each query tracklet down to :func:`evenly_spaced`
frames; the clips of those frames then follow the mode's rule (one frame: one clip of that frame four times).
"""
from __future__ import annotations

import math
from collections.abc import Sequence

from .errors import EvalError

MODES = ('dense', 'sampled')


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


def make_clips(paths: Sequence[str], mode: str, clip_len: int = 4) -> list[tuple[str, ...]]:
    if mode == 'dense':
        return dense_clips(paths, clip_len)
    if mode == 'sampled':
        return sampled_clip(paths, clip_len)
    raise EvalError(f'unknown test mode {mode!r}; expected one of {", ".join(MODES)}')


def evenly_spaced(paths: Sequence[str], n: int) -> list[str]:
    """``n`` evenly spaced frames of a tracklet (image-to-video queries): frame ``(2i+1) * len // (2n)`` for
    ``i < n``, the middle of each of ``n`` equal segments (``n = 1``: the middle frame, ``len // 2``). A tracklet of
    ``n`` frames or fewer keeps all of them."""
    frames = list(paths)
    if not frames:
        raise EvalError('cannot take frames from an empty tracklet')
    if n < 1:
        raise EvalError(f'the number of query frames must be >= 1, got {n}')
    if len(frames) <= n:
        return frames
    return [frames[(2 * i + 1) * len(frames) // (2 * n)] for i in range(n)]
