"""LS-VID (Li et al., ICCV 2019): torchreid lacks it, so :class:`LSVID` is a torchreid ``VideoDataset`` reading the
official layout the way the SINet authors' ``utils/data_manager.py`` does; it is registered with torchreid under the
name ``"lsvid"`` when first used."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from scipy.io import loadmat

from ..errors import DatasetLayoutError, EmptyTrackletError
from .spec import DatasetSpec, DirListing, torchreid_datasets

NAME = 'lsvid'
LAYOUT = """\
<root>/LS-VID/
    list_sequence/list_seq_train.txt     ("tracklet_train/<pid>/<prefix> <pid>" per line)
    list_sequence/list_seq_test.txt      ("tracklet_test/<pid>/<prefix> <pid>" per line)
    test/data/info_test.mat              (MATLAB v7.3 / HDF5, variable 'query': 1-based test-list rows)
    tracklet_train/<pid>/<prefix>*.jpg   tracklet_test/<pid>/<prefix>*.jpg
    (frame names <track>_<frame>_<camera>_<x>.jpg; the camera is the third '_' field, 1..15)"""


def _required(ds: Path) -> list[Path]:
    return [ds / 'list_sequence' / 'list_seq_train.txt', ds / 'list_sequence' / 'list_seq_test.txt',
            ds / 'test' / 'data' / 'info_test.mat']


def read_query_idx(path: str) -> np.ndarray:
    """0-based query rows from ``info_test.mat`` (MATLAB v7.3/HDF5 as shipped; v5 .mat also accepted)."""
    try:
        with h5py.File(path, 'r') as f:
            if 'query' not in f:
                raise DatasetLayoutError(f"{path}: no variable 'query' (found {sorted(f.keys())})")
            raw = np.asarray(f['query'])
    except OSError:  # not an HDF5 file: try the pre-v7.3 MAT format
        try:
            mat = loadmat(path)
        except Exception as exc:
            raise DatasetLayoutError(f'{path} is neither a MATLAB v7.3 (HDF5) nor a v5 .mat file') from exc
        if 'query' not in mat:
            raise DatasetLayoutError(f"{path}: no variable 'query'") from None
        raw = np.asarray(mat['query'])
    idx = raw.ravel()  # MATLAB column vector (Nq x 1) is stored transposed, (1, Nq), in HDF5
    if idx.size == 0 or not np.all(np.equal(np.mod(idx, 1), 0)):
        raise DatasetLayoutError(f"{path}: 'query' must hold 1-based integer row numbers")
    return idx.astype(np.int64) - 1


_LSVID_CLASS: type | None = None


def get_lsvid_class() -> type:
    """Build (once, torchreid is imported then) and return the :class:`LSVID` torchreid ``VideoDataset`` class."""
    global _LSVID_CLASS
    if _LSVID_CLASS is None:
        _LSVID_CLASS = _build_lsvid_class()
    return _LSVID_CLASS


def register_lsvid() -> type:
    """Register :class:`LSVID` with torchreid as ``"lsvid"`` (idempotent) and return the class."""
    cls = get_lsvid_class()
    pkg, _, _ = torchreid_datasets()
    try:
        pkg.register_video_dataset('lsvid', cls)
    except ValueError:  # already registered (by us or by someone else): keep the existing entry
        pass
    return cls


def _build_lsvid_class() -> type:
    _, _, VideoDataset = torchreid_datasets()

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

        dataset_dir = 'LS-VID'
        dataset_url = None

        def __init__(self, root: str = '', **kwargs: Any) -> None:
            self.root = os.path.abspath(os.path.expanduser(root))
            self.dataset_dir = os.path.join(self.root, self.dataset_dir)
            self.download_dataset(self.dataset_dir, self.dataset_url)  # url None: raises, never downloads
            self.train_list_path = os.path.join(self.dataset_dir, 'list_sequence', 'list_seq_train.txt')
            self.test_list_path = os.path.join(self.dataset_dir, 'list_sequence', 'list_seq_test.txt')
            self.query_idx_path = os.path.join(self.dataset_dir, 'test', 'data', 'info_test.mat')
            self.check_before_run(
                [self.dataset_dir, self.train_list_path, self.test_list_path, self.query_idx_path]
            )
            listing = DirListing()
            train_rows = self._read_list(self.train_list_path)
            test_rows = self._read_list(self.test_list_path)
            query_idx = read_query_idx(self.query_idx_path)
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
                    parts = line.rsplit(' ', 1)
                    try:
                        rows.append((parts[0], int(parts[1]), lineno))
                    except (IndexError, ValueError):
                        raise DatasetLayoutError(
                            f"{path}:{lineno}: expected '<tracklet prefix> <pid>', got {line!r}"
                        ) from None
            if not rows:
                raise DatasetLayoutError(f'{path} lists no tracklet')
            return rows

        def _process(self, rows: list[tuple[str, int, int]], listing: DirListing, relabel: bool,
                     what: str) -> list[tuple[tuple[str, ...], int, int]]:
            pid2label = {pid: i for i, pid in enumerate(sorted({p for _, p, _ in rows if p != -1}))}
            tracklets = []
            for prefix, pid, lineno in rows:
                img_paths = listing.with_prefix(os.path.join(self.dataset_dir, prefix))
                if not img_paths:
                    raise EmptyTrackletError(
                        f'LS-VID tracklet {prefix!r} (pid {pid}, {what}:{lineno}) has no frame: nothing '
                        f'matches {os.path.join(self.dataset_dir, prefix)}*'
                    )
                if pid == -1:  # junk, as in SINet
                    continue
                fields = os.path.basename(img_paths[0]).split('_')
                try:
                    camid = int(fields[2])
                except (IndexError, ValueError):
                    raise DatasetLayoutError(
                        f'LS-VID frame {img_paths[0]}: expected <track>_<frame>_<camera>_<x>.jpg'
                    ) from None
                if not 1 <= camid <= 15:
                    raise DatasetLayoutError(f'LS-VID frame {img_paths[0]}: camera {camid} not in 1..15')
                tracklets.append((tuple(img_paths), pid2label[pid] if relabel else pid, camid - 1))
            return tracklets

    LSVID.__module__ = __name__
    LSVID.__qualname__ = 'LSVID'
    return LSVID


def __getattr__(name: str) -> Any:
    """PEP 562: ``from reid_eval.datasets.lsvid import LSVID`` imports torchreid only when needed."""
    if name == 'LSVID':
        return get_lsvid_class()
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


SPEC = DatasetSpec(
    name=NAME,
    display_name='LS-VID',
    aliases=('ls-vid', 'ls_vid'),
    folder='LS-VID',
    marker='list_sequence',
    layout=LAYOUT,
    protocol_notes=(
        "LS-VID via reid_eval's LSVID (SINet's parser). query = rows of list_seq_test.txt picked by the "
        "'query' variable of test/data/info_test.mat (1-based); gallery = the remaining test rows (the "
        'query is NOT added to the gallery, as in SINet). pids are the LS-VID ids; camid = third \'_\' field '
        'of the frame file name - 1 (0..14); frames sorted by name; pid -1 rows would be dropped.'
    ),
    required=_required,
    parser=register_lsvid,
    train_chunk=48,  # the released loader's sampling_step for LS-VID
)
