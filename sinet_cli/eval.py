"""``sinet-eval`` / ``python -m reid_eval``: evaluate a video re-ID model on a benchmark, print the paper's metrics.

    sinet-eval --model sinet_r50.mars --dataset mars --root DATA           # Hub weights, dense protocol
    sinet-eval --model resnet50.tv_in1k --dataset mars --root DATA         # a timm image model, frame by frame
    sinet-eval --dataset synthetic                                          # offline demo on a generated set
    torchrun --nproc_per_node 4 -m reid_eval --model sinet_r50.mars --dataset mars --root DATA
    sinet-eval --model sinet_r50.mars --dataset mars --root DATA --rerank --aqe   # + post-processed rows
    sinet-eval --compare runs/eval/a.json runs/eval/b.json                  # one table of several runs
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._common import (
    AQE_DEFAULTS,
    CAMERA_FALLBACKS,
    GALLERY_RULES,
    MODES,
    RANKERS,
    RERANK_DEFAULTS,
    add_extraction_arguments,
    fail,
    output_taken,
    run,
)

if TYPE_CHECKING:
    from reid_eval import EvalResult

SYNTHETIC = 'synthetic'
DATASETS_HELP = 'mars, lsvid, ilidsvid, prid2011, dukev (aliases such as ls-vid or prid work too)'


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog='sinet-eval', description=__doc__.split('\n\n')[0].replace('``', ''),
        epilog='Models: sinet_r50 / sbnet_r50 / idnet_r50 / vreid_r50 with a zoo tag (.mars, .lsvid), sanet_r50.mars, '
               'any timm image model (evaluated frame by frame, frame embeddings averaged over each clip), '
               "hf-hub:ORG/NAME, local-dir:FOLDER; or --checkpoint FILE for the authors' .pth.tar.")
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
    p.add_argument('--protocol', choices=('auto', *MODES), default='auto',
                   help="test protocol: auto (default) is the model's own (its pretrained cfg: dense for SINet / "
                        'SANet, vkd for VKD, tfclip for TF-CLIP); name one to compare models under one protocol. '
                        'dense: all frames in 4-frame strided clips (the SINet paper); sampled: one clip per '
                        'tracklet; vkd: one 8-frame clip of chunk-first frames; tfclip: consecutive 8-frame clips')
    p.add_argument('--mode', choices=MODES, default=None, help='the old name of --protocol (kept for scripts)')
    p.add_argument('--camera-fallback', choices=CAMERA_FALLBACKS, default=None,
                   help='models that take camera ids (TF-CLIP) get each tracklet\'s camera; mean: use their mean '
                        'camera embedding instead (for data from cameras the model was not trained on)')
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
    g = p.add_argument_group('protocols beyond the released one (the plain row stays the chosen protocol)')
    g.add_argument('--add-query-to-gallery', choices=GALLERY_RULES, default='auto',
                   help='rank the queries against query + gallery: auto is the released rule (MARS yes, the others '
                        'no; torchreid never adds them); every output states the rule used')
    g.add_argument('--query-frames', type=int, default=None, metavar='N',
                   help='image-to-video: embed each query tracklet from N of its frames (1: its middle frame; N > 1: '
                        'evenly spaced), the gallery as the protocol says')
    g.add_argument('--rerank', action='store_true',
                   help="also report k-reciprocal re-ranking (torchreid's re_ranking of 1 - cos, in row blocks) as "
                        "its own row")
    g.add_argument('--rerank-k1', type=int, default=None, help=f"re-ranking k1 (default {RERANK_DEFAULTS['k1']})")
    g.add_argument('--rerank-k2', type=int, default=None, help=f"re-ranking k2 (default {RERANK_DEFAULTS['k2']})")
    g.add_argument('--rerank-lambda', type=float, default=None,
                   help=f"weight of the original distance (default {RERANK_DEFAULTS['lambda_value']})")
    g.add_argument('--aqe', action='store_true',
                   help="also report average query expansion (fast-reid's aqe) as its own row (with --rerank, also "
                        "AQE + rerank)")
    g.add_argument('--aqe-k', type=int, default=None, help=f"neighbours averaged (default {AQE_DEFAULTS['k']})")
    g.add_argument('--aqe-alpha', type=float, default=None,
                   help=f"neighbour weight: cosine similarity to this power (default {AQE_DEFAULTS['alpha']:g})")
    c = p.add_argument_group('comparing runs')
    c.add_argument('--compare', nargs='+', type=Path, metavar='RUN.json',
                   help='print one table of these results JSONs (model, protocol, metrics) and write it as Markdown; '
                        'nothing is evaluated')
    c.add_argument('--compare-output', type=Path, default=None,
                   help='the Markdown table (default: <first JSON stem>.compare.md beside it; kept unless '
                        '--overwrite)')
    return p


def _fmt(v: float | None) -> str:
    return '   -  ' if v is None else f'{v:6.1f}'


ROW_LABELS = {'aqe': '+ AQE', 'rerank': '+ rerank', 'aqe_rerank': '+ AQE + rerank'}  # reid_eval.results.VARIANTS


def print_results(title: str, ours: dict[str, Any], paper: dict[str, float], std: dict[str, float] | None = None,
                  file=None, variants: dict[str, dict[str, Any]] | None = None,
                  variants_std: dict[str, Any] | None = None) -> None:
    """The metrics table: ``ours`` (the chosen protocol), its std over splits, each post-processed result in its
    own labelled row, then the paper's numbers."""
    file = file or sys.stdout
    keys = ['mAP', 'rank1', 'rank5', 'rank10', 'rank20', 'mINP']

    def row(label: str, m: dict[str, Any]) -> None:
        print(f'  {label:<16}' + ''.join(f'{_fmt(m.get(k)):>9}' for k in keys), file=file)

    print(f'\n{title}', file=file)
    print(' ' * 18 + ''.join(f'{k:>9}' for k in keys), file=file)
    row('ours', ours)
    if std:
        row('+- std', std)
    for v, m in (variants or {}).items():
        row(ROW_LABELS.get(v, v), m)
        if (variants_std or {}).get(v):
            row('  +- std', variants_std[v])
    if paper:
        row('paper', paper)


