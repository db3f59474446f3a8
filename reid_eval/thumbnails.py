"""Small pictures of each tracklet kept in its features file, so ``sinet-viz ranks`` can show who matched whom
without the video (or the frame folders) at hand.

A tracklet gets ``count`` thumbnails (4 by default): its frames (for a video, the crops its embedding used) at
evenly spaced positions (:func:`reid_eval.protocol.evenly_spaced`), resized to 96x48 px (height x width, bicubic,
the size ``sinet-viz ranks`` draws by default) and stored as JPEG (quality 90): about 2-3 kB each, 10 kB a
tracklet, against 8 kB for its 2048-d float32 embedding. Raw 96x48 RGB would be 55 kB a tracklet; the pictures
are for people to look at, so the lossy format costs nothing that matters.
"""
from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
from PIL import Image

from .errors import VizError
from .extraction import FrameImage, frame_image_to_pil, open_frame
from .protocol import evenly_spaced

__all__ = ['THUMBNAIL_COUNT', 'THUMBNAIL_SIZE', 'decode_thumbnail', 'make_thumbnails']

THUMBNAIL_COUNT = 4
THUMBNAIL_SIZE = (96, 48)  # (height, width) px
_QUALITY = 90


def make_thumbnails(frames: Sequence[str | FrameImage], count: int = THUMBNAIL_COUNT,
                    size: tuple[int, int] = THUMBNAIL_SIZE) -> list[bytes]:
    """JPEG thumbnails of ``count`` evenly spaced frames (paths or in-memory frames; all of them when there are
    fewer), in temporal order."""
    out = []
    for i in evenly_spaced(range(len(frames)), count) if count > 0 and len(frames) else []:
        f = frames[i]
        img = open_frame(f) if isinstance(f, str) else frame_image_to_pil(f)
        buf = io.BytesIO()
        img.resize((size[1], size[0]), Image.Resampling.BICUBIC).save(buf, format='JPEG', quality=_QUALITY)
        out.append(buf.getvalue())
    return out


def decode_thumbnail(data: bytes) -> np.ndarray:
    """A stored thumbnail as an (h, w, 3) uint8 RGB array."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            return np.asarray(img.convert('RGB'))
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise VizError(f'a thumbnail in the features file cannot be decoded ({e}); extract the features again') \
            from None
