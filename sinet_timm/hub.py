"""``sinet-hub``: publish the model zoo (``hub_configs/*.yaml``) on the Hugging Face Hub and check it.

    sinet-hub list                                               # the zoo, paper and our metrics
    sinet-hub convert sinet_r50.mars --src sinet_mars.pth.tar --out hub/sinet_r50.mars
    sinet-hub card sinet_r50.mars --results eval.json --out hub/sinet_r50.mars
    sinet-hub push hub/sinet_r50.mars --repo-id ORG/sinet_r50.mars --dry-run
    sinet-hub verify sinet_r50.mars --root DATA                  # Hub weights -> reid_eval -> recorded metrics
    sinet-hub publish sinet_r50.mars --root DATA                 # convert + eval + record + card + push
    sinet-hub record sinet_r50.mars eval.json                    # metrics.ours from a reid_eval JSON

ENTRY is a zoo entry name (``sinet_r50.mars``) or the path of a YAML file in the zoo format.

Choices:

* The zoo YAML files are the single source of truth: timm's pretrained cfgs, the Hub config.json, the model
  card and ``verify`` all read them. ``publish``/``record`` write back only ``metrics.ours`` and
  ``source.sha256``, editing those lines in place (comments and formatting elsewhere are kept) and printing
  the diff; ``--dry-run`` prints the diff without writing.
* ``convert`` checks the original file's sha256 against ``source.sha256`` when the entry has one; when it has
  none the hash is printed with the file to record it in (``--record-sha256`` writes it). The classifier size
  must equal the entry's ``num_classes``. config.json carries the zoo tag in its ``pretrained_cfg`` (not the
  ImageNet-init ``tv_in1k`` cfg the bare architecture defaults to) plus the re-ID fields.
* ``push`` uploads with ``huggingface_hub`` (``create_repo(exist_ok=True)`` + ``upload_folder``) exactly the
  files that ``--dry-run`` lists (path, size, sha256); a dry run contacts nothing.
* ``verify`` loads the weights the way users do (``timm.create_model(NAME, pretrained=True)``, i.e. timm's
  Hub download and cache), runs ``reid_eval`` and fails (exit 1, table of differences) when mAP or rank-1
  differ from ``metrics.ours`` by more than ``--tolerance`` points (default 0.1).
* Google Drive fallback, opt-in only: ``load_from_drive(name)``, or ``SINET_TIMM_DRIVE_FALLBACK=1`` which makes
  ``timm.create_model(name, pretrained=True)`` download the authors' Drive file, check it, convert it and cache
  the result under ``$SINET_TIMM_CACHE`` (default ``~/.cache/sinet-timm``) when the Hub cannot be reached.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from ._zoo import (
    ARCHITECTURES,
    ZooConfigError,
    pretrained_cfg_fields,
    resolve_entry,
    update_entry_file,
    zoo_entries,
)
from .convert import CheckpointError, NumClassesMismatch, convert, sha256_of

if TYPE_CHECKING:
    from .sinet import SINet

__all__ = [
    'HubError', 'UploadFile', 'card_text', 'compare_metrics', 'convert_entry', 'converted_from_drive',
    'entry_pretrained_cfg', 'fetch_from_drive', 'load_from_drive', 'main', 'publish', 'push', 'record',
    'upload_plan', 'verify', 'write_card',
]

DRIVE_FALLBACK_ENV = 'SINET_TIMM_DRIVE_FALLBACK'
DEFAULT_TOLERANCE = 0.1
GATED_METRICS = ('mAP', 'rank1')  # verify fails when these drift
METRIC_KEYS = ('mAP', 'rank1', 'rank5', 'rank10', 'rank20')
REQUIRED_FILES = ('model.safetensors', 'config.json', 'README.md')
PAPER_URL = 'https://github.com/baist/SINet'
TASK = {'type': 'video-person-re-identification', 'name': 'Video Person Re-identification'}
TAGS = ['timm', 'sinet-timm', 'video-person-re-identification', 'person-re-identification', 'video']
DATASET_NAMES = {'mars': 'MARS', 'lsvid': 'LS-VID', 'ilidsvid': 'iLIDS-VID', 'prid2011': 'PRID-2011',
                 'dukev': 'DukeMTMC-VideoReID'}

Log = Callable[[str], None]


class HubError(RuntimeError):
    """A user-facing problem: missing files, unreachable services, metrics that do not fit an entry."""


def _print(msg: str) -> None:
    print(msg, flush=True)


def cache_root() -> Path:
    """``$SINET_TIMM_CACHE`` or ``$XDG_CACHE_HOME/sinet-timm`` (``~/.cache/sinet-timm``), as ``reid_eval``."""
    base = os.environ.get('SINET_TIMM_CACHE') or Path(os.environ.get('XDG_CACHE_HOME', Path.home() / '.cache')) / \
        'sinet-timm'
    return Path(base)


def entry_pretrained_cfg(entry: dict[str, Any]) -> dict[str, Any]:
    """The full timm pretrained cfg of a zoo entry (the same dict ``default_cfgs`` registers, plus arch/tag)."""
    from .sinet import _cfg

    arch, _, tag = entry['name'].partition('.')
    return dict(_cfg(**pretrained_cfg_fields(entry)), architecture=arch, tag=tag)


# --- the authors' original file -----------------------------------------------------------------------------
def fetch_from_drive(entry: dict[str, Any], cache_dir: str | Path | None = None, quiet: bool = False) -> Path:
    """Download the authors' file of ``entry`` from Google Drive with gdown (kept in ``cache_dir``).

    Needs internet access; the error says what to do without it. The file is not checked here (see
    :func:`check_sha256`).
    """
    src = entry['source']
    if src.get('kind') != 'google-drive':
        raise HubError(f"{entry['name']}: source.kind is {src.get('kind')!r}; only google-drive files can be "
                       'fetched, pass the file with --src')
    folder = Path(cache_dir) if cache_dir else cache_root() / 'drive'
    dest = folder / f"{entry['name']}-{src['file_id']}.pth.tar"
    if dest.is_file():
        return dest
    folder.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + '.part')
    how = (f"Download it by hand from {src.get('url') or 'https://drive.google.com/file/d/' + src['file_id']} "
           '(a browser on any machine with internet access) and pass it with --src FILE.pth.tar.')
    try:
        import gdown

        got = gdown.download(id=src['file_id'], output=str(part), quiet=quiet)
    except Exception as e:  # requests' ConnectionError offline, gdown's FileURLRetrievalError on quota/permission
        part.unlink(missing_ok=True)
        first = str(e).splitlines()[0] if str(e) else ''
        raise HubError(f"could not download the authors' file of {entry['name']} from Google Drive (file id "
                       f"{src['file_id']}): {type(e).__name__}: {first}\nAre you offline? {how}") from e
    if got is None or not part.is_file():
        raise HubError(f"Google Drive did not return the file of {entry['name']} (file id {src['file_id']}). {how}")
    part.replace(dest)
    return dest


def check_sha256(path: str | Path, entry: dict[str, Any], entry_file: str | Path | None = None) -> str:
    """sha256 of ``path``; :class:`CheckpointError` naming both hashes when the entry records another one."""
    digest = sha256_of(path)
    expected = entry['source'].get('sha256')
    if expected and digest != expected.lower():
        where = f' ({entry_file})' if entry_file else ''
        raise CheckpointError(
            f"sha256 mismatch for {path}: the file has {digest}, the zoo entry {entry['name']}{where} records "
            f'{expected}. The file is corrupt, truncated, or not the published checkpoint: download it again.')
    return digest


def convert_entry(spec: str | Path, out_dir: str | Path, src: str | Path | None = None, overwrite: bool = False,
                  record_sha256: bool = False, log: Log = _print) -> Path:
    """Original checkpoint of a zoo entry -> Hub-ready folder (model.safetensors + config.json).

    ``src`` is a local ``.pth.tar``; without it the file is fetched from Google Drive (:func:`fetch_from_drive`).
    The sha256 is checked when the entry has one, else printed (and written to the entry with
    ``record_sha256``). The architecture and the classifier size must match the entry.
    """
    entry, path = resolve_entry(spec)
    name = entry['name']
    if src is None:
        log(f"fetching the authors' file of {name} from Google Drive (file id {entry['source']['file_id']})")
        src = fetch_from_drive(entry)
    src = Path(src)
    if not src.is_file():
        raise CheckpointError(f'checkpoint not found: {src}')
    digest = check_sha256(src, entry, path)
    if entry['source'].get('sha256'):
        log(f'sha256 of {src} matches the zoo entry: {digest}')
    elif record_sha256:
        log(update_entry_file(path, 'source', 'sha256', digest, comment=f'sha256 of {src.name}, recorded by sinet-hub'))
    else:
        log(f'sha256 of {src}: {digest}\n  the zoo entry has none yet: once you have checked this is the authors\' '
            f'published file, record it as source.sha256 in {path} (or rerun with --record-sha256)')
    source = {k: entry['source'][k] for k in ('kind', 'file_id', 'url') if entry['source'].get(k)}
    try:
        out = convert(src, out_dir, arch=entry['architecture'], dataset=entry['dataset'], overwrite=overwrite,
                      source=source, pretrained_cfg=entry_pretrained_cfg(entry),
                      expected_num_classes=int(entry['num_classes']),
                      extra_config={'zoo_entry': name, 'hf_hub_id': entry['hf_hub_id'],
                                    'protocol_name': entry.get('protocol', 'dense')})
    except NumClassesMismatch as e:
        note = ''
        if entry['dataset'] == 'lsvid':
            note = (f" LS-VID's {entry['num_classes']} training identities in the zoo were not checked against the "
                    'released files:')
        raise CheckpointError(
            f"{e} The zoo entry {name} ({path}) says num_classes: {entry['num_classes']}.{note} if this is the "
            f'published file (check its sha256), set num_classes: {e.found} in {path}; otherwise it is the wrong '
            'file.') from e
    log(f"wrote {out}/model.safetensors and config.json ({entry['architecture']}, {entry['num_classes']} training "
        f"identities); try it: timm.create_model('local-dir:{out}', pretrained=True)")
    return out


# --- model card ---------------------------------------------------------------------------------------------
def load_results(path: str | Path) -> dict[str, Any]:
    """A ``sinet-eval`` results JSON (needs ``metrics`` with mAP and rank1, in percent)."""
    try:
        summary = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise HubError(f'cannot read the results JSON {path}: {e}') from e
    m = summary.get('metrics') if isinstance(summary, dict) else None
    if not isinstance(m, dict) or not all(isinstance(m.get(k), (int, float)) for k in GATED_METRICS):
        raise HubError(f'{path} is not a sinet-eval results JSON: it needs "metrics" with mAP and rank1')
    return summary


def results_to_ours(summary: dict[str, Any], entry: dict[str, Any], source: str = '') -> dict[str, Any]:
    """``metrics.ours`` from a results JSON, after checking that it evaluates this entry on its dataset."""
    where = f' ({source})' if source else ''
    if summary.get('dataset') != entry['dataset']:
        raise HubError(f"the results{where} are on {summary.get('dataset')!r}, but {entry['name']} is evaluated on "
                       f"{entry['dataset']!r}")
    arch = summary.get('architecture')
    if arch and arch != entry['architecture']:
        raise HubError(f"the results{where} are of a {arch} model, but {entry['name']} is a {entry['architecture']}")
    mode = summary.get('mode', 'dense')
    if mode != entry.get('protocol', 'dense'):
        raise HubError(f"the results{where} use the {mode} protocol; the zoo records {entry.get('protocol', 'dense')}")
    ours: dict[str, Any] = {k: round(float(summary['metrics'][k]), 2) for k in METRIC_KEYS
                            if isinstance(summary['metrics'].get(k), (int, float))}
    ours.update(dataset=entry['dataset'], protocol=mode)
    for k in ('weights_sha256', 'date'):
        if summary.get(k):
            ours[k] = summary[k]
    versions = summary.get('versions') or {}
    if versions:
        ours['versions'] = {k: versions[k] for k in ('sinet_timm', 'timm', 'torch') if k in versions}
    return ours


def _model_index_result(entry: dict[str, Any], metrics: dict[str, Any], who: str, source: dict[str, str]
                        ) -> dict[str, Any]:
    ds = entry['dataset']
    return {
        'task': dict(TASK),
        'dataset': {'type': ds, 'name': DATASET_NAMES.get(ds, ds), 'split': 'test'},
        'metrics': [{'type': k if k == 'mAP' else f'rank-{k[4:]}', 'value': float(metrics[k]),
                     'name': f"{'mAP' if k == 'mAP' else 'rank-' + k[4:]} ({who})"}
                    for k in METRIC_KEYS if isinstance(metrics.get(k), (int, float))],
        'source': source,
    }


def card_metadata(entry: dict[str, Any], ours: dict[str, Any] | None = None) -> dict[str, Any]:
    """Hub metadata of the card: library, tags, datasets, license, and a model-index (paper, and ours if known).

    Paper and our numbers are separate model-index results, each with its own ``source``.
    """
    results = [_model_index_result(entry, entry['metrics']['paper'], 'paper',
                                   {'name': 'Bai et al., CVPR 2022 (paper)', 'url': PAPER_URL})]
    if ours:
        results.append(_model_index_result(
            entry, ours, 'sinet-timm', {'name': 'sinet-timm sinet-eval (dense protocol)',
                                        'url': f"https://huggingface.co/{entry['hf_hub_id']}"}))
    return {
        'library_name': 'timm',
        'license': entry['license'],
        'tags': list(TAGS),
        'datasets': [entry['dataset']],
        'model-index': [{'name': entry['name'], 'results': results}],
    }


def _row(label: str, m: dict[str, Any] | None) -> str:
    cells = [f'{float(m[k]):.1f}' if m and isinstance(m.get(k), (int, float)) else '-' for k in METRIC_KEYS]
    return f"| {label} | {' | '.join(cells)} |"


def card_text(entry: dict[str, Any], ours: dict[str, Any] | None = None) -> str:
    """The README.md of an entry's Hub repo: YAML metadata, description, usage, results vs the paper, citation."""
    name, arch, ds = entry['name'], entry['architecture'], entry['dataset']
    ds_name = DATASET_NAMES.get(ds, ds)
    inp, src = entry['input'], entry['source']
    h, w = inp['img_size']
    ours = ours if ours is not None else entry['metrics'].get('ours')
    meta = yaml.safe_dump(card_metadata(entry, ours), sort_keys=False, width=200)
    table = ['| | mAP | rank-1 | rank-5 | rank-10 | rank-20 |', '|---|---|---|---|---|---|',
             _row('paper (Bai et al., CVPR 2022)', entry['metrics']['paper'])]
    if entry['metrics'].get('authors_reproduced'):
        table.append(_row("released checkpoint (the authors' numbers)",
                          entry['metrics']['authors_reproduced']))
    table.append(_row('this checkpoint, `sinet-eval` (ours)', ours) if ours else
                 '| this checkpoint, `sinet-eval` (ours) | not evaluated yet | | | | |')
    evaluated = ''
    if ours:
        bits = [f"on {ours['date']}" if ours.get('date') else '',
                f"weights sha256 `{ours['weights_sha256']}`" if ours.get('weights_sha256') else '',
                ', '.join(f'{k} {v}' for k, v in (ours.get('versions') or {}).items())]
        evaluated = 'Ours: ' + '; '.join(b for b in bits if b) + '.\n\n' if any(bits) else ''
    sha = f"`{src['sha256']}`" if src.get('sha256') else 'not recorded yet'
    where = src.get('url') or src.get('file_id', '')
    body = f"""# {name}

{(entry.get('card') or '').strip()}

The weights are the authors' released checkpoint ({where}; sha256 of the original file: {sha}), converted to
timm's safetensors format by `sinet-hub convert` without changing any weight. The classifier
({entry['num_classes']} training identities of {ds_name}) and, where present, the frame projection are kept for
fine-tuning; `num_classes=0` gives the re-ID embedding.

## Usage

```python
import sinet_timm, timm  # importing sinet_timm registers the SINet family with timm

model = timm.create_model("{name}", pretrained=True, num_classes=0).eval()
transform = timm.data.create_transform(**timm.data.resolve_data_config({{}}, model=model))  # per frame
# clips: (B, T, 3, {h}, {w}) float tensors, T a multiple of {inp['frames_per_clip']}
embedding = model(clips)  # (B, {entry.get('embedding_dim', 2048)}), compare with cosine distance
```

`timm.create_model("hf-hub:{entry['hf_hub_id']}", pretrained=True)` loads this repository directly. Evaluate
it on {ds_name} (with sinet-timm installed; `DATA/` holds the dataset folder):

```bash
sinet-eval --model {name} --dataset {ds} --root DATA
sinet-hub verify {name} --root DATA   # fails if mAP / rank-1 drift from the numbers below
```

## Results on the {ds_name} test set (%)

{chr(10).join(table)}

Protocol ({entry.get('protocol', 'dense')}): every frame of a tracklet in {inp['frames_per_clip']}-frame strided
clips, clip embeddings averaged, cosine distance, gallery entries of the query's identity and camera removed
(for MARS the gallery is query + gallery, as in the paper). {evaluated}

## Model details

- Architecture: `{arch}`; training identities: {entry['num_classes']} ({ds_name})
- Input: clips of T frames (T a multiple of {inp['frames_per_clip']}), each frame resized to {h}x{w}
  ({inp.get('interpolation', 'bicubic')}) and normalised with the ImageNet mean/std
- Embedding: {entry.get('embedding_dim', 2048)}-d BN-neck feature; license: {entry['license'].upper()} (as the
  authors' code, {PAPER_URL})

## Citation

```bibtex
{(entry.get('citation') or '').strip()}
```
"""
    return f'---\n{meta}---\n{body}'


