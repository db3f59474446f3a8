"""``sinet-extract``: one re-ID embedding per tracklet of your own videos, written to a ``.safetensors`` file.

    sinet-extract --model sinet_r50.mars TRACKLETS/ --output feats.safetensors
    sinet-extract --model sinet_r50.mars tracklets.txt --output feats.safetensors
    sinet-extract --model sinet_r50.mars cam1.mp4 --tracks cam1.txt --output cam1.safetensors   # one per track

Every tracklet goes through the dense protocol of the paper's evaluation: all frames, loop-padded to a multiple of
4, in strided 4-frame clips whose embeddings are averaged. The output holds the ``features`` (N, D) float32 tensor
and ``num_frames`` (N,), with the tracklet ``names``, the model id and the weights' sha256 in the safetensors
metadata (``reid_eval.featurefile.load_features`` reads it), and a few small JPEG thumbnails of each tracklet for
``sinet-viz ranks``. A video comes with its tracker's output (MOTChallenge rows, ``--tracks``): each track's boxes
are cut from the decoded frames (``reid_eval.video``) and embedded like a folder of those crops; tracklets are
named ``VIDEO:TRACK_ID``, and the metadata records the video, each track's frame span, crops and skipped boxes.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ._common import CAMERA_FALLBACKS, MODES, add_extraction_arguments, fail, output_taken, run


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog='sinet-extract', description=__doc__.split('\n\n')[0].replace('``', ''),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog='INPUT: a folder with one subfolder of frames per tracklet, a folder of frames (one tracklet), or a '
               'list file with one tracklet per line: "[NAME:] FOLDER" or "[NAME:] FRAME [FRAME ...]" (shell '
               'quoting, # comments, paths relative to the list file). By default all frames of a tracklet are '
               'used (dense protocol: loop-padded 4-frame strided clips, averaged). A video file (.mp4, .mkv, .avi, '
               '.mov, ...) needs --tracks: the tracker\'s MOTChallenge rows "frame,id,x,y,w,h[,conf,...]" (1-based '
               'frames, boxes in pixels); boxes are clipped to the frame, boxes outside it or empty are skipped and '
               'counted, and a track with no valid box is an error. --min-frames, --stride and '
               '--max-frames-per-track choose the frames of each track (or tracklet) before anything is decoded, in '
               'that order.')
    p.add_argument('input', help='folder of tracklets, folder of frames, list file, or a video file (with --tracks)')
    p.add_argument('--tracks', type=Path, default=None,
                   help="the video's tracks: a multi-object tracker's MOTChallenge text output (ByteTrack, BoT-SORT, "
                        'boxmot, ...); one embedding per track, named VIDEO:TRACK_ID')
    p.add_argument('--min-frames', type=int, default=1,
                   help='drop tracks (tracklets) with fewer valid boxes (frames); they are counted (default 1)')
    p.add_argument('--stride', type=int, default=1, help='use every K-th valid box (frame) of a track (default 1)')
    p.add_argument('--max-frames-per-track', type=int, default=None,
                   help='use at most N frames per track (tracklet), evenly spaced (default: all)')
    p.add_argument('--max-crop-memory', type=float, default=4.0,
                   help='GB the selected crops of a video may take in memory, checked before decoding (default 4)')
    p.add_argument('--thumbnails', type=int, default=4,
                   help='small JPEG pictures stored per tracklet, for sinet-viz ranks (default 4; 0: none)')
    p.add_argument('--output', '-o', type=Path, required=True, help='features file to write (.safetensors)')
    p.add_argument('--model', default=None,
                   help='timm model name (default sinet_r50.mars), e.g. sinet_r50.lsvid, sanet_r50.mars, vreid_r50, '
                        'local-dir:FOLDER, hf-hub:ORG/NAME, or a timm image model (frame embeddings averaged)')
    p.add_argument('--checkpoint', help="a released .pth.tar or converted .safetensors instead of Hub weights "
                                        "(architecture inferred from its keys unless --model names one)")
    p.add_argument('--no-pretrained', action='store_true', help='random weights drawn with --seed (offline tests)')
    p.add_argument('--seed', type=int, default=0, help='seed of the --no-pretrained weights')
    add_extraction_arguments(p, workers_help='image decoding processes')
    p.add_argument('--protocol', choices=('auto', *MODES), default='auto',
                   help="how tracklets become clips: auto (default) is the model's own test protocol")
    p.add_argument('--camera', type=int, default=None, metavar='N',
                   help='camera id of every tracklet, for models that take camera ids (TF-CLIP)')
    p.add_argument('--camera-fallback', choices=CAMERA_FALLBACKS, default=None,
                   help='mean: a camera-taking model uses its mean camera embedding (no --camera needed)')
    p.add_argument('--overwrite', action='store_true', help='replace an existing --output file')
    p.add_argument('--no-progress', action='store_true', help='no progress bar')
    return p


def _folder_tracklets(args: argparse.Namespace, selection) -> tuple[list, dict[str, str]]:
    """The tracklets of a folder or list file with --min-frames, --stride and --max-frames-per-track applied, and
    the metadata that records it."""
    import json

    import reid_eval
    from reid_eval.tracklets import select_tracklets

    kept, dropped = select_tracklets(reid_eval.find_tracklets(args.input), selection)
    if dropped:
        print(f'{len(dropped)} tracklet(s) dropped: fewer than --min-frames {selection.min_frames} frames',
              file=sys.stderr)
    return kept, {'input_kind': 'frames', 'input': str(Path(args.input).resolve()),
                  'selection': json.dumps(selection.to_json()),
                  'dropped_tracks': json.dumps({'count': len(dropped), 'names': [t.name for t in dropped],
                                                'reason': f'fewer than {selection.min_frames} frames (--min-frames)'})}


def _extract(args: argparse.Namespace) -> int:
    import reid_eval
    from reid_eval.errors import FrameReadError, TrackletInputError
    from reid_eval.featurefile import check_output_file, save_features
    from reid_eval.models import weights_sha256
    from reid_eval.thumbnails import make_thumbnails
    from reid_eval.video import VideoOptions, is_video_path, read_video_tracks

    options = reid_eval.EvalOptions(protocol=args.protocol, camera_fallback=args.camera_fallback,
                                    batch_clips=args.batch_clips, device=args.device, amp=args.amp,
                                    workers=args.workers, progress=not args.no_progress)
    options.validate()
    selection = VideoOptions(stride=args.stride, max_frames_per_track=args.max_frames_per_track,
                             min_frames=args.min_frames, max_crop_bytes=int(args.max_crop_memory * 1024 ** 3))
    selection.validate()
    if args.thumbnails < 0:
        raise reid_eval.EvalError(f'--thumbnails must be >= 0, got {args.thumbnails}')
    check_output_file(args.output)  # a folder or an unwritable path is reported before anything is computed
    source = Path(args.input).expanduser()
    if args.tracks is None and is_video_path(source):
        raise TrackletInputError(f'{args.input} is a video: give its tracks with --tracks FILE (the MOTChallenge '
                                 'text output of a multi-object tracker: frame,id,x,y,w,h,...)')
    if args.tracks is not None and source.is_dir():
        raise TrackletInputError(f'--tracks goes with a video file, but {args.input} is a folder (a folder of '
                                 'tracklets needs no --tracks)')
    video = None
    if args.tracks is not None:
        video = read_video_tracks(source, args.tracks, selection, progress=not args.no_progress)
        print(video.summary(), file=sys.stderr)
        tracklets, meta = video.tracklets(), video.metadata()
    else:
        tracklets, meta = _folder_tracklets(args, selection)
    device = reid_eval.resolve_device(args.device)
    model = args.model if args.model is not None or args.checkpoint else 'sinet_r50.mars'
    loaded = reid_eval.load_model(model, pretrained=not args.no_pretrained, checkpoint=args.checkpoint,
                                  seed=args.seed)
    n_frames = sum(len(t.frames) for t in tracklets)
    what = 'crops' if video is not None else 'frames'
    print(f'{len(tracklets)} tracklet(s), {n_frames} {what}; model {loaded.weights} on {device}', file=sys.stderr)
    try:
        camids = [args.camera] * len(tracklets) if args.camera is not None else None
        feats = reid_eval.extract(loaded, tracklets, options, camids=camids)
        thumbnails = [make_thumbnails(t.frames, args.thumbnails) for t in tracklets] if args.thumbnails else None
    except FrameReadError as e:  # own frames: the advice is about the input, not the dataset
        raise FrameReadError(e.path, e.reason, 'Replace the file, or delete it (and its line in a list file).') \
            from None
    meta.update({'weights': loaded.weights, 'architecture': str(loaded.architecture), 'clip_len': str(loaded.clip_len),
                 'model_input': loaded.input})
    save_features(args.output, feats, [t.name for t in tracklets], model=loaded.name,
                  weights_sha256=weights_sha256(loaded.module), num_frames=[len(t.frames) for t in tracklets],
                  overwrite=args.overwrite, metadata=meta, thumbnails=thumbnails)
    print(f'wrote {feats.shape[0]} x {feats.shape[1]} embeddings to {args.output}')
    return 0


def main(argv: list[str] | None = None) -> int:
    """``sinet-extract``: returns 0 on success, 2 on a user error (printed as one ``error:`` message)."""
    args = build_parser().parse_args(argv)
    if taken := output_taken(args.output, args.overwrite):
        return fail(taken)
    return run(lambda: _extract(args), interrupted='nothing was written; rerun the command')


if __name__ == '__main__':
    sys.exit(main())
