"""The model zoo on the Hugging Face Hub: Hub-ready folders, model cards, uploads and recorded metrics.

The library behind ``sinet-hub`` (:mod:`sinet_cli.hub`, which adds the evaluation of ``verify`` / ``publish``).

* The zoo YAML files are the single source of truth: timm's pretrained cfgs, the Hub config.json, the model
  card and ``verify`` all read them. :func:`record` writes back only ``metrics.ours`` (and :func:`convert_entry`
  ``source.sha256``), editing those lines in place (comments and formatting elsewhere are kept) and returning the
  diff; ``write=False`` only shows it.
* :func:`convert_entry` checks the original file's sha256 against ``source.sha256`` when the entry has one; when it
  has none the hash is printed with the file to record it in. The classifier size must equal the entry's
  ``num_classes``. config.json carries the zoo tag in its ``pretrained_cfg`` (not the ImageNet-init ``tv_in1k``
  cfg the bare architecture defaults to) plus the re-ID fields.
* :func:`push` uploads with ``huggingface_hub`` (``create_repo(exist_ok=True)`` + ``upload_folder``) exactly the
  files that a dry run lists (path, size, sha256); a dry run contacts nothing.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, HfApi, ModelCard, ModelCardData, constants, get_token
from huggingface_hub.utils import filter_repo_objects
from huggingface_hub.utils._paths import DEFAULT_IGNORE_PATTERNS
from safetensors import safe_open

from ._zoo import resolve_entry, update_entry_file, zoo_entries
from .archs import ARCHITECTURES, Family, family_of
from .convert import MEMBER_SEP, convert, sha256_of
from .drive import check_sha256, entry_pretrained_cfg, fetch_from_drive
from .errors import CheckpointError, HubError, NumClassesMismatch, OutputExistsError

__all__ = [
    'DatasetInfo', 'ResultRow', 'UploadFile', 'card_data', 'card_text', 'compare_metrics', 'convert_entry', 'list_zoo',
    'load_results', 'metric_label', 'paper_ref', 'push', 'record', 'results_table', 'results_to_ours', 'upload_plan',
    'usage_snippet', 'write_card',
]

DEFAULT_TOLERANCE = 0.1
GATED_METRICS = ('mAP', 'rank1')  # verify fails when these drift
METRIC_KEYS = ('mAP', 'rank1', 'rank5', 'rank10', 'rank20', 'mINP')  # mINP: absent from older results and YAMLs
REQUIRED_FILES = ('model.safetensors', 'config.json', 'README.md')
PAPER_URL = 'https://github.com/baist/SINet'  # SINet's; a card links its own family's code (archs.Family.code_url)
DEFAULT_PAPER_REF = 'Bai et al., CVPR 2022'  # SINet's; an entry without ``paper_ref`` takes its family's
TASK = {'type': 'video-person-re-identification', 'name': 'Video Person Re-identification'}
TAGS = ['timm', 'sinet-timm', 'video-person-re-identification', 'person-re-identification', 'video']

Log = Callable[[str], None]


def _print(msg: str) -> None:
    print(msg, flush=True)


def convert_entry(spec: str | Path, out_dir: str | Path, src: str | Path | None = None, overwrite: bool = False,
                  record_sha256: bool = False, log: Log = _print) -> Path:
    """Original checkpoint of a zoo entry -> Hub-ready folder (model.safetensors + config.json).

    ``src`` is a local ``.pth.tar``; without it the file is fetched from Google Drive (:func:`fetch_from_drive`).
    The sha256 is checked when the entry has one, else printed (and written to the entry with
    ``record_sha256``). The architecture and the classifier size must match the entry.
    """
    entry, path = resolve_entry(spec)
    name = entry['name']
    member = entry['source'].get('member')  # a checkpoint inside the authors' archive (VKD's zips)
    if src is None and entry['source'].get('kind') != 'google-drive':
        raise HubError(f"{name}: the authors' file is {entry['source'].get('url') or 'not downloadable here'}; "
                       'download it and pass it with --src FILE')
    if src is None:
        log(f"fetching the authors' file of {name} from Google Drive (file id {entry['source'].get('file_id')})")
        src = fetch_from_drive(entry)
    if member and MEMBER_SEP not in str(src):
        src = f'{src}{MEMBER_SEP}{member}'
    archive = Path(str(src).split(MEMBER_SEP)[0])
    if not archive.is_file():
        raise CheckpointError(f'checkpoint not found: {archive}')
    digest = check_sha256(archive, entry, path)
    if entry['source'].get('sha256'):
        log(f'sha256 of {archive} matches the zoo entry: {digest}')
    elif record_sha256:
        log(update_entry_file(path, 'source', 'sha256', digest,
                              comment=f'sha256 of {archive.name}, recorded by sinet-hub'))
    else:
        log(f'sha256 of {archive}: {digest}\n  the zoo entry has none yet: once you have checked this is the authors\' '
            f'published file, record it as source.sha256 in {path} (or rerun with --record-sha256)')
    source = {k: entry['source'][k] for k in ('kind', 'file_id', 'url') if entry['source'].get(k)}
    family = family_of(entry['architecture'])
    try:
        out = convert(src, out_dir, arch=entry['architecture'], dataset=entry['dataset'], overwrite=overwrite,
                      source=source, pretrained_cfg=entry_pretrained_cfg(entry),
                      expected_num_classes=int(entry['num_classes']), file_sha256=digest,
                      extra_config={'zoo_entry': name, 'hf_hub_id': entry['hf_hub_id'],
                                    'protocol_name': entry.get('protocol', family.protocol)})
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


def metric_label(key: str) -> str:
    """A metric key as cards and tables write it: ``mAP``, ``rank-1`` ... ``rank-20``, ``mINP``."""
    return f'rank-{key[4:]}' if key.startswith('rank') else key


@dataclass(frozen=True)
class DatasetInfo:
    """What a card says about its dataset (``reid_eval``'s dataset spec knows it; this package cannot import it)."""

    id: str  # 'mars'
    name: str  # 'MARS'
    hub_id: str | None = None  # the dataset's Hugging Face Hub id, where one exists


@dataclass(frozen=True)
class ResultRow:
    """One set of numbers on a card: whose they are and where they come from."""

    label: str  # the table row
    who: str  # in the metadata's metric names ('paper', 'sinet-timm')
    metrics: dict[str, Any]
    source_name: str
    source_url: str


def card_data(name: str, license: str, dataset: DatasetInfo, rows: Sequence[ResultRow]) -> ModelCardData:
    """The card's Hub metadata, made by huggingface_hub: library timm, pipeline image-feature-extraction, the
    dataset's Hub id where it has one, and a model-index with the numbers of ``rows[-1]``, the best-founded row
    (ours once measured, else the paper's), under that row's source.

    Only one row goes into the model-index because huggingface_hub files every EvalResult of one task and dataset
    under a single source: the paper's and our numbers together would all be credited to whichever came first. The
    card's table shows every row.
    """
    r = rows[-1] if rows else None
    results = [EvalResult(task_type=TASK['type'], task_name=TASK['name'], dataset_type=dataset.hub_id or dataset.id,
                          dataset_name=dataset.name, dataset_split='test', metric_type=metric_label(k),
                          metric_value=float(r.metrics[k]), metric_name=f'{metric_label(k)} ({r.who})',
                          source_name=r.source_name, source_url=r.source_url)
               for k in METRIC_KEYS if isinstance(r.metrics.get(k), (int, float))] if rows else []
    return ModelCardData(model_name=name, library_name='timm', license=license, tags=list(TAGS),
                         pipeline_tag='image-feature-extraction', datasets=[dataset.hub_id] if dataset.hub_id else None,
                         eval_results=results or None)


def _dataset(entry: dict[str, Any], dataset: DatasetInfo | None) -> DatasetInfo:
    return dataset or DatasetInfo(entry['dataset'], entry['dataset'])


def _entry_rows(entry: dict[str, Any], ours: dict[str, Any] | None) -> list[ResultRow]:
    """The rows of a zoo entry's card: the paper's numbers, the authors' own rerun, ours (last: the best-founded)."""
    url = _family(entry).code_url
    rows = [ResultRow(f'paper ({paper_ref(entry)})', 'paper', entry['metrics']['paper'], f'{paper_ref(entry)} (paper)',
                      url)]
    if entry['metrics'].get('authors_reproduced'):
        rows.append(ResultRow("released checkpoint (the authors' numbers)", 'authors', entry['metrics'][
            'authors_reproduced'], "the authors' README (released checkpoint)", url))
    if ours:
        rows.append(ResultRow('this checkpoint, `sinet-eval` (ours)', 'sinet-timm', ours,
                              f"sinet-timm sinet-eval ({entry.get('protocol', _family(entry).protocol)} protocol)",
                              f"https://huggingface.co/{entry['hf_hub_id']}"))
    return rows


def _family(entry: dict[str, Any]) -> Family:
    return family_of(entry['architecture'])


def paper_ref(entry: dict[str, Any]) -> str:
    """Who reported the entry's ``metrics.paper`` numbers (its ``paper_ref``; by default its family's paper)."""
    return entry.get('paper_ref') or _family(entry).paper_ref


def _row(label: str, m: dict[str, Any] | None) -> str:
    cells = [f'{float(m[k]):.1f}' if m and isinstance(m.get(k), (int, float)) else '-' for k in METRIC_KEYS]
    return f"| {label} | {' | '.join(cells)} |"


def results_table(rows: Sequence[ResultRow], pending: str | None = None) -> str:
    """The card's Markdown table of ``rows`` (and a row ``pending`` saying 'not evaluated yet')."""
    table = ['| | ' + ' | '.join(metric_label(k) for k in METRIC_KEYS) + ' |', '|---' * (len(METRIC_KEYS) + 1) + '|']
    table += [_row(r.label, r.metrics) for r in rows]
    if pending:
        table.append(f'| {pending} | not evaluated yet |' + ' |' * (len(METRIC_KEYS) - 1))
    return '\n'.join(table)


def usage_snippet(name: str, img_size: Sequence[int], frames_per_clip: int, embedding_dim: int,
                  any_frame_count: bool = False, num_cameras: int | None = None) -> str:
    """How to load and run the model; ``import sinet_timm`` comes first (the Hub's generic timm snippet, without
    it, fails: the architecture would be unknown to timm). ``any_frame_count``: a model that takes any T;
    ``num_cameras``: a model with a camera embedding, called with each clip's camera id."""
    h, w = img_size
    frames = (f'any T (the authors test with {frames_per_clip})' if any_frame_count else
              f'T a multiple of {frames_per_clip}')
    if num_cameras:
        call = (f"""# camids: (B,) LongTensor, each clip's camera in 0..{num_cameras - 1} (the training set's cameras)
embedding = model(clips, camids)  # (B, {embedding_dim}), compare with cosine distance
# without camera ids: model.camera_fallback = 'mean'; model(clips) then uses the mean camera embedding""")
    else:
        call = f'embedding = model(clips)  # (B, {embedding_dim}), compare with cosine distance'
    return f"""```python
import sinet_timm, timm  # importing sinet_timm first registers its model families with timm

model = timm.create_model("{name}", pretrained=True, num_classes=0).eval()
transform = timm.data.create_transform(**timm.data.resolve_data_config({{}}, model=model))  # per frame
# clips: (B, T, 3, {h}, {w}) float tensors, {frames}; or single crops (B, 3, {h}, {w})
{call}
```"""


def card_text(entry: dict[str, Any], ours: dict[str, Any] | None = None, dataset: DatasetInfo | None = None) -> str:
    """The README.md of an entry's Hub repo: metadata (huggingface_hub's ModelCardData), description, usage,
    results beside the paper's, citation."""
    name, arch, ds = entry['name'], entry['architecture'], entry['dataset']
    info = _dataset(entry, dataset)
    ds_name = info.name
    inp, src = entry['input'], entry['source']
    h, w = inp['img_size']
    ours = ours if ours is not None else entry['metrics'].get('ours')
    rows = _entry_rows(entry, ours)
    meta = card_data(entry['name'], entry['license'], info, rows).to_yaml()
    table = results_table(rows, pending=None if ours else 'this checkpoint, `sinet-eval` (ours)').splitlines()
    evaluated = ''
    if ours:
        bits = [f"on {ours['date']}" if ours.get('date') else '',
                f"weights sha256 `{ours['weights_sha256']}`" if ours.get('weights_sha256') else '',
                ', '.join(f'{k} {v}' for k, v in (ours.get('versions') or {}).items())]
        evaluated = 'Ours: ' + '; '.join(b for b in bits if b) + '.\n\n' if any(bits) else ''
    sha = f"`{src['sha256']}`" if src.get('sha256') else 'not recorded yet'
    where = src.get('url') or src.get('file_id', '')
    if src.get('member'):
        where += f", member `{src['member']}`"
    family = _family(entry)
    protocol = entry.get('protocol', family.protocol)
    cameras = entry.get('num_cameras')
    # the classifier a converted checkpoint keeps: none where the family's cfg makes an embedding model (TF-CLIP's
    # identity classifiers are training-only)
    kept = entry_pretrained_cfg(entry).get('num_classes', entry['num_classes'])
    heads = (f"The classifier ({entry['num_classes']} training identities of {ds_name}) and, where present, the frame "
             'projection are kept for fine-tuning; `num_classes=0` gives the re-ID embedding.' if kept else
             f"The authors' identity classifiers ({entry['num_classes']} training identities of {ds_name}) are "
             'training-only and are not kept: the model gives the re-ID embedding (`num_classes=N` adds a new '
             'classifier for fine-tuning).')
    gallery = ('the query tracklets are also in the gallery, on every dataset, as the authors evaluate'
               if protocol == 'tfclip' else 'for MARS the gallery is query + gallery, as in the paper')
    if protocol == 'dense':
        protocol_text = (f"dense): every frame of a tracklet in {inp['frames_per_clip']}-frame strided clips, clip "
                         'embeddings averaged, cosine distance')
        frames, embedding = f"T a multiple of {inp['frames_per_clip']}", 'BN-neck feature'
    else:
        protocol_text = (f"{protocol}, as the authors test): "
                         + (family.protocol_summary.split(': ', 1)[-1] if protocol == family.protocol else protocol))
        frames, embedding = f"any T; the authors test {inp['frames_per_clip']}", 'feature before the BN-neck'
    cams_line = (f"\n- Cameras: {cameras} ({ds_name}'s), a learned embedding each: pass each clip's camera id"
                 if cameras else '')
    body = f"""# {name}

{(entry.get('card') or '').strip()}

The weights are the authors' released checkpoint ({where}; sha256 of the original file: {sha}), converted to
timm's safetensors format by `sinet-hub convert` without changing any weight. {heads}

## Usage

{usage_snippet(name, (h, w), inp['frames_per_clip'], entry.get('embedding_dim', 2048), protocol != 'dense',
                cameras)}

`timm.create_model("hf-hub:{entry['hf_hub_id']}", pretrained=True)` loads this repository directly. Evaluate
it on {ds_name} (with sinet-timm installed; `DATA/` holds the dataset folder):

```bash
sinet-eval --model {name} --dataset {ds} --root DATA
sinet-hub verify {name} --root DATA   # fails if mAP / rank-1 drift from the numbers below
```

## Results on the {ds_name} test set (%)

{chr(10).join(table)}

Protocol ({protocol_text}, gallery entries of the query's identity and camera removed ({gallery}).
mINP (Ye et al., TPAMI 2021): per query, the true matches over the rank of the
hardest one, averaged; the paper reports none. {evaluated}

## Model details

- Architecture: `{arch}`; training identities: {entry['num_classes']} ({ds_name}){cams_line}
- Input: clips of T frames ({frames}), each frame resized to {h}x{w}
  ({inp.get('interpolation', 'bicubic')}) and normalised with the ImageNet mean/std
- Embedding: {entry.get('embedding_dim', 2048)}-d {embedding}; license: {entry['license'].upper()} (as the
  authors' code, {family.code_url})

## Citation

```bibtex
{(entry.get('citation') or family.citation).strip()}
```
"""
    return str(ModelCard(f'---\n{meta}\n---\n{body}'))


def write_card(spec: str | Path, out_dir: str | Path, results: str | Path | None = None, overwrite: bool = False,
               ours: dict[str, Any] | None = None, dataset: DatasetInfo | None = None, log: Log = _print) -> Path:
    """Write ``out_dir/README.md`` for an entry; ``results`` (a sinet-eval JSON) fills in our metrics."""
    entry, path = resolve_entry(spec)
    if results is not None:
        ours = results_to_ours(load_results(results), entry, str(results))
    out = Path(out_dir) / 'README.md'
    text = card_text(entry, ours, dataset)
    if out.exists() and not overwrite and out.read_text() != text:
        raise OutputExistsError(f'{out} exists; pass --overwrite to replace it')
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
        raise HubError(f"{folder}/config.json: architecture {cfg.get('architecture')!r} is not one of this "
                       f"package's architectures ({', '.join(ARCHITECTURES)})")
    try:
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
    plan = upload_plan(folder)
    base = (endpoint or constants.ENDPOINT).rstrip('/')
    target = f"{base}/{repo_id} ({'as a pull request' if create_pr else 'branch main'})"
    listing = '\n'.join(f'  {f.path:<24} {_size(f.size):>11}  {f.sha256}' for f in plan)
    total = _size(sum(f.size for f in plan))
    if dry_run:
        log(f'dry run: would upload {len(plan)} files ({total}) to {target}; nothing was contacted\n{listing}')
        return {'dry_run': True, 'repo_id': repo_id, 'target': target, 'files': [asdict(f) for f in plan]}
    if token is None and get_token() is None:
        raise HubError('no Hugging Face token: run `hf auth login`, set HF_TOKEN, or pass --token')
    api = HfApi(endpoint=endpoint, token=token, library_name='sinet-timm', library_version=_version())
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


def list_zoo(log: Log = _print) -> list[dict[str, Any]]:
    """Print the zoo with paper and our metrics; returns the entries."""
    def pair(m: dict[str, Any] | None) -> str:
        if not m:
            return '-'
        return ' / '.join(f'{m[k]:.1f}' if isinstance(m.get(k), (int, float)) else '-' for k in ('mAP', 'rank1'))

    def minp(m: dict[str, Any] | None) -> str:
        return f"{m['mINP']:.1f}" if m and isinstance(m.get('mINP'), (int, float)) else '-'

    entries = list(zoo_entries().values())
    log(f"{'name':<18}{'hub repo':<28}{'dataset':<8}{'ids':>5}  {'paper mAP/R1':<14}{'ours mAP/R1':<14}"
        f"{'ours mINP':<11}sha256")
    for e in entries:
        sha = (e['source'].get('sha256') or 'not recorded')[:12]
        ours = e['metrics'].get('ours')
        log(f"{e['name']:<18}{e['hf_hub_id']:<28}{e['dataset']:<8}{e['num_classes']:>5}  "
            f"{pair(e['metrics']['paper']):<14}{pair(ours):<14}{minp(ours):<11}{sha}")
    log("plus <arch>.tv_in1k for each architecture: the ImageNet backbone init (timm/resnet50.tv_in1k), untrained "
        "re-ID head")
    return entries




def _version() -> str:
    try:
        return version('sinet-timm')
    except PackageNotFoundError:  # a source tree on PYTHONPATH
        return 'unknown'
