"""What an exported model costs and scores on this CPU: PyTorch fp32 (channels_last) vs onnxruntime fp32 vs
onnxruntime int8, per architecture, in one run (issue 29).

    python benchmarks/bench_onnx.py                                    # the SINet family, batch 2, 256x128
    python benchmarks/bench_onnx.py --models sinet_r50 sanet_r50 --batch 1 4 --int8 dynamic

Each model (random weights drawn with --seed, or --pretrained) is exported with sinet-export's code
(``sinet_timm.export.export_onnx``) and quantized (``quantize_onnx``: static QDQ with calibration clips from the
train tracklets of a synthetic MARS-format set, or dynamic). The three runtimes are timed side by side on the same
random clips: every round runs each once, in a shuffled order; clips/s is the batch over the median time. Then the
three are evaluated on the test split of the same synthetic set (``reid_eval.evaluate``, dense protocol, CPU) and
the mAP change of fp32 -> int8 is printed: with random weights it measures what quantization changes, not how good
the model is.
"""
from __future__ import annotations

import argparse
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import onnxruntime
import timm
import torch

import reid_eval
import sinet_timm  # noqa: F401
from reid_eval.models import for_inference
from reid_eval.quantize import calibration_feeds
from reid_eval.synthetic import make_synthetic
from sinet_timm.export import STATIC_OPS, export_onnx, int8_path, quantize_onnx

FAMILY = ('vreid_r50', 'idnet_r50', 'sbnet_r50', 'sinet_r50')  # the SINet family (sanet_r50 on request)
CHOICES = (*FAMILY, 'sanet_r50')
VARIANTS = ('torch fp32+cl', 'ort fp32', 'ort int8')


def _size(text: str) -> tuple[int, int]:
    h, w = text.lower().split('x')
    return int(h), int(w)


