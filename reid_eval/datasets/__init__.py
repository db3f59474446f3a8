"""The video re-ID benchmarks: one :class:`DatasetSpec` per benchmark, one list of them, one loader.

MARS, iLIDS-VID, PRID-2011 and DukeMTMC-VideoReID are parsed by torchreid's own dataset classes, so the
tracklets, person ids and camera ids are exactly the ones torchreid (and the papers that use it) evaluate on.
LS-VID, which torchreid lacks, is parsed by :class:`~reid_eval.datasets.lsvid.LSVID`, a torchreid
``VideoDataset`` that follows the official layout the way the SINet authors' ``utils/data_manager.py`` reads it.

Every dataset folder is checked *before* torchreid sees it: a missing folder or file raises
:class:`~reid_eval.errors.DatasetLayoutError` naming the missing path and showing the expected layout, so torchreid
never tries to download anything and the user never gets a deep traceback. A tracklet without frames raises
:class:`~reid_eval.errors.EmptyTrackletError`; nothing is silently dropped (except what torchreid itself drops by
design, listed in each spec's ``protocol_notes``).

Adding a benchmark means adding one module with its ``SPEC`` and listing it in :data:`SPECS`.
"""
from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path

import numpy as np

from ..errors import DatasetLayoutError, EmptyTrackletError, EvalError
from . import dukev, ilidsvid, lsvid, mars, prid2011
from .spec import DatasetSpec, DirListing, Tracklet, VideoSplit, layout_error, torchreid_flavor

__all__ = [
    'SPECS', 'VALID_DATASETS', 'DatasetSpec', 'Tracklet', 'VideoSplit', 'canonical_name', 'check_layout',
    'get_spec', 'load_dataset', 'num_splits', 'resolve_dataset_dir', 'torchreid_flavor',
]

SPECS: tuple[DatasetSpec, ...] = (mars.SPEC, lsvid.SPEC, ilidsvid.SPEC, prid2011.SPEC, dukev.SPEC)
"""Every benchmark, in the order the documentation lists them."""

VALID_DATASETS: tuple[str, ...] = tuple(s.name for s in SPECS)
"""Canonical dataset names accepted by :func:`load_dataset`."""

_BY_NAME: dict[str, DatasetSpec] = {n: s for s in SPECS for n in (s.name, *s.aliases)}


def get_spec(name: str) -> DatasetSpec:
    """The spec of a dataset, by name or alias (``ilids-vid``, ``prid``, ``ls-vid`` ...)."""
    key = str(name).strip().lower()
    if key not in _BY_NAME:
        aliases = sorted(a for s in SPECS for a in s.aliases)
        raise EvalError(f"Unknown dataset {name!r}. Valid names: {', '.join(VALID_DATASETS)} "
                        f"(aliases: {', '.join(aliases)})")
    return _BY_NAME[key]


def canonical_name(name: str) -> str:
    """Map a dataset name or alias to its canonical name."""
    return get_spec(name).name


def num_splits(name: str) -> int:
    """Number of train/test splits of a dataset: 10 for iLIDS-VID and PRID-2011, 1 otherwise."""
    return get_spec(name).num_splits


def resolve_dataset_dir(name: str, root: str | Path) -> tuple[Path, str]:
    """Return ``(parent, folder)`` such that the dataset lives in ``parent/folder``.

    ``root`` is torchreid's root (the folder *containing* ``mars/``, ``ilids-vid/`` ...), or the dataset
    folder itself (recognised by its content, whatever its name).
    """
    spec = get_spec(name)
    root = Path(root).expanduser().absolute()
    if (root / spec.folder).is_dir():
        return root, spec.folder
    if (root / spec.marker).exists() and root.parent != root:
        return root.parent, root.name
    return root, spec.folder


def check_layout(name: str, root: str | Path) -> Path:
    """Check the files torchreid needs exist (without calling torchreid); return the dataset folder."""
    spec = get_spec(name)
    parent, folder = resolve_dataset_dir(name, root)
    ds = parent / folder
    if not Path(root).expanduser().exists():
        raise layout_error(spec.name, spec.layout, Path(root).expanduser().absolute(),
                           '(dataset root) does not exist')
    if not ds.is_dir():
        raise layout_error(spec.name, spec.layout, ds, '(dataset folder) does not exist')
    for path in spec.required(ds):
        if not path.exists():
            raise layout_error(spec.name, spec.layout, path)
    return ds


