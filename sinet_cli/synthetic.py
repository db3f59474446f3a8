"""``sinet-synthetic KIND ROOT``: write a small synthetic video re-ID dataset in a benchmark's real on-disk format.

The folders are read by the same parsers as the real benchmarks, so they exercise the whole evaluation pipeline
on a CPU in seconds (``sinet-eval --dataset KIND --root ROOT``). ``sinet-synthetic videos ROOT`` writes two camera
videos of the same people with their tracks instead (``cam1.mp4``, ``cam1.txt``, ``cam2.mp4``, ``cam2.txt``,
``truth.json``): the input of ``sinet-extract VIDEO --tracks FILE``.
"""
from __future__ import annotations

import argparse
import sys

from ._common import run


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog='sinet-synthetic', description=__doc__.split('\n\n')[0].replace('``', ''))
    p.add_argument('kind', help='dataset format: mars, lsvid, ilidsvid, prid2011 or dukev; or videos (two camera '
                                'videos with MOTChallenge tracks)')
    p.add_argument('root', help='folder to write the dataset folder into')
    p.add_argument('--num-ids', type=int, default=None,
                   help='identities (default: a small set per format; videos: 4 people)')
    p.add_argument('--frames', type=int, default=40, help='videos: frames per camera (default 40)')
    p.add_argument('--seed', type=int, default=0, help='seed of everything drawn')
    p.add_argument('--height', type=int, default=64, help='frame height in pixels')
    p.add_argument('--width', type=int, default=32, help='frame width in pixels')
    p.add_argument('--workers', type=int, default=0, help='processes drawing the frames (0: this one)')
    return p


def _make_videos(args: argparse.Namespace) -> int:
    from reid_eval.synthetic import make_demo_videos

    d = make_demo_videos(args.root, num_people=args.num_ids or 4, num_frames=args.frames, seed=args.seed)
    print(f'wrote {", ".join(p.name for p in d.videos + d.tracks)} and truth.json to {d.folder}: '
          f'{len(d.truth)} people in 2 cameras, {d.num_frames} frames of {d.frame_size[1]}x{d.frame_size[0]} each')
    print(f'embed the tracks with: sinet-extract {d.videos[0]} --tracks {d.tracks[0]} --output cam1.safetensors')
    return 0


def _make(args: argparse.Namespace) -> int:
    if args.kind == 'videos':
        return _make_videos(args)
    from reid_eval.synthetic import load_manifest, make_synthetic

    root = make_synthetic(args.kind, args.root, num_ids=args.num_ids, seed=args.seed,
                          img_size=(args.height, args.width), workers=args.workers)
    m = load_manifest(args.kind, root)
    s = m['splits'][0]
    print(f"wrote {m['kind']} ({m['num_images']} images) to {root / m['dataset_dir']}: "
          f"{len(s['query'])} query / {len(s['gallery'])} gallery tracklets, {len(m['splits'])} split(s)")
    print(f"evaluate on it with: sinet-eval --dataset {m['kind']} --root {root} --no-pretrained --model vreid_r50")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run(lambda: _make(args), interrupted='nothing was kept (datasets are written to a temporary folder '
                                                'first); rerun the command')


if __name__ == '__main__':
    sys.exit(main())
