"""DukeMTMC-VideoReID (Wu et al., CVPR 2018), read by torchreid's ``DukeMTMCVidReID``."""
from __future__ import annotations

import glob
import os
import re
from pathlib import Path
from typing import Any

from ..errors import EmptyTrackletError
from .spec import DatasetSpec, layout_error, torchreid_video_class

NAME = 'dukev'
LAYOUT = """\
<root>/dukemtmc-vidreid/
    DukeMTMC-VideoReID/train/<pid:04d>/<tracklet:04d>/<pid>_C<cam>_F<frame:04d>_X<n>.jpg ...
    DukeMTMC-VideoReID/query/<pid>/<tracklet>/*.jpg
    DukeMTMC-VideoReID/gallery/<pid>/<tracklet>/*.jpg
    split_train.json split_query.json split_gallery.json   (torchreid caches, written on first use)"""


def _required(ds: Path) -> list[Path]:
    return [ds / 'DukeMTMC-VideoReID' / s for s in ('train', 'query', 'gallery')]


def _check_dirs(ds: Path, split_id: int) -> dict[str, Any]:
    """Pre-check the folders torchreid's DukeMTMCVidReID will parse (those without a json cache)."""
    fnum = re.compile(r'F(\d{4})')
    for sub in ('train', 'query', 'gallery'):
        if (ds / f'split_{sub}.json').exists():
            continue
        sdir = ds / 'DukeMTMC-VideoReID' / sub
        pdirs = sorted(glob.glob(str(sdir / '*')))
        if not pdirs:
            raise layout_error(NAME, LAYOUT, sdir, 'holds no tracklet')
        for pdir in pdirs:
            if not os.path.basename(pdir).isdigit() or not os.path.isdir(pdir):
                raise layout_error(NAME, LAYOUT, pdir, 'is not a <pid> folder (only numeric folders allowed)')
            for tdir in sorted(glob.glob(os.path.join(pdir, '*'))):
                frames = glob.glob(os.path.join(tdir, '*.jpg'))
                wanted = set(range(1, len(frames) + 1))
                found = {int(m) for fr in frames for m in fnum.findall(os.path.basename(fr))} & wanted
                if not found:
                    raise EmptyTrackletError(
                        f'DukeMTMC-VideoReID tracklet {Path(tdir).relative_to(sdir)} has no usable frame: '
                        f'{len(frames)} *.jpg, none named F0001..F{len(frames):04d} (torchreid looks up '
                        f'frames by these indices) in {tdir}'
                    )
    return {}


SPEC = DatasetSpec(
    name=NAME,
    display_name='DukeMTMC-VideoReID',
    aliases=('duke', 'dukemtmcvidreid', 'dukemtmc-vidreid', 'dukemtmc-videoreid', 'dukemtmcvideoreid', 'duke-video'),
    folder='dukemtmc-vidreid',
    marker='DukeMTMC-VideoReID',
    layout=LAYOUT,
    protocol_notes=(
        "DukeMTMC-VideoReID via torchreid's DukeMTMCVidReID. query/gallery = the query/ and gallery/ "
        'folders (pid = folder name, not relabelled; camid = C field of the first frame name - 1). The '
        'query is not part of the gallery. torchreid keeps, per tracklet of n frames, the frames '
        'F0001..F{n} that exist, so a tracklet starting at F0002 loses its last frame. Parsed tracklets '
        'are cached by torchreid in split_{train,query,gallery}.json with absolute paths.'
    ),
    required=_required,
    parser=torchreid_video_class('DukeMTMCVidReID'),
    prepare=_check_dirs,
    train_chunk=32,  # the released loader's sampling_step for DukeV
    stale_hint=(' (if the dataset was moved or regenerated, delete the stale torchreid caches '
                '{dataset_dir}/split_*.json)'),
)
