"""Your own footage: in-memory crops, video files with tracker output, matches across cameras (CPU, offline, tiny)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from PIL import Image

import reid_eval
from reid_eval.errors import TrackletInputError

SMALL = dict(device='cpu', workers=0, progress=False, batch_clips=4, data_config={'input_size': (3, 128, 64)})


class TinyVideoNet(torch.nn.Module):
    """Clips (B, T, 3, H, W) -> (B, 32): enough to tell any pixel change, ~100x cheaper than a ResNet-50."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 32, 5, stride=4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t = x.shape[:2]
        return self.conv(x.flatten(0, 1)).flatten(2).mean(-1).unflatten(0, (b, t)).mean(1)


@pytest.fixture(scope='module')
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return TinyVideoNet().eval()


@pytest.fixture(scope='module')
def resnet() -> torch.nn.Module:
    torch.manual_seed(0)
    return timm.create_model('vreid_r50', num_classes=0).eval()


def _save_folder(folder: Path, crops: list[np.ndarray]) -> list[str]:
    """Crops as PNG files whose names sort in temporal order (what the in-memory path is equal to)."""
    folder.mkdir(parents=True)
    for i, c in enumerate(crops, 1):
        Image.fromarray(c).save(folder / f'{i:06d}.png')
    return [str(folder / f'{i:06d}.png') for i in range(1, len(crops) + 1)]


# ---------------------------------------------------------------------------------------------------------
# in-memory crops


@pytest.fixture(scope='module')
def crops() -> list[list[np.ndarray]]:
    rng = np.random.default_rng(0)
    # two tracklets of crops of varying sizes: 3 frames (loop-padded to 4) and 6 (padded to 8: two clips)
    return [[rng.integers(0, 256, (40 + 3 * i, 18 + i, 3), dtype=np.uint8) for i in range(n)] for n in (3, 6)]


def test_in_memory_crops_embed_exactly_like_the_same_frames_on_disk(model, crops, tmp_path):
    folders = [_save_folder(tmp_path / f't{k}', c) for k, c in enumerate(crops)]
    on_disk = reid_eval.extract(model, folders, **SMALL)
    kinds = {
        'uint8 arrays': crops,
        'PIL images': [[Image.fromarray(c) for c in t] for t in crops],
        'uint8 CHW tensors': [[torch.from_numpy(c).permute(2, 0, 1) for c in t] for t in crops],
        'uint8 HWC tensors': [[torch.from_numpy(c) for c in t] for t in crops],
        'float CHW tensors': [[torch.from_numpy(c).permute(2, 0, 1).float() / 255 for c in t] for t in crops],
        'InputTracklets': [reid_eval.InputTracklet(f'n{k}', list(t)) for k, t in enumerate(crops)],
    }
    for kind, tracklets in kinds.items():
        assert torch.equal(reid_eval.extract(model, tracklets, **SMALL), on_disk), kind
    # through DataLoader workers, and a (T, H, W, 3) array as one tracklet of T frames
    same = [np.stack([c[:40, :18] for c in crops[1]])]
    ref = reid_eval.extract(model, [_save_folder(tmp_path / 'stacked', list(same[0]))], **SMALL)
    assert torch.equal(reid_eval.extract(model, same, **dict(SMALL, workers=2)), ref)


@pytest.mark.parametrize('frame,message', [
    (np.zeros((8, 4, 3), np.float32), 'float32 array; arrays must be uint8'),
    (np.zeros((8, 4), np.uint8), 'shape (8, 4); arrays must be (H, W, 3)'),
    (torch.full((3, 8, 4), 2.0), 'values in [2, 2]; floating-point tensors must lie in [0, 1]'),
    (torch.zeros((8, 4, 3)), 'tensors must be (3, H, W)'),
    (torch.zeros((3, 8, 4), dtype=torch.int32), 'torch.int32 tensor'),
    ('mixed', 'mixes frame paths and in-memory frames'),
    (3, 'a int; expected a frame path'),
])
def test_bad_in_memory_frames_are_named(model, crops, tmp_path, frame, message):
    mixed = isinstance(frame, str)
    tracklet = [str(tmp_path / 'a.png'), crops[0][0]] if mixed else [crops[0][0], frame]
    with pytest.raises(TrackletInputError, match='tracklet' if mixed else 'frame 1 of tracklet') as e:
        reid_eval.extract(model, [crops[0], tracklet], **SMALL)
    assert message in str(e.value) and "'#1'" in str(e.value)
