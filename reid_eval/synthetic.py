"""Write small synthetic video re-ID datasets in each benchmark's real on-disk format.

The folders are read by the same parsers as the real benchmarks (torchreid's for MARS, iLIDS-VID,
PRID-2011 and DukeMTMC-VideoReID, :class:`reid_eval.datasets.LSVID` for LS-VID), so they exercise the whole
evaluation pipeline on a CPU in seconds.  Every identity has a stable look (colours of head / upper body /
legs, stripes, a bag) rendered with per-frame jitter and noise and a per-camera colour cast, so a model
can tell identities apart but not trivially.  Output is deterministic for a given seed.

Each dataset folder gets a ``synthetic_manifest.json`` with what a loader must return (query / gallery
tracklets with torchreid's pid and camid semantics, per split), read it with :func:`load_manifest`.

:func:`make_demo_videos` draws two camera videos of the same people walking, with their tracks as a tracker
would write them (MOTChallenge rows) and which track is whom: the worked example of ``sinet-extract VIDEO --tracks``.

Command line: ``sinet-synthetic KIND ROOT [--num-ids N] [--seed S] [--workers W]`` (``KIND`` ``videos``: the
demo videos).
"""

from __future__ import annotations

import json
import multiprocessing
import multiprocessing.connection
import os
import pickle
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from sinet_timm.paths import cache_root

from .datasets import get_spec
from .errors import EvalError, OutputExistsError, RenderersDiedError
from .video import format_tracks, write_video

__all__ = ["MANIFEST_NAME", "DEFAULT_LENGTHS", "DEFAULT_NUM_IDS", "DemoVideos", "make_synthetic", "load_manifest",
           "demo_dataset_root", "make_demo_videos"]

MANIFEST_NAME = "synthetic_manifest.json"
FORMAT_VERSION = 2  # 2: every frame drawn from its own seeded generator (parallel rendering)

DEFAULT_LENGTHS: tuple[int, ...] = (1, 2, 3, 5, 7, 12, 4, 9, 6, 16, 8, 10)
"""Tracklet lengths, used in turn (query/gallery tracklets are written first, so they get all of them)."""

DEFAULT_NUM_IDS: dict[str, int] = {"mars": 24, "lsvid": 24, "dukev": 24, "ilidsvid": 20, "prid2011": 20}

_PALETTE = np.array([
    (200, 30, 30), (30, 150, 50), (30, 60, 200), (230, 210, 40), (40, 200, 210), (200, 40, 190),
    (240, 130, 20), (110, 40, 150), (235, 235, 235), (25, 25, 25), (120, 70, 30), (245, 150, 180),
], dtype=np.float32)
_SKIN = np.array([(224, 172, 140), (198, 134, 66), (141, 85, 36), (255, 219, 172)], dtype=np.float32)


# --------------------------------------------------------------------------------------------------------
# rendering


@dataclass(frozen=True)
class _Look:
    upper: np.ndarray
    lower: np.ndarray
    skin: np.ndarray
    stripe: np.ndarray | None
    bag: np.ndarray | None


@dataclass(frozen=True)
class _Camera:
    gain: np.ndarray
    bias: float
    background: np.ndarray


