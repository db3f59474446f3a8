"""iLIDS-VID (Wang et al., ECCV 2014), read by torchreid's ``iLIDSVID``; 10 train/test splits of the persons."""
from __future__ import annotations

import glob
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from scipy.io import loadmat

from .spec import DatasetSpec, check_person_dirs, check_split, layout_error, torchreid_video_class

NAME = 'ilidsvid'
LAYOUT = """\
<root>/ilids-vid/
    i-LIDS-VID/sequences/cam1/person001/*.png ...
    i-LIDS-VID/sequences/cam2/person001/*.png ...
    train-test people splits/train_test_splits_ilidsvid.mat   (variable 'ls_set', 10 x #persons)
    splits.json                                               (written on first use)
(the iLIDS-VID.tar archive extracted into <root>/ilids-vid)"""


def _required(ds: Path) -> list[Path]:
    seq = ds / 'i-LIDS-VID' / 'sequences'
    splits = [] if (ds / 'splits.json').exists() else [ds / 'train-test people splits' /
                                                      'train_test_splits_ilidsvid.mat']
    return [seq / 'cam1', seq / 'cam2', *splits]


def read_splits(ds: Path) -> list[dict[str, list[str]]]:
    """Read ``splits.json``, creating it from the .mat exactly as torchreid's ``prepare_split`` does.

    torchreid additionally asserts 300 persons; this copy accepts any even number so that small (synthetic
    or subset) folders work too.  For the real dataset the file is identical to torchreid's.
    """
    split_path = ds / 'splits.json'
    if not split_path.exists():
        mat_path = ds / 'train-test people splits' / 'train_test_splits_ilidsvid.mat'
        try:
            ls_set = np.asarray(loadmat(str(mat_path))['ls_set'])
        except KeyError:
            raise layout_error(NAME, LAYOUT, mat_path, "has no variable 'ls_set'") from None
        seq = ds / 'i-LIDS-VID' / 'sequences'
        cam1 = [os.path.basename(p) for p in sorted(glob.glob(str(seq / 'cam1' / '*')))]
        cam2 = [os.path.basename(p) for p in sorted(glob.glob(str(seq / 'cam2' / '*')))]
        if set(cam1) != set(cam2):
            only = sorted(set(cam1) ^ set(cam2))
            raise layout_error(NAME, LAYOUT, seq / 'cam1', f'and cam2 hold different persons: {only[:10]}')
        if ls_set.ndim != 2 or ls_set.shape[1] != len(cam1) or len(cam1) % 2:
            raise layout_error(NAME, LAYOUT, mat_path, f"'ls_set' has shape {ls_set.shape}; expected "
                                                       f'(num_splits, {len(cam1)}) for {len(cam1)} persons')
        half = ls_set.shape[1] // 2
        splits = []
        for row in ls_set:
            train_idxs = [int(i) - 1 for i in sorted(row[half:].tolist())]
            test_idxs = [int(i) - 1 for i in sorted(row[:half].tolist())]
            splits.append({'train': [cam1[i] for i in train_idxs], 'test': [cam1[i] for i in test_idxs]})
        with open(split_path, 'w') as f:
            json.dump(splits, f, indent=4, separators=(',', ': '))
    with open(split_path) as f:
        return json.load(f)


def _prepare(ds: Path, split_id: int) -> dict[str, Any]:
    split = check_split(NAME, LAYOUT, ds / 'splits.json', read_splits(ds), split_id)
    seq = ds / 'i-LIDS-VID' / 'sequences'
    check_person_dirs(NAME, LAYOUT, [seq / 'cam1', seq / 'cam2'], split['train'] + split['test'])
    return {'split_id': split_id}


SPEC = DatasetSpec(
    name=NAME,
    display_name='iLIDS-VID',
    aliases=('ilids-vid', 'ilids_vid', 'i-lids-vid'),
    folder='ilids-vid',
    marker='i-LIDS-VID',
    layout=LAYOUT,
    protocol_notes=(
        "iLIDS-VID via torchreid's iLIDSVID, split {split} of 10 (from train_test_splits_ilidsvid.mat: "
        'first half of each row = test persons, as in Wang et al. ECCV\'14). query = the cam1 sequence of '
        'every test person (camid 0), gallery = its cam2 sequence (camid 1); test pids are relabelled '
        '0..N-1 in split order. Report the mean over the 10 splits. Frames are sorted by file name '
        '(torchreid keeps glob order).'
    ),
    required=_required,
    parser=torchreid_video_class('iLIDSVID'),
    prepare=_prepare,
    num_splits=10,
    sort_frames=True,
    paper={'sinet_r50': {'rank1': 92.5}},  # Table 1
)
