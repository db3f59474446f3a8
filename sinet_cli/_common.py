"""What every command shares: running the library with one-line errors, and the extraction options.

Only the standard library is imported here: parsers are built and arguments parsed before torch is imported.
"""
from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

# the choices of the library's options, repeated so that parsing needs no torch import (a test checks they match)
AMP_CHOICES = ('auto', 'bf16', 'fp16', 'off')
MODES = ('dense', 'sampled', 'vkd', 'tfclip')  # reid_eval.protocol.PROTOCOLS
CAMERA_FALLBACKS = ('mean',)
RANKERS = ('numpy', 'torchreid')
GALLERY_RULES = ('auto', 'yes', 'no')
RERANK_DEFAULTS = {'k1': 20, 'k2': 6, 'lambda_value': 0.3}  # reid_eval.RerankOptions()
AQE_DEFAULTS = {'k': 5, 'alpha': 3.0}  # reid_eval.AQEOptions()


def fail(message: str) -> int:
    """Print ``error: message`` on stderr; return the exit status of a user error (2)."""
    print(f'error: {message}', file=sys.stderr)
    return 2


def run(action: Callable[[], int | None], interrupted: str = '') -> int:
    """Run ``action`` (a command's work, which imports the library); a user error becomes one ``error:`` line and
    exit status 2, Ctrl-C one line (with ``interrupted``: what a rerun resumes) and exit status 130."""
    with warnings.catch_warnings():
        # the library's warnings (a zoo file left out, a cache shard recomputed, ...) as one line, from its import on
        warnings.showwarning = _one_line
        try:
            from sinet_timm.errors import SinetTimmError  # the library, imported once the arguments are known
        except KeyboardInterrupt:
            return _interrupted(interrupted)
        try:
            return action() or 0
        except SinetTimmError as e:
            return fail(str(e))
        except KeyboardInterrupt:
            return _interrupted(interrupted)


def _one_line(message, category, filename, lineno, file=None, line=None) -> None:
    print(f'warning: {message}', file=sys.stderr)


def _interrupted(what: str) -> int:
    print(f'interrupted{": " + what if what else ""}', file=sys.stderr)
    return 130


def output_taken(path: Path | None, overwrite: bool) -> str | None:
    """The message for an output file that exists and may not be replaced, is a folder (never replaced, even with
    --overwrite) or lies under a file (None when it is fine to write); said before any work is done."""
    if path is None:
        return None
    if path.is_dir():
        return f'--output {path} is a folder; give a file name (a folder is never replaced, even with --overwrite)'
    blocking = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
    if blocking is not None:
        return f'--output {path} lies under {blocking}, which is a file; choose another path'
    if path.exists() and not overwrite:
        return f'{path} exists; pass --overwrite to replace it or choose another --output'
    return None


def add_extraction_arguments(p: argparse.ArgumentParser, workers_help: str) -> None:
    """``--device``, ``--amp``, ``--batch-clips`` and ``--workers``, as sinet-eval and sinet-extract take them."""
    p.add_argument('--device', default='auto', help='auto, cpu, cuda or cuda:N (auto: the GPU if there is one)')
    p.add_argument('--amp', choices=AMP_CHOICES, default='auto',
                   help='autocast dtype on CUDA (auto: bf16); always off on CPU')
    p.add_argument('--batch-clips', type=int, default=None,
                   help='4-frame clips per forward pass (default: 32 on CUDA, 4 on CPU, where it is faster)')
    p.add_argument('--workers', type=int, default=min(8, os.cpu_count() or 1), help=workers_help)
