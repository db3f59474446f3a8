"""Dataset layer of ``reid_eval``: load the query / gallery split of a video re-ID benchmark.

MARS, iLIDS-VID, PRID-2011 and DukeMTMC-VideoReID are parsed by torchreid's own dataset classes, so the
tracklets, person ids and camera ids are exactly the ones torchreid (and the papers that use it) evaluate
on.  LS-VID, which torchreid lacks, is parsed by :class:`LSVID`, a torchreid ``VideoDataset`` that follows
the official LS-VID layout the way the SINet authors' ``utils/data_manager.py`` reads it; it is registered
with torchreid under the name ``"lsvid"``.

Every dataset folder is checked *before* torchreid sees it: a missing folder or file raises
:class:`DatasetLayoutError` (a ``FileNotFoundError``) naming the missing path and showing the expected
layout, so torchreid never tries to download anything and the user never gets a deep traceback.  A
tracklet without frames raises :class:`EmptyTrackletError`; nothing is silently dropped (except what
torchreid itself drops by design, listed per dataset in :data:`PROTOCOL_NOTES`).

Each tracklet is ``(img_paths, pid, camid)`` with ``img_paths`` a tuple of absolute paths in temporal order.
"""

from __future__ import annotations

import bisect
import contextlib
import glob
import importlib
import importlib.util
import io
import json
import os
import re
import warnings
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "VALID_DATASETS",
    "DATASET_DIRS",
    "EXPECTED_LAYOUTS",
    "PROTOCOL_NOTES",
    "DatasetLayoutError",
    "EmptyTrackletError",
    "Tracklet",
    "VideoSplit",
    "canonical_name",
    "num_splits",
    "torchreid_flavor",
    "resolve_dataset_dir",
    "check_layout",
    "load_dataset",
    "get_lsvid_class",
    "register_lsvid",
]

Tracklet = tuple[tuple[str, ...], int, int]
"""One tracklet: ``(img_paths, pid, camid)``, as torchreid produces it (minus its ``dsetid``)."""

VALID_DATASETS: tuple[str, ...] = ("mars", "lsvid", "ilidsvid", "prid2011", "dukev")
"""Canonical dataset names accepted by :func:`load_dataset`."""

_ALIASES: dict[str, str] = {
    "mars": "mars",
    "lsvid": "lsvid",
    "ls-vid": "lsvid",
    "ls_vid": "lsvid",
    "ilidsvid": "ilidsvid",
    "ilids-vid": "ilidsvid",
    "ilids_vid": "ilidsvid",
    "i-lids-vid": "ilidsvid",
    "prid2011": "prid2011",
    "prid": "prid2011",
    "prid-2011": "prid2011",
    "prid_2011": "prid2011",
    "dukev": "dukev",
    "duke": "dukev",
    "dukemtmcvidreid": "dukev",
    "dukemtmc-vidreid": "dukev",
    "dukemtmc-videoreid": "dukev",
    "dukemtmcvideoreid": "dukev",
    "duke-video": "dukev",
}

DATASET_DIRS: dict[str, str] = {
    "mars": "mars",
    "lsvid": "LS-VID",
    "ilidsvid": "ilids-vid",
    "prid2011": "prid2011",
    "dukev": "dukemtmc-vidreid",
}
"""Folder (under ``root``) that holds each dataset; these are torchreid's ``dataset_dir`` names."""

# A sub-path that only exists inside the dataset folder: lets ``root`` be the dataset folder itself.
_MARKERS: dict[str, str] = {
    "mars": "info",
    "lsvid": "list_sequence",
    "ilidsvid": "i-LIDS-VID",
    "prid2011": "prid_2011",
    "dukev": "DukeMTMC-VideoReID",
}

_NUM_SPLITS: dict[str, int] = {"mars": 1, "lsvid": 1, "ilidsvid": 10, "prid2011": 10, "dukev": 1}

