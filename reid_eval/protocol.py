"""The video re-ID test protocols of the released SINet evaluation, as frame-index plans.

* ``dense`` (the paper's numbers): every frame of a tracklet is used. The frame list is loop-padded to a multiple
  of 4 by appending its own last frames (the whole list again when it is shorter than the gap), the padded list is
  sorted by path, and with ``n = len / 4`` clip ``j`` takes frames ``j, j+n, j+2n, j+3n`` (strided, not
  consecutive). The tracklet embedding is the mean of its clip embeddings.
* ``sampled``: one 4-frame clip per tracklet: the list is padded with its last frame to at least 4, then frames
  ``0, b, 2b, 3b`` with ``b = len // 4`` are taken (sorted).
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
