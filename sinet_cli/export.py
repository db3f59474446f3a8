"""``sinet-export``: a video re-ID model as an ONNX file, checked against PyTorch with onnxruntime.

    sinet-export --model sinet_r50.mars --output sinet_mars.onnx              # clips (batch, 4, 3, 256, 128)
    sinet-export --model hub/sinet_r50.mars --output crops.onnx --image       # crops (batch, 3, 256, 128)

The batch axis is dynamic; the frames per clip are fixed at export (--frames). The file is run in onnxruntime on
random inputs and compared with the PyTorch model (largest difference at most 1e-4 of the embedding scale); exit
status 1 when it is not. Needs the [export] extra (onnx, onnxscript, onnxruntime).
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
    return p


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
    return run(lambda: _export(args), interrupted='the output may be incomplete; rerun with --overwrite')


if __name__ == '__main__':
    sys.exit(main())
