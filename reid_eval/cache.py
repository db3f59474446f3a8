"""The feature cache: shards of clip embeddings, keyed by everything that changes them, verified when read.

A cache folder holds the shards of one extraction. Its key covers the weights (content hash), the dataset and
split, the protocol's clips (which frames, in which order), the preprocessing, the clip length, the shard size and
the model-input options (amp, frames or clips). Each shard is a safetensors file whose metadata records the key,
which clips it holds (first clip, count), the files it was computed from (each frame's path, size and modification
time, as a hash: a frame replaced in place invalidates exactly the shards that use it, so fixing a broken frame
keeps every other finished shard) and the sha256 of its data; a shard is used only if all of these check out and
its values are finite. A shard that fails the check
(truncated, zero bytes, overwritten, foreign, written for another shard size) is recomputed with one
:class:`CacheWarning` naming it. Shards are written atomically (a temporary file renamed into place), so an
interrupted run leaves only whole shards behind and the next run resumes from them.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from sinet_timm.paths import cache_root

from .errors import CacheError

__all__ = ['SHARD_FORMAT', 'CacheWarning', 'FeatureCache', 'default_cache_dir', 'tensor_sha256']

SHARD_FORMAT = 'sinet-timm-feature-shard/2'


class CacheWarning(UserWarning):
    """A cached shard could not be used and is recomputed (the message names it and says why)."""


def default_cache_dir() -> Path:
    """``$SINET_TIMM_CACHE/features`` (default ``~/.cache/sinet-timm/features``)."""
    return cache_root() / 'features'


def tensor_sha256(t: torch.Tensor) -> str:
    """sha256 of a tensor's bytes (contiguous, on the CPU)."""
    return hashlib.sha256(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()).hexdigest()


def _unwritable(folder: Path, e: OSError) -> CacheError:
    return CacheError(f'cannot write the feature cache in {folder}: {e.strerror or e}. Pass --no-cache to run without '
                      'it, or --cache-dir on a writable disk with room (shards are about 8 KB per clip)')


def shard_range(s: int, shard_clips: int, num_clips: int) -> tuple[int, int]:
    """The clips of shard ``s`` when ``num_clips`` clips are cut into shards of ``shard_clips``: ``[lo, hi)``."""
    return s * shard_clips, min((s + 1) * shard_clips, num_clips)


@dataclass(frozen=True)
class FeatureCache:
    """The cache folder of one extraction (see the module docstring)."""

    folder: Path
    key: str
    shard_clips: int
    num_clips: int

    @classmethod
    def open(cls, root: Path, *, weights: str, dataset: str, split: int, mode: str, num_clips: int,
             shard_clips: int, facts: dict[str, Any]) -> FeatureCache:
        """The folder for ``facts`` (everything that changes the features, JSON-serialisable) under ``root``;
        created, with a ``meta.json`` describing it."""
        body = {'format': SHARD_FORMAT, 'weights_sha256': weights, 'dataset': dataset, 'split': split,
                'num_clips': num_clips, 'shard_clips': shard_clips, **facts}
        key = hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()
        cache = cls(Path(root) / weights[:16] / f'{dataset}-split{split}-{mode}-{key[:16]}', key, shard_clips,
                    num_clips)
        try:
            os.fsencode(str(root)).decode('utf-8')
        except UnicodeDecodeError:
            raise CacheError(f'the feature cache folder {os.fsencode(str(root))!r} holds bytes that are not UTF-8, '
                             'which safetensors cannot write to; pass --cache-dir with a UTF-8 path, or --no-cache') \
                from None
        try:
            cache.folder.mkdir(parents=True, exist_ok=True)
            meta = cache.folder / 'meta.json'
            if not meta.exists():
                tmp = cache.folder / f'.meta.{os.getpid()}.tmp'
                tmp.write_text(json.dumps(dict(body, key=key), indent=2, default=str))
                os.replace(tmp, meta)
        except OSError as e:
            raise _unwritable(cache.folder, e) from None
        return cache

    def clip_range(self, s: int) -> tuple[int, int]:
        """The clips of shard ``s``: ``[lo, hi)``."""
        return shard_range(s, self.shard_clips, self.num_clips)

    def path(self, s: int) -> Path:
        return self.folder / f'shard_{s:05d}.safetensors'

    def save(self, s: int, emb: torch.Tensor, files: str) -> None:
        """Write shard ``s`` atomically, with what it holds, the digest of its frame files and its checksum; a
        read-only or full disk is a :class:`CacheError` saying what to do."""
        lo, hi = self.clip_range(s)
        meta = {'format': SHARD_FORMAT, 'key': self.key, 'shard': str(s), 'first_clip': str(lo),
                'num_clips': str(hi - lo), 'files': files, 'sha256': tensor_sha256(emb)}
        path = self.path(s)
        tmp = path.with_name(f'.{path.name}.{os.getpid()}.tmp')
        try:
            save_file({'emb': emb.contiguous()}, str(tmp), metadata=meta)
            os.replace(tmp, path)
        except OSError as e:
            raise _unwritable(self.folder, e) from None
        except Exception as e:  # safetensors reports a failed write (disk full, file size limit) as its own error
            raise _unwritable(self.folder, OSError(str(e).splitlines()[0] if str(e) else type(e).__name__)) from None
        finally:
            with contextlib.suppress(OSError):  # a read-only disk refuses the clean-up too
                tmp.unlink(missing_ok=True)

    def load(self, s: int, files: str) -> torch.Tensor | None:
        """Shard ``s`` if it is there and checks out (``files``: the digest of its frame files now); ``None``
        (after one :class:`CacheWarning` naming the file and the reason, when a file was there) otherwise."""
        path = self.path(s)
        if not path.exists():
            return None
        emb, reason = self._read(s, path, files)
        if emb is None:
            warnings.warn(f'cached feature shard {path} is unusable ({reason}); recomputing it', CacheWarning,
                          stacklevel=2)
        return emb

    def _read(self, s: int, path: Path, files: str) -> tuple[torch.Tensor | None, str]:
        lo, hi = self.clip_range(s)
        try:
            with safe_open(str(path), framework='pt') as f:
                meta = f.metadata() or {}
                if 'emb' not in set(f.keys()):
                    return None, 'no embeddings in it'
                emb = f.get_tensor('emb')
        except Exception as e:  # safetensors raises its own types for truncated, empty or foreign files
            return None, f'not a readable safetensors file: {str(e).splitlines()[0] if str(e) else type(e).__name__}'
        want = {'format': SHARD_FORMAT, 'key': self.key, 'shard': str(s), 'first_clip': str(lo),
                'num_clips': str(hi - lo)}
        wrong = [k for k, v in want.items() if meta.get(k) != v]
        if wrong:
            return None, f'written for another extraction or shard layout ({", ".join(wrong)} differ)'
        if meta.get('files') != files:
            return None, 'some of its frame files changed (size or modification time) since it was computed'
        if emb.dtype != torch.float32:
            return None, f'{emb.dtype} values where float32 embeddings are written'
        if emb.dim() != 2 or emb.shape[0] != hi - lo or emb.shape[1] == 0:
            return None, f'{tuple(emb.shape)} embeddings where {hi - lo} rows were recorded'
        if tensor_sha256(emb) != meta.get('sha256'):
            return None, 'its data do not match the checksum recorded with them (changed after it was written)'
        if not bool(torch.isfinite(emb).all()):
            return None, 'it holds NaN or Inf values'
        return emb, ''