EXPECTED_LAYOUTS: dict[str, str] = {
    "mars": """\
<root>/mars/
    info/train_name.txt  info/test_name.txt            (one frame file name per line)
    info/tracks_train_info.mat  info/tracks_test_info.mat   ([start, end, pid, camid] rows, 1-based)
    info/query_IDX.mat                                  (1-based rows of tracks_test_info)
    bbox_train/0001/0001C1T0001F001.jpg ...
    bbox_test/0000/...  bbox_test/00-1/...  bbox_test/0002/0002C1T0001F001.jpg ...
(the info/ files come from https://github.com/liangzheng06/MARS-evaluation)""",
    "lsvid": """\
<root>/LS-VID/
    list_sequence/list_seq_train.txt     ("tracklet_train/<pid>/<prefix> <pid>" per line)
    list_sequence/list_seq_test.txt      ("tracklet_test/<pid>/<prefix> <pid>" per line)
    test/data/info_test.mat              (MATLAB v7.3 / HDF5, variable 'query': 1-based test-list rows)
    tracklet_train/<pid>/<prefix>*.jpg   tracklet_test/<pid>/<prefix>*.jpg
    (frame names <track>_<frame>_<camera>_<x>.jpg; the camera is the third '_' field, 1..15)""",
    "ilidsvid": """\
<root>/ilids-vid/
    i-LIDS-VID/sequences/cam1/person001/*.png ...
    i-LIDS-VID/sequences/cam2/person001/*.png ...
    train-test people splits/train_test_splits_ilidsvid.mat   (variable 'ls_set', 10 x #persons)
    splits.json                                               (written on first use)
(the iLIDS-VID.tar archive extracted into <root>/ilids-vid)""",
    "prid2011": """\
<root>/prid2011/
    prid_2011/multi_shot/cam_a/person_0001/0001.png ...
    prid_2011/multi_shot/cam_b/person_0001/0001.png ...
    splits_prid2011.json          (10 splits {"train": [...], "test": [...]}; torchreid's file)""",
    "dukev": """\
<root>/dukemtmc-vidreid/
    DukeMTMC-VideoReID/train/<pid:04d>/<tracklet:04d>/<pid>_C<cam>_F<frame:04d>_X<n>.jpg ...
    DukeMTMC-VideoReID/query/<pid>/<tracklet>/*.jpg
    DukeMTMC-VideoReID/gallery/<pid>/<tracklet>/*.jpg
    split_train.json split_query.json split_gallery.json   (torchreid caches, written on first use)""",
}
"""Expected on-disk layout of each dataset, shown in every :class:`DatasetLayoutError`."""

PROTOCOL_NOTES: dict[str, str] = {
    "mars": (
        "MARS via torchreid's Mars. query = rows of info/tracks_test_info.mat picked by info/query_IDX.mat "
        "(1-based); gallery = all other test rows. Rows with pid -1 (junk) are dropped by torchreid; "
        "pid 0 rows (distractors) stay in the gallery. pids are the MARS ids (not relabelled); "
        "camid = MARS camera - 1 (0..5). Standard protocol (MARS-evaluation, SINet): rank the query "
        "against query + gallery together (otherwise some queries have no cross-camera match); the "
        "evaluator, not this loader, concatenates them. Same-pid same-camera gallery items are ignored."
    ),
    "lsvid": (
        "LS-VID via reid_eval's LSVID (SINet's parser). query = rows of list_seq_test.txt picked by the "
        "'query' variable of test/data/info_test.mat (1-based); gallery = the remaining test rows (the "
        "query is NOT added to the gallery, as in SINet). pids are the LS-VID ids; camid = third '_' field "
        "of the frame file name - 1 (0..14); frames sorted by name; pid -1 rows would be dropped."
    ),
    "ilidsvid": (
        "iLIDS-VID via torchreid's iLIDSVID, split {split} of 10 (from train_test_splits_ilidsvid.mat: "
        "first half of each row = test persons, as in Wang et al. ECCV'14). query = the cam1 sequence of "
        "every test person (camid 0), gallery = its cam2 sequence (camid 1); test pids are relabelled "
        "0..N-1 in split order. Report the mean over the 10 splits. Frames are sorted by file name "
        "(torchreid keeps glob order)."
    ),
    "prid2011": (
        "PRID-2011 via torchreid's PRID2011, split {split} of 10 (splits_prid2011.json). query = the cam_a "
        "sequence of every test person (camid 0), gallery = its cam_b sequence (camid 1); test pids are "
        "relabelled 0..N-1 in split order; persons not in the split (e.g. seen by one camera only) are "
        "unused. Report the mean over the 10 splits. Frames are sorted by file name (torchreid keeps "
        "glob order)."
    ),
    "dukev": (
        "DukeMTMC-VideoReID via torchreid's DukeMTMCVidReID. query/gallery = the query/ and gallery/ "
        "folders (pid = folder name, not relabelled; camid = C field of the first frame name - 1). The "
        "query is not part of the gallery. torchreid keeps, per tracklet of n frames, the frames "
        "F0001..F{n} that exist, so a tracklet starting at F0002 loses its last frame. Parsed tracklets "
        "are cached by torchreid in split_{train,query,gallery}.json with absolute paths."
    ),
}
"""Protocol facts per dataset (``{split}`` is replaced by the split id in :func:`load_dataset`)."""


