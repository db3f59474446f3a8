"""``sinet-eval`` / ``python -m reid_eval``: evaluate a video re-ID model on a benchmark and print the paper's metrics.

    sinet-eval --model sinet_r50.mars --dataset mars --root DATA           # Hub weights, dense protocol
    sinet-eval --dataset synthetic                                          # offline demo on a generated set
    torchrun --nproc_per_node 4 -m reid_eval --model sinet_r50.mars --dataset mars --root DATA
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

from .engine import (
    ExtractPlan,
    FramePreprocess,
    FrameReadError,
    WorkersDiedError,
    add_extraction_arguments,
    cache_folder,
    extract_features,
    extraction_arguments_error,
    for_inference,
    frame_error_message,
    output_taken,
    resolve_amp,
    weights_sha256,
    write_meta,
)
from .paper import paper_metrics
from .ranking import RANKERS, RANKS, rank_metrics, ranker_description

SYNTHETIC = 'synthetic'


class EvalError(Exception):
    """A user-facing problem with the arguments or the environment."""


def default_cache_dir() -> Path:
    base = os.environ.get('SINET_TIMM_CACHE') or Path(os.environ.get('XDG_CACHE_HOME', Path.home() / '.cache')) / \
        'sinet-timm'
    return Path(base) / 'features'


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog='sinet-eval', description=__doc__.split('\n\n')[0],
        epilog='Models: sinet_r50 / sbnet_r50 / idnet_r50 / vreid_r50, with a zoo tag (.mars, .lsvid), or '
               'hf-hub:ORG/NAME, local-dir:FOLDER; or --checkpoint FILE for the authors\' .pth.tar.')
    p.add_argument('--model', default=None,
                   help='timm model name (default: sinet_r50.mars; sinet_r50 with random weights for the '
                        'synthetic demo)')
    p.add_argument('--checkpoint', help="a released .pth.tar or converted .safetensors to evaluate instead of Hub "
                                        "weights (architecture inferred from its keys unless --model names one)")
    p.add_argument('--no-pretrained', action='store_true',
                   help='random weights drawn with --seed (smoke tests, offline demos)')
    p.add_argument('--seed', type=int, default=0, help='seed of the --no-pretrained weights')
    p.add_argument('--dataset', default=SYNTHETIC,
                   help='mars, lsvid, ilidsvid, prid2011, dukev, or synthetic (a small generated MARS-format set)')
    p.add_argument('--root', help='folder holding the dataset folder (e.g. DATA for DATA/mars)')
    p.add_argument('--split', default='0', help="split of iLIDS-VID / PRID-2011: 0..9 or 'all' (mean and std)")
    p.add_argument('--mode', choices=('dense', 'sampled'), default='dense',
                   help='dense: all frames in 4-frame strided clips (the paper); sampled: one clip per tracklet')
    add_extraction_arguments(p, workers_help='JPEG decoding processes')
    p.add_argument('--cache-dir', type=Path, default=None, help='feature cache (default: ~/.cache/sinet-timm/features)')
    p.add_argument('--no-cache', action='store_true', help='neither read nor write cached features')
    p.add_argument('--output', type=Path, help='results JSON (default: runs/eval/<model>-<dataset>-<time>.json)')
    p.add_argument('--overwrite', action='store_true', help='replace an existing --output file')
    p.add_argument('--save-features', action='store_true',
                   help='also write query/gallery features, pids, camids and tracklet ids to '
                        '<output stem>.features.safetensors (what `sinet-viz ranks` reads)')
    p.add_argument('--compile', nargs='?', const='inductor', default=None, metavar='BACKEND',
                   help="torch.compile the model (backend: inductor unless given; like timm's --torchcompile)")
    p.add_argument('--rank-chunk', type=int, default=256, help='queries per distance-matrix chunk')
    p.add_argument('--ranker', choices=RANKERS, default='numpy',
                   help="numpy: torchreid's Market-1501 ranking with whole-array operations (default, ~20x faster); "
                        "torchreid: its evaluate_rank itself (the PyPI package's pure-Python fallback); same numbers "
                        "(a compiled deep-person-reid ranker sums in float32: ~1e-7 relative differences)")
    p.add_argument('--shard-clips', type=int, default=2048,
                   help='clips per cached feature shard (the unit of resumption after an interruption)')
    p.add_argument('--no-progress', action='store_true')
    return p


def resolve_device(name: str) -> torch.device:
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N`` -> a usable device, or an EvalError saying what is wrong."""
    if name == 'auto':
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    try:
        dev = torch.device(name)
    except RuntimeError as e:
        raise EvalError(f'unknown device {name!r}; use auto, cpu, cuda or cuda:N') from e
    if dev.type == 'cuda':
        if not torch.cuda.is_available():
            raise EvalError(f'--device {name} was asked for, but PyTorch sees no CUDA GPU '
                            f'(torch {torch.__version__}, CUDA build: {torch.version.cuda}). Use --device cpu.')
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise EvalError(f'--device {name}: only {torch.cuda.device_count()} GPU(s) visible')
    elif dev.type != 'cpu':
        raise EvalError(f'unsupported device {name!r}; use auto, cpu, cuda or cuda:N')
    return dev


