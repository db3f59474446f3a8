"""DukeMTMC-VideoReID (Wu et al., CVPR 2018), read by torchreid's ``DukeMTMCVidReID``.

torchreid caches each parsed folder in ``split_{train,query,gallery}.json`` (absolute frame paths) and, when such a
file exists, reads it instead of the folder. A cache is used here only if it lists exactly what a parse of the
folder as it is now would give (the same frames under the same folder, the same pids and cameras): a moved,
copied or changed dataset is parsed again (one warning says why) and its cache rewritten where the folder is
writable, never evaluated from the old list.
"""
from __future__ import annotations

import glob
import json
import os
import re
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

from sinet_timm.errors import OutputWriteError
from sinet_timm.paths import replace_file

from ..errors import EmptyTrackletError
from .spec import DatasetSpec, layout_error, torchreid_video_class

NAME = 'dukev'
LAYOUT = """\
<root>/dukemtmc-vidreid/
    DukeMTMC-VideoReID/train/<pid:04d>/<tracklet:04d>/<pid>_C<cam>_F<frame:04d>_X<n>.jpg ...
    DukeMTMC-VideoReID/query/<pid>/<tracklet>/*.jpg
    DukeMTMC-VideoReID/gallery/<pid>/<tracklet>/*.jpg
    split_train.json split_query.json split_gallery.json   (torchreid caches, written on first use)"""
_FRAME_INDEX = re.compile(r'(?=F(\d{4}))')


def _required(ds: Path) -> list[Path]:
    return [ds / 'DukeMTMC-VideoReID' / s for s in ('train', 'query', 'gallery')]


def _check_subset(ds: Path, sub: str) -> None:
    """Pre-check one folder that torchreid's DukeMTMCVidReID will parse (one without a usable cache)."""
    fnum = re.compile(r'F(\d{4})')
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


def _check_dirs(ds: Path, split_id: int) -> dict[str, Any]:
    """Pre-check the folders without a cache (a cache is checked against its folder by the parser)."""
    for sub in ('train', 'query', 'gallery'):
        if not (ds / f'split_{sub}.json').exists():
            _check_subset(ds, sub)
    return {}


def _on_disk(dir_path: str) -> dict[str, tuple[tuple[str, ...], int, int]]:
    """What torchreid's parse of ``dir_path`` gives now, per tracklet folder: ``(frames, pid, camid)`` (frames
    F0001..F{n} that exist, for n *.jpg files; camid from the first frame's name). One listing per folder."""
    out = {}
    for pname in os.listdir(dir_path):
        pdir = os.path.join(dir_path, pname)
        if not pname.isdigit() or not os.path.isdir(pdir):
            continue
        for tname in os.listdir(pdir):
            tdir = os.path.join(pdir, tname)
            if not os.path.isdir(tdir):
                continue
            names = [n for n in os.listdir(tdir) if n.endswith('.jpg') and not n.startswith('.')]
            by_index: dict[int, str] = {}
            for n in names:
                for i in _FRAME_INDEX.findall(n):
                    by_index.setdefault(int(i), n)
            frames = tuple(os.path.join(tdir, by_index[i]) for i in range(1, len(names) + 1) if i in by_index)
            if frames:
                first = os.path.basename(frames[0])
                cam = first[6] if '_' in first else first[5]
                out[tdir] = (frames, int(pname), int(cam) - 1 if cam.isdigit() else -1)
    return out


def _stale(dir_path: str, json_path: str, relabel: bool) -> str | None:
    """Why torchreid's cache ``json_path`` does not list the folder ``dir_path`` as it is now (None: it does)."""
    name = os.path.basename(json_path)
    try:
        with open(json_path) as f:
            tracklets = json.load(f)['tracklets']
        cached = {}
        for paths, pid, camid in tracklets:
            cached[os.path.dirname(paths[0])] = (tuple(paths), int(pid), int(camid))
    except (OSError, ValueError, KeyError, TypeError, IndexError) as e:
        return f'{name} is not a torchreid split file ({type(e).__name__})'
    root = os.path.normpath(dir_path)
    elsewhere = [t for t in cached if os.path.dirname(os.path.dirname(os.path.normpath(t))) != root]
    if elsewhere:
        where = os.path.dirname(os.path.dirname(elsewhere[0]))
        return f'{name} lists frames under {where}, not {root} (moved or copied)'
    disk = _on_disk(dir_path)
    if len(cached) != len(tracklets) or cached.keys() != disk.keys():
        gone = sorted(cached.keys() - disk.keys())
        new = sorted(disk.keys() - cached.keys())
        which = f'e.g. {gone[0]} is gone' if gone else f'e.g. {new[0]} is new' if new else 'some twice'
        return f'{name} lists {len(tracklets)} tracklets, the folder holds {len(disk)} ({which})'
    labels: dict[int, int] = {}
    for tdir, (paths, pid, camid) in cached.items():
        frames, true_pid, true_camid = disk[tdir]
        if paths != frames:
            return f'{name} lists {len(paths)} frames of {tdir}, the folder has {len(frames)} to use (or others)'
        if camid != true_camid:
            return f'{name} gives {tdir} camera {camid}, its frames say {true_camid}'
        if not relabel and pid != true_pid:
            return f'{name} gives {tdir} pid {pid}, its folder says {true_pid}'
        if relabel and labels.setdefault(true_pid, pid) != pid:  # train: one label per person
            return f'{name} gives person {true_pid} two labels'
    if relabel and sorted(labels.values()) != list(range(len(labels))):
        return f'{name} labels the {len(labels)} training persons other than 0..{len(labels) - 1}'
    return None


def _checked_parser() -> type:
    """torchreid's DukeMTMCVidReID, whose cached split files are used only when they list the folder as it is."""
    base = torchreid_video_class('DukeMTMCVidReID')()

    def process_dir(self: Any, dir_path: str, json_path: str, relabel: bool) -> Any:
        why = _stale(dir_path, json_path, relabel) if os.path.exists(json_path) else None
        if os.path.exists(json_path) and why is None:
            return base.process_dir(self, dir_path, json_path, relabel)  # the cache lists the folder as it is
        if why is not None:
            _check_subset(Path(self.dataset_dir), os.path.basename(dir_path))  # prepare skipped it
        with tempfile.TemporaryDirectory() as tmp:  # parsed into a cache of our own, then put in place
            fresh = os.path.join(tmp, os.path.basename(json_path))
            tracklets = base.process_dir(self, dir_path, fresh, relabel)
            try:  # beside and renamed (another file system than /tmp, a read-only dataset: the run goes on)
                replace_file(json_path, lambda t: shutil.copyfile(fresh, t))
                what = 'parsed the folder again and rewrote the cache'
            except OutputWriteError as e:
                what = f'parsed the folder again (the cache could not be rewritten: {e.reason})'
        if why is not None:
            warnings.warn(f"torchreid's cache {why}: {what}", UserWarning, stacklevel=2)
        return tracklets

    return type(base.__name__, (base,), {'process_dir': process_dir})


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
        'are cached by torchreid in split_{train,query,gallery}.json with absolute paths; a cache that does '
        'not list the folder as it is (moved, copied or changed) is not used.'
    ),
    required=_required,
    parser=_checked_parser,
    prepare=_check_dirs,
    train_chunk=32,  # the released loader's sampling_step for DukeV
)