class DatasetLayoutError(FileNotFoundError):
    """A dataset folder is missing, incomplete or malformed (raised before torchreid is called)."""


class EmptyTrackletError(DatasetLayoutError):
    """A tracklet listed by the dataset has no frame on disk."""


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
    dataset_dir: str = ""
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
        rows = [("train", self.num_train_pids, len(self.train)),
                ("query", self.num_query_pids, len(self.query)),
                ("gallery", self.num_gallery_pids, len(self.gallery))]
        lines = [f"{self.name} (split {self.split_id})", "  subset   | # ids | # tracklets"]
        lines += [f"  {n:<8} | {i:5d} | {t:11d}" for n, i, t in rows]
        return "\n".join(lines)


# --------------------------------------------------------------------------------------------------------
# names, torchreid access


def canonical_name(name: str) -> str:
    """Map a dataset name or alias (``ilids-vid``, ``prid``, ``ls-vid`` ...) to its canonical name."""
    key = str(name).strip().lower()
    if key not in _ALIASES:
        raise ValueError(
            f"Unknown dataset {name!r}. Valid names: {', '.join(VALID_DATASETS)} "
            f"(aliases: {', '.join(sorted(k for k, v in _ALIASES.items() if k != v))})"
        )
    return _ALIASES[key]


def num_splits(name: str) -> int:
    """Number of train/test splits of a dataset: 10 for iLIDS-VID and PRID-2011, 1 otherwise."""
    return _NUM_SPLITS[canonical_name(name)]


@lru_cache(maxsize=1)
def torchreid_flavor() -> str:
    """Return ``"pypi"`` for the PyPI ``torchreid`` repackaging (``torchreid.reid.*``), ``"upstream"`` for
    KaiyangZhou/deep-person-reid (``torchreid.data.*``); raise ImportError when torchreid is missing."""
    with _quiet_import():
        if importlib.util.find_spec("torchreid") is None:
            raise ImportError("torchreid is not installed: pip install torchreid==0.2.5")
        if importlib.util.find_spec("torchreid.reid") is not None:
            return "pypi"
        if importlib.util.find_spec("torchreid.data") is not None:
            return "upstream"
    raise ImportError("unrecognised torchreid package: neither torchreid.reid nor torchreid.data exists")


@contextlib.contextmanager
def _quiet_import():
    with warnings.catch_warnings():
        # torchreid's metrics module warns at import time when its Cython ranking is not compiled
        warnings.filterwarnings("ignore", message=".*Cython evaluation.*")
        yield


@lru_cache(maxsize=1)
def _torchreid_datasets() -> tuple[Any, Any, Any]:
    """(datasets package, video sub-package, VideoDataset) of whichever torchreid is installed."""
    base = "torchreid.reid.data.datasets" if torchreid_flavor() == "pypi" else "torchreid.data.datasets"
    with _quiet_import():
        pkg = importlib.import_module(base)
        video = importlib.import_module(base + ".video")
        video_dataset = importlib.import_module(base + ".dataset").VideoDataset
    return pkg, video, video_dataset


def _identity(x: Any) -> Any:
    return x


# --------------------------------------------------------------------------------------------------------
# LS-VID


_LSVID_CLASS: type | None = None


def get_lsvid_class() -> type:
    """Build (once) and return the :class:`LSVID` torchreid ``VideoDataset`` class."""
    global _LSVID_CLASS
    if _LSVID_CLASS is None:
        _LSVID_CLASS = _build_lsvid_class()
    return _LSVID_CLASS


def register_lsvid() -> type:
    """Register :class:`LSVID` with torchreid as ``"lsvid"`` (idempotent) and return the class."""
    cls = get_lsvid_class()
    pkg, _, _ = _torchreid_datasets()
    try:
        pkg.register_video_dataset("lsvid", cls)
    except ValueError:  # already registered (by us or by someone else): keep the existing entry
        pass
    return cls