def _check_model_name(name: str) -> None:
    import timm

    import sinet_timm  # noqa: F401  (registers the family before names are checked)

    if ':' in name:
        return  # hf-hub: / local-dir: are resolved by timm
    arch = name.split('.')[0]
    if arch not in timm.list_models():
        valid = sorted(set(timm.list_models('*net_r50')) | set(timm.list_models('vreid_r50')))
        raise EvalError(f'unknown model {name!r}. SINet family: {", ".join(valid)}; with weights: '
                        f'{", ".join(timm.list_pretrained("*net_r50.*") + timm.list_pretrained("vreid_r50.*"))}. '
                        'Also hf-hub:ORG/NAME and local-dir:FOLDER.')


def load_model(args: argparse.Namespace) -> tuple[torch.nn.Module, str, str | None]:
    """The model in eval mode with num_classes=0, a description of its weights, and its architecture."""
    import timm

    import sinet_timm  # noqa: F401  (registers the family)

    if args.checkpoint:
        from sinet_timm.convert import CheckpointError, load_released
        arch = args.model.split('.')[0] if args.model and ':' not in args.model else None
        try:
            model = load_released(args.checkpoint, arch)
        except CheckpointError as e:
            raise EvalError(str(e)) from e
        model.reset_classifier(0)
        arch = model.pretrained_cfg.get('architecture')
        args.model = args.model or arch
        return model.eval(), f'file:{Path(args.checkpoint).resolve()}', arch
    name = args.model
    _check_model_name(name)
    pretrained = not args.no_pretrained
    try:
        model = timm.create_model(name, pretrained=pretrained, num_classes=0)
    except sinet_timm.WeightsUnavailableError as e:
        raise EvalError(str(e)) from e
    arch = model.pretrained_cfg.get('architecture') or name.split('.')[0]
    source = name if pretrained else f'{name} (random init)'
    return model.eval(), source, arch


def _fmt(v: float | None) -> str:
    return '   -  ' if v is None else f'{v:6.1f}'


def print_results(title: str, ours: dict[str, Any], paper: dict[str, float], std: dict[str, float] | None = None,
                  file=None) -> None:
    file = file or sys.stdout
    keys = ['mAP'] + [f'rank{r}' for r in RANKS]
    print(f'\n{title}', file=file)
    print('          ' + ''.join(f'{k:>9}' for k in keys), file=file)
    print('  ours    ' + ''.join(f'{_fmt(ours.get(k)):>9}' for k in keys), file=file)
    if std:
        print('  +- std  ' + ''.join(f'{_fmt(std.get(k)):>9}' for k in keys), file=file)
    if paper:
        print('  paper   ' + ''.join(f'{_fmt(paper.get(k)):>9}' for k in keys), file=file)