@dataclass(frozen=True)
class _Renderer:
    """Draws frames. A frame is a function of (seed, image number, look, camera) alone, so frames can be
    drawn in any order and in any process with the same result."""

    seed: int
    h: int
    w: int
    ext: str
    cams: dict[int, _Camera]

    def frame(self, index: int, look: _Look | None, cam: int) -> np.ndarray:
        h, w = self.h, self.w
        rng = np.random.default_rng([self.seed, index])
        camera = self.cams[cam]
        img = np.empty((h, w, 3), np.float32)
        img[:] = camera.background
        img += rng.normal(0, 10, (h, 1, 3)).astype(np.float32)  # horizontal background texture
        if look is None:  # junk: background clutter only
            img += rng.random((h, w, 3), dtype=np.float32) * 120 - 60
        else:
            j = max(1, w // 16)
            dx, dy = (int(v) for v in rng.integers(-j, j + 1, 2))
            cx = w / 2 + dx

            def box(y0: float, y1: float, x0: float, x1: float, color: np.ndarray) -> None:
                ya, yb = max(0, round(y0 * h) + dy), min(h, round(y1 * h) + dy)
                xa, xb = max(0, round(x0)), min(w, round(x1))
                if ya < yb and xa < xb:
                    img[ya:yb, xa:xb] = color

            box(0.04, 0.18, cx - 0.14 * w, cx + 0.14 * w, look.skin)
            box(0.18, 0.56, cx - 0.28 * w, cx + 0.28 * w, look.upper)
            if look.stripe is not None:
                period = max(2, h // 16)
                for y in np.arange(0.18 * h + period, 0.56 * h, 2 * period):
                    box(y / h, (y + period) / h, cx - 0.28 * w, cx + 0.28 * w, look.stripe)
            box(0.56, 0.93, cx - 0.23 * w, cx - 0.02 * w, look.lower)
            box(0.56, 0.93, cx + 0.02 * w, cx + 0.23 * w, look.lower)
            box(0.93, 0.99, cx - 0.25 * w, cx + 0.25 * w, np.array((35, 30, 30), np.float32))
            if look.bag is not None:
                box(0.30, 0.60, cx + 0.28 * w, cx + 0.42 * w, look.bag)
        img *= camera.gain * np.float32(rng.normal(1.0, 0.05))
        img += camera.bias
        # sensor noise, uniform with standard deviation 6 (uniform draws are ~6x cheaper than normal ones)
        img += (rng.random((h, w, 3), dtype=np.float32) - np.float32(0.5)) * np.float32(12 * 3 ** 0.5)
        return np.clip(img, 0, 255).astype(np.uint8)

    def save(self, jobs: Sequence[tuple[str, int, _Look | None, int]]) -> None:
        """Draw and write frames given as (path, image number, look, camera); their folders must exist."""
        for path, index, look, cam in jobs:
            img = Image.fromarray(self.frame(index, look, cam))
            if self.ext == "jpg":
                img.save(path, quality=92)
            else:
                img.save(path)


class _Painter:
    """Plans frames of identities seen by cameras; the layout's randomness comes from one seeded generator
    (``rng``), each frame's from its own (see :class:`_Renderer`). Frames are drawn by :meth:`render`."""

    def __init__(self, seed: int, img_size: tuple[int, int], num_cams: int, ext: str) -> None:
        h, w = int(img_size[0]), int(img_size[1])
        if h < 8 or w < 4:
            raise EvalError(f"img_size {img_size} is too small (min 8x4)")
        self.rng = np.random.default_rng(seed)
        # identity looks: the first 132 identities get distinct (upper, lower) colour pairs, each with one
        # of the 4 (stripes, bag) variants; the next rounds reuse the pairs with the other variants
        n = len(_PALETTE)
        pairs = [(u, lo) for u in range(n) for lo in range(n) if u != lo]
        pairs = [pairs[i] for i in self.rng.permutation(len(pairs))]
        self._combos = [(u, lo, *divmod((k + r) % 4, 2)) for r in range(4) for k, (u, lo) in enumerate(pairs)]
        # camera: a colour cast (per-channel gain), a brightness offset and a tinted grey background
        cams = {}
        for c in range(1, num_cams + 1):
            gain = self.rng.uniform(0.88, 1.12, 3).astype(np.float32)
            bias = float(self.rng.uniform(-12, 12))
            background = (self.rng.uniform(95, 165) + self.rng.uniform(-20, 20, 3)).astype(np.float32)
            cams[c] = _Camera(gain=gain, bias=bias, background=background)
        self.renderer = _Renderer(int(seed), h, w, ext, cams)
        self.jobs: list[tuple[str, int, _Look | None, int]] = []

    @property
    def num_images(self) -> int:
        return len(self.jobs)

    def look(self, index: int) -> _Look:
        """The look of identity number ``index`` (distinct for the first ~500 indices)."""
        u, lo, s, b = self._combos[index % len(self._combos)]
        n = len(_PALETTE)
        return _Look(upper=_PALETTE[u], lower=_PALETTE[lo], skin=_SKIN[index % len(_SKIN)],
                     stripe=_PALETTE[(u + 1 + index % (n - 1)) % n] if s else None,
                     bag=_PALETTE[(lo + 3) % n] if b else None)

    def random_look(self) -> _Look:
        """A one-off look (MARS distractors: false detections that belong to nobody)."""
        c = self.rng.integers(0, len(_PALETTE), 4)
        return _Look(_PALETTE[c[0]], _PALETTE[c[1]], _SKIN[c[2] % len(_SKIN)],
                     _PALETTE[c[3]] if c[3] % 2 else None, None)

    def add_frame(self, path: Path, look: _Look | None, cam: int) -> None:
        """Plan a frame at ``path`` (drawn and written by :meth:`render`)."""
        self.jobs.append((str(path), len(self.jobs), look, cam))

    def render(self, workers: int = 0) -> None:
        """Draw and write every planned frame, in ``workers`` processes (0: in this one). The files are the
        same whatever the number of workers."""
        for folder in sorted({os.path.dirname(j[0]) for j in self.jobs}):
            os.makedirs(folder, exist_ok=True)
        if workers <= 1 or len(self.jobs) < 2 * _RENDER_CHUNK:
            self.renderer.save(self.jobs)
            return
        # Our own processes rather than a ProcessPoolExecutor: when a worker dies (killed for memory, or an
        # unguarded calling script), Python 3.10's executor can hang forever with its task pipe full. Each
        # process reads its share of the frames from a file: what a spawned process is sent at start-up must
        # stay under a pipe's buffer, or starting one that dies before reading it all blocks for ever. Shares are
        # interleaved chunks, so each process gets frames from every part of the dataset.
        # spawn, not fork: the caller may hold threads (torch, a DataLoader) that a fork would copy mid-flight.
        ctx = multiprocessing.get_context("spawn")
        workers = min(workers, -(-len(self.jobs) // _RENDER_CHUNK))
        started = ctx.RawArray("b", workers)  # set by each process as its first step
        with tempfile.TemporaryDirectory(prefix="reid-eval-render-") as shares:
            procs = []
            for k in range(workers):
                share = Path(shares) / f"{k}.pkl"
                share.write_bytes(pickle.dumps(
                    [job for i in range(k * _RENDER_CHUNK, len(self.jobs), workers * _RENDER_CHUNK)
                     for job in self.jobs[i:i + _RENDER_CHUNK]], protocol=pickle.HIGHEST_PROTOCOL))
                procs.append(ctx.Process(target=_render_share, args=(self.renderer, str(share), started, k),
                                         daemon=True))
            try:
                for proc in procs:
                    proc.start()
                running = list(procs)
                while running:
                    multiprocessing.connection.wait([proc.sentinel for proc in running])
                    for proc in [q for q in running if q.exitcode is not None]:
                        running.remove(proc)
                        if proc.exitcode != 0:
                            raise RenderersDiedError(
                                _death_message(proc.exitcode, bool(started[procs.index(proc)]), workers))
            finally:
                for proc in procs:
                    if proc.is_alive():
                        proc.kill()
                for proc in procs:
                    if proc.pid is not None:
                        proc.join()


def _render_share(renderer: _Renderer, share: str, started: Any, k: int) -> None:
    """Body of rendering process ``k``: say it started, then draw and write the frames listed in ``share``."""
    started[k] = 1
    with open(share, "rb") as f:
        renderer.save(pickle.load(f))


def _death_message(exitcode: int, started: bool, workers: int) -> str:
    what = f"killed by signal {-exitcode}" if exitcode < 0 else f"exit code {exitcode}"
    if not started:
        return (f"a process rendering the synthetic dataset could not start (workers={workers}, {what}). Spawned "
                "processes import the calling script again: put the call under `if __name__ == '__main__':`, "
                "or pass workers=0. Nothing of this dataset was kept.")
    cause = "it was killed (out of memory?)" if exitcode < 0 else "it crashed (its traceback is above)"
    return (f"a process rendering the synthetic dataset died while drawing frames (workers={workers}, {what}): "
            f"{cause}. Try again with fewer workers, or workers=0. Nothing of this dataset was kept.")


_RENDER_CHUNK = 512  # frames in a row given to one rendering process


class _Lengths:
    def __init__(self, lengths: Sequence[int]) -> None:
        self.lengths = [int(n) for n in lengths]
        if not self.lengths or min(self.lengths) < 1:
            raise EvalError(f"tracklet lengths must be >= 1, got {lengths}")
        self.i = 0

    def next(self) -> int:
        n = self.lengths[self.i % len(self.lengths)]
        self.i += 1
        return n


_Written = tuple[list[Path], int, int]  # (frame paths, pid, camera) of a written tracklet


def _entry(root: Path, frames: list[Path], pid: int, camid: int) -> dict[str, Any]:
    return {"frames": [p.relative_to(root).as_posix() for p in frames], "pid": int(pid), "camid": int(camid)}


def _pick_pids(rng: np.random.Generator, n: int, high: int) -> list[int]:
    return sorted(int(p) for p in rng.choice(np.arange(1, high + 1), size=n, replace=False))


def _split_ids(rng: np.random.Generator, pids: list[int]) -> tuple[list[int], list[int]]:
    """One third of the identities for training, the rest for testing (both sorted)."""
    order = rng.permutation(len(pids))
    n_train = max(2, len(pids) // 3)
    train = sorted(pids[i] for i in order[:n_train])
    test = sorted(pids[i] for i in order[n_train:])
    return train, test


def _cams(rng: np.random.Generator, num_cams: int, k: int) -> list[int]:
    return sorted(int(c) for c in rng.choice(np.arange(1, num_cams + 1), size=k, replace=False))


# --------------------------------------------------------------------------------------------------------
# per-format writers: each returns the manifest's "splits" and "info"


def _make_mars(root: Path, ds: Path, p: _Painter, num_ids: int, lengths: _Lengths) -> tuple[list, dict]:
    rng = p.rng
    pids = _pick_pids(rng, num_ids, max(1500, num_ids))  # real MARS: 1..1500
    train_pids, test_pids = _split_ids(rng, pids)
    looks = {pid: p.look(i) for i, pid in enumerate(pids)}

    def pid_str(pid: int) -> str:
        return "00-1" if pid == -1 else f"{pid:04d}"

    def write_split(home: str, plan: list[tuple[int, int, _Look | None]]) -> list[_Written]:
        counters: dict[tuple[int, int], int] = {}
        out = []
        for pid, cam, look in plan:
            t = counters[(pid, cam)] = counters.get((pid, cam), 0) + 1
            n = lengths.next()
            name = f"{pid_str(pid)}C{cam}T{t:04d}"
            frames = [ds / home / pid_str(pid) / f"{name}F{f:03d}.jpg" for f in range(1, n + 1)]
            for fr in frames:
                p.add_frame(fr, look, cam)
            out.append((frames, pid, cam))
        return out

    # test: 2-3 cameras per identity, 1-2 tracklets per camera; the first identity has exactly one
    # tracklet per camera, so all of them are queries (MARS's reason to rank against query + gallery)
    plan: list[tuple[int, int, _Look | None]] = []
    for k, pid in enumerate(test_pids):
        for cam in _cams(rng, 6, 2 if k == 0 else int(rng.integers(2, 4))):
            plan += [(pid, cam, looks[pid])] * (1 if k == 0 else int(rng.integers(1, 3)))
    plan += [(0, int(rng.integers(1, 7)), p.random_look()) for _ in range(3)]  # distractors
    plan += [(-1, int(rng.integers(1, 7)), None) for _ in range(2)]  # junk
    test = write_split("bbox_test", plan)
    train = write_split("bbox_train",
                        [(pid, cam, looks[pid]) for pid in train_pids for cam in _cams(rng, 6, 2)])

    def write_info(kind: str, tracklets: list[_Written]) -> list[_Written]:
        tracklets = sorted(tracklets, key=lambda t: t[0][0].name)  # rows follow the sorted name list
        names, rows = [], []
        for frames, pid, cam in tracklets:
            rows.append((len(names) + 1, len(names) + len(frames), pid, cam))
            names += [f.name for f in frames]
        (ds / "info").mkdir(parents=True, exist_ok=True)
        (ds / "info" / f"{kind}_name.txt").write_text("".join(n + "\n" for n in names))
        from scipy.io import savemat

        savemat(str(ds / "info" / f"tracks_{kind}_info.mat"),
                {f"track_{kind}_info": np.asarray(rows, dtype=np.int32)})
        return tracklets

    test = write_info("test", test)
    train = write_info("train", train)
    seen: set[tuple[int, int]] = set()
    query_rows = []
    for i, (_, pid, cam) in enumerate(test):
        if pid > 0 and (pid, cam) not in seen:
            seen.add((pid, cam))
            query_rows.append(i)
    from scipy.io import savemat

    savemat(str(ds / "info" / "query_IDX.mat"),
            {"query_IDX": np.asarray([i + 1 for i in query_rows], dtype=np.int32).reshape(1, -1)})
    qset = set(query_rows)
    query = [_entry(root, test[i][0], test[i][1], test[i][2] - 1) for i in query_rows]
    gallery = [_entry(root, f, pid, cam - 1) for i, (f, pid, cam) in enumerate(test)
               if i not in qset and pid != -1]
    split = {"query": query, "gallery": gallery, "num_train_tracklets": len(train),
             "num_train_pids": len(train_pids)}
    info = {"query_IDX": [i + 1 for i in query_rows], "num_test_rows": len(test),
            "num_junk_tracklets": sum(1 for t in test if t[1] == -1),
            "num_distractor_tracklets": sum(1 for t in test if t[1] == 0),
            "train_pids": train_pids, "test_pids": test_pids}
    return [split], info


def _make_two_camera(root: Path, ds: Path, p: _Painter, num_ids: int, lengths: _Lengths,
                     kind: str) -> tuple[list, dict]:
    """iLIDS-VID and PRID-2011: one sequence per person and camera, 10 random half/half splits."""
    rng = p.rng
    if num_ids < 4 or num_ids % 2:
        raise EvalError(f"{kind} needs an even number of identities >= 4, got {num_ids}")
    if kind == "ilidsvid":
        numbers = _pick_pids(rng, num_ids, max(319, num_ids))  # real person numbers 1..319 have gaps
        persons = [f"person{n:03d}" for n in numbers]
        cam_dirs = [ds / "i-LIDS-VID" / "sequences" / "cam1", ds / "i-LIDS-VID" / "sequences" / "cam2"]
    else:
        persons = [f"person_{n:04d}" for n in range(1, num_ids + 1)]
        cam_dirs = [ds / "prid_2011" / "multi_shot" / "cam_a", ds / "prid_2011" / "multi_shot" / "cam_b"]
    frames: dict[tuple[str, int], list[Path]] = {}
    for k, person in enumerate(persons):
        for c, cdir in enumerate(cam_dirs):
            n = lengths.next()
            if kind == "ilidsvid":
                start = int(rng.integers(1, 400))
                names = [f"cam{c + 1}_{person}_{start + f:05d}.png" for f in range(n)]
            else:
                names = [f"{f:04d}.png" for f in range(1, n + 1)]
            frames[(person, c)] = [cdir / person / nm for nm in names]
            for fr in frames[(person, c)]:
                p.add_frame(fr, p.look(k), c + 1)
    extra = {}
    if kind == "prid2011":  # persons 0201+ in real PRID are different people in each camera, and unused
        for c, (cdir, count) in enumerate(zip(cam_dirs, (3, 5), strict=True)):
            extra[cdir.name] = []
            for j in range(count):
                person = f"person_{num_ids + 1 + j:04d}"
                look = p.look(num_ids + 1 + j + 10 * c)
                for f in range(1, lengths.next() + 1):
                    p.add_frame(cdir / person / f"{f:04d}.png", look, c + 1)
                extra[cdir.name].append(person)

    perms = [rng.permutation(num_ids) for _ in range(10)]
    half = num_ids // 2
    splits, split_dirs = [], []
    for perm in perms:
        test = sorted(persons[i] for i in perm[:half])
        train = sorted(persons[i] for i in perm[half:])
        split_dirs.append({"train": train, "test": test})
        splits.append({
            "query": [_entry(root, frames[(d, 0)], i, 0) for i, d in enumerate(test)],
            "gallery": [_entry(root, frames[(d, 1)], i, 1) for i, d in enumerate(test)],
            "num_train_tracklets": 2 * len(train), "num_train_pids": len(train),
            "train_dirs": train, "test_dirs": test,
        })
    if kind == "ilidsvid":
        from scipy.io import savemat

        # ls_set: one row per split, a permutation of 1-based indices into the sorted person list; the
        # first half of a row is the test set (MATLAB doubles, as in the original file)
        ls_set = np.stack([perm + 1 for perm in perms]).astype(np.float64)
        (ds / "train-test people splits").mkdir(parents=True, exist_ok=True)
        savemat(str(ds / "train-test people splits" / "train_test_splits_ilidsvid.mat"), {"ls_set": ls_set})
    else:
        with open(ds / "splits_prid2011.json", "w") as f:
            json.dump(split_dirs, f, indent=4, separators=(",", ": "))
    return splits, {"persons": persons, "single_camera_persons": extra}


def _make_dukev(root: Path, ds: Path, p: _Painter, num_ids: int, lengths: _Lengths) -> tuple[list, dict]:
    rng = p.rng
    pids = _pick_pids(rng, num_ids + 3, max(7140, num_ids + 3))
    distractors = sorted(int(x) for x in rng.choice(pids, 3, replace=False))
    pids = [x for x in pids if x not in distractors]
    train_pids, test_pids = _split_ids(rng, pids)
    looks = {pid: p.look(i) for i, pid in enumerate(pids + distractors)}
    base = ds / "DukeMTMC-VideoReID"
    tids: dict[int, int] = {}
    counter = [0]
    offset_done = [False]

    def tracklet(sub: str, pid: int, cam: int) -> tuple[list[Path], list[Path]]:
        tid = tids[pid] = tids.get(pid, 0) + 1
        n = lengths.next()
        first = 1
        if sub == "gallery" and n >= 3 and not offset_done[0]:
            first = 2  # some real tracklets start at F0002; torchreid then keeps F0002..F{n} only
            offset_done[0] = True
        frames = []
        for f in range(first, first + n):
            counter[0] += 1
            name = f"{pid:04d}_C{cam}_F{f:04d}_X{counter[0]:05d}.jpg"
            frames.append(base / sub / f"{pid:04d}" / f"{tid:04d}" / name)
            p.add_frame(frames[-1], looks[pid], cam)
        kept = [fr for fr in frames if int(fr.name.split("_F")[1][:4]) <= n]
        return frames, kept

    query, gallery = [], []
    for pid in test_pids:
        cams = _cams(rng, 8, int(rng.integers(2, 4)))
        _, kept = tracklet("query", pid, cams[0])
        query.append(_entry(root, kept, pid, cams[0] - 1))
        for cam in cams[1:] + ([cams[0]] if rng.random() < 0.3 else []):
            _, kept = tracklet("gallery", pid, cam)
            gallery.append(_entry(root, kept, pid, cam - 1))
    for pid in distractors:  # identities that only occur in the gallery
        cam = int(rng.integers(1, 9))
        _, kept = tracklet("gallery", pid, cam)
        gallery.append(_entry(root, kept, pid, cam - 1))
    num_train = 0
    for pid in train_pids:
        for cam in _cams(rng, 8, 2):
            tracklet("train", pid, cam)
            num_train += 1
    split = {"query": query, "gallery": gallery, "num_train_tracklets": num_train,
             "num_train_pids": len(train_pids)}
    return [split], {"distractor_pids": distractors, "train_pids": train_pids, "test_pids": test_pids,
                     "offset_start_tracklets": 1 if offset_done[0] else 0}


def _make_lsvid(root: Path, ds: Path, p: _Painter, num_ids: int, lengths: _Lengths) -> tuple[list, dict]:
    rng = p.rng
    pids = _pick_pids(rng, num_ids, max(3772, num_ids))
    train_pids, test_pids = _split_ids(rng, pids)
    looks = {pid: p.look(i) for i, pid in enumerate(pids)}
    track = [0]

    def tracklet(home: str, pid: int, cam: int) -> tuple[str, list[Path]]:
        track[0] += 1
        prefix = f"{home}/{pid:04d}/{track[0]:05d}_"
        start, x = int(rng.integers(1, 5000)), int(rng.integers(0, 100))
        frames = [ds / f"{prefix}{start + f:05d}_{cam:02d}_{x:02d}.jpg" for f in range(lengths.next())]
        for fr in frames:
            p.add_frame(fr, looks[pid], cam)
        return prefix, frames

    test_rows: list[tuple[str, list[Path], int, int]] = []
    query_rows = []
    for pid in test_pids:
        cams = _cams(rng, 15, int(rng.integers(2, 4)))
        for j, cam in enumerate(cams + [cams[-1]] * int(rng.integers(0, 2))):
            if j == 0:
                query_rows.append(len(test_rows))
            prefix, frames = tracklet("tracklet_test", pid, cam)
            test_rows.append((prefix, frames, pid, cam))
    train_lines = []
    for pid in train_pids:
        for cam in _cams(rng, 15, 2):
            prefix, _ = tracklet("tracklet_train", pid, cam)
            train_lines.append(f"{prefix} {pid}\n")
    (ds / "list_sequence").mkdir(parents=True, exist_ok=True)
    (ds / "list_sequence" / "list_seq_train.txt").write_text("".join(train_lines))
    (ds / "list_sequence" / "list_seq_test.txt").write_text("".join(f"{r[0]} {r[2]}\n" for r in test_rows))
    write_matlab_v73(ds / "test" / "data" / "info_test.mat",
                     {"query": np.asarray([i + 1 for i in query_rows], np.float64).reshape(-1, 1)})
    qset = set(query_rows)
    split = {
        "query": [_entry(root, test_rows[i][1], test_rows[i][2], test_rows[i][3] - 1) for i in query_rows],
        "gallery": [_entry(root, f, pid, cam - 1) for i, (_, f, pid, cam) in enumerate(test_rows)
                    if i not in qset],
        "num_train_tracklets": len(train_lines), "num_train_pids": len(train_pids),
    }
    return [split], {"query": [i + 1 for i in query_rows], "num_test_rows": len(test_rows),
                     "train_pids": train_pids, "test_pids": test_pids}


def write_matlab_v73(path: str | Path, variables: dict[str, np.ndarray]) -> None:
    """Write numeric arrays as a MATLAB v7.3 .mat (HDF5 with MATLAB's 512-byte header).

    Arrays are given in MATLAB's (row, column) shape and stored transposed, as MATLAB does, so a MATLAB
    column vector ``(n, 1)`` becomes an HDF5 dataset of shape ``(1, n)``.
    """
    import h5py

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w", userblock_size=512) as f:
        for name, arr in variables.items():
            arr = np.atleast_2d(np.asarray(arr, dtype=np.float64))
            d = f.create_dataset(name, data=arr.T)
            d.attrs["MATLAB_class"] = np.bytes_("double")
    text = (b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2019 "
            b"HDF5 schema 1.00 .").ljust(116, b" ")
    header = text + b"\x00" * 8 + (0x0200).to_bytes(2, "little") + b"IM"
    with open(path, "r+b") as fh:
        fh.write(header.ljust(512, b"\x00"))


# --------------------------------------------------------------------------------------------------------
# public API


_MAX_IDS: dict[str, int] = {  # identity numbers are 4 digits in file names (3 for iLIDS-VID); PRID-2011
    "mars": 9999, "lsvid": 9999, "dukev": 9996, "ilidsvid": 999, "prid2011": 9990,  # and DukeMTMC add extras
}

_FORMATS: dict[str, tuple[int, str]] = {  # kind -> (number of cameras, image extension)
    "mars": (6, "jpg"), "lsvid": (15, "jpg"), "ilidsvid": (2, "png"), "prid2011": (2, "png"),
    "dukev": (8, "jpg"),
}


def make_synthetic(
    kind: str,
    root: str | Path,
    *,
    num_ids: int | None = None,
    seed: int = 0,
    img_size: tuple[int, int] = (64, 32),
    lengths: Sequence[int] = DEFAULT_LENGTHS,
    reuse: bool = True,
    workers: int = 0,
) -> Path:
    """Write a small synthetic dataset in ``kind``'s real format under ``root`` and return ``root``.

    ``root`` is what :func:`reid_eval.datasets.load_dataset` takes: the dataset goes to
    ``root/<dataset folder>`` (``mars``, ``LS-VID``, ``ilids-vid``, ``prid2011``, ``dukemtmc-vidreid``).

    Args:
        kind: dataset format (``mars``, ``lsvid``, ``ilidsvid``, ``prid2011``, ``dukev`` or an alias).
        num_ids: number of identities (default :data:`DEFAULT_NUM_IDS`; even and >= 4 for the 2-camera sets).
        seed: everything (identities, looks, splits, noise) is a function of the seed.
        img_size: (height, width) of the frames.
        lengths: tracklet lengths, used in turn.
        reuse: keep an existing synthetic folder written with the same parameters instead of rewriting it.
        workers: processes that draw and encode the frames (0: this process). The files do not depend on it;
            a MARS-scale set (~860,000 256x128 frames) takes minutes with 16 workers, ~20 with none. The workers
            are spawned and import the calling script again: call this under ``if __name__ == '__main__':``
            (otherwise :class:`RenderersDiedError`, and nothing is written).

    An existing dataset folder is replaced only if it is a synthetic one (it has a manifest); a real
    dataset is never touched (FileExistsError).
    """
    kind = get_spec(kind).name
    num_ids = DEFAULT_NUM_IDS[kind] if num_ids is None else int(num_ids)
    if not 4 <= num_ids <= _MAX_IDS[kind]:
        raise EvalError(f"num_ids must be in [4, {_MAX_IDS[kind]}] for {kind} (identity numbers are written "
                         f"with {len(str(_MAX_IDS[kind]))} digits in its file names), got {num_ids}")
    if workers < 0:
        raise EvalError(f"workers must be >= 0 (0: draw the frames in this process), got {workers}")
    root = Path(root).expanduser().absolute()
    ds = root / get_spec(kind).folder
    params = {"num_ids": num_ids, "seed": int(seed), "img_size": [int(img_size[0]), int(img_size[1])],
              "lengths": [int(n) for n in lengths]}
    if ds.exists():
        manifest_path = ds / MANIFEST_NAME
        if not manifest_path.exists():
            raise OutputExistsError(f"{ds} exists and is not a synthetic dataset (no {MANIFEST_NAME}); "
                                  "refusing to overwrite it")
        try:
            old = json.loads(manifest_path.read_text())
        except (OSError, json.JSONDecodeError):
            old = {}
        if reuse and old.get("params") == params and old.get("version") == FORMAT_VERSION:
            return root
        shutil.rmtree(ds)
    num_cams, ext = _FORMATS[kind]
    painter = _Painter(seed, (img_size[0], img_size[1]), num_cams, ext)
    seq = _Lengths(lengths)
    root.mkdir(parents=True, exist_ok=True)
    # write into a temporary folder next to the target, then rename: no half-written dataset remains
    tmp_prefix = f".{get_spec(kind).folder}.tmp"
    earlier_tmp = set(root.glob(tmp_prefix + "*"))
    tmp = Path(tempfile.mkdtemp(prefix=tmp_prefix, dir=root))
    try:
        work = tmp / get_spec(kind).folder
        work.mkdir()
        if kind == "mars":
            splits, info = _make_mars(tmp, work, painter, num_ids, seq)
        elif kind == "lsvid":
            splits, info = _make_lsvid(tmp, work, painter, num_ids, seq)
        elif kind == "dukev":
            splits, info = _make_dukev(tmp, work, painter, num_ids, seq)
        else:
            splits, info = _make_two_camera(tmp, work, painter, num_ids, seq, kind)
        try:
            painter.render(workers)
        except RenderersDiedError:
            # renderers that re-ran an unguarded calling script began datasets of their own before they were
            # killed: remove the temporary folders that appeared since this call began
            for leftover in set(root.glob(tmp_prefix + "*")) - earlier_tmp - {tmp}:
                shutil.rmtree(leftover, ignore_errors=True)
            raise
        manifest = {"kind": kind, "version": FORMAT_VERSION, "dataset_dir": get_spec(kind).folder,
                    "params": params, "num_images": painter.num_images, "splits": splits, "info": info}
        (work / MANIFEST_NAME).write_text(json.dumps(manifest, indent=1))
        os.replace(work, ds)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root


def load_manifest(kind: str, root: str | Path) -> dict[str, Any]:
    """The manifest :func:`make_synthetic` wrote: ``splits[i]`` holds the expected ``query`` / ``gallery``
    entries (``frames`` relative to ``root``, ``pid``, ``camid``) and train counts of split ``i``."""
    kind = get_spec(kind).name
    return json.loads((Path(root).expanduser() / get_spec(kind).folder / MANIFEST_NAME).read_text())


def demo_dataset_root(cache_dir: str | Path | None = None, *, seed: int = 0) -> Path:
    """Root of the small MARS-format dataset used by ``--dataset synthetic`` (written on first use).

    Goes to ``cache_dir`` or ``$SINET_TIMM_CACHE`` or ``$XDG_CACHE_HOME/sinet-timm`` (``~/.cache``) under
    ``synthetic-mars/``; load it with ``load_dataset("mars", root)``.
    """
    return make_synthetic("mars", Path(cache_dir or cache_root()) / "synthetic-mars", seed=seed)


# --------------------------------------------------------------------------------------------------------
# demo videos


@dataclass
class DemoVideos:
    """What :func:`make_demo_videos` wrote: one video and one track file per camera, and who is who."""

    folder: Path
    videos: list[Path]
    tracks: list[Path]
    truth: dict[str, str]  # camera-1 track name (VIDEO:ID) -> the camera-2 track of the same person
    frame_size: tuple[int, int]
    num_frames: int


def make_demo_videos(
        folder: str | Path,
        *,
        num_people: int = 4,
        num_frames: int = 40,
        frame_size: tuple[int, int] = (192, 320),
        person_size: tuple[int, int] = (96, 48),
        seed: int = 0,
        ext: str = ".mp4",
        fps: float = 25.0,
) -> DemoVideos:
    """Write ``cam1``/``cam2`` videos (``ext``: ``.mp4`` H.264 as cameras record, ``.mkv``/``.avi`` lossless) of
    the same ``num_people`` people, and their tracks ``cam1.txt``/``cam2.txt`` (MOTChallenge rows) and
    ``truth.json`` (who is who), into ``folder``.

    Each camera has its own colour cast and background; the people stand side by side in columns, in another order
    in each camera (so the track ids do not tell who is who: camera 1 numbers its tracks 1, 2, ..., camera 2 11,
    12, ...), swaying and walking up and down the frame. What trackers write is there too: in camera 1 the rightmost
    person leaves the frame in the last frames (a box half outside, clipped, then one wholly outside, skipped) and
    a false detection of the background lives for 2 frames (track 99: ``--min-frames 3`` drops it).
    Frames are streamed to the encoder, never held together. Earlier demo videos in ``folder`` (it has a
    ``truth.json``) are replaced; other files of those names are not (:class:`OutputExistsError`).
    """
    h, w = (int(v) for v in frame_size)
    ph, pw = (int(v) for v in person_size)
    if num_people < 1 or w / num_people < pw + 4 or h < ph + 32 or num_frames < 4:
        raise EvalError(f"{num_people} people of {ph}x{pw} px do not fit side by side in {h}x{w} frames (need "
                        f"width >= people x (person width + 4), height >= person height + 32, >= 4 frames)")
    folder = Path(folder).expanduser()
    ours = [folder / f"cam{c}{e}" for c in (1, 2) for e in (ext, ".txt")]
    if any(p.exists() for p in ours) and not (folder / "truth.json").exists():
        raise OutputExistsError(f"{folder} holds {', '.join(p.name for p in ours if p.exists())} but no truth.json: "
                                "not demo videos; refusing to overwrite them (choose another folder)")
    folder.mkdir(parents=True, exist_ok=True)
    painter = _Painter(seed, (ph, pw), 2, "png")
    rng = painter.rng
    looks = [painter.look(i) for i in range(num_people)]
    orders = {1: list(range(num_people)), 2: [int(v) for v in rng.permutation(num_people)]}
    first_id = {1: 1, 2: 11}
    truth: dict[str, str] = {}
    for k, person in enumerate(orders[1]):
        truth[f"cam1:{first_id[1] + k}"] = f"cam2:{first_id[2] + orders[2].index(person)}"
    videos, tracks = [], []
    for cam in (1, 2):
        camera = painter.renderer.cams[cam]
        bg = np.empty((h, w, 3), np.float32)
        bg[:] = camera.background
        bg += rng.normal(0, 10, (h, 1, 3)).astype(np.float32)
        bg = np.clip(bg * camera.gain + camera.bias, 0, 255).astype(np.uint8)
        phase = rng.uniform(0, 2 * np.pi, (num_people, 2))
        rows: list[tuple[int, int, float, float, float, float]] = []
        frames = _demo_frames(painter, cam, orders[cam], first_id[cam], looks, bg, phase, person_size, num_frames,
                              leaving=cam == 1, false_detection=cam == 1, rows=rows)
        videos.append(write_video(folder / f"cam{cam}{ext}", frames, fps))
        rows.sort(key=lambda r: (r[0], r[1]))
        tracks.append(folder / f"cam{cam}.txt")
        tracks[-1].write_text(format_tracks(rows))
    (folder / "truth.json").write_text(json.dumps(truth, indent=1))
    return DemoVideos(folder, videos, tracks, truth, (h, w), num_frames)


def _demo_frames(painter: _Painter, cam: int, order: list[int], first_id: int, looks: list[_Look], bg: np.ndarray,
                 phase: np.ndarray, person_size: tuple[int, int], num_frames: int, *, leaving: bool,
                 false_detection: bool, rows: list[tuple[int, int, float, float, float, float]]):
    """The frames of one demo camera, one at a time; appends each frame's track rows to ``rows``."""
    h, w = bg.shape[:2]
    ph, pw = person_size
    col = w / len(order)
    span = h - ph - 30  # vertical room of the walkers (the bottom 28 px are where the false detection is)
    for t in range(1, num_frames + 1):
        img = bg.copy()
        for k, person in enumerate(order):
            x = col * k + (col - pw) / 2 + 0.3 * (col - pw) * np.sin(phase[k, 0] + t / 6)
            y = 2 + 0.5 * span * (1 + np.sin(phase[k, 1] + t / 9))
            if leaving and k == len(order) - 1 and t > num_frames - 2:  # half out of the frame, then gone
                x = w - pw / 2 if t == num_frames - 1 else w + 2
            rows.append((t, first_id + k, float(x), float(y), pw, ph))
            patch = painter.renderer.frame(cam * 1_000_000 + person * 10_000 + t, looks[person], cam)
            x0, y0 = int(np.floor(x + 0.5)), int(np.floor(y + 0.5))
            xa, xb = max(0, x0), min(w, x0 + pw)
            if xa < xb:
                img[y0:y0 + ph, xa:xb] = patch[:, xa - x0:xb - x0]
        if false_detection and t in (5, 6):
            rows.append((t, 99, 0.3 * w, h - 28.0, 24.0, 24.0))
        yield img


if __name__ == "__main__":
    raise SystemExit("the command line of this module is now `sinet-synthetic KIND ROOT` (same arguments)")
