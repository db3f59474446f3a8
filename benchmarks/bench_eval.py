"""Throughput of the whole dense evaluation and where the time goes (decode, transfer + model, ranking).

    python benchmarks/bench_eval.py --num-ids 40 --workers 2                       # CPU, small
    python benchmarks/bench_eval.py --device cuda --num-ids 4700 --workers 14 --batch-clips 64 --compile  # MARS scale
    bash benchmarks/gpu_check.sh                                                     # every GPU check (issue 22)

A synthetic dataset in MARS's on-disk format with 256x128 JPEGs (tracklet lengths like MARS's, about 58 frames
on average) is generated once under ``--data`` and evaluated with the real pipeline (torchreid's MARS parser,
dense protocol, DataLoader workers, the model, chunked ranking). Stages are timed separately and side by side:

* decode: the DataLoader alone (JPEG decoding + resize to uint8 tensors in ``--workers`` processes);
* transfer: host-to-device copies of pinned uint8 batches and their normalisation on the device, alone (CUDA;
  on a CPU the normalisation alone);
* model: the model alone on random clips already on the device;
* pipeline: the real extraction (decode, transfer and model overlapped);
* ranking: distance matrix + Market-1501 ranking (reid_eval's numpy ranker), in chunks; with
  ``--rank-torchreid`` also torchreid's own ``evaluate_rank`` (pure Python in the PyPI package), side by side.

The last line extrapolates the pipeline rate to the MARS test set (681,089 frames). Goal on one H200-class GPU:
under 3 minutes. ``--num-ids 4700`` is MARS scale: 679,001 test frames, 693,696 in dense clips (and ~180,000 train
frames the benchmark does not read; 12 GB in all), written once in ``--gen-workers`` processes at ~0.8 ms of CPU
per frame (344 s with 2 processes on a 2-core VM).
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import timm
import torch
from torch.utils.data import DataLoader

import sinet_timm  # noqa: F401
from reid_eval.datasets import load_dataset
from reid_eval.extraction import (
    AMP_CHOICES,
    ClipDataset,
    ExtractPlan,
    FramePreprocess,
    collate_clips,
    default_batch_clips,
    extract_features,
    resolve_amp,
)
from reid_eval.models import for_inference
from reid_eval.ranking import rank_metrics
from reid_eval.synthetic import make_synthetic

MARS_TEST_FRAMES = 681_089
SHARD_CLIPS = 2048  # extract_features' default, as sinet-eval's --shard-clips
MARS_LIKE_LENGTHS = (20, 35, 58, 90, 120, 24, 45, 70)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--data', type=Path, default=Path('/tmp/sinet-bench-data'))
    p.add_argument('--num-ids', type=int, default=40)
    p.add_argument('--model', default='sinet_r50')
    p.add_argument('--device', default='cpu')
    p.add_argument('--workers', type=int, default=2)
    p.add_argument('--gen-workers', type=int, default=os.cpu_count() or 1,
                   help='processes that write the dataset the first time (default: one per CPU)')
    p.add_argument('--batch-clips', type=int, default=None, help='default: as sinet-eval (32 on CUDA, 4 on CPU)')
    p.add_argument('--amp', default='auto', choices=AMP_CHOICES)
    p.add_argument('--compile', action='store_true')
    p.add_argument('--rank-torchreid', action='store_true',
                   help="also rank with torchreid's evaluate_rank (slow: ~10 ms per query at MARS scale)")
    args = p.parse_args(argv)
    dev = torch.device(args.device)
    cuda = dev.type == 'cuda'
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    amp = resolve_amp(args.amp, dev)  # as sinet-eval
    args.batch_clips = args.batch_clips or default_batch_clips(dev)

    t = time.perf_counter()
    root = make_synthetic('mars', args.data, num_ids=args.num_ids, img_size=(256, 128), lengths=MARS_LIKE_LENGTHS,
                          workers=args.gen_workers)
    t_gen = time.perf_counter() - t
    t = time.perf_counter()
    data = load_dataset('mars', root)
    t_load = time.perf_counter() - t
    tracklets = list(data.query) + list(data.gallery)
    plan = ExtractPlan.build(tracklets, 'dense')
    frames = plan.num_frames

    torch.manual_seed(0)
    model = for_inference(timm.create_model(args.model), dev)  # as sinet-eval runs it
    if args.compile:
        model = torch.compile(model)
    pre = FramePreprocess.for_model(model)  # as sinet-eval: uint8 frames, normalised on the device

    # decode only
    loader = DataLoader(ClipDataset(plan.clips, pre.to_uint8), batch_size=args.batch_clips, num_workers=args.workers,
                        pin_memory=cuda, collate_fn=collate_clips)
    t = time.perf_counter()
    n = 0
    for x, _ in loader:
        n += x.shape[0] * x.shape[1]
    t_decode = time.perf_counter() - t

    # transfer only: the (pinned) uint8 batches the loader hands over, copied and normalised as extract_features
    reps = max(1, len(plan.clips) // args.batch_clips)
    host = torch.randint(0, 256, (args.batch_clips, 4, 3, 256, 128), dtype=torch.uint8)
    host = host.pin_memory() if cuda else host
    pre.normalize(host.to(dev, non_blocking=True))
    sync()
    t = time.perf_counter()
    for _ in range(reps):
        pre.normalize(host.to(dev, non_blocking=True))
    sync()
    t_transfer = (time.perf_counter() - t) * len(plan.clips) / (reps * args.batch_clips)

    # model only, on clips already on the device (made in inference mode, like the pipeline's: an ordinary tensor
    # would make a compiled model compile again in the pipeline)
    dtype = {'bf16': torch.bfloat16, 'fp16': torch.float16}.get(amp)
    with torch.inference_mode(), torch.autocast(dev.type, dtype=dtype, enabled=dtype is not None):
        x = torch.randn(args.batch_clips, 4, 3, 256, 128, device=dev)
        for _ in range(2):
            model(x)
        if args.compile:  # also compile for the shorter last batch of each shard now, not inside the pipeline
            shards = [min(SHARD_CLIPS, len(plan.clips) - lo) for lo in range(0, len(plan.clips), SHARD_CLIPS)]
            for b in sorted({n % args.batch_clips for n in shards} - {0}):
                model(x[:b])
        sync()
        t = time.perf_counter()
        for _ in range(reps):
            model(x)
        sync()
        t_model = (time.perf_counter() - t) * len(plan.clips) / (reps * args.batch_clips)

    # the real pipeline (no cache: everything is computed)
    feats, stats = extract_features(model, plan, pre, None, dev, batch_clips=args.batch_clips,
                                    workers=args.workers, amp=amp, shard_clips=SHARD_CLIPS, progress=False)
    t = time.perf_counter()
    nq = len(data.query)
    qf, gf = feats[:nq], torch.cat([feats[:nq], feats[nq:]])
    q_p = [p for _, p, _ in data.query]
    q_c = [c for _, _, c in data.query]
    g_p = q_p + [p for _, p, _ in data.gallery]
    g_c = q_c + [c for _, _, c in data.gallery]
    ours = rank_metrics(qf, gf, q_p, q_c, g_p, g_c, device=dev)
    t_rank = time.perf_counter() - t
    t_rank_tr = None
    if args.rank_torchreid:
        t = time.perf_counter()
        theirs = rank_metrics(qf, gf, q_p, q_c, g_p, g_c, device=dev, ranker='torchreid')
        t_rank_tr = time.perf_counter() - t
        if abs(theirs['mAP'] - ours['mAP']) > 1e-9:
            print(f'warning: the rankers disagree: mAP {ours["mAP"]} (numpy) vs {theirs["mAP"]} (torchreid)')

    print(f'machine: {platform.node()} {platform.processor() or platform.machine()}, {torch.get_num_threads()} '
          f'threads, device {torch.cuda.get_device_name(dev) if cuda else "cpu"}; torch {torch.__version__}; '
          f'model {args.model}, amp {amp}, batch {args.batch_clips} clips, {args.workers} workers')
    print(f'dataset: {len(tracklets)} tracklets, {frames} frames in {len(plan.clips)} clips '
          f'(generated in {t_gen:.1f}s, parsed by torchreid in {t_load:.1f}s)\n')
    print(f'{"stage":<26}{"seconds":>10}{"frames/s":>12}')
    for name, sec in (('decode (workers)', t_decode), ('transfer + normalise', t_transfer),
                      ('model (on device)', t_model),
                      ('pipeline (all overlapped)', stats.seconds), ('ranking', t_rank),
                      ('ranking (torchreid)', t_rank_tr)):
        if sec is None:
            continue
        fps = f'{frames / sec:12.0f}' if not name.startswith('ranking') and sec > 0 else f'{"-":>12}'
        print(f'{name:<26}{sec:10.2f}{fps}')
    who = (f'{args.workers} worker process{"es" if args.workers > 1 else ""}' if args.workers
           else 'no workers: decoded in the main process')
    print(f'decode per worker: {frames / t_decode / max(1, args.workers):.0f} frames/s ({who}, {os.cpu_count()} CPUs)')
    print(f'ranking: {nq} queries x {len(g_p)} gallery tracklets'
          + (f'; torchreid / numpy time: {t_rank_tr / t_rank:.1f}x' if t_rank_tr else ''))
    rate = frames / stats.seconds
    bound = max((t_decode, 'decode'), (t_transfer, 'transfer'), (t_model, 'model'))[1]
    print(f'\nbottleneck: {bound}; MARS test set ({MARS_TEST_FRAMES:,} frames) at this rate: '
          f'{MARS_TEST_FRAMES / rate / 60:.1f} min (+ ranking)')
    return 0


if __name__ == '__main__':
    sys.exit(main())