def write_card(spec: str | Path, out_dir: str | Path, results: str | Path | None = None, overwrite: bool = False,
               ours: dict[str, Any] | None = None, log: Log = _print) -> Path:
    """Write ``out_dir/README.md`` for an entry; ``results`` (a sinet-eval JSON) fills in our metrics."""
    entry, path = resolve_entry(spec)
    if results is not None:
        ours = results_to_ours(load_results(results), entry, str(results))
    out = Path(out_dir) / 'README.md'
    text = card_text(entry, ours)
    if out.exists() and not overwrite and out.read_text() != text:
        raise FileExistsError(f'{out} exists; pass --overwrite to replace it')
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    log(f"wrote {out} ({'with' if ours or entry['metrics'].get('ours') else 'without'} our metrics)")
    return out


# --- push ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class UploadFile:
    """One file of an upload: its path in the repo, size in bytes and sha256."""

    path: str
    size: int
    sha256: str


def upload_plan(folder: str | Path) -> list[UploadFile]:
    """The files ``push`` uploads from ``folder`` (all files but ``.git``/``.cache/huggingface``), checked.

    A folder without model.safetensors, config.json and README.md, a config.json of an unknown architecture or
    an unreadable safetensors file is refused with a :class:`HubError`.
    """
    from huggingface_hub.utils import filter_repo_objects
    from huggingface_hub.utils._paths import DEFAULT_IGNORE_PATTERNS

    folder = Path(folder)
    if not folder.is_dir():
        raise HubError(f'{folder} is not a folder; create it with `sinet-hub convert` and `sinet-hub card`')
    files = {p.relative_to(folder).as_posix(): p for p in sorted(folder.rglob('*')) if p.is_file()}
    names = list(filter_repo_objects(files, ignore_patterns=DEFAULT_IGNORE_PATTERNS))
    missing = [f for f in REQUIRED_FILES if f not in names]
    if missing:
        raise HubError(f"{folder} is missing {', '.join(missing)}: a zoo repo needs {', '.join(REQUIRED_FILES)} "
                       '(`sinet-hub convert` writes the weights and config.json, `sinet-hub card` the README.md)')
    try:
        cfg = json.loads((folder / 'config.json').read_text())
    except json.JSONDecodeError as e:
        raise HubError(f'{folder}/config.json is not valid JSON: {e}') from e
    if cfg.get('architecture') not in ARCHITECTURES:
        raise HubError(f"{folder}/config.json: architecture {cfg.get('architecture')!r} is not a SINet model "
                       f"({', '.join(ARCHITECTURES)})")
    try:
        from safetensors import safe_open

        with safe_open(str(folder / 'model.safetensors'), 'pt') as f:
            f.keys()
    except Exception as e:
        raise HubError(f'{folder}/model.safetensors is not a readable safetensors file: {e}') from e
    return [UploadFile(n, files[n].stat().st_size, sha256_of(files[n])) for n in names]