def _output_path(args: argparse.Namespace, result: EvalResult) -> Path:
    if args.output:
        return args.output
    stamp = _dt.datetime.now().strftime('%Y%m%d-%H%M%S')
    safe = ''.join(c if c.isalnum() or c in '._-' else '_' for c in result.model)
    if result.random_weights:
        safe += '-random-weights'
    return Path('runs') / 'eval' / f'{safe}-{result.dataset}-{result.mode}-{stamp}.json'


def _post_processing(args: argparse.Namespace) -> tuple[dict[str, Any] | None, dict[str, Any] | None, str | None]:
    """The --rerank / --aqe parameters given (None when off), or the message for a parameter without its switch."""
    rerank = {k: v for k, v in (('k1', args.rerank_k1), ('k2', args.rerank_k2),
                                ('lambda_value', args.rerank_lambda)) if v is not None}
    aqe = {k: v for k, v in (('k', args.aqe_k), ('alpha', args.aqe_alpha)) if v is not None}
    if rerank and not args.rerank:
        return None, None, '--rerank-k1/--rerank-k2/--rerank-lambda set the parameters of --rerank: add --rerank'
    if aqe and not args.aqe:
        return None, None, '--aqe-k/--aqe-alpha set the parameters of --aqe: add --aqe'
    return (rerank if args.rerank else None), (aqe if args.aqe else None), None


def _compare(args: argparse.Namespace) -> int:
    from reid_eval.compare import compare_rows, text_table, write_markdown

    out = args.compare_output or args.compare[0].with_name(args.compare[0].stem + '.compare.md')
    rows = compare_rows(args.compare)
    written = write_markdown(rows, out, overwrite=args.overwrite)  # refuses an existing file without --overwrite
    print(text_table(rows))
    print(f'\nMarkdown table: {written}')
    return 0


