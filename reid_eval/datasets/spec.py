"""What a benchmark is, as data: :class:`DatasetSpec`, and the helpers every dataset module shares.

A dataset module (``mars.py``, ``lsvid.py``, ...) describes one benchmark as a :class:`DatasetSpec`: its names,
where it lives, the files it needs (checked before torchreid runs), the parser that reads it (a torchreid
``VideoDataset``), its splits, the released evaluation's gallery rule, the released training chunking, and the
paper's numbers that have no zoo checkpoint. :mod:`reid_eval.datasets` lists the specs and loads any of them.
"""
from __future__ import annotations

import bisect
import contextlib
import glob
import importlib
import importlib.util
import os
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from sinet_timm.hub import DatasetInfo

from ..errors import DatasetLayoutError, EmptyTrackletError, EvalError

__all__ = ['DatasetSpec', 'DirListing', 'Tracklet', 'VideoSplit', 'check_person_dirs', 'check_split', 'layout_error',
           'quiet_torchreid_import', 'torchreid_datasets', 'torchreid_flavor']

Tracklet = tuple[tuple[str, ...], int, int]
"""One tracklet: ``(img_paths, pid, camid)``, as torchreid produces it (minus its ``dsetid``)."""


def _nothing_to_prepare(ds: Path, split_id: int) -> dict[str, Any]:
    return {}


@dataclass(frozen=True)
class DatasetSpec:
    """Everything the project knows about one video re-ID benchmark."""

    name: str  # canonical name ('mars')
    display_name: str  # as papers write it ('MARS')
    aliases: tuple[str, ...]  # other accepted names (lower case)
    folder: str  # the dataset folder under the root (torchreid's ``dataset_dir``)
    marker: str  # a sub-path only the dataset folder has: lets the root be the dataset folder itself
    layout: str  # the expected on-disk layout, shown in every DatasetLayoutError
    protocol_notes: str  # what the parser returns, as the protocol needs it ('{split}' is the split id)
    required: Callable[[Path], list[Path]]  # files/folders that must exist in the dataset folder
    parser: Callable[[], type]  # the torchreid VideoDataset class that reads it
    prepare: Callable[[Path, int], dict[str, Any]] = _nothing_to_prepare  # checks before the parser; its kwargs
    num_splits: int = 1  # train/test splits (iLIDS-VID, PRID-2011: 10)
    sort_frames: bool = False  # the parser keeps raw glob order: sort each tracklet's frames by name
    add_query_to_gallery: bool = False  # the released evaluation ranks the query against query + gallery
    train_chunk: int = 0  # the released loaders cut training tracklets into pieces of this many frames (0: whole)
    paper: dict[str, dict[str, float]] = field(default_factory=dict)  # arch -> metrics with no zoo checkpoint
    hub_dataset_id: str | None = None  # the dataset's Hugging Face Hub id, where one exists
    stale_hint: str = ''  # added to frame errors (e.g. torchreid's cached split files)

    def __post_init__(self) -> None:
        if self.name != self.name.lower() or any(a != a.lower() for a in self.aliases):
            raise ValueError(f'dataset names are lower case: {self.name!r}, {self.aliases}')

    def card_info(self) -> DatasetInfo:
        """What a model card says about the dataset (its name and, where it has one, its Hub id)."""
        return DatasetInfo(self.name, self.display_name, self.hub_dataset_id)


@dataclass
class VideoSplit:
    """One evaluation split of a video re-ID dataset, with torchreid's tracklet semantics.

    ``query``/``gallery``/``train`` hold ``(img_paths, pid, camid)`` tuples.  Train pids are relabelled
    0..num_train_pids-1 (torchreid); query/gallery pids are as documented in ``protocol_notes``.
    """

    name: str
    split_id: int
    query: list[Tracklet]
    gallery: list[Tracklet]
    train: list[Tracklet]
    num_train_pids: int
    protocol_notes: str
    dataset_dir: str = ''
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def num_query_pids(self) -> int:
        """Number of distinct query identities."""
        return len({pid for _, pid, _ in self.query})

    @property
    def num_gallery_pids(self) -> int:
        """Number of distinct gallery identities."""
        return len({pid for _, pid, _ in self.gallery})

    def summary(self) -> str:
        """A short table of the split sizes."""
        rows = [('train', self.num_train_pids, len(self.train)),
                ('query', self.num_query_pids, len(self.query)),
                ('gallery', self.num_gallery_pids, len(self.gallery))]
        lines = [f'{self.name} (split {self.split_id})', '  subset   | # ids | # tracklets']
        lines += [f'  {n:<8} | {i:5d} | {t:11d}' for n, i, t in rows]
        return '\n'.join(lines)


# --------------------------------------------------------------------------------------------------------
# torchreid access


