"""The model zoo: one declarative YAML file per published checkpoint in ``hub_configs/``.

``sinet_timm``'s pretrained cfgs are generated from these files, so adding a checkpoint means adding one file.
The files are installed inside the package as ``sinet_timm.hub_configs`` (see ``pyproject.toml``); in a source
checkout they are read from the top-level ``hub_configs/`` folder. ``SINET_TIMM_ZOO_DIR=FOLDER`` replaces the
zoo by the YAML files of ``FOLDER`` (read when ``sinet_timm`` is imported: set it before the import).

Schema of an entry (``REQUIRED_KEYS`` must be present; the rest is optional)::

    name: sinet_r50.mars              # '<architecture>.<tag>', equal to the file name without .yaml
    architecture: sinet_r50           # one of sinet_timm.archs.ARCHITECTURES
    hf_hub_id: ORG/NAME               # the Hugging Face Hub repo holding model.safetensors + config.json
    dataset: mars                     # training (and evaluation) dataset
    num_classes: 625                  # training identities = the released classifier's size
    input: {frames_per_clip: 4, img_size: [256, 128], interpolation: bicubic, mean: [...], std: [...]}
    embedding_dim: 2048
    protocol: dense
    source: {kind: google-drive, file_id: ..., url: ..., sha256: null}   # the authors' original file
    license: mit
    metrics:
      paper: {mAP: 86.2, rank1: 91.0}         # in percent; mAP may be left out where the paper reports CMC only
      authors_reproduced: {...}               # optional
      ours: null                              # written by `sinet-hub publish/record` from a reid_eval JSON
    paper_ref: Bai et al., CVPR 2022  # who reported metrics.paper (model card); this is the default
    citation: "@inproceedings{...}"
    card: "free text for the model card"
    num_cameras: 6                    # models with a camera embedding: the training set's cameras

Malformed files raise :class:`ZooConfigError` naming the file and the key. In the zoo folder a malformed file is
left out with one :class:`ZooWarning` naming it (``import sinet_timm`` still registers every other entry); asking
for that entry by name raises the error.
"""
from __future__ import annotations

import difflib
import functools
import os
import re
import warnings
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from .archs import ARCHITECTURES
from .errors import ZooConfigError

REQUIRED_KEYS = ('name', 'architecture', 'hf_hub_id', 'dataset', 'num_classes', 'input', 'source', 'license',
                 'metrics')
ZOO_DIR_ENV = 'SINET_TIMM_ZOO_DIR'
_REPO_ID = re.compile(r'^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$')
_SHA256 = re.compile(r'^[0-9a-f]{64}$')


class ZooWarning(UserWarning):
    """A zoo file is malformed and was left out of the zoo (the message names the file and the key)."""


def zoo_dir() -> Path:
    """The folder holding the zoo's YAML files (``$SINET_TIMM_ZOO_DIR`` when set)."""
    env = os.environ.get(ZOO_DIR_ENV)
    if env:
        p = Path(env).expanduser()
        if not p.is_dir():
            raise ZooConfigError(f'{ZOO_DIR_ENV}={env} is not a folder')
        return p
    try:
        p = Path(str(resources.files('sinet_timm.hub_configs')))
        if p.is_dir() and any(p.glob('*.yaml')):
            return p
    except ModuleNotFoundError:
        pass
    return Path(__file__).resolve().parent.parent / 'hub_configs'


# --- validation ---------------------------------------------------------------------------------------------
def _fail(path: Path, key: str, msg: str) -> ZooConfigError:
    return ZooConfigError(f"{path}: key '{key}': {msg}")


def _get(entry: dict[str, Any], dotted: str) -> Any:
    cur: Any = entry
    for part in dotted.split('.'):
        cur = cur[part]
    return cur


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _check_metrics(path: Path, key: str, value: Any, required: Sequence[str]) -> None:
    if not isinstance(value, dict):
        raise _fail(path, key, f'expected a mapping like {{mAP: 86.2, rank1: 91.0}} (percent), got {value!r}')
    for k in required:
        if k not in value:
            raise _fail(path, f'{key}.{k}', 'missing')
    for k, v in value.items():
        if (k in ('mAP', 'mINP') or k.startswith('rank')) and not (_is_num(v) and 0 <= v <= 100):
            raise _fail(path, f'{key}.{k}', f'expected a number in [0, 100] (percent), got {v!r}')