def _size(n: int) -> str:
    return f'{n / 2 ** 20:.1f} MiB' if n >= 2 ** 20 else f'{n / 1024:.1f} KiB' if n >= 1024 else f'{n} B'


def push(folder: str | Path, repo_id: str, token: str | None = None, create_pr: bool = False,
         dry_run: bool = False, endpoint: str | None = None, private: bool | None = None,
         commit_message: str | None = None, log: Log = _print) -> dict[str, Any]:
    """Upload ``folder`` to the Hub model repo ``repo_id`` (created if needed).

    ``dry_run`` lists the files (path, size, sha256) and the target and contacts nothing. ``endpoint`` defaults
    to ``$HF_ENDPOINT`` (huggingface.co); ``token`` to the saved login or ``$HF_TOKEN``.
    """
    from huggingface_hub import constants

    plan = upload_plan(folder)
    base = (endpoint or constants.ENDPOINT).rstrip('/')
    target = f"{base}/{repo_id} ({'as a pull request' if create_pr else 'branch main'})"
    listing = '\n'.join(f'  {f.path:<24} {_size(f.size):>11}  {f.sha256}' for f in plan)
    total = _size(sum(f.size for f in plan))
    if dry_run:
        log(f'dry run: would upload {len(plan)} files ({total}) to {target}; nothing was contacted\n{listing}')
        return {'dry_run': True, 'repo_id': repo_id, 'target': target, 'files': [asdict(f) for f in plan]}
    from huggingface_hub import HfApi, get_token

    from . import __version__

    if token is None and get_token() is None:
        raise HubError('no Hugging Face token: run `hf auth login`, set HF_TOKEN, or pass --token')
    api = HfApi(endpoint=endpoint, token=token, library_name='sinet-timm', library_version=__version__)
    log(f'uploading {len(plan)} files ({total}) to {target}\n{listing}')
    url = api.create_repo(repo_id, exist_ok=True, private=private)
    info = api.upload_folder(repo_id=url.repo_id or repo_id, folder_path=str(folder), create_pr=create_pr,
                             commit_message=commit_message or f'Upload {Path(folder).name} with sinet-hub',
                             allow_patterns=[f.path for f in plan])
    log(f'done: {info.commit_url}' + (f'\n  pull request: {info.pr_url}' if info.pr_url else ''))
    return {'dry_run': False, 'repo_id': repo_id, 'target': target, 'files': [asdict(f) for f in plan],
            'commit_url': info.commit_url, 'pr_url': info.pr_url}


