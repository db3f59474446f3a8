"""Model speed, FLOPs and parameters of the SINet family and SANet, side by side in one run (issue: speed targets).

    python benchmarks/bench_model.py                                  # CPU, float32 NCHW and channels_last
    python benchmarks/bench_model.py --batch 1 4 --released /path/to/SINet   # + the authors' implementation
    python benchmarks/bench_model.py --device cuda --batch 32 128 --compile  # GPU: + bf16 (+ torch.compile)
    python benchmarks/bench_model.py --tfclip                          # + TF-CLIP (ViT-B/16, 8-frame clips)

``--released`` is a checkout of github.com/baist/SINet kept OUTSIDE this repository (never commit it); its
models are built offline (torchvision's ResNet-50 without downloading weights), loaded with the same weights as
ours, and timed on the same input. Every round runs every model once (in a shuffled order); times are medians
over rounds and ratios are medians of the per-round ratios, so they are measured side by side under the same
machine load.

``--tfclip`` adds a table for TF-CLIP (``tfclip_vit_b16``): parameters, FLOPs and time per 8-frame clip (its
protocol's clip), with camera ids; on CUDA also under bf16 autocast. It has no targets.

Targets: CPU sinet_r50 / vreid_r50 time <= 1.05 and ours >= 1.25x faster than the released sinet;
GPU sinet throughput >= 0.95x the baseline's and >= 3x the released implementation's float32 throughput.
"""
from __future__ import annotations

import argparse
import copy
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import timm
import torch
from torch.utils.flop_counter import FlopCounterMode

import sinet_timm  # noqa: F401
from sinet_timm import checkpoint_filter_fn

ARCHS = {'vreid_r50': 'resnet50', 'idnet_r50': 'idnet', 'sbnet_r50': 'sbnet', 'sinet_r50': 'sinet',
         'sanet_r50': 'sanet'}
PAPER_GFLOPS = {'vreid_r50': 32.24, 'sinet_r50': 32.62}  # per 4-frame 256x128 clip, released configuration (SINet
# paper; the SANet checkpoint's own paper figure is not printed)


def build_released(path: Path, arch: str) -> torch.nn.Module:
    """The authors' model from their checkout, built offline (no ImageNet download)."""
    import torchvision

    if str(path) not in sys.path:
        sys.path.insert(0, str(path))
    original = torchvision.models.resnet50

    def offline_resnet50(pretrained=False, **kw):
        kw.pop('weights', None)
        return original(weights=None, **kw)

    torchvision.models.resnet50 = offline_resnet50
    try:
        from models import init_model
        losses = ['xent', 'htri', 'infonce'] if arch in ('sinet', 'sbnet') else ['xent', 'htri']
        kw = {} if arch == 'resnet50' else {'seq_len': 4}
        return init_model(name=arch, num_classes=625, losses=losses, **kw)
    finally:
        torchvision.models.resnet50 = original


def released_as_ours(model: torch.nn.Module, ours_name: str) -> torch.nn.Module:
    ours = timm.create_model(ours_name, num_classes=625)
    ours.load_state_dict(checkpoint_filter_fn(model.state_dict(), ours))
    return ours


def gflops(model: torch.nn.Module, x: torch.Tensor) -> float:
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        model(x)
    return fc.get_total_flops() / 1e9


