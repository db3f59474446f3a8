"""PRID-2011 (Hirzer et al., SCIA 2011), read by torchreid's ``PRID2011``; 10 splits (torchreid's file)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .spec import DatasetSpec, check_person_dirs, check_split, layout_error, torchreid_video_class

NAME = 'prid2011'
LAYOUT = """\
<root>/prid2011/
    prid_2011/multi_shot/cam_a/person_0001/0001.png ...
    prid_2011/multi_shot/cam_b/person_0001/0001.png ...
    splits_prid2011.json          (10 splits {"train": [...], "test": [...]}; torchreid's file)"""


def _required(ds: Path) -> list[Path]:
    shot = ds / 'prid_2011' / 'multi_shot'
    return [shot / 'cam_a', shot / 'cam_b', ds / 'splits_prid2011.json']


def _prepare(ds: Path, split_id: int) -> dict[str, Any]:
    split_path = ds / 'splits_prid2011.json'
    try:
        with open(split_path) as f:
            splits = json.load(f)
    except json.JSONDecodeError as exc:
        raise layout_error(NAME, LAYOUT, split_path, f'is not valid JSON ({exc})') from exc
    split = check_split(NAME, LAYOUT, split_path, splits, split_id)
    shot = ds / 'prid_2011' / 'multi_shot'
    check_person_dirs(NAME, LAYOUT, [shot / 'cam_a', shot / 'cam_b'], split['train'] + split['test'])
    return {'split_id': split_id}


SPEC = DatasetSpec(
    name=NAME,
    display_name='PRID-2011',
    aliases=('prid', 'prid-2011', 'prid_2011'),
    folder='prid2011',
    marker='prid_2011',
    layout=LAYOUT,
    protocol_notes=(
        "PRID-2011 via torchreid's PRID2011, split {split} of 10 (splits_prid2011.json). query = the cam_a "
        'sequence of every test person (camid 0), gallery = its cam_b sequence (camid 1); test pids are '
        'relabelled 0..N-1 in split order; persons not in the split (e.g. seen by one camera only) are '
        'unused. Report the mean over the 10 splits. Frames are sorted by file name (torchreid keeps '
        'glob order).'
    ),
    required=_required,
    parser=torchreid_video_class('PRID2011'),
    prepare=_prepare,
    num_splits=10,
    sort_frames=True,
    paper={'sinet_r50': {'rank1': 96.5}},  # Table 1
)
