"""Your own footage: a video file and a multi-object tracker's output, cut into one tracklet of crops per track
(what ``sinet-extract VIDEO --tracks FILE`` reads).

**Track file.** MOTChallenge text rows ``frame, id, x, y, w, h[, conf, x, y, z]``, as ByteTrack, BoT-SORT, boxmot,
Roboflow's trackers and others write them: comma-separated (or whitespace-separated), one box per row, frames
1-based, ``x, y`` the top-left corner and ``w, h`` the size in pixels of the video's frames. Columns after ``h`` are
optional and ignored (the confidence may be -1; no row is filtered by it). Blank lines and lines starting with
``#`` are skipped. A row that cannot be a box is an error naming the file and line: fewer than 6 values, a value
that is not a number, a frame or id that is not a whole number, a frame < 1 (trackers that count from 0 need +1),
an id < 0 (``-1`` marks detections without a track), a negative width or height, or a second box of the same
track in one frame.

**Frames.** Frame ``N`` is the N-th frame the decoder returns, in presentation order: how OpenCV's
``VideoCapture`` (which most trackers read with) counts them. A row whose frame lies beyond the video's last frame
is an error naming the row (found when decoding reaches the end of the video). Rotation metadata (phone videos)
is not applied: boxes are in the coded frame's pixels.

**Boxes.** A box covers the pixel columns ``round(x) .. round(x + w) - 1`` and rows ``round(y) .. round(y + h) - 1``
(halves round up), clipped to the frame. A box that lies wholly outside the frame, or is empty after clipping,
is skipped and counted per track. A track left with no box at all is an error naming the track: it means the
track file does not belong to this video (or its boxes are in pixels of a resized copy), never something to
drop quietly.

**Selection, per track,** in this order, decided from the track file before any frame is decoded:

1. the track's valid boxes (after clipping), in frame order;
2. ``min_frames`` (``--min-frames``): a track with fewer valid boxes is dropped, and counted (short tracks are
   mostly tracker noise);
3. ``stride`` (``--stride K``): every K-th of the valid boxes, from the first;
4. ``max_frames_per_track`` (``--max-frames-per-track N``): at most N of those, evenly spaced (the middles of N
   equal segments, :func:`reid_eval.protocol.evenly_spaced`; ``None``: all).

The crops of a track then go through the same protocol as a folder of frames (dense: loop-padded 4-frame strided
clips whose embeddings are averaged).

**Decoding** is PyAV's (FFmpeg's decoders, frame-threaded), used directly. torchvision's video API is deprecated
since 0.22 and announced for removal (torchvision 0.29, installed here, still has ``read_video``, which reads a
whole time span into one tensor and warns on every call); TorchCodec, its successor, needs an FFmpeg of the
system's. PyAV ships its own FFmpeg in its wheels, streams frame by frame, and is what torchvision's own reader
was built on. The video is decoded once, in order, up to the last frame a row names; only frames that hold a
selected box are converted to RGB, and from those only the boxes are kept (as copies), so memory holds the
selected crops and never more than one whole frame. The crops' size is known before decoding (the boxes are):
more than ``max_crop_bytes`` (``--max-crop-memory``, 4 GiB by default) is an error before anything is decoded,
saying how to take fewer (``--max-frames-per-track``, ``--stride``).

Tracklets are named ``VIDEO:TRACK_ID`` with ``VIDEO`` the file's stem (``cam1:7``), so feature files of several
cameras can be searched against each other. :meth:`VideoTracklets.metadata` is what ``sinet-extract`` stores.
"""
from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from tqdm.auto import tqdm

from .errors import EvalError, FrameReadError, TrackletInputError
from .tracklets import FrameSelection, InputTracklet

__all__ = ['VIDEO_EXTENSIONS', 'TrackCrops', 'TrackFile', 'TrackRow', 'VideoInfo', 'VideoOptions', 'VideoTracklets',
           'clip_box', 'format_tracks', 'is_video_path', 'read_tracks', 'read_video_tracks', 'write_video']