# --- evaluation: verify and record --------------------------------------------------------------------------
def compare_metrics(recorded: dict[str, Any], measured: dict[str, Any], tolerance: float = DEFAULT_TOLERANCE
                    ) -> tuple[bool, str]:
    """Whether mAP and rank-1 are within ``tolerance`` points of the recorded ones, and a table of all metrics."""
    lines = [f"  {'metric':<8}{'recorded':>10}{'measured':>10}{'diff':>9}"]
    ok = True
    for k in METRIC_KEYS:
        r, m = recorded.get(k), measured.get(k)
        if not isinstance(m, (int, float)) or not isinstance(r, (int, float)):
            continue
        d = float(m) - float(r)
        bad = k in GATED_METRICS and abs(d) > tolerance + 1e-9
        ok &= not bad
        flag = 'DRIFT' if bad else ('ok' if k in GATED_METRICS else '')
        lines.append(f'  {k:<8}{float(r):>10.2f}{float(m):>10.2f}{d:>+9.2f}  {flag}'.rstrip())
    return ok, '\n'.join(lines)


def _run_eval(model: str, dataset: str, root: str | Path, out_json: Path, eval_args: Sequence[str]) -> dict:
    from reid_eval.cli import main as eval_main

    argv = ['--model', model, '--dataset', dataset, '--root', str(root), '--output', str(out_json), '--overwrite',
            *eval_args]
    code = eval_main(argv)
    if code != 0:
        raise HubError(f"sinet-eval {' '.join(argv)} failed (exit {code}; its error is printed above)")
    return json.loads(out_json.read_text())