def _evaluate(args: argparse.Namespace, rerank: dict[str, Any] | None, aqe: dict[str, Any] | None) -> int:
    import reid_eval
    from reid_eval.featurefile import check_output_file, run_features_path, save_run_features
    from reid_eval.results import model_label
    from reid_eval.viz import write_cmc_plot
    from sinet_timm.errors import OutputWriteError
    from sinet_timm.paths import replace_file

    if args.save_features and args.output:  # a path features cannot be written to is said before the run
        check_output_file(run_features_path(args.output))  # its folder and encoding are every split's file's too

    model, no_pretrained = args.model, args.no_pretrained
    if args.dataset.lower() == SYNTHETIC and model is None and not args.checkpoint:
        model, no_pretrained = 'sinet_r50', True  # the offline demo: random weights
    if model is None and not args.checkpoint:
        model = 'sinet_r50.mars'
    options = reid_eval.EvalOptions(
        protocol=args.protocol, mode=args.mode, camera_fallback=args.camera_fallback, split=args.split,
        batch_clips=args.batch_clips, device=args.device, amp=args.amp,
        workers=args.workers, cache=not args.no_cache, cache_dir=args.cache_dir, shard_clips=args.shard_clips,
        rank_chunk=args.rank_chunk, ranker=args.ranker, compile=args.compile, progress=not args.no_progress,
        add_query_to_gallery=args.add_query_to_gallery, query_frames=args.query_frames,
        rerank=reid_eval.RerankOptions(**rerank) if rerank is not None else None,
        aqe=reid_eval.AQEOptions(**aqe) if aqe is not None else None)
    result = reid_eval.evaluate(model, args.dataset, args.root, options, pretrained=not no_pretrained,
                                checkpoint=args.checkpoint, seed=args.seed)
    if result is None:  # a torchrun rank > 0: its shards are written, rank 0 reports
        return 0
    first = result.per_split[0]
    which = f'splits {args.split}' if len(result.splits) > 1 else f'split {result.splits[0]}'
    model = model_label({'model': result.model, 'random_weights': result.random_weights})
    title = f'{model} on {result.dataset} ({which}, {first.protocol})'
    print_results(title, result.metrics, result.paper, result.metrics_std, variants=result.variants,
                  variants_std=result.variants_std)
    if options.aqe:
        print(f'  + AQE: {options.aqe.describe()}, fast-reid\'s aqe, then cosine distance')
    if options.rerank:
        print(f"  + rerank: {options.rerank.describe()}, torchreid's re_ranking" +
              (' of the AQE embeddings in + AQE + rerank' if options.aqe else ''))
    if result.random_weights:
        print('  note: random weights: these numbers only show that the pipeline runs end to end')
    fps = [r.frames_per_s for r in result.per_split if r.frames_per_s]
    if fps:
        print(f"  {sum(r.frames for r in result.per_split)} frames at {sum(fps) / len(fps):.0f} frames/s on "
              f"{result.device}")
    out = _output_path(args, result)
    try:  # the metrics are printed above: a write that fails says what is missing, in one line
        files = save_run_features(out, result) if args.save_features else {}
        for name in files.values():
            print(f'  features: {out.with_name(name)}')
        summary = result.to_json(features_files=files)
        plot = write_cmc_plot(out, summary)  # records summary['cmc_plot']
        print(f'  CMC plot: {plot}' if plot else '  note: no CMC curve in the results, so no CMC plot')
        replace_file(out, lambda tmp: tmp.write_text(json.dumps(summary, indent=2)))
    except OutputWriteError as e:
        return fail(f'{e}; the metrics above are not saved in {out}')
    print(f'  results: {out}')
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.compare:
        return run(lambda: _compare(args))
    if taken := output_taken(args.output, args.overwrite):
        return fail(taken)
    rerank, aqe, problem = _post_processing(args)
    if problem is not None:
        return fail(problem)
    return run(lambda: _evaluate(args, rerank, aqe),
               interrupted='finished feature shards are kept in the cache; a rerun of the same command resumes '
                           'from them')


if __name__ == '__main__':
    sys.exit(main())