def __getattr__(name: str) -> Any:
    """PEP 562: ``from reid_eval.datasets import LSVID`` imports torchreid only when needed."""
    if name == "LSVID":
        return get_lsvid_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _read_lsvid_query_idx(path: str) -> np.ndarray:
    """0-based query rows from ``info_test.mat`` (MATLAB v7.3/HDF5 as shipped; v5 .mat also accepted)."""
    try:
        import h5py

        with h5py.File(path, "r") as f:
            if "query" not in f:
                raise DatasetLayoutError(f"{path}: no variable 'query' (found {sorted(f.keys())})")
            raw = np.asarray(f["query"])
    except OSError:  # not an HDF5 file: try the pre-v7.3 MAT format
        from scipy.io import loadmat

        try:
            mat = loadmat(path)
        except Exception as exc:
            raise DatasetLayoutError(f"{path} is neither a MATLAB v7.3 (HDF5) nor a v5 .mat file") from exc
        if "query" not in mat:
            raise DatasetLayoutError(f"{path}: no variable 'query'") from None
        raw = np.asarray(mat["query"])
    idx = raw.ravel()  # MATLAB column vector (Nq x 1) is stored transposed, (1, Nq), in HDF5
    if idx.size == 0 or not np.all(np.equal(np.mod(idx, 1), 0)):
        raise DatasetLayoutError(f"{path}: 'query' must hold 1-based integer row numbers")
    return idx.astype(np.int64) - 1


class _DirListing:
    """Caches one ``os.listdir`` per folder (globbing 10^4 prefixes one by one is slow on LS-VID/MARS)."""

    def __init__(self) -> None:
        self._cache: dict[str, list[str]] = {}

    def names(self, folder: str) -> list[str]:
        if folder not in self._cache:
            try:
                self._cache[folder] = sorted(n for n in os.listdir(folder) if not n.startswith("."))
            except (FileNotFoundError, NotADirectoryError):
                self._cache[folder] = []
        return self._cache[folder]

    def contains(self, path: str) -> bool:
        folder, name = os.path.split(path)
        names = self.names(folder)
        i = _bisect(names, name)
        return i < len(names) and names[i] == name

    def with_prefix(self, prefix_path: str) -> list[str]:
        folder, prefix = os.path.split(prefix_path)
        names = self.names(folder)
        i = _bisect(names, prefix)
        out = []
        while i < len(names) and names[i].startswith(prefix):
            out.append(os.path.join(folder, names[i]))
            i += 1
        return out


def _bisect(names: list[str], key: str) -> int:
    return bisect.bisect_left(names, key)