def time_side_by_side(fns: dict[str, Callable[[], object]], rounds: int, warmup: int) -> dict[str, list[float]]:
    """Seconds per call of each function in each round; every round runs each once, in an order shuffled per
    round (fixed seed), so all see the same machine state."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    order, rng = list(fns), random.Random(0)
    for _ in range(rounds):
        rng.shuffle(order)
        for k in order:
            t = time.perf_counter()
            fns[k]()
            times[k].append(time.perf_counter() - t)
    return times


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--models', nargs='+', choices=CHOICES, default=list(FAMILY), help='architectures (default: the '
                   'SINet family)')
    p.add_argument('--batch', type=int, nargs='+', default=[2], help='clips per run (several: one table each)')
    p.add_argument('--frames', type=int, default=4, help='frames per clip (fixed in the exported graph)')
    p.add_argument('--img-size', type=_size, default=(256, 128), help='frame size HxW (default 256x128)')
    p.add_argument('--rounds', type=int, default=5)
    p.add_argument('--warmup', type=int, default=1)
    p.add_argument('--threads', type=int, default=None, help='threads of torch and onnxruntime (default: theirs)')
    p.add_argument('--int8', choices=('static', 'dynamic'), default='static',
                   help='static: QDQ with calibration clips of the synthetic train tracklets (default); dynamic')
    p.add_argument('--calibration-clips', type=int, default=16)
    p.add_argument('--num-ids', type=int, default=8, help='identities of the synthetic set (its frames: 64x32)')
    p.add_argument('--data', type=Path, default=Path('runs/bench_onnx'),
                   help='where the synthetic set and the exported files go')
    p.add_argument('--pretrained', action='store_true', help='pretrained weights (needs them in the Hub cache)')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--no-map', action='store_true', help='time only: skip the evaluations')
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    opts = onnxruntime.SessionOptions()
    if args.threads:
        opts.intra_op_num_threads = args.threads
    h, w = args.img_size
    root = make_synthetic('mars', args.data / 'data', num_ids=args.num_ids, lengths=(2, 4, 7, 12))
    print(f'machine: {platform.node()} {platform.processor() or platform.machine()}, {torch.get_num_threads()} '
          f'torch threads, onnxruntime threads: {args.threads or "its default"}; torch {torch.__version__}, '
          f'onnxruntime {onnxruntime.__version__}; {args.frames}-frame {h}x{w} clips; {args.rounds} interleaved '
          'rounds')
    print(f'int8: {args.int8}' + (f' (QDQ of {"/".join(STATIC_OPS)}, per-channel int8 weights, uint8 activations; '
                                  f'{args.calibration_clips} calibration clips of the synthetic train tracklets)'
                                  if args.int8 == 'static' else ' (int8 weights, activations quantized at run time)'))
    print('weights: ' + ('pretrained' if args.pretrained else f'random (seed {args.seed}): the mAP columns show what '
                         'int8 changes, not how good the model is'))

    files, models = {}, {}
    for name in args.models:
        torch.manual_seed(args.seed)
        model = timm.create_model(name, pretrained=args.pretrained, num_classes=0, img_size=(h, w)).eval()
        fp32 = args.data / f'{name}-{h}x{w}-f{args.frames}.onnx'
        t = time.perf_counter()
        report = export_onnx(model, fp32, frames=args.frames, overwrite=True)
        t_export = time.perf_counter() - t
        feeds, note = (calibration_feeds(fp32, 'mars', root, clips=args.calibration_clips)
                       if args.int8 == 'static' else (None, ''))
        t = time.perf_counter()
        int8 = quantize_onnx(fp32, int8_path(fp32), calibration=feeds, calibration_note=note, overwrite=True)
        print(f'{name}: exported in {t_export:.0f} s (onnxruntime vs PyTorch max |diff| {report.max_abs_diff:.2g} of '
              f'scale {report.scale:.3g}), quantized in {time.perf_counter() - t:.0f} s; '
              f'{fp32.stat().st_size / 2**20:.1f} -> {int8.stat().st_size / 2**20:.1f} MB')
        files[name], models[name] = (fp32, int8), model

    summary = []
    for batch in args.batch:
        x = torch.randn(batch, args.frames, 3, h, w)
        feed = {'clips': x.numpy()}
        rows = {}
        for name in args.models:
            cl = for_inference(models[name], torch.device('cpu'))
            s32, s8 = (onnxruntime.InferenceSession(str(f), opts, providers=['CPUExecutionProvider'])
                       for f in files[name])
            fns = {'torch fp32+cl': partial(cl, x), 'ort fp32': partial(s32.run, None, feed),
                   'ort int8': partial(s8.run, None, feed)}
            with torch.inference_mode():
                times = time_side_by_side(fns, args.rounds, args.warmup)
            rows[name] = {k: batch / statistics.median(v) for k, v in times.items()}
            ratio = statistics.median(a / b for a, b in zip(times['ort fp32'], times['ort int8'], strict=True))
            rows[name]['int8 speed-up'] = ratio
        print(f'\nbatch {batch} clip(s) per run: clips/s (median over rounds)')
        print(f'{"model":<12}' + ''.join(f'{k:>15}' for k in VARIANTS) + f'{"int8/fp32 ort":>15}')
        for name, r in rows.items():
            print(f'{name:<12}' + ''.join(f'{r[k]:15.2f}' for k in VARIANTS) + f'{r["int8 speed-up"]:14.2f}x')
            summary.append((batch, name, r))

    if not args.no_map:
        print(f'\nmAP / R1 on the synthetic MARS-format set ({args.num_ids} identities, test split; dense protocol)')
        print(f'{"model":<12}{"torch fp32":>14}{"ort fp32":>14}{"ort int8":>14}{"int8 - fp32":>14}')
        common = dict(workers=0, progress=False, device='cpu', cache=False)
        for name in args.models:
            res = [reid_eval.evaluate(models[name], 'mars', root, data_config={'input_size': (3, h, w)}, **common)]
            res += [reid_eval.evaluate(str(f), 'mars', root, **common) for f in files[name]]
            m = [r.metrics for r in res]
            print(f'{name:<12}' + ''.join(f'{r["mAP"]:7.1f} /{r["rank1"]:5.1f}' for r in m)
                  + f'{m[2]["mAP"] - m[1]["mAP"]:+14.2f}')
    best = max(summary, key=lambda s: s[2]['int8 speed-up'])
    print(f'\nfastest int8 gain: {best[1]} at batch {best[0]}: {best[2]["int8 speed-up"]:.2f}x onnxruntime fp32; '
          f'onnxruntime fp32 / torch fp32+cl: '
          f'{np.median([r["ort fp32"] / r["torch fp32+cl"] for _, _, r in summary]):.2f}x (median over rows)')
    return 0


if __name__ == '__main__':
    sys.exit(main())