def verify(spec: str | Path, root: str | Path, dataset: str | None = None, tolerance: float = DEFAULT_TOLERANCE,
           model: str | None = None, eval_args: Sequence[str] = (), keep_json: str | Path | None = None,
           log: Log = _print) -> int:
    """Evaluate the published weights of an entry and compare with its recorded ``metrics.ours``.

    The model is ``timm.create_model(NAME, pretrained=True)`` (timm downloads from the entry's Hub repo and
    caches), or ``model`` (e.g. ``hf-hub:ORG/NAME``). Returns 0 when mAP and rank-1 are within ``tolerance``
    points, 1 (after printing the table of differences) otherwise.
    """
    entry, path = resolve_entry(spec)
    name = entry['name']
    ours = entry['metrics'].get('ours')
    if not ours:
        raise HubError(f'{name} has no recorded metrics.ours in {path}; record them first with '
                       f'`sinet-hub publish {name} --root DATA` or `sinet-hub record {name} EVAL.json`')
    dataset = dataset or entry['dataset']
    if dataset != ours.get('dataset', entry['dataset']):
        raise HubError(f"{name}'s recorded metrics are on {ours.get('dataset', entry['dataset'])}, not {dataset}")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(keep_json) if keep_json else Path(tmp) / 'eval.json'
        summary = _run_eval(model or name, dataset, root, out, eval_args)
    ok, table = compare_metrics(ours, summary['metrics'], tolerance)
    verdict = 'matches' if ok else f'DRIFTS by more than {tolerance} points from'
    log(f"\nverify {model or name} on {dataset}: {verdict} the metrics recorded in {path}\n{table}")
    return 0 if ok else 1