def evaluate_split(model, args, dataset: str, root: Path, split: int, device: torch.device, weights: str,
                   transform) -> dict[str, Any]:
    from .datasets import load_dataset

    t0 = time.perf_counter()
    data = load_dataset(dataset, root, split)
    t_load = time.perf_counter() - t0
    query, gallery = data.query, data.gallery
    plan = ExtractPlan.build(list(query) + list(gallery), args.mode, getattr(model, 'clip_len', 4))
    cache = None
    if not args.no_cache:
        cache = cache_folder(args.cache_dir or default_cache_dir(), weights, data.name, split, plan)
        write_meta(cache, {'weights_sha256': weights, 'dataset': data.name, 'split': split, 'mode': args.mode,
                           'dataset_dir': data.dataset_dir, 'num_clips': len(plan.clips)})
    amp = resolve_amp(args.amp, device)
    feats, stats = extract_features(
        model, plan, transform, cache, device, batch_clips=args.batch_clips, workers=args.workers, amp=amp,
        shard_clips=args.shard_clips, progress=not args.no_progress)
    if feats is None:  # a non-zero rank: its shards are written
        return {}
    nq = len(query)
    qf, gf = feats[:nq], feats[nq:]
    q_pids = [p for _, p, _ in query]
    q_cams = [c for _, _, c in query]
    g_pids = [p for _, p, _ in gallery]
    g_cams = [c for _, _, c in gallery]
    protocol = (f'{args.mode}; cosine distance; same-identity same-camera gallery entries removed (torchreid '
                f'Market-1501 ranking, {ranker_description(args.ranker)})')
    if data.name == 'mars':
        # MARS protocol followed by the paper: the gallery is query + gallery
        gf = torch.cat([qf, gf])
        g_pids, g_cams = q_pids + g_pids, q_cams + g_cams
        protocol += '; MARS gallery = query + gallery'
    t1 = time.perf_counter()
    metrics = rank_metrics(qf, gf, q_pids, q_cams, g_pids, g_cams, chunk=args.rank_chunk, device=device,
                           ranker=args.ranker)
    t_rank = time.perf_counter() - t1
    result = {
        'split': split, 'metrics': metrics, 'protocol': protocol, 'protocol_notes': data.protocol_notes,
        'num_query': len(query), 'num_gallery': len(g_pids),
        'timings_s': {'load_dataset': t_load, 'extract': stats.seconds, 'model': stats.model_seconds,
                      'rank': t_rank},
        'frames': stats.frames, 'frames_per_s': stats.frames_per_s if stats.frames else None,
        'cache': {'folder': str(cache) if cache else None, 'reused_shards': stats.cached_shards,
                  'computed_shards': stats.computed_shards},
        'amp': amp,
    }
    if getattr(args, 'save_features', False):  # written next to the JSON by main (extract.save_run_features)
        n_extra = len(g_pids) - len(gallery)  # MARS: the query tracklets (ids 0..nq-1) lead the ranked gallery
        result['_features'] = {
            'query_features': qf, 'gallery_features': gf, 'query_pids': torch.tensor(q_pids),
            'query_camids': torch.tensor(q_cams), 'gallery_pids': torch.tensor(g_pids),
            'gallery_camids': torch.tensor(g_cams), 'query_tracklets': torch.arange(nq),
            'gallery_tracklets': torch.cat([torch.arange(n_extra), torch.arange(nq, nq + len(gallery))])}
    return result


