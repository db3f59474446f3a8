"""Your own tracklets: folders of frames or list files, found and checked (what ``sinet-extract`` reads).

INPUT is either

* a folder of tracklets: one subfolder of frames per tracklet (named after the subfolder), or a folder that
  holds frames directly (a single tracklet named after the folder). Frames are image files (.jpg, .jpeg, .png,
  .bmp, .gif, .webp, .tif, .tiff, .ppm, .pgm) of any size, in natural name order (``f2`` before ``f10``);
  hidden files are ignored, any other file in a tracklet folder is an error (loose non-image files next to the
  tracklet subfolders are ignored). A tracklet may have any number of frames >= 1.
* a list file: one tracklet per line, ``[NAME:] FOLDER`` (the images in FOLDER) or ``[NAME:] FRAME [FRAME ...]``
  (frame paths in temporal order). Fields are split like a shell line (quote paths with spaces), ``#`` starts
  a comment, relative paths are relative to the list file's folder. Without ``NAME:`` a folder line is named
  by the folder as written and a frame line ``line<N>`` (its line number).

:class:`FrameSelection` chooses the frames of each tracklet (``--min-frames``, ``--stride``,
``--max-frames-per-track``); video tracks (:mod:`reid_eval.video`) are chosen by the same rule.
"""
from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import EvalError, TrackletInputError
from .protocol import evenly_spaced

__all__ = ['IMAGE_EXTENSIONS', 'FrameSelection', 'InputTracklet', 'find_tracklets', 'list_frames',
           'select_tracklets']

IMAGE_EXTENSIONS = frozenset({'.jpg', '.jpeg', '.png', '.bmp', '.gif', '.webp', '.tif', '.tiff', '.ppm', '.pgm'})
_IGNORED = frozenset({'thumbs.db', 'desktop.ini'})


@dataclass
class InputTracklet:
    """A named tracklet: its frame paths in temporal order, or its frames in memory (crops: PIL images, uint8
    arrays or tensors, as :func:`reid_eval.extract` takes them)."""

    name: str
    frames: list[Any]
    camid: int | None = None  # the camera, for models that take camera ids (TF-CLIP)


@dataclass
class FrameSelection:
    """Which frames of a tracklet (or valid boxes of a video track) are embedded, in this order: a tracklet with
    fewer than ``min_frames`` is dropped; of the others every ``stride``-th frame from the first is kept, and of
    those at most ``max_frames_per_track``, evenly spaced (:func:`~reid_eval.protocol.evenly_spaced`: the middles
    of equal segments; None: all)."""

    stride: int = 1
    max_frames_per_track: int | None = None
    min_frames: int = 1

    def validate(self) -> None:
        """Raise :class:`~reid_eval.errors.EvalError` for a value that cannot work, naming the flag."""
        if not (isinstance(self.stride, int) and self.stride >= 1):
            raise EvalError(f'--stride must be a positive number of frames, got {self.stride!r}')
        if self.max_frames_per_track is not None and not (
                isinstance(self.max_frames_per_track, int) and self.max_frames_per_track >= 1):
            raise EvalError(f'--max-frames-per-track must be a positive number of frames, got '
                            f'{self.max_frames_per_track!r}')
        if not (isinstance(self.min_frames, int) and self.min_frames >= 1):
            raise EvalError(f'--min-frames must be a positive number of frames, got {self.min_frames!r}')

    def choose(self, frames: list[Any]) -> list[Any]:
        """The frames kept of a tracklet long enough to keep (stride, then the cap)."""
        chosen = frames[::self.stride]
        return chosen if self.max_frames_per_track is None else evenly_spaced(chosen, self.max_frames_per_track)

    def to_json(self) -> dict[str, Any]:
        return {'stride': self.stride, 'max_frames_per_track': self.max_frames_per_track,
                'min_frames': self.min_frames}


def select_tracklets(tracklets: list[InputTracklet], selection: FrameSelection
                     ) -> tuple[list[InputTracklet], list[InputTracklet]]:
    """(kept tracklets with their chosen frames, dropped tracklets: fewer than ``min_frames`` frames). Nothing
    kept is a :class:`~reid_eval.errors.TrackletInputError`."""
    selection.validate()
    kept = [InputTracklet(t.name, selection.choose(list(t.frames))) for t in tracklets
            if len(t.frames) >= selection.min_frames]
    dropped = [t for t in tracklets if len(t.frames) < selection.min_frames]
    if not kept:
        raise TrackletInputError(f'no tracklet has at least --min-frames {selection.min_frames} frames (the longest '
                                 f'has {max((len(t.frames) for t in tracklets), default=0)})')
    return kept, dropped


def _natural_key(name: str) -> list[Any]:
    return [int(s) if s.isdigit() else s.lower() for s in re.split(r'(\d+)', name)]


def _is_image(p: Path) -> bool:
    return p.suffix.lower() in IMAGE_EXTENSIONS


def _is_ignored(p: Path) -> bool:
    return p.name.startswith('.') or p.name.lower() in _IGNORED