def _build_lsvid_class() -> type:
    _, _, VideoDataset = _torchreid_datasets()

    class LSVID(VideoDataset):
        """LS-VID (Li et al., Global-Local Temporal Representations for Video Person Re-ID, ICCV 2019).

        Official layout, parsed as in the SINet authors' ``utils/data_manager.py``:

        - ``list_sequence/list_seq_{train,test}.txt``: one tracklet per line, ``"<prefix> <pid>"``; its
          frames are the files matching ``<root>/LS-VID/<prefix>*``, sorted by name.
        - ``test/data/info_test.mat`` (MATLAB v7.3): variable ``query`` = 1-based rows of the test list;
          the query set is those rows (in that order), the gallery the remaining rows (query excluded).
        - camid = int(third ``_`` field of the first frame name) - 1, in 0..14.
        - train pids are relabelled 0..N-1 in increasing pid order; rows with pid -1 are skipped.

        Unlike SINet's class, nothing is cached to json and a tracklet without frames raises
        :class:`EmptyTrackletError` instead of an IndexError.
        """

        dataset_dir = "LS-VID"
        dataset_url = None

        def __init__(self, root: str = "", **kwargs: Any) -> None:
            self.root = os.path.abspath(os.path.expanduser(root))
            self.dataset_dir = os.path.join(self.root, self.dataset_dir)
            self.download_dataset(self.dataset_dir, self.dataset_url)  # url None: raises, never downloads
            self.train_list_path = os.path.join(self.dataset_dir, "list_sequence", "list_seq_train.txt")
            self.test_list_path = os.path.join(self.dataset_dir, "list_sequence", "list_seq_test.txt")
            self.query_idx_path = os.path.join(self.dataset_dir, "test", "data", "info_test.mat")
            self.check_before_run(
                [self.dataset_dir, self.train_list_path, self.test_list_path, self.query_idx_path]
            )
            listing = _DirListing()
            train_rows = self._read_list(self.train_list_path)
            test_rows = self._read_list(self.test_list_path)
            query_idx = _read_lsvid_query_idx(self.query_idx_path)
            if query_idx.min() < 0 or query_idx.max() >= len(test_rows):
                raise DatasetLayoutError(
                    f"{self.query_idx_path}: query rows must lie in 1..{len(test_rows)} "
                    f"(the length of {self.test_list_path}), got {query_idx.min() + 1}..{query_idx.max() + 1}"
                )
            if len(set(query_idx.tolist())) != len(query_idx):
                raise DatasetLayoutError(f"{self.query_idx_path}: 'query' lists a row twice")
            qset = set(query_idx.tolist())
            train = self._process(train_rows, listing, relabel=True, what=self.train_list_path)
            query = self._process([test_rows[i] for i in query_idx], listing, False, self.test_list_path)
            gallery = self._process(
                [r for i, r in enumerate(test_rows) if i not in qset], listing, False, self.test_list_path
            )
            super().__init__(train, query, gallery, **kwargs)

        @staticmethod
        def _read_list(path: str) -> list[tuple[str, int, int]]:
            rows = []
            with open(path) as f:
                for lineno, line in enumerate(f, 1):
                    line = line.strip()
                    if not line:
                        continue
                    parts = line.rsplit(" ", 1)
                    try:
                        rows.append((parts[0], int(parts[1]), lineno))
                    except (IndexError, ValueError):
                        raise DatasetLayoutError(
                            f"{path}:{lineno}: expected '<tracklet prefix> <pid>', got {line!r}"
                        ) from None
            if not rows:
                raise DatasetLayoutError(f"{path} lists no tracklet")
            return rows

        def _process(self, rows: list[tuple[str, int, int]], listing: _DirListing, relabel: bool,
                     what: str) -> list[tuple[tuple[str, ...], int, int]]:
            pid2label = {pid: i for i, pid in enumerate(sorted({p for _, p, _ in rows if p != -1}))}
            tracklets = []
            for prefix, pid, lineno in rows:
                img_paths = listing.with_prefix(os.path.join(self.dataset_dir, prefix))
                if not img_paths:
                    raise EmptyTrackletError(
                        f"LS-VID tracklet {prefix!r} (pid {pid}, {what}:{lineno}) has no frame: nothing "
                        f"matches {os.path.join(self.dataset_dir, prefix)}*"
                    )
                if pid == -1:  # junk, as in SINet
                    continue
                fields = os.path.basename(img_paths[0]).split("_")
                try:
                    camid = int(fields[2])
                except (IndexError, ValueError):
                    raise DatasetLayoutError(
                        f"LS-VID frame {img_paths[0]}: expected <track>_<frame>_<camera>_<x>.jpg"
                    ) from None
                if not 1 <= camid <= 15:
                    raise DatasetLayoutError(f"LS-VID frame {img_paths[0]}: camera {camid} not in 1..15")
                tracklets.append((tuple(img_paths), pid2label[pid] if relabel else pid, camid - 1))
            return tracklets

    LSVID.__module__ = __name__
    LSVID.__qualname__ = "LSVID"
    return LSVID


# --------------------------------------------------------------------------------------------------------
# layout checks


def _layout_error(name: str, missing: Path | str, what: str = "is missing") -> DatasetLayoutError:
    return DatasetLayoutError(
        f"{missing} {what}.\nExpected layout for {name}:\n{EXPECTED_LAYOUTS[name]}"
    )


def resolve_dataset_dir(name: str, root: str | Path) -> tuple[Path, str]:
    """Return ``(parent, folder)`` such that the dataset lives in ``parent/folder``.

    ``root`` is torchreid's root (the folder *containing* ``mars/``, ``ilids-vid/`` ...), or the dataset
    folder itself (recognised by its content, whatever its name).
    """
    name = canonical_name(name)
    root = Path(root).expanduser().absolute()
    default = DATASET_DIRS[name]
    if (root / default).is_dir():
        return root, default
    if (root / _MARKERS[name]).exists() and root.parent != root:
        return root.parent, root.name
    return root, default


