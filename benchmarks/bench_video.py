"""Does decoding and cropping a video keep pace with the model? (``sinet-extract VIDEO --tracks FILE``)

    python benchmarks/bench_video.py                                   # CPU: 1280x720 H.264, 8 people, 150 frames
    python benchmarks/bench_video.py --device cuda --batch-clips 32 --workers 8

A synthetic H.264 video of people walking, with their tracks (``reid_eval.synthetic.make_demo_videos``: what a
camera records and a tracker writes), is written once under ``--data``; then, side by side in one run:

* decode: every frame decoded (PyAV, FFmpeg's frame threads), nothing converted;
* decode + crop: ``reid_eval.video.read_video_tracks`` with every box of every track: decoding, RGB conversion of
  each frame that holds a box, and the crops cut (copies). Its crops/s is the rate at which it feeds the model;
* preprocess: the crops resized to the model's uint8 input (PIL, what the DataLoader workers do), one process;
* model: the model alone on random clips already on the device, in frames/s (a crop is a frame to the model),
  with sinet-extract's clips per batch (``default_batch_clips``: 4 on a CPU, 32 on CUDA);
* pipeline: ``reid_eval.extract`` on the crops of ``--max-frames-per-track`` evenly spaced boxes per track
  (DataLoader workers preprocess while the model runs), as sinet-extract runs it.

The last line says whether decode + crop keeps pace: its crops/s against the model's frames/s. Decoding runs
before the model in sinet-extract (the crops are cut in one pass, then embedded), so the total is decode + crop
time plus pipeline time; keeping pace means the first is small beside the second.
"""
from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import av
import torch
from PIL import Image

import reid_eval
import sinet_timm  # noqa: F401
from reid_eval.extraction import FramePreprocess, default_batch_clips
from reid_eval.models import for_inference
from reid_eval.synthetic import make_demo_videos
from reid_eval.video import VideoOptions, read_video_tracks


def _size(text: str) -> tuple[int, int]:
    h, w = (int(v) for v in text.lower().split('x'))
    return h, w


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--data', type=Path, default=Path('/tmp/sinet-bench-video'))
    p.add_argument('--frames', type=int, default=150, help='video frames (default 150)')
    p.add_argument('--people', type=int, default=8, help='people (tracks) in the video (default 8)')
    p.add_argument('--size', type=_size, default=(720, 1280), help='video frame size HxW (default 720x1280)')
    p.add_argument('--person-size', type=_size, default=(256, 128), help='box size HxW (default 256x128)')
    p.add_argument('--model', default='sinet_r50')
    p.add_argument('--input-size', type=_size, default=None, help="model input HxW (default: the model's, 256x128)")
    p.add_argument('--device', default='cpu')
    p.add_argument('--batch-clips', type=int, default=None, help='default: as sinet-extract (32 on CUDA, 4 on CPU)')
    p.add_argument('--workers', type=int, default=2, help='DataLoader workers of the pipeline (default 2)')
    p.add_argument('--max-frames-per-track', type=int, default=32, help='crops per track in the pipeline')
    p.add_argument('--rounds', type=int, default=3, help='model batches timed (after one warm-up)')
    args = p.parse_args(argv)
    dev = torch.device(args.device)
    cuda = dev.type == 'cuda'
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    batch = args.batch_clips or default_batch_clips(dev)

    t = time.perf_counter()
    folder = args.data / f'{args.size[0]}x{args.size[1]}-{args.people}p-{args.frames}f'
    if not (folder / 'truth.json').exists():
        make_demo_videos(folder, num_people=args.people, num_frames=args.frames, frame_size=args.size,
                         person_size=args.person_size, ext='.mp4')
    t_gen = time.perf_counter() - t
    video, tracks = folder / 'cam1.mp4', folder / 'cam1.txt'

    # decode only
    t = time.perf_counter()
    with av.open(str(video)) as container:
        stream = container.streams.video[0]
        stream.thread_type = 'AUTO'
        codec = stream.codec_context.name
        n_decoded = sum(1 for _ in container.decode(stream))
    t_decode = time.perf_counter() - t

    # decode + crop, every box
    t = time.perf_counter()
    vt = read_video_tracks(video, tracks, VideoOptions())
    t_crop = time.perf_counter() - t
    crops = [c for tr in vt.tracks for c in tr.crops]

    # the model's preprocessing of those crops, one process
    data_config = {'input_size': (3, *args.input_size)} if args.input_size else None
    torch.manual_seed(0)
    loaded = reid_eval.load_model(args.model, pretrained=False, data_config=data_config)
    pre = FramePreprocess.from_data_config(loaded.data_config)
    t = time.perf_counter()
    for c in crops:
        pre.to_uint8(Image.fromarray(c))
    t_pre = time.perf_counter() - t

    # model only, on clips already on the device
    model = for_inference(loaded.module, dev)
    h, w = loaded.data_config['input_size'][1:]
    with torch.inference_mode():
        x = torch.randn(batch, loaded.clip_len, 3, h, w, device=dev)
        model(x)
        sync()
        t = time.perf_counter()
        for _ in range(args.rounds):
            model(x)
        sync()
        t_model = (time.perf_counter() - t) / args.rounds
    model_fps = batch * loaded.clip_len / t_model

    # the pipeline on the capped crops, as sinet-extract
    capped = read_video_tracks(video, tracks, VideoOptions(max_frames_per_track=args.max_frames_per_track))
    t = time.perf_counter()
    reid_eval.extract(loaded, capped.tracklets(), device=dev, workers=args.workers, batch_clips=batch,
                      progress=False)
    t_pipe = time.perf_counter() - t

    crop_rate = len(crops) / t_crop
    print(f'machine: {platform.node()} {platform.processor() or platform.machine()}, {torch.get_num_threads()} '
          f'threads, device {torch.cuda.get_device_name(dev) if cuda else "cpu"}; torch {torch.__version__}, PyAV '
          f'{av.__version__}; model {args.model} at {h}x{w}, batch {batch} clips, {args.workers} workers')
    print(f'video: {vt.video.width}x{vt.video.height} {codec}, {n_decoded} frames, {len(vt.tracks)} tracks, '
          f'{len(crops)} boxes of {args.person_size[0]}x{args.person_size[1]} (generated in {t_gen:.1f}s)\n')
    print(f'{"stage":<34}{"seconds":>9}{"frames/s":>11}{"crops/s":>10}')
    rows = [('decode', t_decode, n_decoded / t_decode, None),
            ('decode + crop (every box)', t_crop, n_decoded / t_crop, crop_rate),
            ('preprocess crops (1 process)', t_pre, None, len(crops) / t_pre),
            ('model (on device)', t_model, model_fps, None),
            (f'pipeline: extract {capped.num_crops} crops', t_pipe, None, capped.num_crops / t_pipe)]
    for name, sec, fps, cps in rows:
        print(f'{name:<34}{sec:9.3f}' + (f'{fps:11.1f}' if fps is not None else f'{"-":>11}')
              + (f'{cps:10.1f}' if cps is not None else f'{"-":>10}'))
    verdict = 'keeps pace' if crop_rate >= model_fps else 'does NOT keep pace'
    print(f'\ndecode + crop {verdict} with the model: {crop_rate:.0f} crops/s vs {model_fps:.1f} model frames/s '
          f'({crop_rate / model_fps:.1f}x)')
    return 0


if __name__ == '__main__':
    sys.exit(main())