def validate_entry(entry: Any, path: str | Path) -> dict[str, Any]:
    """Check one parsed zoo file; raise :class:`ZooConfigError` naming the file and the offending key."""
    path = Path(path)
    if not isinstance(entry, dict):
        raise ZooConfigError(f'{path}: expected a mapping at the top level, got {type(entry).__name__}')
    missing = [k for k in REQUIRED_KEYS if k not in entry]
    if missing:
        raise ZooConfigError(f'{path}: missing keys {missing}; every entry needs {list(REQUIRED_KEYS)}')
    name = entry['name']
    if not isinstance(name, str) or path.name != f'{name}.yaml':
        raise _fail(path, 'name', f"the file name must be '<name>.yaml' (name is {name!r})")
    arch = entry['architecture']
    if arch not in ARCHITECTURES:
        raise _fail(path, 'architecture', f'{arch!r} is not one of {", ".join(ARCHITECTURES)}')
    a, _, tag = name.partition('.')
    if a != arch or not tag:
        raise _fail(path, 'name', f"must be '<architecture>.<tag>' ('{arch}.<tag>'), got {name!r}")
    if not isinstance(entry['hf_hub_id'], str) or not _REPO_ID.match(entry['hf_hub_id']):
        raise _fail(path, 'hf_hub_id', f"expected a Hub repo id 'ORG/NAME', got {entry['hf_hub_id']!r}")
    if not isinstance(entry['dataset'], str) or not entry['dataset']:
        raise _fail(path, 'dataset', f"expected a dataset name such as 'mars', got {entry['dataset']!r}")
    if not _is_int(entry['num_classes']) or entry['num_classes'] <= 0:
        raise _fail(path, 'num_classes', f"expected the number of training identities (an integer > 0), "
                                         f"got {entry['num_classes']!r}")
    inp = entry['input']
    if not isinstance(inp, dict):
        raise _fail(path, 'input', f'expected a mapping with img_size and frames_per_clip, got {inp!r}')
    size = inp.get('img_size')
    if not (isinstance(size, list) and len(size) == 2 and all(_is_int(v) and v > 0 for v in size)):
        raise _fail(path, 'input.img_size', f'expected [height, width] (two positive integers), got {size!r}')
    frames = inp.get('frames_per_clip')
    if not (_is_int(frames) and frames > 0):
        raise _fail(path, 'input.frames_per_clip', f'expected a positive integer, got {frames!r}')
    for k in ('mean', 'std'):
        v = inp.get(k)
        if v is not None and not (isinstance(v, list) and len(v) == 3 and all(_is_num(x) for x in v)):
            raise _fail(path, f'input.{k}', f'expected three numbers, got {v!r}')
    src = entry['source']
    if not isinstance(src, dict) or 'kind' not in src:
        raise _fail(path, 'source', f"expected a mapping with 'kind' (e.g. google-drive), got {src!r}")
    if src['kind'] == 'google-drive' and not (isinstance(src.get('file_id'), str) and src['file_id']):
        raise _fail(path, 'source.file_id', 'a google-drive source needs the Drive file id')
    sha = src.get('sha256')
    if sha is not None and not (isinstance(sha, str) and _SHA256.match(sha)):
        raise _fail(path, 'source.sha256', f'expected null or 64 lowercase hex digits, got {sha!r}')
    if not isinstance(entry['license'], str):
        raise _fail(path, 'license', f"expected a license id such as 'mit', got {entry['license']!r}")
    metrics = entry['metrics']
    if not isinstance(metrics, dict):
        raise _fail(path, 'metrics', f'expected a mapping with paper (and ours), got {metrics!r}')
    if 'paper' not in metrics:
        raise _fail(path, 'metrics.paper', "missing (the paper's {mAP, rank1} in percent)")
    # some papers report only CMC on the small datasets (iLIDS-VID, PRID-2011): rank1 is required, mAP is not
    _check_metrics(path, 'metrics.paper', metrics['paper'], ('rank1',))
    for k in ('authors_reproduced', 'ours'):
        if metrics.get(k) is not None:
            _check_metrics(path, f'metrics.{k}', metrics[k], ('mAP', 'rank1'))
    for k in ('citation', 'card', 'protocol', 'paper_ref'):
        if entry.get(k) is not None and not isinstance(entry[k], str):
            raise _fail(path, k, f'expected text, got {type(entry[k]).__name__}')
    if entry.get('embedding_dim') is not None and not _is_int(entry['embedding_dim']):
        raise _fail(path, 'embedding_dim', f"expected an integer, got {entry['embedding_dim']!r}")
    if entry.get('num_cameras') is not None and not (_is_int(entry['num_cameras']) and entry['num_cameras'] > 0):
        raise _fail(path, 'num_cameras', f"expected the training set's number of cameras (an integer > 0), got "
                                         f"{entry['num_cameras']!r}")
    return entry