def _versions(device: torch.device) -> dict[str, str]:
    import timm
    out = {'python': platform.python_version(), 'torch': torch.__version__, 'timm': timm.__version__}
    try:
        from importlib.metadata import version
        out['torchreid'] = version('torchreid')
        out['sinet_timm'] = version('sinet-timm')
    except Exception:  # not installed as a distribution
        pass
    out['device'] = torch.cuda.get_device_name(device) if device.type == 'cuda' else platform.processor() or 'cpu'
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    from .datasets import canonical_name, num_splits

    world = int(os.environ.get('WORLD_SIZE', '1'))
    if world > 1 and args.no_cache:
        raise EvalError('torchrun runs share features through the cache: drop --no-cache')
    if msg := extraction_arguments_error(args):
        raise EvalError(msg)
    if args.rank_chunk < 1:
        raise EvalError(f'--rank-chunk must be a positive number of queries, got {args.rank_chunk}')
    dataset_arg = args.dataset.lower()
    if dataset_arg == SYNTHETIC:
        from .synthetic import demo_dataset_root
        root = demo_dataset_root()
        dataset = 'mars'
        if args.model is None:
            args.model, args.no_pretrained = 'sinet_r50', True
    else:
        dataset = canonical_name(dataset_arg)
        if not args.root:
            raise EvalError(f'--root is needed for {dataset}: the folder that holds the dataset folder')
        root = Path(args.root)
    if args.model is None and not args.checkpoint:
        args.model = 'sinet_r50.mars'
    device = resolve_device(args.device)
    if world > 1:
        import torch.distributed as dist
        local = int(os.environ.get('LOCAL_RANK', '0'))
        if device.type == 'cuda':
            device = torch.device('cuda', local)
            torch.cuda.set_device(device)
        dist.init_process_group('nccl' if device.type == 'cuda' else 'gloo')
    if args.split == 'all':
        splits = list(range(num_splits(dataset)))
    else:
        try:
            splits = [int(args.split)]
        except ValueError as e:
            raise EvalError(f"--split must be an integer or 'all', got {args.split!r}") from e

    if args.model and not args.checkpoint:
        _check_model_name(args.model)
    from .datasets import check_layout
    check_layout(dataset, root)  # a wrong --root is reported before any weights are fetched
    if args.no_pretrained:
        torch.manual_seed(args.seed)  # random weights are the same on every run, so their features cache
    model, source, arch = load_model(args)
    model = for_inference(model, device)
    weights = weights_sha256(model)
    transform = FramePreprocess.for_model(model)  # uint8 frames to the device, normalised there
    if args.compile:
        model = torch.compile(model, backend=args.compile)

    results = [evaluate_split(model, args, dataset, root, s, device, weights, transform) for s in splits]
    if not results[0]:
        return {}
    keys = ['mAP'] + [f'rank{r}' for r in RANKS]
    mean = {k: statistics.fmean(r['metrics'][k] for r in results) for k in keys}
    std = {k: statistics.pstdev(r['metrics'][k] for r in results) for k in keys} if len(results) > 1 else None
    paper = paper_metrics(arch, dataset) if dataset_arg != SYNTHETIC else {}
    summary = {
        'model': args.model, 'weights': source, 'weights_sha256': weights, 'architecture': arch,
        'dataset': SYNTHETIC if dataset_arg == SYNTHETIC else dataset, 'dataset_format': dataset,
        'root': str(root), 'splits': splits, 'mode': args.mode, 'protocol': results[0]['protocol'],
        'metrics': mean, 'metrics_std': std, 'paper': paper, 'per_split': results,
        'versions': _versions(device), 'world_size': world,
        'date': _dt.datetime.now(_dt.timezone.utc).isoformat(timespec='seconds'),
    }
    which = f'splits {args.split}' if len(splits) > 1 else f'split {splits[0]}'
    title = f"{args.model} on {summary['dataset']} ({which}, {args.mode}; {results[0]['protocol'].split('; ', 1)[1]})"
    print_results(title, mean, paper, std)
    if source.endswith('(random init)'):
        print('  note: random weights: these numbers only show that the pipeline runs end to end')
    fps = [r['frames_per_s'] for r in results if r['frames_per_s']]
    if fps:
        print(f"  {sum(r['frames'] for r in results)} frames at {statistics.fmean(fps):.0f} frames/s on {device}")
    return summary


def _output_path(args: argparse.Namespace, summary: dict[str, Any]) -> Path:
    if args.output:
        return args.output
    stamp = _dt.datetime.now().strftime('%Y%m%d-%H%M%S')
    safe = ''.join(c if c.isalnum() or c in '._-' else '_' for c in summary['model'])
    return Path('runs') / 'eval' / f"{safe}-{summary['dataset']}-{summary['mode']}-{stamp}.json"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if taken := output_taken(args.output, args.overwrite):
        print(f'error: {taken}', file=sys.stderr)
        return 2
    from .datasets import DatasetLayoutError
    try:
        summary = run(args)
    except (EvalError, DatasetLayoutError, FrameReadError, WorkersDiedError, ValueError) as e:
        print(f'error: {frame_error_message(e) if isinstance(e, FrameReadError) else e}', file=sys.stderr)
        return 2
    if not summary:
        return 0
    out = _output_path(args, summary)
    out.parent.mkdir(parents=True, exist_ok=True)
    from .extract import save_run_features
    from .viz import write_cmc_plot
    for path in save_run_features(out, summary):  # pops the tensors kept by --save-features
        print(f'  features: {path}')
    plot = write_cmc_plot(out, summary)  # records summary['cmc_plot']
    print(f'  CMC plot: {plot}' if plot else '  note: no CMC plot (pip install matplotlib to get one)')
    out.write_text(json.dumps(summary, indent=2))
    print(f'  results: {out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