def check_layout(name: str, root: str | Path) -> Path:
    """Check the files torchreid needs exist (without calling torchreid); return the dataset folder."""
    name = canonical_name(name)
    parent, folder = resolve_dataset_dir(name, root)
    ds = parent / folder
    if not Path(root).expanduser().exists():
        raise _layout_error(name, Path(root).expanduser().absolute(), "(dataset root) does not exist")
    if not ds.is_dir():
        raise _layout_error(name, ds, "(dataset folder) does not exist")
    required: list[Path] = {
        "mars": [ds / "info" / f for f in ("train_name.txt", "test_name.txt", "tracks_train_info.mat",
                                           "tracks_test_info.mat", "query_IDX.mat")] + [ds / "bbox_test"],
        "lsvid": [ds / "list_sequence" / "list_seq_train.txt", ds / "list_sequence" / "list_seq_test.txt",
                  ds / "test" / "data" / "info_test.mat"],
        "ilidsvid": [ds / "i-LIDS-VID" / "sequences" / "cam1", ds / "i-LIDS-VID" / "sequences" / "cam2"]
        + ([] if (ds / "splits.json").exists()
           else [ds / "train-test people splits" / "train_test_splits_ilidsvid.mat"]),
        "prid2011": [ds / "prid_2011" / "multi_shot" / "cam_a", ds / "prid_2011" / "multi_shot" / "cam_b",
                     ds / "splits_prid2011.json"],
        "dukev": [ds / "DukeMTMC-VideoReID" / s for s in ("train", "query", "gallery")],
    }[name]
    for path in required:
        if not path.exists():
            raise _layout_error(name, path)
    return ds


def _check_mars_info(ds: Path) -> None:
    """Validate MARS's info files so that torchreid's asserts never fire with a cryptic message."""
    from scipy.io import loadmat

    info = ds / "info"
    for split, key, names_file in (("train", "track_train_info", "train_name.txt"),
                                   ("test", "track_test_info", "test_name.txt")):
        mat_path = info / f"tracks_{split}_info.mat"
        try:
            rows = np.asarray(loadmat(str(mat_path))[key])
        except KeyError:
            raise _layout_error("mars", mat_path, f"has no variable {key!r}") from None
        except Exception as exc:
            raise _layout_error("mars", mat_path, f"is not a readable .mat file ({exc})") from exc
        if rows.ndim != 2 or rows.shape[1] != 4:
            raise _layout_error("mars", mat_path, f"must hold an (N, 4) array, got shape {rows.shape}")
        with open(info / names_file) as f:
            num_names = sum(1 for _ in f)
        for i, (start, end, pid, cam) in enumerate(rows.astype(np.int64).tolist()):
            if end < start:
                raise EmptyTrackletError(
                    f"MARS {split} tracklet #{i + 1} of {mat_path.name} (pid {pid}, camera {cam}) is empty: "
                    f"frames {start}..{end} of {names_file}"
                )
            if start < 1 or end > num_names:
                raise _layout_error("mars", mat_path, f"row {i + 1} points at frames {start}..{end} outside "
                                                      f"1..{num_names} of {names_file}")
            if pid != -1 and not 1 <= cam <= 6:
                raise _layout_error("mars", mat_path, f"row {i + 1} has camera {cam} outside 1..6")
        if split == "test":
            qpath = info / "query_IDX.mat"
            try:
                q = np.asarray(loadmat(str(qpath))["query_IDX"]).ravel()
            except KeyError:
                raise _layout_error("mars", qpath, "has no variable 'query_IDX'") from None
            if q.size < 2 or q.min() < 1 or q.max() > len(rows):
                raise _layout_error("mars", qpath, f"must list >= 2 rows in 1..{len(rows)}")


def _ilids_splits(ds: Path) -> list[dict[str, list[str]]]:
    """Read ``splits.json``, creating it from the .mat exactly as torchreid's ``prepare_split`` does.

    torchreid additionally asserts 300 persons; this copy accepts any even number so that small (synthetic
    or subset) folders work too.  For the real dataset the file is identical to torchreid's.
    """
    split_path = ds / "splits.json"
    if not split_path.exists():
        from scipy.io import loadmat

        mat_path = ds / "train-test people splits" / "train_test_splits_ilidsvid.mat"
        try:
            ls_set = np.asarray(loadmat(str(mat_path))["ls_set"])
        except KeyError:
            raise _layout_error("ilidsvid", mat_path, "has no variable 'ls_set'") from None
        seq = ds / "i-LIDS-VID" / "sequences"
        cam1 = [os.path.basename(p) for p in sorted(glob.glob(str(seq / "cam1" / "*")))]
        cam2 = [os.path.basename(p) for p in sorted(glob.glob(str(seq / "cam2" / "*")))]
        if set(cam1) != set(cam2):
            only = sorted(set(cam1) ^ set(cam2))
            raise _layout_error("ilidsvid", seq / "cam1", f"and cam2 hold different persons: {only[:10]}")
        if ls_set.ndim != 2 or ls_set.shape[1] != len(cam1) or len(cam1) % 2:
            raise _layout_error("ilidsvid", mat_path, f"'ls_set' has shape {ls_set.shape}; expected "
                                                      f"(num_splits, {len(cam1)}) for {len(cam1)} persons")
        half = ls_set.shape[1] // 2
        splits = []
        for row in ls_set:
            train_idxs = [int(i) - 1 for i in sorted(row[half:].tolist())]
            test_idxs = [int(i) - 1 for i in sorted(row[:half].tolist())]
            splits.append({"train": [cam1[i] for i in train_idxs], "test": [cam1[i] for i in test_idxs]})
        with open(split_path, "w") as f:
            json.dump(splits, f, indent=4, separators=(",", ": "))
    with open(split_path) as f:
        return json.load(f)


