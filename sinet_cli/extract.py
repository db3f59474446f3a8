"""``sinet-extract``: one re-ID embedding per tracklet of your own videos, written to a ``.safetensors`` file.

    sinet-extract --model sinet_r50.mars TRACKLETS/ --output feats.safetensors
    sinet-extract --model sinet_r50.mars tracklets.txt --output feats.safetensors

Every tracklet goes through the dense protocol of the paper's evaluation: all frames, loop-padded to a multiple of
4, in strided 4-frame clips whose embeddings are averaged. The output holds the ``features`` (N, D) float32 tensor
and ``num_frames`` (N,), with the tracklet ``names``, the model id and the weights' sha256 in the safetensors
metadata (``reid_eval.featurefile.load_features`` reads it).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ._common import add_extraction_arguments, fail, output_taken, run


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog='sinet-extract', description=__doc__.split('\n\n')[0].replace('``', ''),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog='INPUT: a folder with one subfolder of frames per tracklet, a folder of frames (one tracklet), or a '
               'list file with one tracklet per line: "[NAME:] FOLDER" or "[NAME:] FRAME [FRAME ...]" (shell '
               'quoting, # comments, paths relative to the list file). All frames of a tracklet are used (dense '
               'protocol: loop-padded 4-frame strided clips, averaged).')
    p.add_argument('input', help='folder of tracklets, folder of frames, or list file')
    p.add_argument('--output', '-o', type=Path, required=True, help='features file to write (.safetensors)')
    p.add_argument('--model', default=None,
                   help='timm model name (default sinet_r50.mars), e.g. sinet_r50.lsvid, sanet_r50.mars, vreid_r50, '
                        'local-dir:FOLDER, hf-hub:ORG/NAME, or a timm image model (frame embeddings averaged)')
    p.add_argument('--checkpoint', help="a released .pth.tar or converted .safetensors instead of Hub weights "
                                        "(architecture inferred from its keys unless --model names one)")
    p.add_argument('--no-pretrained', action='store_true', help='random weights drawn with --seed (offline tests)')
    p.add_argument('--seed', type=int, default=0, help='seed of the --no-pretrained weights')
    add_extraction_arguments(p, workers_help='image decoding processes')
    p.add_argument('--overwrite', action='store_true', help='replace an existing --output file')
    p.add_argument('--no-progress', action='store_true', help='no progress bar')
    return p


def _extract(args: argparse.Namespace) -> int:
    import reid_eval
    from reid_eval.errors import FrameReadError
    from reid_eval.featurefile import check_output_file, save_features
    from reid_eval.models import weights_sha256

    options = reid_eval.EvalOptions(mode='dense', batch_clips=args.batch_clips, device=args.device, amp=args.amp,
                                    workers=args.workers, progress=not args.no_progress)
    options.validate()
    check_output_file(args.output)  # a folder or an unwritable path is reported before anything is computed
    tracklets = reid_eval.find_tracklets(args.input)
    device = reid_eval.resolve_device(args.device)
    model = args.model if args.model is not None or args.checkpoint else 'sinet_r50.mars'
    loaded = reid_eval.load_model(model, pretrained=not args.no_pretrained, checkpoint=args.checkpoint,
                                  seed=args.seed)
    n_frames = sum(len(t.frames) for t in tracklets)
    print(f'{len(tracklets)} tracklet(s), {n_frames} frames; model {loaded.weights} on {device}', file=sys.stderr)
    try:
        feats = reid_eval.extract(loaded, tracklets, options)
    except FrameReadError as e:  # own frames: the advice is about the input, not the dataset
        raise FrameReadError(e.path, e.reason, 'Replace the file, or delete it (and its line in a list file).') \
            from None
    save_features(args.output, feats, [t.name for t in tracklets], model=loaded.name,
                  weights_sha256=weights_sha256(loaded.module), num_frames=[len(t.frames) for t in tracklets],
                  overwrite=args.overwrite,
                  metadata={'weights': loaded.weights, 'architecture': str(loaded.architecture),
                            'input': str(Path(args.input).resolve()), 'clip_len': str(loaded.clip_len),
                            'model_input': loaded.input})
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