def load_entry(path: str | Path) -> dict[str, Any]:
    """Read and validate one zoo file."""
    path = Path(path)
    try:
        entry = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        mark, problem = getattr(e, 'problem_mark', None), getattr(e, 'problem', None) or type(e).__name__
        where = f'line {mark.line + 1}, column {mark.column + 1}: ' if mark is not None else ''
        raise ZooConfigError(f'{path}: not valid YAML ({where}{problem})') from e
    except OSError as e:
        raise ZooConfigError(f'{path}: cannot read ({e})') from e
    return validate_entry(entry, path)


def zoo_problem() -> str | None:
    """Why the zoo folder cannot be read (``$SINET_TIMM_ZOO_DIR`` naming no folder), or None."""
    try:
        zoo_dir()
    except ZooConfigError as e:
        return f'{e}: the zoo is empty (set it to a folder of zoo YAML files, or unset it for the built-in zoo)'
    return None


@functools.cache
def zoo_entries() -> dict[str, dict[str, Any]]:
    """All well-formed zoo entries keyed by ``arch.tag`` name, in file-name order; a malformed file is left out
    with one :class:`ZooWarning` naming the file and the problem. A zoo folder that does not exist gives an empty
    zoo and one warning (``import sinet_timm`` still works; asking for an entry then says why it is missing)."""
    if (problem := zoo_problem()) is not None:
        warnings.warn(problem, ZooWarning, stacklevel=2)
        return {}
    entries = {}
    for path in sorted(zoo_dir().glob('*.yaml')):
        try:
            entry = load_entry(path)
        except ZooConfigError as e:
            warnings.warn(f'{e}; this entry is left out of the zoo', ZooWarning, stacklevel=2)
            continue
        entries[entry['name']] = entry
    return entries


def entry_path(name: str) -> Path:
    """The YAML file of zoo entry ``name``."""
    return zoo_dir() / f'{name}.yaml'


def resolve_entry(spec: str | Path) -> tuple[dict[str, Any], Path]:
    """A zoo entry and its file, from an entry name (``sinet_r50.mars``) or a path to a YAML file."""
    p = Path(spec)
    if str(spec).endswith(('.yaml', '.yml')) and p.is_file():
        return load_entry(p), p
    path = entry_path(str(spec))
    if not path.is_file():
        names = ', '.join(sorted(p.stem for p in zoo_dir().glob('*.yaml')))
        raise ZooConfigError(f'unknown zoo entry {spec!r}: no {path}. Entries: {names}. A path to a YAML file '
                             'in the zoo format also works.')
    return load_entry(path), path


def pretrained_cfg_fields(entry: dict[str, Any]) -> dict[str, Any]:
    """timm pretrained-cfg fields of one zoo entry (merged into the family's ``video_cfg`` defaults)."""
    inp = entry['input']
    h, w = inp['img_size']
    out: dict[str, Any] = dict(
        hf_hub_id=entry['hf_hub_id'],
        num_classes=int(entry['num_classes']),
        input_size=(3, int(h), int(w)),
        license=entry['license'],
        description=f"{entry['architecture']} trained on {entry['dataset']} (authors' released checkpoint)",
    )
    for k in ('interpolation', 'mean', 'std'):
        if inp.get(k) is not None:
            out[k] = tuple(inp[k]) if isinstance(inp[k], list) else inp[k]
    return out


