"""``sinet-export``: a video re-ID model as an ONNX file, checked against PyTorch with onnxruntime.

    sinet-export --model sinet_r50.mars --output sinet_mars.onnx              # clips (batch, 4, 3, 256, 128)
    sinet-export --model hub/sinet_r50.mars --output crops.onnx --image       # crops (batch, 3, 256, 128)

    sinet-export --model sinet_r50.mars --output m.onnx --int8 --calibrate prid2011 --root DATA  # + m.int8.onnx

The batch axis is dynamic; the frames per clip are fixed at export (--frames). The file is run in onnxruntime on
random inputs and compared with the PyTorch model (largest difference at most 1e-4 of the embedding scale); exit
status 1 when it is not. The file's metadata holds what `sinet-eval --model m.onnx` needs (input size, mean/std,
frames per clip, protocol, camera input). --int8 writes an INT8 copy beside it (m.int8.onnx; dynamic quantization,
or static with calibration clips from the train tracklets of --calibrate DATASET) and prints one line: mAP / R1 of
fp32 vs int8 on the test split of that dataset (else the synthetic demo set), the sizes and the CPU clips/s.
Needs the [export] extra (onnx, onnxscript, onnxruntime).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ._common import fail, output_taken, run


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog='sinet-export', description=__doc__.split('\n\n')[0].replace('``', ''),
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split('\n\n', 2)[2])
    p.add_argument('--model', required=True,
                   help='a zoo or timm name (sinet_r50.mars, sanet_r50), a Hub-ready folder (what sinet-convert or '
                        'sinet-train writes), local-dir:FOLDER or hf-hub:ORG/NAME')
    p.add_argument('--output', '-o', type=Path, required=True, help='the .onnx file to write')
    p.add_argument('--frames', type=int, default=4, help='frames per clip, fixed in the graph (a multiple of 4)')
    p.add_argument('--image', action='store_true',
                   help='export the single-crop graph: (batch, 3, H, W) crops, each embedded as a one-frame '
                        'tracklet')
    p.add_argument('--batch', type=int, default=2,
                   help='batch size of the example input, 1 to 64 (the axis stays dynamic)')
    p.add_argument('--opset', type=int, default=None,
                   help="ONNX opset, 18 up to the newest the installed onnx knows (default: the exporter's); older "
                        'opsets are refused: the exporter cannot convert these models to them')
    p.add_argument('--no-pretrained', action='store_true', help='random weights drawn with --seed (tests, demos)')
    p.add_argument('--seed', type=int, default=0, help='seed of the --no-pretrained weights')
    p.add_argument('--no-check', action='store_true', help='do not compare with PyTorch in onnxruntime')
    p.add_argument('--overwrite', action='store_true', help='replace an existing --output file')
    q = p.add_argument_group('INT8 (onnxruntime quantization)')
    q.add_argument('--int8', action='store_true',
                   help='also write an INT8 copy beside --output (NAME.int8.onnx) and report fp32 vs int8')
    q.add_argument('--calibrate', metavar='DATASET',
                   help='static quantization with calibration clips from the train tracklets of this dataset '
                        '(mars, lsvid, ilidsvid, prid2011, dukev, synthetic); the report then scores its test '
                        'split. Default: dynamic quantization (often slower than fp32 on CPUs for these '
                        'convolutional models), reported on the synthetic demo set')
    q.add_argument('--root', type=Path, help='the folder holding the --calibrate dataset folder')
    q.add_argument('--calibration-clips', type=int, default=64, help='calibration clips (default 64)')
    q.add_argument('--no-report', action='store_true',
                   help='skip the fp32 vs int8 evaluation (two CPU evaluations: minutes on PRID-2011 / iLIDS-VID, '
                        'hours on MARS)')
    q.add_argument('--workers', type=int, default=0, help='frame-decoding processes of the report (default 0)')
    return p


def _int8_problem(args: argparse.Namespace) -> str | None:
    """The message for INT8 options that do not fit together (None when they do)."""
    if not args.int8:
        given = [f for f, v in (('--calibrate', args.calibrate), ('--root', args.root), ('--no-report', args.no_report))
                 if v]
        what = 'is an option' if len(given) == 1 else 'are options'
        return f'{" and ".join(given)} {what} of the INT8 copy: add --int8' if given else None
    if args.root is not None and args.calibrate is None:
        return '--root is the folder of the --calibrate dataset: add --calibrate DATASET'
    if args.calibrate is not None and args.calibrate.lower() != 'synthetic' and args.root is None:
        return f'--calibrate {args.calibrate} needs --root: the folder that holds the dataset folder'
    if args.calibration_clips < 1:
        return f'--calibration-clips must be a positive number of clips, got {args.calibration_clips}'
    if args.workers < 0:
        return f'--workers must be >= 0 (0 decodes in the main process), got {args.workers}'
    return None


def _int8(args: argparse.Namespace) -> int:
    """The INT8 copy of the exported file, and the one-line report."""
    from reid_eval.quantize import calibration_feeds, int8_report
    from sinet_timm.export import quantize_onnx

    feeds, note = None, ''
    if args.calibrate is not None:
        feeds, note = calibration_feeds(args.output, args.calibrate, args.root, clips=args.calibration_clips)
    out = quantize_onnx(args.output, calibration=feeds, calibration_note=note, overwrite=args.overwrite)
    how = f'static, {sum(len(next(iter(f.values()))) for f in feeds)} calibration clips from {note}' if feeds \
        else 'dynamic'
    print(f'wrote {out}: int8 ({how})')
    if args.no_report:
        return 0
    report = int8_report(args.output, out, args.calibrate or 'synthetic', args.root, workers=args.workers)
    print(report.line())
    return 0


def _int8_name(output: Path) -> Path:
    """sinet_timm.export.int8_path, without importing torch before the arguments are checked."""
    return output.with_name(f'{output.stem}.int8{output.suffix or ".onnx"}')


def _export(args: argparse.Namespace) -> int:
    import timm
    import torch

    import sinet_timm  # noqa: F401  (registers the family)
    from sinet_timm._zoo import zoo_problem
    from sinet_timm.convert import check_local_dir
    from sinet_timm.export import check_export_options, export_onnx

    check_export_options(args.batch, args.opset)  # said before a model is loaded
    name = f'local-dir:{args.model}' if Path(args.model).is_dir() else args.model
    if name.startswith('local-dir:'):  # missing, truncated or pickle-only: one line before timm reads it
        check_local_dir(name.split(':', 1)[1])
    if args.no_pretrained:
        torch.manual_seed(args.seed)
    try:
        model = timm.create_model(name, pretrained=not args.no_pretrained, num_classes=0)
    except RuntimeError as e:  # timm: unknown model or tag
        return fail(f'{args.model}: {e}' + (f' ({problem})' if (problem := zoo_problem()) else ''))
    report = export_onnx(model, args.output, frames=args.frames, image=args.image, batch=args.batch, opset=args.opset,
                         overwrite=args.overwrite, check=not args.no_check)
    shape = ', '.join(str(d) for d in report.input_shape)
    print(f"wrote {report.path}: input '{report.input_name}' ({shape}) float32, output 'embedding' "
          f"(batch, {report.embedding_dim})")
    if report.ok is None:
        return 0
    verdict = 'matches' if report.ok else 'does NOT match'
    print(f'onnxruntime {verdict} PyTorch on a batch of {report.checked_batch}: max |difference| '
          f'{report.max_abs_diff:.3g} = {report.max_abs_diff / report.scale:.2g} of the embedding scale '
          f'{report.scale:.4g} (limit {report.tolerance:g})')
    return 0 if report.ok else 1


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if taken := output_taken(args.output, args.overwrite):
        return fail(taken)
    if problem := _int8_problem(args):
        return fail(problem)
    if args.int8 and (taken := output_taken(_int8_name(args.output), args.overwrite)):
        return fail(taken)
    return run(lambda: _export(args) or (_int8(args) if args.int8 else 0),
               interrupted='the output may be incomplete; rerun with --overwrite')


if __name__ == '__main__':
    sys.exit(main())