def time_models(fns: dict[Any, Callable[[], Any]], rounds: int, warmup: int, sync) -> dict[Any, list[float]]:
    """Seconds per call of every function in each of ``rounds`` rounds. Every round runs each function once, in
    an order shuffled per round (fixed seed), so all see the same machine state and none always follows the same
    neighbour; ratios are then taken within a round (:func:`paired_ratio`)."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    sync()
    times: dict[Any, list[float]] = {k: [] for k in fns}
    order, rng = list(fns), random.Random(0)
    for _ in range(rounds):
        rng.shuffle(order)
        for k in order:
            t = time.perf_counter()
            fns[k]()
            sync()
            times[k].append(time.perf_counter() - t)
    return times


def paired_ratio(num: list[float], den: list[float]) -> float:
    """Median over rounds of the per-round time ratio (robust to the machine's load drifting between rounds)."""
    return statistics.median(a / b for a, b in zip(num, den, strict=True))


def variants(model: torch.nn.Module, cuda: bool, compile_: bool) -> dict[str, Callable]:
    """The ways to run one model: float32 as created (NCHW) and in channels_last; on CUDA also bf16 autocast."""
    def run(m, amp=False):
        def fn(x):
            with torch.autocast('cuda', dtype=torch.bfloat16, enabled=amp):
                return m(x)
        return fn
    nchw = model
    cl = copy.deepcopy(model).to(memory_format=torch.channels_last)
    out = {'fp32': run(nchw), 'fp32+cl': run(cl)}
    if cuda:
        out['bf16+cl'] = run(cl, amp=True)
    if compile_:
        out[('bf16+cl' if cuda else 'fp32+cl') + '+compile'] = run(torch.compile(cl), amp=cuda)
    return out


TFCLIP_FRAMES = 8  # TF-CLIP's clips (its protocol), whatever --frames says for the SINet family


def bench_tfclip(dev: torch.device, batches: list[int], rounds: int, warmup: int, sync) -> list[str]:
    """TF-CLIP's table: params (M, no classifier), GFLOPs per 8-frame clip, ms per clip (fp32; bf16 autocast on
    CUDA); every clip with a camera id, as the model needs."""
    cuda = dev.type == 'cuda'
    model = timm.create_model('tfclip_vit_b16').eval().to(dev)
    params = sum(v.numel() for k, v in model.named_parameters() if not k.startswith('head')) / 1e6

    def run(amp: bool) -> Callable:
        def fn(x: torch.Tensor, cams: torch.Tensor) -> torch.Tensor:
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
                return model(x, cams)
        return fn

    kinds = {'fp32': run(False), **({'bf16': run(True)} if cuda else {})}
    one = torch.zeros(1, dtype=torch.long, device=dev)
    flops = gflops(partial(run(False), cams=one), torch.randn(1, TFCLIP_FRAMES, 3, 256, 128, device=dev))
    lines = [f'\nTF-CLIP, {TFCLIP_FRAMES}-frame clips with camera ids: median ms per clip',
             f'{"model":<16}{"batch":>6}{"params(M)":>10}{"GFLOPs/clip":>13}' + ''.join(f'{k:>10}' for k in kinds)]
    for batch in batches:
        x = torch.randn(batch, TFCLIP_FRAMES, 3, 256, 128, device=dev)
        cams = torch.zeros(batch, dtype=torch.long, device=dev)
        with torch.inference_mode():
            runs = time_models({k: partial(fn, x, cams) for k, fn in kinds.items()}, rounds, warmup, sync)
        lines.append(f'{"tfclip_vit_b16":<16}{batch:>6}{params:10.3f}{flops:13.2f}'
                     + ''.join(f'{statistics.median(runs[k]) / batch * 1e3:10.1f}' for k in kinds))
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--device', default='cpu')
    p.add_argument('--batch', type=int, nargs='+', default=[1], help='clips per forward (several: one table each)')
    p.add_argument('--frames', type=int, default=4)
    p.add_argument('--rounds', type=int, default=10)
    p.add_argument('--warmup', type=int, default=2)
    p.add_argument('--threads', type=int, default=None, help='torch.set_num_threads (CPU)')
    p.add_argument('--released', type=Path, help="checkout of the authors' code (outside this repo)")
    p.add_argument('--compile', action='store_true', help='also time torch.compile (channels_last; bf16 on CUDA)')
    p.add_argument('--models', nargs='+', choices=list(ARCHS), default=list(ARCHS),
                   help='which models (default: all; vreid_r50 and sinet_r50 are always timed: the targets compare '
                        'them)')
    p.add_argument('--tfclip', action='store_true',
                   help='also TF-CLIP (tfclip_vit_b16): params, GFLOPs, time per 8-frame clip (a table of its own)')
    args = p.parse_args(argv)
    args.models = [m for m in ARCHS if m in {*args.models, 'vreid_r50', 'sinet_r50'}]
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    cuda = dev.type == 'cuda'
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    torch.manual_seed(0)

    released_ok = args.released is not None and (args.released / 'models' / 'resnet.py').is_file()
    if args.released is not None and not released_ok:
        print(f'note: {args.released} is not a checkout of baist/SINet (no models/resnet.py): column skipped')

    rows, fns = {}, {}
    x1 = torch.randn(1, args.frames, 3, 256, 128, device=dev)
    for name in args.models:
        rel_name = ARCHS[name]
        if released_ok:
            rel = build_released(args.released, rel_name).eval().to(dev)
            ours = released_as_ours(rel, name).eval().to(dev)
        else:
            rel, ours = None, timm.create_model(name, num_classes=625).eval().to(dev)
        params = sum(v.numel() for k, v in ours.named_parameters() if not k.startswith(('classifier', 'projection')))
        rows[name] = {'params_M': params / 1e6, 'gflops': gflops(ours, x1) if args.frames == 4 else float('nan')}
        for variant, fn in variants(ours, cuda, args.compile).items():
            fns[(name, variant)] = fn
        if rel is not None:  # the released layout (B, C, T, H, W), float32
            fns[(name, 'released fp32')] = rel  # called on the input transposed beforehand

    print(f'machine: {platform.node()} {platform.processor() or platform.machine()}, '
          f'{torch.get_num_threads()} threads, device {torch.cuda.get_device_name(dev) if cuda else "cpu"}; '
          f'torch {torch.__version__}; {args.frames}-frame 256x128 clips; {args.rounds} interleaved rounds')
    print('FLOPs from torch.utils.flop_counter (2 per multiply-add) for one clip; "paper" is the paper\'s figure.')
    kinds = list(dict.fromkeys(v for _, v in fns))
    summary = []
    for batch in args.batch:
        x = torch.randn(batch, args.frames, 3, 256, 128, device=dev)
        x_rel = x.transpose(1, 2).contiguous()
        with torch.inference_mode():
            runs = time_models({k: partial(fn, x_rel if k[1].startswith('released') else x) for k, fn in fns.items()},
                               args.rounds, args.warmup, sync)
        t = {k: statistics.median(v) for k, v in runs.items()}
        clips = batch * args.frames / 4
        print(f'\nbatch {batch} clip(s) per forward: median ms per clip '
              '(median per-round time ratio to vreid_r50 in the same variant)')
        print(f'{"model":<12}{"params(M)":>10}{"GFLOPs/clip":>13}{"paper":>7}'
              + ''.join(f'{k:>24}' for k in kinds))
        for name in args.models:
            r = rows[name]
            paper = PAPER_GFLOPS.get(name)
            line = f'{name:<12}{r["params_M"]:10.3f}{r["gflops"]:13.2f}{paper if paper else "-":>7}'
            for k in kinds:
                ms = t[(name, k)] / clips * 1e3
                line += f'{ms:14.1f} ({paired_ratio(runs[(name, k)], runs[("vreid_r50", k)]):.3f}x)'
            print(line)
        for k in kinds:
            if k.startswith('released'):
                continue
            ratio = paired_ratio(runs[('sinet_r50', k)], runs[('vreid_r50', k)])
            line = f'batch {batch:>3} {k:<18} sinet {clips / t[("sinet_r50", k)]:7.1f} clips/s; '
            if cuda:  # GPU target: throughput
                line += f'sinet/vreid throughput {1 / ratio:.3f} (>= 0.95)'
            else:  # CPU target: time
                line += f'sinet/vreid time {ratio:.3f} (<= 1.05)'
            if ('sinet_r50', 'released fp32') in t:
                speedup = paired_ratio(runs[('sinet_r50', 'released fp32')], runs[('sinet_r50', k)])
                line += f'; released fp32 / ours: {speedup:.2f}x'
                line += ' (>= 3)' if cuda else ' (>= 1.25)'
            summary.append(line)
    if args.tfclip:
        print('\n'.join(bench_tfclip(dev, args.batch, args.rounds, args.warmup, sync)))
    print('\ntargets:')
    print('\n'.join(summary))
    return 0


if __name__ == '__main__':
    sys.exit(main())