VIDEO_EXTENSIONS = frozenset({'.mp4', '.m4v', '.mov', '.avi', '.mkv', '.webm', '.mpg', '.mpeg', '.ts', '.mts',
                              '.m2ts', '.wmv', '.flv', '.3gp', '.ogv', '.h264', '.h265', '.hevc', '.dav'})
_COLUMNS = ('frame', 'id', 'x', 'y', 'w', 'h')
_GiB = 1024 ** 3


def is_video_path(path: str | Path) -> bool:
    """Whether ``path`` has a video file's extension (what ``sinet-extract`` reads as a video)."""
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


def _pyav() -> Any:
    """PyAV, imported here and only here: videos are an optional input (``pip install 'sinet-timm[video]'``) and
    the rest of reid_eval works without it."""
    try:
        import av
    except ImportError:
        raise TrackletInputError("reading videos needs PyAV, which is not installed: pip install 'sinet-timm[video]' "
                                 '(or pip install av)') from None
    return av


# --------------------------------------------------------------------------------------------------------
# track files


class TrackRow(NamedTuple):
    """One box of a track: its 1-based frame, the box as written (pixels) and the line of the track file."""

    frame: int
    x: float
    y: float
    w: float
    h: float
    line: int


@dataclass
class TrackFile:
    """A parsed track file: track id -> its rows in frame order."""

    path: Path
    tracks: dict[int, list[TrackRow]]

    @property
    def last_frame(self) -> int:
        return max(rows[-1].frame for rows in self.tracks.values())

    @property
    def num_rows(self) -> int:
        return sum(len(rows) for rows in self.tracks.values())

    def first_row_after(self, frame: int) -> TrackRow:
        """The earliest line of the file whose frame is after ``frame``."""
        return min((r for rows in self.tracks.values() for r in rows if r.frame > frame), key=lambda r: r.line)


def _bad_row(path: Path, n: int, what: str) -> TrackletInputError:
    return TrackletInputError(f'{path}, line {n}: {what}. Rows are MOTChallenge "frame,id,x,y,w,h[,conf,...]" with '
                              '1-based frames and boxes in pixels')


def _whole(path: Path, n: int, text: str, column: str) -> int:
    """A frame or track id as the integer written (``7``, ``7.0``, ``7e3``): parsed exactly, never through a
    float, which merges ids above 2**53 (two people in one track)."""
    value = Decimal(text)  # the caller checked that it is a finite number
    if value != value.to_integral_value():
        raise _bad_row(path, n, f'the {column} {text!r} is not a whole number')
    return int(value)


def read_tracks(path: str | Path) -> TrackFile:
    """Parse a MOTChallenge track file (see the module docstring); a bad row raises
    :class:`~reid_eval.errors.TrackletInputError` naming the file and line."""
    path = Path(path)
    if not path.is_file():
        raise TrackletInputError(f'track file {path} does not exist' + (' (it is a folder)' if path.is_dir() else ''))
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        raise TrackletInputError(f'{path} is not a text file; --tracks takes the tracker\'s MOTChallenge text '
                                 'output (frame,id,x,y,w,h,...)') from None
    except OSError as e:
        raise TrackletInputError(f'cannot read track file {path}: {e.strerror or e}') from None
    tracks: dict[int, list[TrackRow]] = {}
    seen: dict[tuple[int, int], int] = {}
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith('#'):
            continue
        fields = [f.strip() for f in line.split(',')] if ',' in line else line.split()
        if len(fields) < 6:
            raise _bad_row(path, n, f'{len(fields)} value(s), expected at least 6 (frame, id, x, y, w, h)')
        values = []
        for k, (text_value, column) in enumerate(zip(fields[:6], _COLUMNS, strict=True)):
            try:
                v = float(text_value)
            except ValueError:
                header = ' (a header line? delete it or start it with #)' if not tracks and k == 0 else ''
                what = 'empty' if not text_value else f'{text_value!r}, which is not a number'
                raise _bad_row(path, n, f'column {k + 1} ({column}) is {what}{header}') from None
            if not math.isfinite(v):
                raise _bad_row(path, n, f'column {k + 1} ({column}) is {text_value!r}, not a finite number')
            values.append(v)
        frame = _whole(path, n, fields[0], 'frame')
        tid = _whole(path, n, fields[1], 'track id')
        x, y, w, h = values[2:]
        if frame < 1:
            raise _bad_row(path, n, f'frame {frame}: MOTChallenge frames start at 1 (if your tracker counts from 0, '
                                    'add 1 to every frame)')
        if tid < 0:
            raise _bad_row(path, n, f'track id {tid}: rows without a track (id -1 marks detections) cannot be '
                                    'embedded; give the tracker\'s output, not the detections')
        if w < 0 or h < 0:
            raise _bad_row(path, n, f'negative box size w={fields[4]} h={fields[5]}')
        if (frame, tid) in seen:
            raise _bad_row(path, n, f'track {tid} has a second box in frame {frame} (the first is on line '
                                    f'{seen[frame, tid]})')
        seen[frame, tid] = n
        tracks.setdefault(tid, []).append(TrackRow(frame, x, y, w, h, n))
    if not tracks:
        raise TrackletInputError(f'track file {path} has no rows (it is empty or only comments)')
    for rows in tracks.values():
        rows.sort(key=lambda r: r.frame)
    return TrackFile(path, dict(sorted(tracks.items())))


