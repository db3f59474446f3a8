"""MARS (Zheng et al., ECCV 2016), read by torchreid's ``Mars``."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from scipy.io import loadmat

from ..errors import EmptyTrackletError
from .spec import DatasetSpec, layout_error, torchreid_video_class

NAME = 'mars'
LAYOUT = """\
<root>/mars/
    info/train_name.txt  info/test_name.txt            (one frame file name per line)
    info/tracks_train_info.mat  info/tracks_test_info.mat   ([start, end, pid, camid] rows, 1-based)
    info/query_IDX.mat                                  (1-based rows of tracks_test_info)
    bbox_train/0001/0001C1T0001F001.jpg ...
    bbox_test/0000/...  bbox_test/00-1/...  bbox_test/0002/0002C1T0001F001.jpg ...
(the info/ files come from https://github.com/liangzheng06/MARS-evaluation)"""


def _required(ds: Path) -> list[Path]:
    return [ds / 'info' / f for f in ('train_name.txt', 'test_name.txt', 'tracks_train_info.mat',
                                      'tracks_test_info.mat', 'query_IDX.mat')] + [ds / 'bbox_test']


def _check_info(ds: Path, split_id: int) -> dict[str, Any]:
    """Validate MARS's info files so that torchreid's asserts never fire with a cryptic message."""
    info = ds / 'info'
    for split, key, names_file in (('train', 'track_train_info', 'train_name.txt'),
                                   ('test', 'track_test_info', 'test_name.txt')):
        mat_path = info / f'tracks_{split}_info.mat'
        try:
            rows = np.asarray(loadmat(str(mat_path))[key])
        except KeyError:
            raise layout_error(NAME, LAYOUT, mat_path, f'has no variable {key!r}') from None
        except Exception as exc:
            raise layout_error(NAME, LAYOUT, mat_path, f'is not a readable .mat file ({exc})') from exc
        if rows.ndim != 2 or rows.shape[1] != 4:
            raise layout_error(NAME, LAYOUT, mat_path, f'must hold an (N, 4) array, got shape {rows.shape}')
        with open(info / names_file) as f:
            num_names = sum(1 for _ in f)
        for i, (start, end, pid, cam) in enumerate(rows.astype(np.int64).tolist()):
            if end < start:
                raise EmptyTrackletError(
                    f'MARS {split} tracklet #{i + 1} of {mat_path.name} (pid {pid}, camera {cam}) is empty: '
                    f'frames {start}..{end} of {names_file}'
                )
            if start < 1 or end > num_names:
                raise layout_error(NAME, LAYOUT, mat_path, f'row {i + 1} points at frames {start}..{end} outside '
                                                           f'1..{num_names} of {names_file}')
            if pid != -1 and not 1 <= cam <= 6:
                raise layout_error(NAME, LAYOUT, mat_path, f'row {i + 1} has camera {cam} outside 1..6')
        if split == 'test':
            qpath = info / 'query_IDX.mat'
            try:
                q = np.asarray(loadmat(str(qpath))['query_IDX']).ravel()
            except KeyError:
                raise layout_error(NAME, LAYOUT, qpath, "has no variable 'query_IDX'") from None
            if q.size < 2 or q.min() < 1 or q.max() > len(rows):
                raise layout_error(NAME, LAYOUT, qpath, f'must list >= 2 rows in 1..{len(rows)}')
    return {}


SPEC = DatasetSpec(
    name=NAME,
    display_name='MARS',
    aliases=(),
    folder='mars',
    marker='info',
    layout=LAYOUT,
    protocol_notes=(
        "MARS via torchreid's Mars. query = rows of info/tracks_test_info.mat picked by info/query_IDX.mat "
        '(1-based); gallery = all other test rows. Rows with pid -1 (junk) are dropped by torchreid; '
        'pid 0 rows (distractors) stay in the gallery. pids are the MARS ids (not relabelled); '
        'camid = MARS camera - 1 (0..5). Standard protocol (MARS-evaluation, SINet): rank the query '
        'against query + gallery together (otherwise some queries have no cross-camera match); the '
        'evaluator, not this loader, concatenates them. Same-pid same-camera gallery items are ignored.'
    ),
    required=_required,
    parser=torchreid_video_class('Mars'),
    prepare=_check_info,
    add_query_to_gallery=True,  # the released evaluation (and MARS-evaluation) rank against query + gallery
)
