"""Where the project keeps what it downloads, converts and computes."""
from __future__ import annotations

import os
from pathlib import Path

__all__ = ['cache_root']


def cache_root() -> Path:
    """``$SINET_TIMM_CACHE`` or ``$XDG_CACHE_HOME/sinet-timm`` (``~/.cache/sinet-timm``): every cache of the
    project (converted weights, Drive downloads, ``reid_eval``'s features, the demo dataset) lives under it."""
    base = os.environ.get('SINET_TIMM_CACHE') or Path(os.environ.get('XDG_CACHE_HOME', Path.home() / '.cache')) / \
        'sinet-timm'
    return Path(base)
