"""``sinet-hub``: publish the model zoo (``hub_configs/*.yaml``) on the Hugging Face Hub and check it.

    sinet-hub list                                               # the zoo, paper and our metrics
    sinet-hub convert sinet_r50.mars --src sinet_mars.pth.tar --out hub/sinet_r50.mars
    sinet-hub card sinet_r50.mars --results eval.json --out hub/sinet_r50.mars
    sinet-hub push hub/sinet_r50.mars --repo-id ORG/sinet_r50.mars --dry-run
    sinet-hub verify sinet_r50.mars --root DATA                  # Hub weights -> reid_eval -> recorded metrics
    sinet-hub publish sinet_r50.mars --root DATA                 # convert + eval + record + card + push
    sinet-hub record sinet_r50.mars eval.json                    # metrics.ours from a reid_eval JSON

ENTRY is a zoo entry name (sinet_r50.mars) or the path of a YAML file in the zoo format.

``verify`` loads the weights the way users do (``timm.create_model(NAME, pretrained=True)``: timm's Hub download and
cache), evaluates them with ``reid_eval.evaluate`` and fails (exit 1, table of differences) when mAP or rank-1
differ from ``metrics.ours`` by more than ``--tolerance`` points (default 0.1). ``publish`` converts, evaluates
(``--root``) or reads a results JSON (``--results``), records ``metrics.ours``, writes the card and uploads.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ._common import run

DEFAULT_TOLERANCE = 0.1


def _eval_options(args: argparse.Namespace) -> Any:
    from reid_eval import EvalOptions

    fields: dict[str, Any] = {'progress': not args.no_progress, 'cache': not args.no_cache}
    for k in ('device', 'workers', 'batch_clips', 'cache_dir'):
        if getattr(args, k, None) is not None:
            fields[k] = getattr(args, k)
    return EvalOptions(**fields)


def _evaluate_entry(model: str, dataset: str, root: str | Path, options: Any, out_json: Path | None) -> dict:
    """Evaluate ``model`` on ``dataset`` (the released protocol); the results JSON, also written to ``out_json``."""
    from reid_eval import evaluate

    result = evaluate(model, dataset, root, options)
    summary = result.to_json()
    if out_json is not None:
        out_json.parent.mkdir(parents=True, exist_ok=True)
        out_json.write_text(json.dumps(summary, indent=2))
    return summary


def verify(spec: str | Path, root: str | Path, options: Any, dataset: str | None = None,
           tolerance: float = DEFAULT_TOLERANCE, model: str | None = None, keep_json: str | Path | None = None) -> int:
    """Evaluate the published weights of an entry and compare with its recorded ``metrics.ours``: 0 when mAP and
    rank-1 are within ``tolerance`` points, 1 (after printing the table of differences) otherwise."""
    from sinet_timm._zoo import resolve_entry
    from sinet_timm.errors import HubError
    from sinet_timm.hub import compare_metrics

    entry, path = resolve_entry(spec)
    name = entry['name']
    ours = entry['metrics'].get('ours')
    if not ours:
        raise HubError(f'{name} has no recorded metrics.ours in {path}; record them first with '
                       f'`sinet-hub publish {name} --root DATA` or `sinet-hub record {name} EVAL.json`')
    dataset = dataset or entry['dataset']
    if dataset != ours.get('dataset', entry['dataset']):
        raise HubError(f"{name}'s recorded metrics are on {ours.get('dataset', entry['dataset'])}, not {dataset}")
    summary = _evaluate_entry(model or name, dataset, root, options, Path(keep_json) if keep_json else None)
    ok, table = compare_metrics(ours, summary['metrics'], tolerance)
    verdict = 'matches' if ok else f'DRIFTS by more than {tolerance} points from'
    print(f"\nverify {model or name} on {dataset}: {verdict} the metrics recorded in {path}\n{table}")
    return 0 if ok else 1


def publish(spec: str | Path, options: Any = None, src: str | Path | None = None, root: str | Path | None = None,
            out_dir: str | Path | None = None, repo_id: str | None = None, dry_run: bool = False,
            token: str | None = None, create_pr: bool = False, endpoint: str | None = None,
            results: str | Path | None = None) -> dict[str, Any]:
    """convert + (eval on ``root`` -> record ``metrics.ours``) + card + push: one command per entry.

    The folder (default ``hub/NAME``) may only hold the files publish writes. With ``dry_run`` the zoo file is
    not modified (diffs are printed) and the upload is only listed.
    """
    from reid_eval.datasets import get_spec
    from sinet_timm._zoo import resolve_entry
    from sinet_timm.errors import HubError
    from sinet_timm.hub import REQUIRED_FILES, convert_entry, push, record, write_card

    entry, path = resolve_entry(spec)
    name = entry['name']
    out = Path(out_dir or Path('hub') / name)
    if out.is_dir():
        foreign = sorted(p.name for p in out.iterdir() if p.name not in REQUIRED_FILES)
        if foreign:
            raise HubError(f'{out} holds files publish does not write ({", ".join(foreign)}); they would be '
                           'uploaded too: use another --out or remove them')
    convert_entry(path, out, src=src, overwrite=True, record_sha256=not dry_run)
    entry, _ = resolve_entry(path)  # re-read: the sha256 may have been recorded
    ours = None
    if root is not None:
        eval_json = out.parent / f'{name}.eval.json'
        summary = _evaluate_entry(f'local-dir:{out}', entry['dataset'], root, options, eval_json)
        print(f'evaluation results: {eval_json}')
        ours = record(path, summary, write=not dry_run)
    elif results is not None:
        ours = record(path, results, write=not dry_run)
    write_card(path, out, overwrite=True, ours=ours, dataset=get_spec(entry['dataset']).card_info())
    pushed = push(out, repo_id or entry['hf_hub_id'], token=token, create_pr=create_pr, dry_run=dry_run,
                  endpoint=endpoint)
    return {'folder': str(out), 'ours': ours, 'push': pushed}


def _add_eval_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group('evaluation (as sinet-eval takes them)')
    g.add_argument('--device', help='auto, cpu, cuda or cuda:N')
    g.add_argument('--workers', type=int, help='JPEG decoding processes')
    g.add_argument('--batch-clips', type=int, help='4-frame clips per forward pass')
    g.add_argument('--cache-dir', type=Path, help='feature cache folder')
    g.add_argument('--no-cache', action='store_true', help='neither read nor write cached features')
    g.add_argument('--no-progress', action='store_true', help='no progress bars')


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog='sinet-hub', description=__doc__.split('\n\n')[0].replace('``', ''),
                                epilog='ENTRY is a zoo entry name (sinet_r50.mars) or the path of a YAML file in the '
                                       'zoo format.')
    sub = p.add_subparsers(dest='command', required=True)

    sub.add_parser('list', help='the zoo with paper and our metrics')

    c = sub.add_parser('convert', help="authors' .pth.tar -> Hub-ready folder (model.safetensors + config.json)")
    c.add_argument('entry', help='zoo entry name or YAML file')
    c.add_argument('--src', help="the authors' .pth.tar (default: download it from Google Drive with gdown)")
    c.add_argument('--out', required=True, help='output folder')
    c.add_argument('--overwrite', action='store_true', help="replace an existing folder's files")
    c.add_argument('--record-sha256', action='store_true',
                   help="write the file's sha256 into the entry when it has none")

    k = sub.add_parser('card', help='write README.md (Hub model card) for an entry')
    k.add_argument('entry', help='zoo entry name or YAML file')
    k.add_argument('--results', help='a sinet-eval results JSON for our metrics (default: metrics.ours)')
    k.add_argument('--out', required=True, help='folder to write README.md to')
    k.add_argument('--overwrite', action='store_true', help='replace an existing README.md')

    u = sub.add_parser('push', help='upload a folder to a Hub model repo')
    u.add_argument('folder', help='the folder to upload (model.safetensors, config.json, README.md)')
    u.add_argument('--repo-id', required=True, help='ORG/NAME')
    u.add_argument('--dry-run', action='store_true', help='list files, sizes, sha256 and the target; contact nothing')
    u.add_argument('--create-pr', action='store_true', help='open a pull request instead of committing to main')
    u.add_argument('--token', help='Hub token (default: the saved login or $HF_TOKEN)')
    u.add_argument('--private', action='store_true', help='create the repo private')
    u.add_argument('--endpoint', help='Hub endpoint (default: $HF_ENDPOINT or https://huggingface.co)')

    v = sub.add_parser('verify', help="evaluate the Hub weights and compare with the entry's recorded metrics")
    v.add_argument('entry', help='zoo entry name or YAML file')
    v.add_argument('--root', required=True, help='folder holding the dataset folder')
    v.add_argument('--dataset', help="default: the entry's dataset")
    v.add_argument('--model', help='timm name to load instead of the entry name (e.g. hf-hub:ORG/NAME)')
    v.add_argument('--tolerance', type=float, default=DEFAULT_TOLERANCE, help='allowed drift in points')
    v.add_argument('--output', help='keep the sinet-eval JSON here')
    _add_eval_options(v)

    r = sub.add_parser('record', help='write metrics.ours of an entry from a sinet-eval JSON')
    r.add_argument('entry', help='zoo entry name or YAML file')
    r.add_argument('results', help='the sinet-eval results JSON')
    r.add_argument('--dry-run', action='store_true', help='print the diff, do not write')

    b = sub.add_parser('publish', help='convert + eval/record + card + push for one entry')
    b.add_argument('entry', help='zoo entry name or YAML file')
    b.add_argument('--src', help="the authors' .pth.tar (default: download it from Google Drive)")
    b.add_argument('--root', help='dataset root: evaluate and record metrics.ours')
    b.add_argument('--results', help='a sinet-eval JSON to record instead of evaluating')
    b.add_argument('--out', help='folder (default: hub/ENTRY)')
    b.add_argument('--repo-id', help="default: the entry's hf_hub_id")
    b.add_argument('--dry-run', action='store_true', help='do not modify the zoo file; list the upload only')
    b.add_argument('--create-pr', action='store_true', help='open a pull request instead of committing to main')
    b.add_argument('--token', help='Hub token (default: the saved login or $HF_TOKEN)')
    b.add_argument('--endpoint', help='Hub endpoint (default: $HF_ENDPOINT or https://huggingface.co)')
    _add_eval_options(b)
    return p


def _hub(args: argparse.Namespace) -> int:
    from reid_eval.datasets import get_spec
    from sinet_timm._zoo import resolve_entry
    from sinet_timm.errors import HubError
    from sinet_timm.hub import convert_entry, list_zoo, push, record, write_card

    if args.command == 'list':
        list_zoo()
    elif args.command == 'convert':
        convert_entry(args.entry, args.out, src=args.src, overwrite=args.overwrite, record_sha256=args.record_sha256)
    elif args.command == 'card':
        entry, _ = resolve_entry(args.entry)
        write_card(args.entry, args.out, results=args.results, overwrite=args.overwrite,
                   dataset=get_spec(entry['dataset']).card_info())
    elif args.command == 'push':
        push(args.folder, args.repo_id, token=args.token, create_pr=args.create_pr, dry_run=args.dry_run,
             endpoint=args.endpoint, private=True if args.private else None)
    elif args.command == 'verify':
        return verify(args.entry, args.root, _eval_options(args), dataset=args.dataset, tolerance=args.tolerance,
                      model=args.model, keep_json=args.output)
    elif args.command == 'record':
        record(args.entry, args.results, write=not args.dry_run)
    elif args.command == 'publish':
        if args.root and args.results:
            raise HubError('pass --root (evaluate now) or --results (an existing JSON), not both')
        publish(args.entry, _eval_options(args), src=args.src, root=args.root, out_dir=args.out,
                repo_id=args.repo_id, dry_run=args.dry_run, token=args.token, create_pr=args.create_pr,
                endpoint=args.endpoint, results=args.results)
    return 0


def _hub_or_http_error(args: argparse.Namespace) -> int:
    try:
        return _hub(args)
    except Exception as e:
        # huggingface_hub's HTTP errors (401, 404, offline) carry a server message worth showing as is
        if not (type(e).__module__ or '').startswith(('huggingface_hub', 'httpx', 'requests')):
            raise
        print(f'error: {type(e).__name__}: {e}', file=sys.stderr)
        return 2


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run(lambda: _hub_or_http_error(args), interrupted='rerun the command (a push that was cut off is '
                                                            'resumed by huggingface_hub)')


if __name__ == '__main__':
    sys.exit(main())