def clip_box(row: TrackRow, width: int, height: int) -> tuple[int, int, int, int] | None:
    """The pixel box ``(x0, y0, x1, y1)`` (exclusive ends) of ``row`` clipped to a ``width x height`` frame, or
    None when nothing of it is inside (see the module docstring)."""
    def rnd(v: float) -> int:
        return math.floor(v + 0.5)

    x0, y0 = max(0, rnd(row.x)), max(0, rnd(row.y))
    x1, y1 = min(width, rnd(row.x + row.w)), min(height, rnd(row.y + row.h))
    return (x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None


# --------------------------------------------------------------------------------------------------------
# selection


@dataclass
class VideoOptions(FrameSelection):
    """How tracks become tracklets of crops: the :class:`~reid_eval.tracklets.FrameSelection` of each track's
    valid boxes (``stride``, ``max_frames_per_track``, ``min_frames``), and a bound on the crops' memory."""

    max_crop_bytes: int = 4 * _GiB  # the selected crops may take at most this much memory (checked before decoding)

    def validate(self) -> None:
        """Raise :class:`~reid_eval.errors.EvalError` for an option that cannot work, naming the flag."""
        super().validate()
        if not self.max_crop_bytes > 0:
            raise EvalError(f'--max-crop-memory must be positive, got {self.max_crop_bytes / _GiB:g} GB')


@dataclass
class TrackCrops:
    """One track of the track file: what it holds, what was skipped, and the crops chosen for it."""

    track_id: int
    name: str  # VIDEO:TRACK_ID
    first_frame: int  # the track's first and last frame in the track file
    last_frame: int
    boxes: int  # rows of the track
    skipped: int  # boxes outside the frame or empty after clipping
    frames: list[int] = field(default_factory=list)  # the frames of the crops used (1-based)
    crop_boxes: list[tuple[int, int, int, int]] = field(default_factory=list)  # their clipped pixel boxes
    crops: list[np.ndarray] = field(default_factory=list, repr=False)  # (h, w, 3) uint8 RGB, filled by decoding

    @property
    def valid(self) -> int:
        return self.boxes - self.skipped

    def info(self) -> dict[str, Any]:
        """The track's entry in the features file's metadata."""
        out = {'name': self.name, 'track_id': self.track_id, 'first_frame': self.first_frame,
               'last_frame': self.last_frame, 'boxes': self.boxes, 'boxes_skipped': self.skipped,
               'crops': len(self.frames)}
        if self.frames:
            out.update(first_crop_frame=self.frames[0], last_crop_frame=self.frames[-1])
        return out


@dataclass
class VideoInfo:
    """What the container says about the video stream."""

    path: str
    width: int
    height: int
    fps: float | None  # average frame rate, when the container has one
    codec: str
    header_frames: int | None  # the container's frame count (missing or approximate in some containers)


@dataclass
class VideoTracklets:
    """The tracks of a video as tracklets of crops, with everything the features file records about them."""

    video: VideoInfo
    tracks_file: str
    options: VideoOptions
    tracks: list[TrackCrops]  # kept, by track id
    dropped: list[TrackCrops]  # fewer valid boxes than options.min_frames
    frames_decoded: int = 0
    decode_seconds: float = 0.0

    def tracklets(self) -> list[InputTracklet]:
        """One :class:`~reid_eval.tracklets.InputTracklet` of crops per kept track (what ``reid_eval.extract``
        embeds)."""
        return [InputTracklet(t.name, list(t.crops)) for t in self.tracks]

    @property
    def num_crops(self) -> int:
        return sum(len(t.frames) for t in self.tracks)

    @property
    def crop_bytes(self) -> int:
        return sum(_box_bytes(b) for t in self.tracks for b in t.crop_boxes)

    @property
    def boxes_skipped(self) -> int:
        return sum(t.skipped for t in self.tracks + self.dropped)

    def metadata(self) -> dict[str, str]:
        """The features file's metadata about the video, its tracks and the selection (all JSON or text)."""
        v = asdict(self.video)
        v['frames_decoded'] = self.frames_decoded
        return {
            'input_kind': 'video', 'input': self.video.path, 'video': json.dumps(v),
            'tracks_file': self.tracks_file,
            'selection': json.dumps(self.options.to_json()),
            'tracks': json.dumps([t.info() for t in self.tracks]),
            'dropped_tracks': json.dumps({'count': len(self.dropped),
                                          'reason': f'fewer than {self.options.min_frames} valid boxes (--min-frames)',
                                          'names': [t.name for t in self.dropped],
                                          'tracks': [t.info() for t in self.dropped]}),
            'boxes_skipped': str(self.boxes_skipped),
        }

    def summary(self) -> str:
        """One line: what was decoded, kept, dropped and skipped."""
        rate = self.frames_decoded / self.decode_seconds if self.decode_seconds > 0 else float('nan')
        text = (f'{Path(self.video.path).name}: {self.video.width}x{self.video.height}, {self.frames_decoded} frames '
                f'decoded in {self.decode_seconds:.1f}s ({rate:.0f} frames/s); {len(self.tracks)} track(s), '
                f'{self.num_crops} crops ({self.crop_bytes / 1e6:.1f} MB)')
        if self.dropped:
            text += f'; {len(self.dropped)} track(s) dropped (fewer than --min-frames {self.options.min_frames} boxes)'
        if self.boxes_skipped:
            text += f'; {self.boxes_skipped} box(es) outside the frame or empty, skipped'
        return text


def _size(n: float) -> str:
    return f'{n / _GiB:.1f} GB' if n >= 0.1 * _GiB else f'{n / 1024 ** 2:.1f} MB'


def _box_bytes(b: tuple[int, int, int, int]) -> int:
    return (b[2] - b[0]) * (b[3] - b[1]) * 3


def _select(video: Path, track_file: TrackFile, width: int, height: int, options: VideoOptions
            ) -> tuple[list[TrackCrops], list[TrackCrops]]:
    kept, dropped = [], []
    for tid, rows in track_file.tracks.items():
        valid = [(r.frame, box) for r in rows if (box := clip_box(r, width, height)) is not None]
        track = TrackCrops(tid, f'{video.stem}:{tid}', rows[0].frame, rows[-1].frame, len(rows),
                           len(rows) - len(valid))
        if not valid:
            lines = f'line {rows[0].line}' if len(rows) == 1 else f'lines {min(r.line for r in rows)}-' \
                                                                  f'{max(r.line for r in rows)}'
            raise TrackletInputError(
                f'track {tid} of {track_file.path} ({len(rows)} box(es), {lines}) has no valid box: all lie outside '
                f'the {width}x{height} frames of {video} or are empty. Check that the track file belongs to this '
                'video and that its boxes are in pixels of these frames (not of a resized copy)')
        if len(valid) < options.min_frames:
            dropped.append(track)
            continue
        chosen = options.choose(valid)
        track.frames = [f for f, _ in chosen]
        track.crop_boxes = [b for _, b in chosen]
        kept.append(track)
    if not kept:
        raise TrackletInputError(
            f'no track of {track_file.path} has at least {options.min_frames} valid boxes (--min-frames '
            f'{options.min_frames}; the longest has {max(t.valid for t in dropped)}): nothing to embed')
    need = sum(_box_bytes(b) for t in kept for b in t.crop_boxes)
    if need > options.max_crop_bytes:
        crops = sum(len(t.frames) for t in kept)
        raise EvalError(
            f'the selected crops of {video.name} need {_size(need)} of memory ({crops} crops of {len(kept)} tracks), '
            f'more than the limit of {_size(options.max_crop_bytes)}: take fewer per track with '
            '--max-frames-per-track N (e.g. 64) or --stride K, or raise --max-crop-memory')
    return kept, dropped


# --------------------------------------------------------------------------------------------------------
# decoding


def _open(av: Any, video: Path) -> Any:
    advice = 'Is it a video file? Check it plays (ffprobe or a media player)'
    if not video.exists():
        raise TrackletInputError(f'video {video} does not exist')
    if video.is_dir():
        raise TrackletInputError(f'video {video} is a folder; --tracks goes with a video file (a folder of '
                                 'tracklets needs no --tracks)')
    try:
        container = av.open(str(video))
    except (av.FFmpegError, OSError, ValueError) as e:
        raise FrameReadError(str(video), getattr(e, 'strerror', None) or str(e), advice, what='video') from None
    if not container.streams.video:
        container.close()
        raise FrameReadError(str(video), 'it has no video stream', advice, what='video')
    return container


def read_video_tracks(
        video: str | Path,
        tracks: str | Path,
        options: VideoOptions | None = None,
        *,
        progress: bool = False,
) -> VideoTracklets:
    """The crops of every track of ``tracks`` (a MOTChallenge track file) in ``video``: read the track file, choose
    each track's frames, then decode the video once and cut the chosen boxes (see the module docstring).

    Raises :class:`~reid_eval.errors.TrackletInputError` for a missing video or track file, a bad row (file and
    line), a track without a valid box or a row beyond the video's end, :class:`~reid_eval.errors.FrameReadError`
    for a file that cannot be decoded, and :class:`~reid_eval.errors.EvalError` for an invalid option or crops
    that would take more memory than ``options.max_crop_bytes``.
    """
    options = options or VideoOptions()
    options.validate()
    video = Path(video).expanduser()
    av = _pyav()
    if not video.exists():  # before the track file: the first thing to say about a wrong command line
        raise TrackletInputError(f'video {video} does not exist')
    track_file = read_tracks(Path(tracks).expanduser())
    container = _open(av, video)
    with container:
        stream = container.streams.video[0]
        ctx = stream.codec_context
        if ctx is None:  # the stream's codec is not one FFmpeg knows (or its header is damaged)
            raise FrameReadError(str(video), 'its video stream has no decoder (an unknown codec, or a damaged '
                                 'header)', 'Re-encode it to H.264 (ffmpeg -i IN -c:v libx264 OUT.mp4)',
                                 what='video')
        width, height = int(ctx.width), int(ctx.height)
        if width <= 0 or height <= 0:
            raise FrameReadError(str(video), 'its video stream has no frame size', what='video')
        rate = stream.average_rate or stream.guessed_rate
        info = VideoInfo(str(video.resolve()), width, height, float(rate) if rate else None, ctx.name,
                         int(stream.frames) or None)
        kept, dropped = _select(video, track_file, width, height, options)
        result = VideoTracklets(info, str(track_file.path.resolve()), options, kept, dropped)
        wanted: dict[int, list[tuple[TrackCrops, int]]] = {}
        for t in kept:
            t.crops = [None] * len(t.frames)  # type: ignore[list-item]  (filled below)
            for k, f in enumerate(t.frames):
                wanted.setdefault(f, []).append((t, k))
        last = track_file.last_frame  # every row's frame is checked to exist, chosen or not
        stream.thread_type = 'AUTO'  # FFmpeg's frame and slice threads
        n = 0
        t0 = time.perf_counter()
        bar = tqdm(total=last, unit='frame', desc=f'decode {video.name}', dynamic_ncols=True, disable=not progress)
        try:
            with bar:
                for frame in container.decode(stream):
                    n += 1
                    todo = wanted.get(n)
                    if todo:
                        if (frame.width, frame.height) != (width, height):
                            raise FrameReadError(str(video), f'frame {n} is {frame.width}x{frame.height}, not '
                                                 f'{width}x{height} like the first: videos whose frame size changes '
                                                 'are not supported', what='video')
                        rgb = frame.to_ndarray(format='rgb24')
                        for t, k in todo:
                            x0, y0, x1, y1 = t.crop_boxes[k]
                            t.crops[k] = rgb[y0:y1, x0:x1].copy()
                    bar.update(1)
                    if n >= last:
                        break
        except (av.FFmpegError, ValueError, OSError) as e:  # a damaged stream (FFmpeg errors are both)
            raise FrameReadError(str(video), f'decoding failed after frame {n}: {getattr(e, "strerror", None) or e}',
                                 'The file is damaged or truncated; re-encode or re-download it',
                                 what='video') from None
        result.frames_decoded = n
        result.decode_seconds = time.perf_counter() - t0
    if n == 0:
        raise FrameReadError(str(video), 'not a single frame could be decoded', 'The file is damaged or truncated; '
                             're-encode or re-download it', what='video')
    if n < last:
        row = track_file.first_row_after(n)
        announced = info.header_frames
        hint = (f' Its header announces {announced} frames: is the file truncated?' if announced and announced > n
                else ' Is the track file made from this video (and are its frames 1-based)?')
        raise TrackletInputError(
            f'{track_file.path}, line {row.line}: frame {row.frame} is beyond the end of {video}, which has {n} '
            f'frames.{hint}')
    return result


# --------------------------------------------------------------------------------------------------------
# writing (tests, demos and benchmarks)


_CODECS = {'.mkv': ('ffv1', 'bgr0'), '.avi': ('png', 'rgb24'), '.mp4': ('libx264', 'yuv420p')}


def write_video(path: str | Path, frames: Iterable[np.ndarray], fps: float = 25.0,
                codec: str | None = None, pix_fmt: str | None = None, options: dict[str, str] | None = None) -> Path:
    """Write (H, W, 3) uint8 RGB ``frames`` as a video, streamed. The default codec follows the extension:
    ``.mkv`` FFV1 and ``.avi`` PNG are lossless (decoding gives the frames back exactly), ``.mp4`` H.264 (libx264,
    yuv420p: width and height must be even) is what cameras and phones record. For tests, demos and benchmarks."""
    av = _pyav()
    path = Path(path)
    default = _CODECS.get(path.suffix.lower(), ('libx264', 'yuv420p'))
    codec, pix_fmt = codec or default[0], pix_fmt or (default[1] if codec in (None, default[0]) else 'yuv420p')
    with av.open(str(path), 'w') as container:
        stream = None
        for img in frames:
            if stream is None:
                stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001), options=options or {})
                stream.height, stream.width = img.shape[:2]
                stream.pix_fmt = pix_fmt
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format='rgb24')):
                container.mux(packet)
        if stream is None:
            raise EvalError(f'no frames to write to {path}')
        for packet in stream.encode():
            container.mux(packet)
    return path


def format_tracks(rows: Sequence[tuple[int, int, float, float, float, float]]) -> str:
    """MOTChallenge text for ``(frame, id, x, y, w, h)`` rows (conf 1, then -1 for the 3-D columns), as trackers
    write it."""
    return ''.join(f'{f},{i},{x:.2f},{y:.2f},{w:.2f},{h:.2f},1,-1,-1,-1\n' for f, i, x, y, w, h in rows)

