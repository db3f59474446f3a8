"""Model speed, FLOPs and parameters of the SINet family, side by side in one run (issue: speed targets).

    python benchmarks/bench_model.py                                  # CPU, float32, eval, 4-frame clips
    python benchmarks/bench_model.py --released /path/to/SINet        # + the authors' implementation
    python benchmarks/bench_model.py --device cuda --batch 32         # GPU: fp32 and bf16+channels_last

``--released`` is a checkout of github.com/baist/SINet kept OUTSIDE this repository (never commit it); its
models are built offline (torchvision's ResNet-50 without downloading weights), loaded with the same weights as
ours, and timed on the same input. Timings are medians over interleaved rounds (every model once per round), so
the ratios are measured side by side under the same machine load.

Targets: CPU sinet_r50 / vreid_r50 time <= 1.05 and ours >= 1.25x faster than the released sinet;
GPU sinet throughput >= 0.9x the baseline's and >= 2x the released implementation in float32.
"""
from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import timm
import torch
from torch.utils.flop_counter import FlopCounterMode

import sinet_timm  # noqa: F401
from sinet_timm import checkpoint_filter_fn

ARCHS = {'vreid_r50': 'resnet50', 'idnet_r50': 'idnet', 'sbnet_r50': 'sbnet', 'sinet_r50': 'sinet'}
PAPER_GFLOPS = {'vreid_r50': 32.24, 'sinet_r50': 32.62}  # per 4-frame 256x128 clip, released configuration


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


def time_models(fns: dict[str, callable], rounds: int, warmup: int, sync) -> dict[str, float]:
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    sync()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():  # interleaved: every model sees the same machine state
            t = time.perf_counter()
            fn()
            sync()
            times[k].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--device', default='cpu')
    p.add_argument('--batch', type=int, default=1, help='clips per forward')
    p.add_argument('--frames', type=int, default=4)
    p.add_argument('--rounds', type=int, default=10)
    p.add_argument('--warmup', type=int, default=2)
    p.add_argument('--threads', type=int, default=None, help='torch.set_num_threads (CPU)')
    p.add_argument('--released', type=Path, help="checkout of the authors' code (outside this repo)")
    p.add_argument('--compile', action='store_true', help='also time torch.compile (GPU)')
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    cuda = dev.type == 'cuda'
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    torch.manual_seed(0)
    x = torch.randn(args.batch, args.frames, 3, 256, 128, device=dev)
    x_rel = x.transpose(1, 2).contiguous()  # the released layout (B, C, T, H, W)

    released_ok = args.released is not None and (args.released / 'models' / 'resnet.py').is_file()
    if args.released is not None and not released_ok:
        print(f'note: {args.released} is not a checkout of baist/SINet (no models/resnet.py): column skipped')

    rows, fns = {}, {}
    for name, rel_name in ARCHS.items():
        if released_ok:
            rel = build_released(args.released, rel_name).eval().to(dev)
            ours = released_as_ours(rel, name).eval().to(dev)
        else:
            rel, ours = None, timm.create_model(name, num_classes=625).eval().to(dev)
        params = sum(v.numel() for k, v in ours.named_parameters() if not k.startswith(('classifier', 'projection')))
        rows[name] = {'params_M': params / 1e6, 'gflops': gflops(ours, x[:1]) if args.frames == 4 else float('nan')}
        fns[f'{name}'] = (lambda m=ours: m(x)) if not cuda else None
        if cuda:
            ours_cl = ours.to(memory_format=torch.channels_last)

            def run_bf16(m=ours_cl):
                with torch.autocast('cuda', dtype=torch.bfloat16):
                    return m(x)
            fns[name] = lambda m=ours: m(x)
            fns[f'{name}+bf16'] = run_bf16
            if args.compile:
                comp = torch.compile(ours_cl)

                def run_comp(m=comp):
                    with torch.autocast('cuda', dtype=torch.bfloat16):
                        return m(x)
                fns[f'{name}+bf16+compile'] = run_comp
        if rel is not None:
            fns[f'released:{name}'] = lambda m=rel: m(x_rel)

    with torch.inference_mode():
        t = time_models(fns, args.rounds, args.warmup, sync)

    clips = args.batch * args.frames / 4
    print(f'machine: {platform.node()} {platform.processor() or platform.machine()}, '
          f'{torch.get_num_threads()} threads, device {torch.cuda.get_device_name(dev) if cuda else "cpu"}; '
          f'torch {torch.__version__}; input {tuple(x.shape)}; median of {args.rounds} interleaved rounds')
    base = t['vreid_r50']
    print(f'\n{"model":<12}{"params(M)":>10}{"GFLOPs/clip":>13}{"paper":>8}{"ms/clip":>9}{"clips/s":>9}'
          f'{"vs base":>9}{"released ms":>13}{"speedup":>9}')
    for name in ARCHS:
        r = rows[name]
        ms = t[name] / clips * 1e3
        rel = t.get(f'released:{name}')
        rel_cols = f'{rel / clips * 1e3:13.1f}{rel / t[name]:8.2f}x' if rel else f'{"-":>13}{"-":>9}'
        paper = PAPER_GFLOPS.get(name)
        print(f'{name:<12}{r["params_M"]:10.3f}{r["gflops"]:13.2f}{paper if paper else "-":>8}{ms:9.1f}'
              f'{1e3 / ms:9.1f}{t[name] / base:8.3f}x{rel_cols}')
    if cuda:
        print(f'\n{"model":<12}{"bf16+cl clips/s":>17}{"vs base":>9}' + (f'{"+compile":>11}' if args.compile else ''))
        for name in ARCHS:
            tb = t[f'{name}+bf16']
            line = f'{name:<12}{clips / tb:17.1f}{t["vreid_r50+bf16"] / tb:8.3f}x'
            if args.compile:
                line += f'{clips / t[f"{name}+bf16+compile"]:11.1f}'
            print(line)
    print('\nFLOPs from torch.utils.flop_counter (2 per multiply-add) for one clip; "paper" is the paper\'s figure.')
    print(f'targets: sinet/vreid time = {t["sinet_r50"] / base:.3f} (<= 1.05)'
          + (f'; released/ours sinet = {t["released:sinet_r50"] / t["sinet_r50"]:.2f}x (>= 1.25 on CPU, '
             '>= 2 on GPU fp32)' if 'released:sinet_r50' in t else ''))
    return 0


if __name__ == '__main__':
    sys.exit(main())