def record(spec: str | Path, results: str | Path | dict[str, Any], write: bool = True, log: Log = _print
           ) -> dict[str, Any]:
    """Write ``metrics.ours`` of an entry from a sinet-eval results JSON (only that block; the diff is printed).

    Returns the recorded block. ``write=False`` prints the diff without writing.
    """
    entry, path = resolve_entry(spec)
    summary = results if isinstance(results, dict) else load_results(results)
    ours = results_to_ours(summary, entry, '' if isinstance(results, dict) else str(results))
    previous = entry['metrics'].get('ours')
    diff = update_entry_file(path, 'metrics', 'ours', ours, write=write,
                             comment='recorded by sinet-hub from a sinet-eval run; edit by hand at your own risk')
    if previous and previous != ours:
        log(f'note: replacing the metrics.ours previously recorded in {path}')
    log(diff if diff else f'{path}: metrics.ours unchanged')
    if diff and not write:
        log('(dry run: not written)')
    return ours


# --- publish ------------------------------------------------------------------------------------------------
def publish(spec: str | Path, src: str | Path | None = None, root: str | Path | None = None,
            out_dir: str | Path | None = None, repo_id: str | None = None, dry_run: bool = False,
            token: str | None = None, create_pr: bool = False, endpoint: str | None = None,
            results: str | Path | None = None, eval_args: Sequence[str] = (), log: Log = _print) -> dict[str, Any]:
    """convert + (eval on ``root`` -> record ``metrics.ours``) + card + push: one command per entry.

    The folder (default ``hub/NAME``) may only hold the files publish writes. With ``dry_run`` the zoo file is
    not modified (diffs are printed) and the upload is only listed.
    """
    entry, path = resolve_entry(spec)
    name = entry['name']
    out = Path(out_dir or Path('hub') / name)
    if out.is_dir():
        foreign = sorted(p.name for p in out.iterdir() if p.name not in REQUIRED_FILES)
        if foreign:
            raise HubError(f'{out} holds files publish does not write ({", ".join(foreign)}); they would be '
                           'uploaded too: use another --out or remove them')
    convert_entry(path, out, src=src, overwrite=True, record_sha256=not dry_run, log=log)
    entry, _ = resolve_entry(path)  # re-read: the sha256 may have been recorded
    ours = None
    if root is not None:
        eval_json = out.parent / f'{name}.eval.json'
        summary = _run_eval(f'local-dir:{out}', entry['dataset'], root, eval_json, eval_args)
        log(f'evaluation results: {eval_json}')
        ours = record(path, summary, write=not dry_run, log=log)
    elif results is not None:
        ours = record(path, results, write=not dry_run, log=log)
    write_card(path, out, overwrite=True, ours=ours, log=log)
    pushed = push(out, repo_id or entry['hf_hub_id'], token=token, create_pr=create_pr, dry_run=dry_run,
                  endpoint=endpoint, log=log)
    return {'folder': str(out), 'ours': ours, 'push': pushed}