def list_frames(folder: str | Path) -> list[str]:
    """The frames of a tracklet folder in natural name order; raises :class:`TrackletInputError` when the folder
    is missing, has no image, or holds a file that is not an image (hidden files and subfolders are skipped)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise TrackletInputError(f'tracklet folder {folder} does not exist (or is not a folder)')
    files = [p for p in folder.iterdir() if p.is_file() and not _is_ignored(p)]
    others = sorted(p.name for p in files if not _is_image(p))
    if others:
        shown = ', '.join(others[:5]) + (f' and {len(others) - 5} more' if len(others) > 5 else '')
        raise TrackletInputError(
            f'tracklet folder {folder} holds files that are not frames: {shown}. Expected only images '
            f'({", ".join(sorted(IMAGE_EXTENSIONS))}); move the other files out of the folder.')
    frames = sorted((p for p in files if _is_image(p)), key=lambda p: _natural_key(p.name))
    if not frames:
        sub = [p.name for p in folder.iterdir() if p.is_dir() and not _is_ignored(p)]
        hint = (f' It has subfolders ({", ".join(sorted(sub)[:3])}...): pass the folder of tracklet folders, '
                'or list the tracklets in a list file.') if sub else ''
        raise TrackletInputError(f'tracklet folder {folder} has no frames (no image files).{hint}')
    return [str(p) for p in frames]


def _from_folder(root: Path) -> list[InputTracklet]:
    entries = [p for p in root.iterdir() if not _is_ignored(p)]
    subdirs = sorted((p for p in entries if p.is_dir()), key=lambda p: _natural_key(p.name))
    images = [p for p in entries if p.is_file() and _is_image(p)]
    if images and subdirs:
        raise TrackletInputError(
            f'{root} holds both frames ({len(images)} images) and subfolders ({len(subdirs)}): it must be either '
            'a folder of tracklet subfolders or the frames of one tracklet. Move the loose images into a subfolder.')
    if images:
        return [InputTracklet(root.name or str(root), list_frames(root))]
    if not subdirs:
        raise TrackletInputError(
            f'no tracklets in {root}: it is empty (or holds no image and no subfolder). Expected one subfolder of '
            'frames per tracklet (INPUT/person1/0001.jpg ...), a folder of frames, or a list file.')
    return [InputTracklet(d.name, list_frames(d)) for d in subdirs]


def _from_list(list_file: Path) -> list[InputTracklet]:
    base = list_file.parent
    out: list[InputTracklet] = []
    try:
        text = list_file.read_text()
    except UnicodeDecodeError as e:
        raise TrackletInputError(
            f'{list_file} is not a text list file ({e.reason}). INPUT must be a folder of tracklets or a list file '
            'with one tracklet per line.') from None
    for n, line in enumerate(text.splitlines(), 1):
        try:
            fields = shlex.split(line, comments=True)
        except ValueError as e:
            raise TrackletInputError(f'{list_file}, line {n}: cannot split {line!r}: {e}') from None
        if not fields:
            continue
        name = None
        if len(fields) > 1 and fields[0].endswith(':'):
            name, fields = fields[0][:-1], fields[1:]
        paths = [Path(f).expanduser() for f in fields]
        paths = [p if p.is_absolute() else base / p for p in paths]
        missing = [f for f, p in zip(fields, paths, strict=True) if not p.exists()]
        if missing:
            raise TrackletInputError(
                f'{list_file}, line {n}: {missing[0]} does not exist (relative paths are relative to {base}). '
                'Each line is "[NAME:] FOLDER" or "[NAME:] FRAME [FRAME ...]".')
        if len(paths) == 1 and paths[0].is_dir():
            out.append(InputTracklet(name or fields[0].rstrip('/'), list_frames(paths[0])))
            continue
        dirs = [f for f, p in zip(fields, paths, strict=True) if p.is_dir()]
        if dirs:
            raise TrackletInputError(
                f'{list_file}, line {n}: {dirs[0]} is a folder among frame paths; a line is either one FOLDER or '
                'FRAME paths.')
        bad = [f for f, p in zip(fields, paths, strict=True) if not _is_image(p)]
        if bad:
            raise TrackletInputError(
                f'{list_file}, line {n}: {bad[0]} is not an image file '
                f'(expected {", ".join(sorted(IMAGE_EXTENSIONS))})')
        out.append(InputTracklet(name or f'line{n}', [str(p) for p in paths]))
    if not out:
        raise TrackletInputError(f'the list file {list_file} names no tracklet (it is empty or only comments)')
    return out


def find_tracklets(source: str | Path) -> list[InputTracklet]:
    """The tracklets of INPUT: a folder of tracklet subfolders, a folder of frames, or a list file."""
    src = Path(source).expanduser()
    if not src.exists():
        raise TrackletInputError(
            f'input {source} does not exist. Pass a folder of tracklets (one subfolder of frames each) or a list '
            'file (one tracklet per line).')
    if src.is_dir():
        tracklets = _from_folder(src)
    elif _is_image(src):
        raise TrackletInputError(
            f'input {source} is an image; pass the folder that holds the frames (or a list file naming them)')
    else:
        tracklets = _from_list(src)
    seen: dict[str, int] = {}
    for i, t in enumerate(tracklets):
        if t.name in seen:
            raise TrackletInputError(
                f'two tracklets are named {t.name!r} (#{seen[t.name]} and #{i}); names must be unique: give them '
                'explicit names in the list file ("NAME: ...")')
        seen[t.name] = i
    return tracklets