def _check_frames(name: str, role: str, tracklets: list[Tracklet], listing: DirListing, hint: str = '') -> None:
    for i, (paths, pid, camid) in enumerate(tracklets):
        if not paths:
            raise EmptyTrackletError(f'{name} {role} tracklet #{i} (pid {pid}, camid {camid}) has no frame')
        present = [listing.contains(p) for p in paths]
        if not any(present):
            raise EmptyTrackletError(
                f'{name} {role} tracklet #{i} (pid {pid}, camid {camid}) has no frame on disk: '
                f'{len(paths)} listed, e.g. {paths[0]}{hint}'
            )
        if not all(present):
            missing = paths[present.index(False)]
            raise DatasetLayoutError(
                f'{name} {role} tracklet #{i} (pid {pid}, camid {camid}): frame {missing} is missing{hint}'
            )


def _tracklets(items: list, sort_frames: bool = False) -> list[Tracklet]:
    out = []
    for item in items:
        paths = tuple(str(p) for p in item[0])
        if sort_frames:
            paths = tuple(sorted(paths))
        out.append((paths, int(item[1]), int(item[2])))
    return out


def _identity(x: object) -> object:
    return x


def load_dataset(name: str, root: str | Path, split_id: int = 0, *, check_frames: bool = True) -> VideoSplit:
    """Load the query/gallery (and train) tracklets of a video re-ID dataset.

    Args:
        name: ``mars``, ``lsvid``, ``ilidsvid``, ``prid2011`` or ``dukev`` (or an alias, see :func:`get_spec`).
        root: folder containing the dataset folder (torchreid convention, e.g. ``<root>/mars``), or the
            dataset folder itself.
        split_id: split for iLIDS-VID / PRID-2011 (0..9); must be 0 for the other datasets.
        check_frames: verify every query/gallery frame exists (one directory listing per folder).

    Raises:
        EvalError: unknown name or split_id out of range.
        DatasetLayoutError: missing/malformed files (a ``FileNotFoundError``), before torchreid runs.
        EmptyTrackletError: a tracklet without frames.
    """
    spec = get_spec(name)
    if not isinstance(split_id, (int, np.integer)) or not 0 <= split_id < spec.num_splits:
        raise EvalError(f'split_id {split_id!r} is out of range for {spec.name}: valid 0..{spec.num_splits - 1}')
    split_id = int(split_id)
    ds = check_layout(spec.name, root)
    parent, folder = ds.parent, ds.name
    kwargs = spec.prepare(ds, split_id)
    hint = spec.stale_hint.replace('{dataset_dir}', str(ds))
    cls = spec.parser()
    if folder != cls.dataset_dir:  # dataset folder under a non-default name: same parser, other folder
        cls = type(cls.__name__, (cls,), {'dataset_dir': folder})

    buf = io.StringIO()
    try:
        with contextlib.redirect_stdout(buf), warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter('always')
            dataset = cls(root=str(parent), transform=_identity, verbose=False, **kwargs)
    except DatasetLayoutError:
        raise
    except Exception as exc:
        raise DatasetLayoutError(
            f"torchreid's {cls.__name__} could not parse {ds}: {type(exc).__name__}: {exc}\n"
            f'Expected layout for {spec.name}:\n{spec.layout}'
        ) from exc
    skipped = [w for w in caught if 'is missing, skip' in str(w.message)]
    if skipped:
        warnings.warn(f"torchreid's {cls.__name__} skipped {len(skipped)} frame indices of tracklets that do "
                      f'not start at F0001 (first: {skipped[0].message})', stacklevel=2)
    for w in caught:
        if w not in skipped and not issubclass(w.category, DeprecationWarning):
            warnings.warn(str(w.message), w.category, stacklevel=2)

    query = _tracklets(dataset.query, spec.sort_frames)
    gallery = _tracklets(dataset.gallery, spec.sort_frames)
    train = _tracklets(dataset.train, spec.sort_frames)
    if check_frames:
        listing = DirListing()
        _check_frames(spec.name, 'query', query, listing, hint)
        _check_frames(spec.name, 'gallery', gallery, listing, hint)
    return VideoSplit(
        name=spec.name,
        split_id=split_id,
        query=query,
        gallery=gallery,
        train=train,
        num_train_pids=int(dataset.num_train_pids),
        protocol_notes=spec.protocol_notes.replace('{split}', str(split_id)),
        dataset_dir=str(ds),
        extra={'torchreid_class': cls.__name__, 'torchreid_flavor': torchreid_flavor()},
    )