def list_zoo(log: Log = _print) -> list[dict[str, Any]]:
    """Print the zoo with paper and our metrics; returns the entries."""
    def pair(m: dict[str, Any] | None) -> str:
        return f"{m['mAP']:.1f} / {m['rank1']:.1f}" if m else '-'

    entries = list(zoo_entries().values())
    log(f"{'name':<18}{'hub repo':<28}{'dataset':<8}{'ids':>5}  {'paper mAP/R1':<14}{'ours mAP/R1':<14}sha256")
    for e in entries:
        sha = (e['source'].get('sha256') or 'not recorded')[:12]
        log(f"{e['name']:<18}{e['hf_hub_id']:<28}{e['dataset']:<8}{e['num_classes']:>5}  "
            f"{pair(e['metrics']['paper']):<14}{pair(e['metrics'].get('ours')):<14}{sha}")
    log("plus <arch>.tv_in1k for each architecture: the ImageNet backbone init (timm/resnet50.tv_in1k), untrained "
        "re-ID head")
    return entries


# --- Google Drive fallback (opt-in) -------------------------------------------------------------------------
def converted_from_drive(name: str, cache_dir: str | Path | None = None, log: Log = _print) -> Path:
    """Folder with the converted weights of zoo entry ``name``, made from the authors' Drive file and cached.

    The download (:func:`fetch_from_drive`) needs internet access; its sha256 is checked when the entry records
    one (a warning says so when it does not). Both the download and the conversion are cached under
    ``cache_dir`` (default ``$SINET_TIMM_CACHE``).
    """
    entry, _ = resolve_entry(name)
    root = Path(cache_dir) if cache_dir else cache_root()
    out = root / 'converted' / entry['name']
    if (out / 'model.safetensors').is_file() and (out / 'config.json').is_file():
        made_from = json.loads((out / 'config.json').read_text()).get('source', {})
        if made_from.get('file_id') == entry['source'].get('file_id') and (
                not entry['source'].get('sha256') or made_from.get('sha256') == entry['source']['sha256']):
            return out  # converted from the file the entry names
    src = fetch_from_drive(entry, root / 'drive', quiet=True)
    try:
        digest = check_sha256(src, entry)
    except CheckpointError:
        src.unlink()  # do not keep a bad download in the cache
        raise
    if not entry['source'].get('sha256'):
        warnings.warn(f"{entry['name']}: the zoo entry records no sha256, so the downloaded {src} (sha256 {digest}) "
                      'could not be checked', stacklevel=2)
    tmp = out.with_name(out.name + '.tmp')
    shutil.rmtree(tmp, ignore_errors=True)
    source = {k: entry['source'][k] for k in ('kind', 'file_id', 'url') if entry['source'].get(k)}
    convert(src, tmp, arch=entry['architecture'], dataset=entry['dataset'], source=source,
            pretrained_cfg=entry_pretrained_cfg(entry), expected_num_classes=int(entry['num_classes']))
    shutil.rmtree(out, ignore_errors=True)
    tmp.replace(out)
    log(f"converted the authors' Google Drive file of {entry['name']} into {out}")
    return out


def load_from_drive(name: str, cache_dir: str | Path | None = None, **kwargs: Any) -> SINet:
    """``timm.create_model(name, pretrained=True, **kwargs)`` with weights from the authors' Drive file.

    An explicit alternative to the Hub (see :func:`converted_from_drive`); the result is cached.
    """
    import timm

    import sinet_timm  # noqa: F401  (registers the family)

    folder = converted_from_drive(name, cache_dir)
    overlay = dict(kwargs.pop('pretrained_cfg_overlay', None) or {}, file=str(folder / 'model.safetensors'))
    return timm.create_model(name, pretrained=True, pretrained_cfg_overlay=overlay, **kwargs)


def drive_fallback_file(name: str) -> Path:
    """For ``SINET_TIMM_DRIVE_FALLBACK=1``: the cached converted weights file of ``name`` (made if needed)."""
    if name not in zoo_entries():
        raise HubError(f'{name} is not a zoo entry, so it has no Google Drive source')
    return converted_from_drive(name, log=lambda m: print(m, file=sys.stderr)) / 'model.safetensors'


# --- command line -------------------------------------------------------------------------------------------
def _eval_args(args: argparse.Namespace) -> list[str]:
    out = []
    for flag in ('device', 'workers', 'batch_clips', 'cache_dir'):
        v = getattr(args, flag, None)
        if v is not None:
            out += [f"--{flag.replace('_', '-')}", str(v)]
    for flag in ('no_cache', 'no_progress'):
        if getattr(args, flag, False):
            out.append(f"--{flag.replace('_', '-')}")
    return out