def zoo_pretrained_cfgs(archs: Sequence[str] | None = None) -> dict[str, dict[str, Any]]:
    """timm pretrained-cfg fields for each zoo entry (of ``archs`` only, when given)."""
    return {name: pretrained_cfg_fields(e) for name, e in zoo_entries().items()
            if archs is None or e['architecture'] in archs}


# --- editing an entry in place --------------------------------------------------------------------------------
_KEY_LINE = re.compile(r'^(?P<indent> *)(?P<key>[A-Za-z_][\w-]*):(?P<rest>.*)$')


def _block_end(lines: list[str], start: int, indent: int) -> int:
    """Index after the lines nested under ``lines[start]`` (more indented; blank/comment lines inside)."""
    end = start + 1
    last = start + 1
    while end < len(lines):
        s = lines[end]
        if s.strip() and not s.lstrip().startswith('#'):
            if len(s) - len(s.lstrip(' ')) <= indent:
                break
            last = end + 1
        end += 1
    return last


def _render(key: str, value: Any, indent: int, comment: str | None) -> list[str]:
    pad = ' ' * indent
    note = f'  # {comment}' if comment else ''
    if isinstance(value, dict):
        body = yaml.safe_dump(value, sort_keys=False, default_flow_style=False, width=200)
        return [f'{pad}{key}:{note}\n'] + [f'{pad}  {ln}\n' for ln in body.splitlines()]
    scalar = yaml.safe_dump(value, default_flow_style=True, width=200).splitlines()[0]
    return [f'{pad}{key}: {scalar}{note}\n']


def set_entry_value(text: str, parent: str, key: str, value: Any, comment: str | None = None) -> str:
    """Return ``text`` (a zoo YAML file) with ``parent.key`` set to ``value``; every other line is kept as is.

    Only the lines of ``parent.key`` (its line and the lines nested under it) are replaced, so comments and
    formatting of the rest of the file survive. The result is re-parsed and must equal the old document with
    just that value changed, otherwise :class:`ZooConfigError` is raised and nothing should be written.
    """
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith('\n'):
        lines[-1] += '\n'
    top = next((i for i, s in enumerate(lines) if (m := _KEY_LINE.match(s)) and not m['indent'] and
                m['key'] == parent), None)
    if top is None:
        raise ZooConfigError(f"no top-level '{parent}:' block to update")
    end = _block_end(lines, top, 0)
    child_indent = None
    for i in range(top + 1, end):
        m = _KEY_LINE.match(lines[i])
        if m and m['indent']:
            child_indent = len(m['indent']) if child_indent is None else child_indent
            if len(m['indent']) == child_indent and m['key'] == key:
                stop = _block_end(lines, i, child_indent)
                new = lines[:i] + _render(key, value, child_indent, comment) + lines[stop:]
                break
    else:
        if _KEY_LINE.match(lines[top])['rest'].split('#')[0].strip():
            raise ZooConfigError(f"'{parent}:' is written inline; cannot add '{key}' without rewriting it")
        new = lines[:end] + _render(key, value, child_indent or 2, comment) + lines[end:]
    out = ''.join(new)
    before, after = yaml.safe_load(text), yaml.safe_load(out)
    expected = dict(before)
    expected[parent] = dict(before[parent] or {}, **{key: value})
    if after != expected:
        raise ZooConfigError(f"could not update '{parent}.{key}' without touching other keys; edit the file by hand")
    return out


def update_entry_file(path: str | Path, parent: str, key: str, value: Any, comment: str | None = None,
                      write: bool = True) -> str:
    """Set ``parent.key`` in the zoo file ``path`` (see :func:`set_entry_value`); return the unified diff.

    With ``write=False`` nothing is written (the diff shows what would change). The updated file is validated
    before it is written.
    """
    path = Path(path)
    old = path.read_text()
    new = set_entry_value(old, parent, key, value, comment)
    validate_entry(yaml.safe_load(new), path)
    diff = ''.join(difflib.unified_diff(old.splitlines(keepends=True), new.splitlines(keepends=True),
                                        fromfile=f'{path} (before)', tofile=f'{path} (after)'))
    if write and new != old:
        path.write_text(new)
        zoo_entries.cache_clear()
    return diff
