"""``sinet-eval`` / ``python -m reid_eval``: evaluate a video re-ID model on a benchmark, print the paper's metrics.

    sinet-eval --model sinet_r50.mars --dataset mars --root DATA           # Hub weights, dense protocol
    sinet-eval --model resnet50.tv_in1k --dataset mars --root DATA         # a timm image model, frame by frame
    sinet-eval --dataset synthetic                                          # offline demo on a generated set
    torchrun --nproc_per_node 4 -m reid_eval --model sinet_r50.mars --dataset mars --root DATA
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import sys
from pathlib import Path
from typing import Any

from ._common import MODES, RANKERS, add_extraction_arguments, fail, output_taken, run

SYNTHETIC = 'synthetic'
DATASETS_HELP = 'mars, lsvid, ilidsvid, prid2011, dukev (aliases such as ls-vid or prid work too)'


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog='sinet-eval', description=__doc__.split('\n\n')[0].replace('``', ''),
        epilog='Models: sinet_r50 / sbnet_r50 / idnet_r50 / vreid_r50 with a zoo tag (.mars, .lsvid), any timm image '
               'model (evaluated frame by frame, frame embeddings averaged over each clip), hf-hub:ORG/NAME, '
               "local-dir:FOLDER; or --checkpoint FILE for the authors' .pth.tar.")
    p.add_argument('--model', default=None,
                   help='timm model name (default: sinet_r50.mars; sinet_r50 with random weights for the '
                        'synthetic demo)')
    p.add_argument('--checkpoint', help="a released .pth.tar or converted .safetensors to evaluate instead of Hub "
                                        "weights (architecture inferred from its keys unless --model names one)")
    p.add_argument('--no-pretrained', action='store_true',
                   help='random weights drawn with --seed (smoke tests, offline demos)')
    p.add_argument('--seed', type=int, default=0, help='seed of the --no-pretrained weights')
    p.add_argument('--dataset', default=SYNTHETIC,
                   help=f'{DATASETS_HELP}, or synthetic (a small generated MARS-format set; the default)')
    p.add_argument('--root', help='folder holding the dataset folder (e.g. DATA for DATA/mars)')
    p.add_argument('--split', default='0', help="split of iLIDS-VID / PRID-2011: 0..9 or 'all' (mean and std)")
    p.add_argument('--mode', choices=MODES, default='dense',
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
    p.add_argument('--no-progress', action='store_true', help='no progress bars')
    return p


def _fmt(v: float | None) -> str:
    return '   -  ' if v is None else f'{v:6.1f}'


def print_results(title: str, ours: dict[str, Any], paper: dict[str, float], std: dict[str, float] | None = None,
                  file=None) -> None:
    file = file or sys.stdout
    keys = ['mAP', 'rank1', 'rank5', 'rank10', 'rank20', 'mINP']
    print(f'\n{title}', file=file)
    print('          ' + ''.join(f'{k:>9}' for k in keys), file=file)
    print('  ours    ' + ''.join(f'{_fmt(ours.get(k)):>9}' for k in keys), file=file)
    if std:
        print('  +- std  ' + ''.join(f'{_fmt(std.get(k)):>9}' for k in keys), file=file)
    if paper:
        print('  paper   ' + ''.join(f'{_fmt(paper.get(k)):>9}' for k in keys), file=file)


def _output_path(args: argparse.Namespace, summary: dict[str, Any]) -> Path:
    if args.output:
        return args.output
    stamp = _dt.datetime.now().strftime('%Y%m%d-%H%M%S')
    safe = ''.join(c if c.isalnum() or c in '._-' else '_' for c in summary['model'])
    return Path('runs') / 'eval' / f"{safe}-{summary['dataset']}-{summary['mode']}-{stamp}.json"


def _evaluate(args: argparse.Namespace) -> int:
    import reid_eval
    from reid_eval.featurefile import save_run_features
    from reid_eval.viz import write_cmc_plot

    model, no_pretrained = args.model, args.no_pretrained
    if args.dataset.lower() == SYNTHETIC and model is None and not args.checkpoint:
        model, no_pretrained = 'sinet_r50', True  # the offline demo: random weights
    if model is None and not args.checkpoint:
        model = 'sinet_r50.mars'
    options = reid_eval.EvalOptions(
        mode=args.mode, split=args.split, batch_clips=args.batch_clips, device=args.device, amp=args.amp,
        workers=args.workers, cache=not args.no_cache, cache_dir=args.cache_dir, shard_clips=args.shard_clips,
        rank_chunk=args.rank_chunk, ranker=args.ranker, compile=args.compile, progress=not args.no_progress)
    result = reid_eval.evaluate(model, args.dataset, args.root, options, pretrained=not no_pretrained,
                                checkpoint=args.checkpoint, seed=args.seed)
    if result is None:  # a torchrun rank > 0: its shards are written, rank 0 reports
        return 0
    first = result.per_split[0]
    which = f'splits {args.split}' if len(result.splits) > 1 else f'split {result.splits[0]}'
    title = f"{result.model} on {result.dataset} ({which}, {result.mode}; {first.protocol.split('; ', 1)[1]})"
    print_results(title, result.metrics, result.paper, result.metrics_std)
    if result.random_weights:
        print('  note: random weights: these numbers only show that the pipeline runs end to end')
    fps = [r.frames_per_s for r in result.per_split if r.frames_per_s]
    if fps:
        print(f"  {sum(r.frames for r in result.per_split)} frames at {sum(fps) / len(fps):.0f} frames/s on "
              f"{result.device}")
    summary = result.to_json()
    out = _output_path(args, summary)
    out.parent.mkdir(parents=True, exist_ok=True)
    files = save_run_features(out, result) if args.save_features else {}
    for name in files.values():
        print(f'  features: {out.with_name(name)}')
    summary = result.to_json(features_files=files)
    plot = write_cmc_plot(out, summary)  # records summary['cmc_plot']
    print(f'  CMC plot: {plot}' if plot else '  note: no CMC curve in the results, so no CMC plot')
    out.write_text(json.dumps(summary, indent=2))
    print(f'  results: {out}')
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if taken := output_taken(args.output, args.overwrite):
        return fail(taken)
    return run(lambda: _evaluate(args), interrupted='finished feature shards are kept in the cache; a rerun of the '
                                                    'same command resumes from them')


if __name__ == '__main__':
    sys.exit(main())