def _add_eval_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group('evaluation (passed to sinet-eval)')
    g.add_argument('--device', help='auto, cpu, cuda or cuda:N')
    g.add_argument('--workers', type=int, help='JPEG decoding processes')
    g.add_argument('--batch-clips', type=int, help='4-frame clips per forward pass')
    g.add_argument('--cache-dir', help='feature cache folder')
    g.add_argument('--no-cache', action='store_true', help='neither read nor write cached features')
    g.add_argument('--no-progress', action='store_true')


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog='sinet-hub', description=__doc__.split('\n\nChoices:')[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest='command', required=True)

    sub.add_parser('list', help='the zoo with paper and our metrics')

    c = sub.add_parser('convert', help="authors' .pth.tar -> Hub-ready folder (model.safetensors + config.json)")
    c.add_argument('entry')
    c.add_argument('--src', help="the authors' .pth.tar (default: download it from Google Drive with gdown)")
    c.add_argument('--out', required=True, help='output folder')
    c.add_argument('--overwrite', action='store_true', help="replace an existing folder's files")
    c.add_argument('--record-sha256', action='store_true',
                   help="write the file's sha256 into the entry when it has none")

    k = sub.add_parser('card', help='write README.md (Hub model card) for an entry')
    k.add_argument('entry')
    k.add_argument('--results', help='a sinet-eval results JSON for our metrics (default: metrics.ours)')
    k.add_argument('--out', required=True, help='folder to write README.md to')
    k.add_argument('--overwrite', action='store_true')

    u = sub.add_parser('push', help='upload a folder to a Hub model repo')
    u.add_argument('folder')
    u.add_argument('--repo-id', required=True, help='ORG/NAME')
    u.add_argument('--dry-run', action='store_true', help='list files, sizes, sha256 and the target; contact nothing')
    u.add_argument('--create-pr', action='store_true', help='open a pull request instead of committing to main')
    u.add_argument('--token', help='Hub token (default: the saved login or $HF_TOKEN)')
    u.add_argument('--private', action='store_true', help='create the repo private')
    u.add_argument('--endpoint', help='Hub endpoint (default: $HF_ENDPOINT or https://huggingface.co)')

    v = sub.add_parser('verify', help="evaluate the Hub weights and compare with the entry's recorded metrics")
    v.add_argument('entry')
    v.add_argument('--root', required=True, help='folder holding the dataset folder')
    v.add_argument('--dataset', help="default: the entry's dataset")
    v.add_argument('--model', help='timm name to load instead of the entry name (e.g. hf-hub:ORG/NAME)')
    v.add_argument('--tolerance', type=float, default=DEFAULT_TOLERANCE, help='allowed drift in points')
    v.add_argument('--output', help='keep the sinet-eval JSON here')
    _add_eval_options(v)

    r = sub.add_parser('record', help='write metrics.ours of an entry from a sinet-eval JSON')
    r.add_argument('entry')
    r.add_argument('results')
    r.add_argument('--dry-run', action='store_true', help='print the diff, do not write')

    b = sub.add_parser('publish', help='convert + eval/record + card + push for one entry')
    b.add_argument('entry')
    b.add_argument('--src', help="the authors' .pth.tar (default: download it from Google Drive)")
    b.add_argument('--root', help='dataset root: evaluate and record metrics.ours')
    b.add_argument('--results', help='a sinet-eval JSON to record instead of evaluating')
    b.add_argument('--out', help='folder (default: hub/ENTRY)')
    b.add_argument('--repo-id', help="default: the entry's hf_hub_id")
    b.add_argument('--dry-run', action='store_true', help='do not modify the zoo file; list the upload only')
    b.add_argument('--create-pr', action='store_true')
    b.add_argument('--token')
    b.add_argument('--endpoint')
    _add_eval_options(b)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == 'list':
            list_zoo()
        elif args.command == 'convert':
            convert_entry(args.entry, args.out, src=args.src, overwrite=args.overwrite,
                          record_sha256=args.record_sha256)
        elif args.command == 'card':
            write_card(args.entry, args.out, results=args.results, overwrite=args.overwrite)
        elif args.command == 'push':
            push(args.folder, args.repo_id, token=args.token, create_pr=args.create_pr, dry_run=args.dry_run,
                 endpoint=args.endpoint, private=True if args.private else None)
        elif args.command == 'verify':
            return verify(args.entry, args.root, dataset=args.dataset, tolerance=args.tolerance, model=args.model,
                          eval_args=_eval_args(args), keep_json=args.output)
        elif args.command == 'record':
            record(args.entry, args.results, write=not args.dry_run)
        elif args.command == 'publish':
            if args.root and args.results:
                raise HubError('pass --root (evaluate now) or --results (an existing JSON), not both')
            publish(args.entry, src=args.src, root=args.root, out_dir=args.out, repo_id=args.repo_id,
                    dry_run=args.dry_run, token=args.token, create_pr=args.create_pr, endpoint=args.endpoint,
                    results=args.results, eval_args=_eval_args(args))
    except (HubError, CheckpointError, ZooConfigError, FileExistsError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    except Exception as e:
        # huggingface_hub's HTTP errors (401, 404, offline) carry a server message worth showing as is
        mod = type(e).__module__ or ''
        if not mod.startswith(('huggingface_hub', 'httpx', 'requests')):
            raise
        print(f'error: {type(e).__name__}: {e}', file=sys.stderr)
        return 2
    return 0


if __name__ == '__main__':
    sys.exit(main())