@lru_cache(maxsize=1)
def torchreid_flavor() -> str:
    """Return ``"pypi"`` for the PyPI ``torchreid`` repackaging (``torchreid.reid.*``), ``"upstream"`` for
    KaiyangZhou/deep-person-reid (``torchreid.data.*``); raise ImportError when torchreid is missing."""
    with quiet_torchreid_import():
        if importlib.util.find_spec('torchreid') is None:
            raise ImportError('torchreid is not installed: pip install torchreid==0.2.5')
        if importlib.util.find_spec('torchreid.reid') is not None:
            return 'pypi'
        if importlib.util.find_spec('torchreid.data') is not None:
            return 'upstream'
    raise ImportError('unrecognised torchreid package: neither torchreid.reid nor torchreid.data exists')


@contextlib.contextmanager
def quiet_torchreid_import() -> Iterator[None]:
    """torchreid's metrics module warns at import time when its Cython ranking is not compiled: silence that one
    warning (and only it) while importing."""
    with warnings.catch_warnings():
        warnings.filterwarnings('ignore', message='.*Cython evaluation.*')
        yield


def torchreid_module(pypi: str, upstream: str) -> Any:
    """Import a torchreid module under the installed flavour's name (``torchreid.reid.X`` or ``torchreid.X``)."""
    with quiet_torchreid_import():
        return importlib.import_module(pypi if torchreid_flavor() == 'pypi' else upstream)


@lru_cache(maxsize=1)
def torchreid_datasets() -> tuple[Any, Any, Any]:
    """(datasets package, video sub-package, VideoDataset) of whichever torchreid is installed."""
    pkg = torchreid_module('torchreid.reid.data.datasets', 'torchreid.data.datasets')
    video = importlib.import_module(pkg.__name__ + '.video')
    video_dataset = importlib.import_module(pkg.__name__ + '.dataset').VideoDataset
    return pkg, video, video_dataset


def torchreid_video_class(name: str) -> Callable[[], type]:
    """A spec's ``parser``: torchreid's video dataset class ``name`` (imported when first needed)."""
    return lambda: getattr(torchreid_datasets()[1], name)


# --------------------------------------------------------------------------------------------------------
# shared checks


def layout_error(name: str, layout: str, missing: Path | str, what: str = 'is missing') -> DatasetLayoutError:
    return DatasetLayoutError(f'{missing} {what}.\nExpected layout for {name}:\n{layout}')


class DirListing:
    """Caches one ``os.listdir`` per folder (globbing 10^4 prefixes one by one is slow on LS-VID/MARS)."""

    def __init__(self) -> None:
        self._cache: dict[str, list[str]] = {}

    def names(self, folder: str) -> list[str]:
        if folder not in self._cache:
            try:
                self._cache[folder] = sorted(n for n in os.listdir(folder) if not n.startswith('.'))
            except (FileNotFoundError, NotADirectoryError):
                self._cache[folder] = []
        return self._cache[folder]

    def contains(self, path: str) -> bool:
        folder, name = os.path.split(path)
        names = self.names(folder)
        i = bisect.bisect_left(names, name)
        return i < len(names) and names[i] == name

    def with_prefix(self, prefix_path: str) -> list[str]:
        folder, prefix = os.path.split(prefix_path)
        names = self.names(folder)
        i = bisect.bisect_left(names, prefix)
        out = []
        while i < len(names) and names[i].startswith(prefix):
            out.append(os.path.join(folder, names[i]))
            i += 1
        return out


def check_split(name: str, layout: str, split_path: Path, splits: Any, split_id: int) -> dict[str, list[str]]:
    """The ``split_id``-th ``{'train': [...], 'test': [...]}`` entry of a split file, checked."""
    if not isinstance(splits, list) or not all(isinstance(s, dict) and {'train', 'test'} <= set(s)
                                               for s in splits):
        raise layout_error(name, layout, split_path, "must be a list of {'train': [...], 'test': [...]} splits")
    if not 0 <= split_id < len(splits):
        raise EvalError(f'split_id {split_id} is out of range for {name}: {split_path} has '
                        f'{len(splits)} splits (0..{len(splits) - 1})')
    return splits[split_id]


def check_person_dirs(name: str, layout: str, cams: list[Path], dirnames: list[str]) -> None:
    """Every person folder of a split exists under each camera folder and holds at least one PNG."""
    for d in dirnames:
        for cam in cams:
            pdir = cam / d
            if not pdir.is_dir():
                raise layout_error(name, layout, pdir, '(a person of the split) does not exist')
            if not glob.glob(str(pdir / '*.png')):
                raise EmptyTrackletError(f'{name} tracklet {cam.name}/{d} has no frame: no *.png in {pdir}')