def _check_split(name: str, split_path: Path, splits: Any, split_id: int) -> dict[str, list[str]]:
    if not isinstance(splits, list) or not all(isinstance(s, dict) and {"train", "test"} <= set(s)
                                               for s in splits):
        raise _layout_error(name, split_path, "must be a list of {'train': [...], 'test': [...]} splits")
    if not 0 <= split_id < len(splits):
        raise ValueError(f"split_id {split_id} is out of range for {name}: {split_path} has "
                         f"{len(splits)} splits (0..{len(splits) - 1})")
    return splits[split_id]


def _check_person_dirs(name: str, cams: list[Path], dirnames: list[str]) -> None:
    for d in dirnames:
        for cam in cams:
            pdir = cam / d
            if not pdir.is_dir():
                raise _layout_error(name, pdir, "(a person of the split) does not exist")
            if not glob.glob(str(pdir / "*.png")):
                raise EmptyTrackletError(f"{name} tracklet {cam.name}/{d} has no frame: no *.png in {pdir}")


def _check_duke_dirs(ds: Path) -> None:
    """Pre-check the folders torchreid's DukeMTMCVidReID will parse (those without a json cache)."""
    fnum = re.compile(r"F(\d{4})")
    for sub in ("train", "query", "gallery"):
        if (ds / f"split_{sub}.json").exists():
            continue
        sdir = ds / "DukeMTMC-VideoReID" / sub
        pdirs = sorted(glob.glob(str(sdir / "*")))
        if not pdirs:
            raise _layout_error("dukev", sdir, "holds no tracklet")
        for pdir in pdirs:
            if not os.path.basename(pdir).isdigit() or not os.path.isdir(pdir):
                raise _layout_error("dukev", pdir, "is not a <pid> folder (only numeric folders allowed)")
            for tdir in sorted(glob.glob(os.path.join(pdir, "*"))):
                frames = glob.glob(os.path.join(tdir, "*.jpg"))
                wanted = set(range(1, len(frames) + 1))
                found = {int(m) for fr in frames for m in fnum.findall(os.path.basename(fr))} & wanted
                if not found:
                    raise EmptyTrackletError(
                        f"DukeMTMC-VideoReID tracklet {Path(tdir).relative_to(sdir)} has no usable frame: "
                        f"{len(frames)} *.jpg, none named F0001..F{len(frames):04d} (torchreid looks up "
                        f"frames by these indices) in {tdir}"
                    )


def _check_frames(name: str, role: str, tracklets: list[Tracklet], listing: _DirListing,
                  hint: str = "") -> None:
    for i, (paths, pid, camid) in enumerate(tracklets):
        if not paths:
            raise EmptyTrackletError(f"{name} {role} tracklet #{i} (pid {pid}, camid {camid}) has no frame")
        present = [listing.contains(p) for p in paths]
        if not any(present):
            raise EmptyTrackletError(
                f"{name} {role} tracklet #{i} (pid {pid}, camid {camid}) has no frame on disk: "
                f"{len(paths)} listed, e.g. {paths[0]}{hint}"
            )
        if not all(present):
            missing = paths[present.index(False)]
            raise DatasetLayoutError(
                f"{name} {role} tracklet #{i} (pid {pid}, camid {camid}): frame {missing} is missing{hint}"
            )


# --------------------------------------------------------------------------------------------------------
# loading


def _tracklets(items: list[Any], sort_frames: bool = False) -> list[Tracklet]:
    out = []
    for item in items:
        paths = tuple(str(p) for p in item[0])
        if sort_frames:
            paths = tuple(sorted(paths))
        out.append((paths, int(item[1]), int(item[2])))
    return out


