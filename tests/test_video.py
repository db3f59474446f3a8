"""Your own footage: in-memory crops, video files with tracker output, matches across cameras (CPU, offline, tiny)."""
from __future__ import annotations

import io
import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import reid_eval
from reid_eval import search, video, viz
from reid_eval.errors import EvalError, FrameReadError, TrackletInputError, VizError
from reid_eval.featurefile import load_features
from reid_eval.synthetic import DemoVideos, make_demo_videos
from reid_eval.thumbnails import decode_thumbnail
from sinet_cli import extract as extract_cmd
from sinet_cli import search as search_cmd
from sinet_cli import viz as viz_cmd

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


def _bomb_jpeg(path: Path, width: int = 13000, height: int = 15000) -> Path:
    """A valid 8x8 JPEG whose header claims ``width x height`` pixels (what PIL checks before decoding)."""
    buf = io.BytesIO()
    Image.new('RGB', (8, 8), (1, 2, 3)).save(buf, 'JPEG')
    data = bytearray(buf.getvalue())
    sof = data.index(b'\xff\xc0')  # baseline frame header: length, precision, height, width
    data[sof + 5:sof + 9] = struct.pack('>HH', height, width)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(data))
    return path


def test_a_frame_of_absurd_size_is_named(model, crops, tmp_path, capsys):
    """PIL's DecompressionBombError (not an OSError) was a traceback: it is a FrameReadError naming the file."""
    frames = _save_folder(tmp_path / 'alice', crops[0][:2])
    bomb = _bomb_jpeg(tmp_path / 'alice' / '3.jpg')
    with pytest.raises(FrameReadError, match='decompression bombs') as e:
        reid_eval.extract(model, [[*frames, str(bomb)]], **SMALL)
    assert e.value.path == str(bomb) and '195000000 pixels' in str(e.value)
    assert extract_cmd.main([str(bomb.parent), '-o', str(tmp_path / 'f.safetensors'), *MODEL]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[-1].startswith(f'error: cannot read frame {bomb}: its size (195000000 pixels)'), err
    assert not any('Traceback' in line for line in err) and not (tmp_path / 'f.safetensors').exists()
    with pytest.raises(VizError, match='a thumbnail in the features file cannot be decoded'):
        decode_thumbnail(bomb.read_bytes())


# ---------------------------------------------------------------------------------------------------------
# track files and decoding, on a lossless video of known frames


@pytest.fixture(scope='module')
def known(tmp_path_factory) -> dict:
    """12 random 48x64 frames in a lossless FFV1 .mkv, and tracks whose crops are known pixel by pixel."""
    tmp = tmp_path_factory.mktemp('known')
    rng = np.random.default_rng(1)
    frames = [rng.integers(0, 256, (48, 64, 3), dtype=np.uint8) for _ in range(12)]
    video_path = video.write_video(tmp / 'cam.mkv', frames, fps=12.5)
    rows = [(f, 3, 2.4 + f, 4.5, 10.2, 20.0) for f in range(1, 11)]  # 10 boxes, fractional corners
    rows += [(2, 5, -6, -4, 12, 14), (3, 5, 58, 40, 20, 20)]  # clipped at the top-left, bottom-right
    rows += [(4, 5, 70, 10, 5, 5), (5, 5, 10, 10, 0, 8)]  # wholly outside, empty: skipped
    rows += [(6, 7, 1, 1, 8, 8)]  # one box: dropped by --min-frames 2
    text = video.format_tracks(sorted(rows))
    tracks = tmp / 'cam.txt'
    tracks.write_text('# frame,id,x,y,w,h,conf,x,y,z\n' + text.replace('\n', '\n\n', 1))
    return {'frames': frames, 'video': video_path, 'tracks': tracks, 'tmp': tmp}


def test_track_file_forms(tmp_path):
    f = tmp_path / 't.txt'
    f.write_text('1 4 10 20 30 40\n# a comment\n\n2, 4, 11.5, 20, 30, 40, -1\n1,2,0,0,5,5,0.9,-1,-1,-1\n')
    tf = video.read_tracks(f)
    assert list(tf.tracks) == [2, 4] and tf.num_rows == 3 and tf.last_frame == 2
    assert [(r.frame, r.x, r.line) for r in tf.tracks[4]] == [(1, 10.0, 1), (2, 11.5, 4)]
    row = video.TrackRow(1, 2.5, -0.5, 3.0, 10.0, 1)
    assert video.clip_box(row, 64, 48) == (3, 0, 6, 10)  # halves round up, then clipped
    assert video.clip_box(row._replace(x=70.0), 64, 48) is None


def test_track_ids_above_2_to_the_53_stay_apart(tmp_path):
    """Ids are parsed as integers, not floats: 2**53 and 2**53 + 1 (one float) are two people."""
    big = 2 ** 53
    f = tmp_path / 't.txt'
    f.write_text(f'1,{big},0,0,5,5\n2,{big + 1},0,0,5,5\n3,{big + 1}.0,0,0,5,5\n4,7e3,0,0,5,5\n')
    tf = video.read_tracks(f)
    assert list(tf.tracks) == [7000, big, big + 1]
    assert [r.frame for r in tf.tracks[big + 1]] == [2, 3]
    f.write_text(f'1,{big}.5,0,0,5,5\n')
    with pytest.raises(TrackletInputError, match=f"line 1: the track id '{big}.5' is not a whole number"):
        video.read_tracks(f)


def test_crops_are_the_frames_pixels(known):
    opts = video.VideoOptions(min_frames=2)
    vt = video.read_video_tracks(known['video'], known['tracks'], opts)
    assert [t.name for t in vt.tracks] == ['cam:3', 'cam:5'] and [t.name for t in vt.dropped] == ['cam:7']
    t3, t5 = vt.tracks
    assert t3.frames == list(range(1, 11)) and (t3.boxes, t3.skipped) == (10, 0)
    assert t3.crop_boxes[0] == (3, 5, 14, 25)  # x 3.4 -> 3, x + w 13.6 -> 14, y 4.5 -> 5, y + h 24.5 -> 25
    assert t5.frames == [2, 3] and (t5.boxes, t5.skipped) == (4, 2)
    assert t5.crop_boxes == [(0, 0, 6, 10), (58, 40, 64, 48)]
    for t in vt.tracks:
        for f, (x0, y0, x1, y1), crop in zip(t.frames, t.crop_boxes, t.crops, strict=True):
            assert np.array_equal(crop, known['frames'][f - 1][y0:y1, x0:x1])
    assert vt.frames_decoded == 10 and vt.boxes_skipped == 2  # decoded up to the last frame a row names
    assert (vt.video.width, vt.video.height, vt.video.fps, vt.video.codec) == (64, 48, 12.5, 'ffv1')
    meta = vt.metadata()
    assert json.loads(meta['tracks'])[1] == {'name': 'cam:5', 'track_id': 5, 'first_frame': 2, 'last_frame': 5,
                                             'boxes': 4, 'boxes_skipped': 2, 'crops': 2, 'first_crop_frame': 2,
                                             'last_crop_frame': 3}
    assert json.loads(meta['dropped_tracks'])['names'] == ['cam:7']
    assert json.loads(meta['selection']) == {'stride': 1, 'max_frames_per_track': None, 'min_frames': 2}
    # --stride, then --max-frames-per-track (evenly spaced: the middles of equal segments)
    opts = video.VideoOptions(stride=2, max_frames_per_track=3)
    vt = video.read_video_tracks(known['video'], known['tracks'], opts)
    assert vt.tracks[0].frames == [1, 5, 9] and [t.name for t in vt.tracks] == ['cam:3', 'cam:5', 'cam:7']


def test_crop_memory_is_bounded_before_decoding(known):
    message = (r'need 0\.0 MB of memory \(13 crops of 3 tracks\), more than the limit of 0\.0 MB: take fewer per '
               r'track with --max-frames-per-track')
    with pytest.raises(EvalError, match=message):
        video.read_video_tracks(known['video'], known['tracks'], video.VideoOptions(max_crop_bytes=1000))


@pytest.mark.parametrize('rows,message', [
    ('1,3,1,1,5\n', 'line 1: 5 value(s), expected at least 6'),
    ('frame,id,x,y,w,h\n1,3,1,1,5,5\n', "line 1: column 1 (frame) is 'frame', which is not a number (a header"),
    ('1,3,1,1,5,5\n2,3,1,,5,5\n', 'line 2: column 4 (y) is empty'),
    ('1,3,1,1,5,nan\n', "line 1: column 6 (h) is 'nan', not a finite number"),
    ('1.5,3,1,1,5,5\n', "line 1: the frame '1.5' is not a whole number"),
    ('0,3,1,1,5,5\n', 'line 1: frame 0: MOTChallenge frames start at 1'),
    ('1,-1,1,1,5,5\n', 'line 1: track id -1: rows without a track'),
    ('1,3,1,1,-5,5\n', 'line 1: negative box size'),
    ('1,3,1,1,5,5\n1,3,2,2,5,5\n', 'line 2: track 3 has a second box in frame 1 (the first is on line 1)'),
    ('# nothing\n', 'has no rows'),
])
def test_bad_track_rows_name_the_file_and_line(known, tmp_path, rows, message):
    bad = tmp_path / 'bad.txt'
    bad.write_text(rows)
    with pytest.raises(TrackletInputError) as e:
        video.read_video_tracks(known['video'], bad)
    assert str(bad) in str(e.value) and message in str(e.value)


def test_video_and_track_problems(known, tmp_path):
    beyond = tmp_path / 'beyond.txt'
    beyond.write_text('1,3,1,1,5,5\n13,3,1,1,5,5\n')
    with pytest.raises(TrackletInputError, match=r'beyond.txt, line 2: frame 13 is beyond the end of .*12 frames'):
        video.read_video_tracks(known['video'], beyond)
    outside = tmp_path / 'outside.txt'
    outside.write_text('1,3,1,1,5,5\n1,4,64,0,5,5\n2,4,-9,0,5,5\n')
    with pytest.raises(TrackletInputError, match=r'track 4 of .*outside.txt \(2 box\(es\), lines 2-3\) has no valid '
                                                 r'box: all lie outside the 64x48 frames'):
        video.read_video_tracks(known['video'], outside, video.VideoOptions(min_frames=5))  # never dropped quietly
    with pytest.raises(TrackletInputError, match='does not exist'):
        video.read_video_tracks(tmp_path / 'nope.mp4', known['tracks'])
    junk = tmp_path / 'junk.mp4'
    junk.write_bytes(b'not a video at all' * 10)
    with pytest.raises(FrameReadError, match='cannot read video .*junk.mp4: Invalid data'):
        video.read_video_tracks(junk, known['tracks'])
    truncated = tmp_path / 'truncated.mkv'
    truncated.write_bytes(known['video'].read_bytes()[:600])
    with pytest.raises(FrameReadError, match='truncated.mkv: not a single frame could be decoded'):
        video.read_video_tracks(truncated, known['tracks'])


# ---------------------------------------------------------------------------------------------------------
# sinet-extract on videos, sinet-search and sinet-viz across cameras

MODEL = ['--model', 'vreid_r50', '--no-pretrained', '--device', 'cpu', '--workers', '0', '--no-progress',
         '--batch-clips', '4']
PICK = ['--min-frames', '3', '--max-frames-per-track', '6']  # few crops: fast


@pytest.fixture(scope='module')
def demo(tmp_path_factory) -> DemoVideos:
    """Two lossless cameras of 3 people, 12 frames, with tracks (see make_demo_videos: one person leaves camera 1,
    a 2-frame false detection)."""
    return make_demo_videos(tmp_path_factory.mktemp('demo'), num_people=3, num_frames=12, frame_size=(96, 160),
                            person_size=(48, 24), ext='.mkv')


@pytest.fixture(scope='module')
def cams(demo) -> list[Path]:
    out = []
    for v, t in zip(demo.videos, demo.tracks, strict=True):
        out.append(v.with_suffix('.safetensors'))
        assert extract_cmd.main([str(v), '--tracks', str(t), '--output', str(out[-1]), *PICK, *MODEL]) == 0
    return out


def test_video_embeddings_equal_those_of_the_same_crops_as_folders(demo, cams, tmp_path, capsys):
    cam1 = load_features(cams[0])
    assert cam1.names == ['cam1:1', 'cam1:2', 'cam1:3'] and cam1.features.shape == (3, 2048)
    vt = video.read_video_tracks(demo.videos[0], demo.tracks[0], video.VideoOptions(min_frames=3,
                                                                                    max_frames_per_track=6))
    for t in vt.tracks:  # the decoded crops themselves, as PNG folders named like the tracks
        _save_folder(tmp_path / 'crops' / t.name, t.crops)
    out = tmp_path / 'folders.safetensors'
    assert extract_cmd.main([str(tmp_path / 'crops'), '--output', str(out), *MODEL]) == 0
    folders = load_features(out)
    assert folders.names == cam1.names and torch.equal(folders.features, cam1.features)
    assert cam1.num_frames == folders.num_frames == [6, 6, 6]
    meta = cam1.metadata
    assert meta['input_kind'] == 'video' and meta['input'] == str(demo.videos[0].resolve())
    info = json.loads(meta['video'])
    assert (info['width'], info['height'], info['fps'], info['frames_decoded']) == (160, 96, 25.0, 12)
    tracks = json.loads(meta['tracks'])
    assert [(t['first_frame'], t['last_frame'], t['boxes'], t['boxes_skipped'], t['crops']) for t in tracks] == [
        (1, 12, 12, 0, 6), (1, 12, 12, 0, 6), (1, 12, 12, 1, 6)]  # the leaving person: last box wholly outside
    assert json.loads(meta['dropped_tracks'])['names'] == ['cam1:99'] and meta['boxes_skipped'] == '1'
    assert [len(t) for t in cam1.thumbnails] == [4, 4, 4]


def test_search_and_picture_across_cameras(cams, tmp_path, capsys):
    capsys.readouterr()
    out = tmp_path / 'matches.csv'
    assert search_cmd.main(['-q', str(cams[0]), '-g', str(cams[1]), '-k', '2', '-o', str(out)]) == 0
    printed = capsys.readouterr()
    assert 'query cam1:1' in printed.out and 'warning' not in printed.err
    rows = out.read_text().splitlines()
    assert len(rows) == 1 + 3 * 2 and all(r.split(',')[2].startswith('cam2:1') for r in rows[1:])
    png = tmp_path / 'm.png'
    assert viz_cmd.main(['ranks', '--query', str(cams[0]), '--gallery', str(cams[1]), '--queries', 'cam1:2', '0',
                         '--topk', '2', '-o', str(png)]) == 0
    with Image.open(png) as im:
        img = np.asarray(im.convert('RGB'), dtype=np.float32)
    assert img.shape[:2][::-1] == viz.ranks_picture_size(2, 2, 4, (96, 48))
    q, g = load_features(cams[0]), load_features(cams[1])
    dist = search.cosine_distance_matrix(q.features, g.features).numpy()
    cell_w, cell_h = 4 * 48 + 2 * viz.BORDER, 96 + 2 * viz.BORDER
    for row, i in enumerate((1, 0)):
        y = viz.HEADER_H + row * (viz.TITLE_H + cell_h + viz.PAD) + viz.TITLE_H
        shown = img[y + viz.BORDER:y + viz.BORDER + 96, viz.PAD + viz.BORDER:viz.PAD + viz.BORDER + 4 * 48]
        stored = np.concatenate([decode_thumbnail(b) for b in q.thumbnails[i]], axis=1)
        assert np.abs(shown - stored).max() <= 2  # the query's strip: its stored crops
        for r, j in enumerate(np.argsort(dist[i], kind='stable')[:2].tolist()):
            x = viz.PAD + (r + 1) * (cell_w + viz.PAD)
            mutual = dist[i].argmin() == j and dist[:, j].argmin() == i
            want = (0, 178, 0) if mutual else (140, 140, 140)
            assert np.abs(img[y + 1, x + 1] - want).max() <= 2, (row, r)


def test_viz_ranks_arguments(cams, tmp_path, capsys):
    files = ['--query', str(cams[0]), '--gallery', str(cams[1]), '-o', str(tmp_path / 'x.png')]
    run = str(tmp_path / 'run.json')
    for args, message in ((['ranks'], 'needs a sinet-eval RUN.json, or --query and --gallery'),
                          (['ranks', run, *files], 'not both'),
                          (['ranks', *files, '--queries', 'bob'], "query 'bob' is neither a tracklet name of"),
                          (['ranks', *files, '--queries', '7'], 'query index 7 is out of range: '),
                          (['ranks', run, '--queries', 'cam1:1'], "a run's queries are indices")):
        assert viz_cmd.main(args) == 2
        err = capsys.readouterr().err
        assert err.startswith('error: ') and message in err and err.count('\n') == 1, (args, err)
    assert not (tmp_path / 'x.png').exists()


def test_pictures_without_thumbnails(demo, tmp_path, capsys):
    """Folder-made files are drawn from their frames on disk; a video's file needs its thumbnails."""
    rng = np.random.default_rng(3)
    _save_folder(tmp_path / 'people' / 'a', [rng.integers(0, 256, (64, 32, 3), dtype=np.uint8) for _ in range(2)])
    folder_file = tmp_path / 'f.safetensors'
    assert extract_cmd.main([str(tmp_path / 'people'), '-o', str(folder_file), '--thumbnails', '0', *MODEL]) == 0
    assert load_features(folder_file).thumbnails is None
    assert viz_cmd.main(['ranks', '-q', str(folder_file), '-g', str(folder_file), '-o', str(tmp_path / 'a.png')]) == 0
    bare = tmp_path / 'v.safetensors'
    assert extract_cmd.main([str(demo.videos[1]), '--tracks', str(demo.tracks[1]), '-o', str(bare), '--thumbnails',
                             '0', '--max-frames-per-track', '1', *MODEL]) == 0
    capsys.readouterr()
    assert viz_cmd.main(['ranks', '-q', str(bare), '-g', str(folder_file), '-o', str(tmp_path / 'b.png')]) == 2
    err = capsys.readouterr().err
    assert err.startswith('error: the query file') and 'was made from a video' in err and err.count('\n') == 1


@pytest.mark.parametrize('case,message', [
    ('missing video', 'error: video {tmp}/nope.mp4 does not exist'),
    ('missing tracks', 'error: track file {tmp}/nope.txt does not exist'),
    ('not a video', 'error: cannot read video {tmp}/notes.mp4: Invalid data found'),
    ('bad row', 'error: {tmp}/bad.txt, line 2: column 3 (x) is'),
    ('no valid box', 'error: track 11 of {tmp}/far.txt (1 box(es), line 2) has no valid box'),
    ('no --tracks', 'error: {video} is a video: give its tracks with --tracks FILE'),
    ('--tracks for a folder', 'error: --tracks goes with a video file, but {tmp} is a folder'),
    ('--stride 0', 'error: --stride must be a positive number of frames, got 0'),
])
def test_video_input_errors_are_one_line(demo, tmp_path, capsys, case, message):
    tracks, vid = demo.tracks[1], demo.videos[1]
    if case == 'missing video':
        vid = tmp_path / 'nope.mp4'
    elif case == 'missing tracks':
        tracks = tmp_path / 'nope.txt'
    elif case == 'not a video':
        vid = tmp_path / 'notes.mp4'
        vid.write_text('these are my notes, not a video\n')
    elif case == 'bad row':
        tracks = tmp_path / 'bad.txt'
        tracks.write_text('1,11,1,1,5,5\n2,11,x,1,5,5\n')
    elif case == 'no valid box':
        tracks = tmp_path / 'far.txt'
        tracks.write_text('1,12,1,1,5,5\n1,11,500,1,5,5\n')
    elif case == '--tracks for a folder':
        vid = tmp_path
    args = [str(vid), '-o', str(tmp_path / 'out.safetensors'), *MODEL]
    if case != 'no --tracks':
        args += ['--tracks', str(tracks)]
    if case == '--stride 0':
        args += ['--stride', '0']
    assert extract_cmd.main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith(message.format(tmp=tmp_path, video=vid)) and err.count('\n') == 1, err
    assert not (tmp_path / 'out.safetensors').exists()
