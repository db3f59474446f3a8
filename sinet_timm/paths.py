"""Where the project keeps what it downloads, converts and computes."""
from __future__ import annotations

import os
import re
import stat
from collections.abc import Callable
from pathlib import Path

from .errors import OutputWriteError

__all__ = ['cache_root', 'replace_file', 'write_failure_reason']


def cache_root() -> Path:
    """``$SINET_TIMM_CACHE`` or ``$XDG_CACHE_HOME/sinet-timm`` (``~/.cache/sinet-timm``): every cache of the
    project (converted weights, Drive downloads, ``reid_eval``'s features, the demo dataset) lives under it."""
    base = os.environ.get('SINET_TIMM_CACHE') or Path(os.environ.get('XDG_CACHE_HOME', Path.home() / '.cache')) / \
        'sinet-timm'
    return Path(base)


def write_failure_reason(e: BaseException) -> str:
    """What a failed write's exception says, in a few words ('No space left on device')."""
    if isinstance(e, OSError) and e.strerror:
        return e.strerror + (' (it is a folder)' if isinstance(e, IsADirectoryError) else '')
    first = str(e).strip().splitlines()[0] if str(e).strip() else ''
    if m := re.search(r'message: "([^"]+)"|I/O error: (.+?) \(os error \d+\)', first):  # safetensors (Rust)
        return m.group(1) or m.group(2)
    return f'{type(e).__name__}: {first}' if first else type(e).__name__


def replace_file(path: str | Path, write: Callable[[Path], object],
                 errors: tuple[type[BaseException], ...] = ()) -> Path:
    """Write an output file through a temporary file beside it, renamed over ``path`` once complete: a failed write
    (a full disk, a read-only folder) leaves an existing file exactly as it was and no partial file behind.
    ``write(tmp)`` writes the content; an ``OSError`` there (or one of ``errors``, for writers that raise their own
    types) becomes :class:`OutputWriteError` naming ``path``. A folder at ``path`` is never replaced; a path that is
    not a regular file (``/dev/null``, a pipe) is written directly."""
    path = Path(path)
    try:
        if path.is_dir():
            raise OutputWriteError(path, 'it is a folder (give a file name)')
        if path.exists() and not stat.S_ISREG(path.stat().st_mode):
            write(path)  # a device or a pipe: no rename over it
            return path
        path.parent.mkdir(parents=True, exist_ok=True)
    except OutputWriteError:
        raise
    except (OSError, *errors) as e:
        raise OutputWriteError(path, write_failure_reason(e)) from None
    tmp = path.with_name(f'.{path.stem}.{os.getpid()}.tmp{path.suffix}')  # the suffix kept: writers may read it
    try:
        write(tmp)
        os.replace(tmp, path)
    except (OSError, *errors) as e:
        raise OutputWriteError(path, write_failure_reason(e)) from None
    finally:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:  # a read-only folder holds no temporary file to remove
            pass
    return path