def load_dataset(name: str, root: str | Path, split_id: int = 0, *, check_frames: bool = True) -> VideoSplit:
    """Load the query/gallery (and train) tracklets of a video re-ID dataset.

    Args:
        name: ``mars``, ``lsvid``, ``ilidsvid``, ``prid2011`` or ``dukev`` (or an alias, see
            :func:`canonical_name`).
        root: folder containing the dataset folder (torchreid convention, e.g. ``<root>/mars``), or the
            dataset folder itself.
        split_id: split for iLIDS-VID / PRID-2011 (0..9); must be 0 for the other datasets.
        check_frames: verify every query/gallery frame exists (one directory listing per folder).

    Raises:
        ValueError: unknown name or split_id out of range.
        DatasetLayoutError: missing/malformed files (a ``FileNotFoundError``), before torchreid runs.
        EmptyTrackletError: a tracklet without frames.
    """
    name = canonical_name(name)
    if not isinstance(split_id, (int, np.integer)) or not 0 <= split_id < _NUM_SPLITS[name]:
        raise ValueError(
            f"split_id {split_id!r} is out of range for {name}: valid 0..{_NUM_SPLITS[name] - 1}"
        )
    split_id = int(split_id)
    ds = check_layout(name, root)
    parent, folder = ds.parent, ds.name
    kwargs: dict[str, Any] = {}
    hint = ""
    if name == "mars":
        _check_mars_info(ds)
    elif name == "ilidsvid":
        split = _check_split(name, ds / "splits.json", _ilids_splits(ds), split_id)
        seq = ds / "i-LIDS-VID" / "sequences"
        _check_person_dirs(name, [seq / "cam1", seq / "cam2"], split["train"] + split["test"])
        kwargs["split_id"] = split_id
    elif name == "prid2011":
        split_path = ds / "splits_prid2011.json"
        try:
            with open(split_path) as f:
                splits = json.load(f)
        except json.JSONDecodeError as exc:
            raise _layout_error(name, split_path, f"is not valid JSON ({exc})") from exc
        split = _check_split(name, split_path, splits, split_id)
        shot = ds / "prid_2011" / "multi_shot"
        _check_person_dirs(name, [shot / "cam_a", shot / "cam_b"], split["train"] + split["test"])
        kwargs["split_id"] = split_id
    elif name == "dukev":
        _check_duke_dirs(ds)
        hint = (f" (if the dataset was moved or regenerated, delete the stale torchreid caches "
                f"{ds}/split_*.json)")

    if name == "lsvid":
        cls = register_lsvid()
    else:
        _, video, _ = _torchreid_datasets()
        cls = {"mars": video.Mars, "ilidsvid": video.iLIDSVID, "prid2011": video.PRID2011,
               "dukev": video.DukeMTMCVidReID}[name]
    if folder != cls.dataset_dir:  # dataset folder under a non-default name: same parser, other folder
        cls = type(cls.__name__, (cls,), {"dataset_dir": folder})

    buf = io.StringIO()
    try:
        with contextlib.redirect_stdout(buf), warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            dataset = cls(root=str(parent), transform=_identity, verbose=False, **kwargs)
    except DatasetLayoutError:
        raise
    except Exception as exc:
        raise DatasetLayoutError(
            f"torchreid's {cls.__name__} could not parse {ds}: {type(exc).__name__}: {exc}\n"
            f"Expected layout for {name}:\n{EXPECTED_LAYOUTS[name]}"
        ) from exc
    skipped = [w for w in caught if "is missing, skip" in str(w.message)]
    if skipped:
        warnings.warn(f"torchreid's {cls.__name__} skipped {len(skipped)} frame indices of tracklets that do "
                      f"not start at F0001 (first: {skipped[0].message})", stacklevel=2)
    for w in caught:
        if w not in skipped and not issubclass(w.category, DeprecationWarning):
            warnings.warn(str(w.message), w.category, stacklevel=2)

    sort_frames = name in ("ilidsvid", "prid2011")  # torchreid keeps raw glob order for these two
    query = _tracklets(dataset.query, sort_frames)
    gallery = _tracklets(dataset.gallery, sort_frames)
    train = _tracklets(dataset.train, sort_frames)
    if check_frames:
        listing = _DirListing()
        _check_frames(name, "query", query, listing, hint)
        _check_frames(name, "gallery", gallery, listing, hint)
    return VideoSplit(
        name=name,
        split_id=split_id,
        query=query,
        gallery=gallery,
        train=train,
        num_train_pids=int(dataset.num_train_pids),
        protocol_notes=PROTOCOL_NOTES[name].replace("{split}", str(split_id)),
        dataset_dir=str(ds),
        extra={"torchreid_class": cls.__name__, "torchreid_flavor": torchreid_flavor()},
    )
