"""``sinet-viz``: pictures of what a video re-ID model sees and retrieves (PNG).

    sinet-viz cam TRACKLET_DIR --models idnet_r50.mars sinet_r50.mars      # activation maps, paper Fig. 1/6
    sinet-viz ranks RUN.json --queries 0 3 --topk 5                        # retrieval results, paper Fig. 7
    sinet-viz ranks --query cam1.safetensors --gallery cam2.safetensors    # matches between sinet-extract files
    sinet-viz cmc RUN.json                                                 # CMC curve (sinet-eval writes it too)

``cam`` overlays each model's per-frame activation (channel mean of ``forward_features``) on the frames;
``ranks`` shows queries of a ``sinet-eval --save-features`` run beside their top-k gallery tracklets, or the
tracklets of one ``sinet-extract`` file (e.g. a camera's video) beside their closest ones in another, each a strip
of its crops (green: mutual nearest neighbours).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ._common import fail, output_taken, run


def _size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split('x'))
    except ValueError:
        raise argparse.ArgumentTypeError(f'expected HxW in pixels, e.g. 128x64; got {text!r}') from None
    if h < 8 or w < 8:
        raise argparse.ArgumentTypeError(f'frame size {text} is too small (at least 8x8)')
    return h, w


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog='sinet-viz', description=__doc__.split('\n\n')[0].replace('``', ''))
    sub = p.add_subparsers(dest='command', required=True)
    c = sub.add_parser('cam', help='activation maps of a tracklet, one row per model (paper Fig. 1/6)')
    c.add_argument('tracklet', type=Path, help='folder of one tracklet\'s frames')
    c.add_argument('--models', nargs='+', default=['idnet_r50.mars', 'sinet_r50.mars'],
                   help='timm model names or checkpoint files (default: idnet_r50.mars sinet_r50.mars: without and '
                        'with SBM; vreid_r50 has only ImageNet weights in the zoo)')
    c.add_argument('--frames', type=int, default=8, help='frames shown and fed to the models (multiple of 4)')
    c.add_argument('--reduce', choices=('mean', 'norm'), default='mean', help='channel mean or L2 norm')
    c.add_argument('--frame-size', type=_size, default=(128, 64), help='shown frame size HxW in px (128x64)')
    c.add_argument('--no-pretrained', action='store_true', help='random weights drawn with --seed (offline)')
    c.add_argument('--seed', type=int, default=0, help='seed of the --no-pretrained weights')
    c.add_argument('--device', default='auto', help='auto, cpu, cuda or cuda:N')
    c.add_argument('--output', '-o', type=Path, help='PNG to write (default: <tracklet>.cam.png here)')
    c.add_argument('--overwrite', action='store_true', help='replace an existing PNG')
    r = sub.add_parser('ranks', help='top-k gallery tracklets of chosen queries (paper Fig. 7), of a sinet-eval run '
                                     'or between two sinet-extract feature files')
    r.add_argument('run', type=Path, nargs='?', help='results JSON of a sinet-eval run made with --save-features')
    r.add_argument('--query', '-q', type=Path, help='instead of RUN: query features (sinet-extract output)')
    r.add_argument('--gallery', '-g', type=Path, help='instead of RUN: gallery features (sinet-extract output)')
    r.add_argument('--queries', nargs='+', default=None,
                   help='query indices (0-based), or with --query also tracklet names such as cam1:7 (default: 0 '
                        'for a run, the first 10 tracklets of --query)')
    r.add_argument('--topk', type=int, default=5, help='gallery tracklets shown per query')
    r.add_argument('--frames', type=int, default=4, help='frames shown per tracklet')
    r.add_argument('--frame-size', type=_size, default=(96, 48), help='shown frame size HxW in px (96x48)')
    r.add_argument('--split-index', type=int, default=0, help='which split of a multi-split run (0-based)')
    r.add_argument('--output', '-o', type=Path,
                   help='PNG to write (default: <run stem>.ranks.png beside it; with --query: '
                        '<query stem>-<gallery stem>.ranks.png here)')
    r.add_argument('--overwrite', action='store_true', help='replace an existing PNG')
    m = sub.add_parser('cmc', help='CMC curve of a sinet-eval results JSON')
    m.add_argument('run', type=Path, help='results JSON of a sinet-eval run')
    m.add_argument('--output', '-o', type=Path, help='PNG to write (default: <run stem>.cmc.png beside it)')
    m.add_argument('--overwrite', action='store_true', help='replace an existing PNG')
    return p


def _draw(args: argparse.Namespace) -> int:
    from reid_eval import resolve_device
    from reid_eval.errors import VizError
    from reid_eval.viz import load_run, plot_cam, plot_cmc, plot_matches, plot_ranks

    def target(path: Path) -> Path:
        if taken := output_taken(path, args.overwrite):
            raise VizError(taken)
        return path

    if args.command == 'cam':
        out = target(args.output or Path(f'{args.tracklet.resolve().name}.cam.png'))
        path = plot_cam(args.tracklet, args.models, out, frames=args.frames, reduce=args.reduce,
                        pretrained=not args.no_pretrained, seed=args.seed, device=resolve_device(args.device),
                        frame_size=args.frame_size)
    elif args.command == 'ranks' and args.run is None:
        out = target(args.output or Path(f'{args.query.stem}-{args.gallery.stem}.ranks.png'))
        path = plot_matches(args.query, args.gallery, out, queries=args.queries, topk=args.topk, frames=args.frames,
                            frame_size=args.frame_size)
    elif args.command == 'ranks':
        out = target(args.output or args.run.with_name(f'{args.run.stem}.ranks.png'))
        path = plot_ranks(args.run, out, queries=[int(q) for q in args.queries or [0]], topk=args.topk,
                          frames=args.frames, split_index=args.split_index, frame_size=args.frame_size)
    else:
        path = plot_cmc(load_run(args.run), target(args.output or args.run.with_name(f'{args.run.stem}.cmc.png')))
    print(f'wrote {path}')
    return 0


def main(argv: list[str] | None = None) -> int:
    """``sinet-viz``: returns 0 on success, 2 on a user error (printed as one ``error:`` message)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == 'ranks':
        files = args.query is not None or args.gallery is not None
        if args.run is not None and files:
            return fail('give either a sinet-eval RUN.json or --query and --gallery feature files, not both')
        if args.run is None and (args.query is None or args.gallery is None):
            return fail('sinet-viz ranks needs a sinet-eval RUN.json, or --query and --gallery feature files '
                        '(sinet-extract output)')
        if args.run is not None and args.queries is not None:
            bad = [q for q in args.queries if not q.lstrip('-').isdigit()]
            if bad:
                return fail(f'--queries {bad[0]}: a run\'s queries are indices (0-based)')
    return run(lambda: _draw(args), interrupted='no picture was written; rerun the command')


if __name__ == '__main__':
    sys.exit(main())
