"""The feature cache: one folder per (weights, dataset, split, protocol), shards of clip embeddings in it.

Shards are written atomically (a temporary file renamed into place), so an interrupted run leaves only whole
shards behind and the next run resumes from them.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from sinet_timm.paths import cache_root

__all__ = ['cache_folder', 'default_cache_dir', 'load_shard', 'save_shard', 'write_meta']


def default_cache_dir() -> Path:
    """``$SINET_TIMM_CACHE/features`` (default ``~/.cache/sinet-timm/features``)."""
    return cache_root() / 'features'


def cache_folder(root: Path, weights: str, dataset: str, split: int, mode: str, digest: str) -> Path:
    """Cache folder of one (weights, dataset, split, mode) combination; the plan digest guards stale lists."""
    return root / weights[:16] / f'{dataset}-split{split}-{mode}-{digest[:12]}'


def write_meta(folder: Path, meta: dict[str, Any]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    p = folder / 'meta.json'
    if not p.exists():
        tmp = folder / f'.meta.{os.getpid()}.tmp'
        tmp.write_text(json.dumps(meta, indent=2))
        os.replace(tmp, p)


def save_shard(emb: torch.Tensor, path: Path) -> None:
    tmp = path.with_name(f'.{path.name}.{os.getpid()}.tmp')
    save_file({'emb': emb}, str(tmp))
    os.replace(tmp, path)


def load_shard(path: Path) -> torch.Tensor:
    return load_file(str(path))['emb']
