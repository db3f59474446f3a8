"""INT8 copies of exported files, measured: calibration clips drawn from a dataset through the test protocol and
the file's own preprocessing, and the fp32 vs int8 report ``sinet-export --int8`` prints (mAP / R1 on a benchmark,
file sizes, CPU clips/s side by side).

Calibration clips come from the *train* tracklets of the dataset (the test split is what the report scores), cut
into clips by the file's protocol, evenly spread over them, and preprocessed exactly as the evaluation does
(:class:`~reid_eval.extraction.FramePreprocess` of the file's metadata).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import timm.data
import torch

from sinet_timm.export import CAMERA_INPUT, onnx_speed

from .datasets import load_dataset
from .errors import EvalError, FrameReadError
from .evaluator import SYNTHETIC, evaluate, resolve_dataset
from .extraction import ClipDataset, ExtractPlan, FrameFailure, FramePreprocess
from .onnx_model import OnnxModel

__all__ = ['Int8Report', 'calibration_feeds', 'int8_report']


def calibration_feeds(path: str | Path, dataset: str, root: str | Path | None = None, *, clips: int = 64,
                      batch: int = 8, split: int = 0) -> tuple[list[dict[str, np.ndarray]], str]:
    """Input feeds of the ONNX file ``path`` for static quantization: ``clips`` clips of the train tracklets of
    ``dataset`` (its ``split``), batches of ``batch``; and a note saying where they came from. A single-crop file
    gets the frames of those clips."""
    if clips < 1 or batch < 1:
        raise EvalError(f'calibration needs a positive number of clips and batch size, got {clips} and {batch}')
    model = OnnxModel(path)
    _, fmt, root = resolve_dataset(dataset, root)
    data = load_dataset(fmt, root, split)
    tracklets = list(data.train)
    if not tracklets:
        raise EvalError(f'{fmt} (split {split}) has no train tracklets to calibrate with')
    protocol = model.pretrained_cfg['protocol']
    plan = ExtractPlan.build(tracklets, protocol, model.clip_len, cameras=model.camera_input)
    pick = np.unique(np.linspace(0, len(plan.clips) - 1, num=min(clips, len(plan.clips))).round().astype(int))
    pre = FramePreprocess.from_data_config(timm.data.resolve_data_config({}, model=model))
    items = ClipDataset([plan.clips[i] for i in pick], pre.to_uint8)
    feeds = []
    for lo in range(0, len(pick), batch):
        xs = []
        for k in range(lo, min(lo + batch, len(pick))):
            x, _ = items[k]
            if isinstance(x, FrameFailure):
                raise FrameReadError(x.path, x.reason, 'Replace the file, or calibrate on another dataset')
            xs.append(x)
        x = pre.normalize(torch.stack(xs))
        cams = [plan.camids[plan.owner[i]] for i in pick[lo:lo + len(xs)]] if plan.camids is not None else None
        if model.graph == 'image':  # crops: every frame of the clips
            cams = [c for c in cams for _ in range(x.shape[1])] if cams is not None else None
            x = x.flatten(0, 1)
        feed = {model.input_name: np.ascontiguousarray(x.numpy())}
        if cams is not None:
            feed[CAMERA_INPUT] = np.asarray(cams, dtype=np.int64)
        feeds.append(feed)
    note = f'{dataset} split {split} train tracklets, {protocol} clips'
    return feeds, note


@dataclass
class Int8Report:
    """fp32 vs int8 of one exported file: metrics on a dataset's test split, file sizes, CPU speed."""

    fp32: Path
    int8: Path
    dataset: str
    protocol: str
    metrics_fp32: dict[str, Any]
    metrics_int8: dict[str, Any]
    bytes_fp32: int
    bytes_int8: int
    clips_per_s_fp32: float
    clips_per_s_int8: float
    batch: int

    def line(self) -> str:
        """The one line ``sinet-export --int8`` prints."""
        a, b = self.metrics_fp32, self.metrics_int8
        mb = 1024 * 1024
        return (f'int8 vs fp32 on {self.dataset} ({self.protocol}): mAP {a["mAP"]:.1f} -> {b["mAP"]:.1f} '
                f'({b["mAP"] - a["mAP"]:+.1f}), R1 {a["rank1"]:.1f} -> {b["rank1"]:.1f} '
                f'({b["rank1"] - a["rank1"]:+.1f}); size {self.bytes_fp32 / mb:.1f} -> {self.bytes_int8 / mb:.1f} MB; '
                f'CPU {self.clips_per_s_fp32:.1f} -> {self.clips_per_s_int8:.1f} clips/s '
                f'({self.clips_per_s_int8 / self.clips_per_s_fp32:.2f}x, batch {self.batch})')


def int8_report(fp32: str | Path, int8: str | Path, dataset: str = SYNTHETIC, root: str | Path | None = None, *,
                split: int = 0, workers: int = 0, batch: int = 4, rounds: int = 3,
                cache_dir: str | Path | None = None) -> Int8Report:
    """Evaluate both files on ``dataset`` (its test ``split``, on the CPU, under the file's protocol) and time them
    side by side in onnxruntime (``batch`` clips per run, median of ``rounds``)."""
    fmt_root = None if str(dataset).lower() == SYNTHETIC else root
    common = dict(split=split, workers=workers, progress=False, device='cpu', cache=cache_dir is not None,
                  cache_dir=Path(cache_dir) if cache_dir is not None else None)
    r32 = evaluate(str(fp32), dataset, fmt_root, **common)
    r8 = evaluate(str(int8), dataset, fmt_root, **common)
    speed = onnx_speed([fp32, int8], batch=batch, rounds=rounds)
    return Int8Report(Path(fp32), Path(int8), r32.dataset, r32.mode, r32.metrics, r8.metrics,
                      Path(fp32).stat().st_size, Path(int8).stat().st_size, speed[0], speed[1], batch)
