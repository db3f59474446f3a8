"""Dataset layer: synthetic datasets in each benchmark's real format, read back by the real parsers."""

from __future__ import annotations

import json
import multiprocessing
import re
import shutil
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import child_env, killing_a_child
from PIL import Image
from scipy.io import loadmat
from scipy.io.matlab import matfile_version

from reid_eval.datasets import (
    SPECS,
    VALID_DATASETS,
    canonical_name,
    get_spec,
    load_dataset,
    num_splits,
    torchreid_flavor,
)
from reid_eval.datasets.lsvid import register_lsvid
from reid_eval.datasets.spec import torchreid_datasets
from reid_eval.errors import DatasetLayoutError, EmptyTrackletError, RenderersDiedError
from reid_eval.synthetic import (
    DEFAULT_NUM_IDS,
    demo_dataset_root,
    load_manifest,
    make_synthetic,
    write_matlab_v73,
)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """All five formats, written once (read-only tests only)."""
    root = tmp_path_factory.mktemp("synth")
    for kind in VALID_DATASETS:
        make_synthetic(kind, root)
    return root


def _as_expected(root: Path, entries: list[dict]) -> list[tuple[tuple[str, ...], int, int]]:
    return [(tuple(str(root / f) for f in e["frames"]), e["pid"], e["camid"]) for e in entries]


def _assert_matches_manifest(split, root: Path, expected: dict, ordered: bool = True) -> None:
    want_q, want_g = _as_expected(root, expected["query"]), _as_expected(root, expected["gallery"])
    if ordered:
        assert split.query == want_q
        assert split.gallery == want_g
    else:  # torchreid's Duke parser lists folders in glob (file-system) order
        assert sorted(split.query) == sorted(want_q)
        assert sorted(split.gallery) == sorted(want_g)
    assert len(split.train) == expected["num_train_tracklets"]
    assert split.num_train_pids == expected["num_train_pids"]
    assert {pid for _, pid, _ in split.train} == set(range(expected["num_train_pids"]))  # relabelled
    for paths, _, _ in split.query + split.gallery:
        assert paths and all(Path(p).is_file() for p in paths)


# ---------------------------------------------------------------------------------------------- formats


def test_mars_roundtrip(synth: Path) -> None:
    m = load_manifest("mars", synth)
    split = load_dataset("mars", synth)
    _assert_matches_manifest(split, synth, m["splits"][0])
    info = m["info"]
    rows = loadmat(str(synth / "mars" / "info" / "tracks_test_info.mat"))["track_test_info"]
    assert rows.shape == (info["num_test_rows"], 4) and rows[:, 0].min() == 1  # 1-based frame indices
    # torchreid drops junk (-1) rows, keeps distractors (0) in the gallery, and removes the queries
    assert info["num_junk_tracklets"] > 0 and all(pid != -1 for _, pid, _ in split.query + split.gallery)
    assert sum(pid == 0 for _, pid, _ in split.gallery) == info["num_distractor_tracklets"] > 0
    assert len(split.query) + len(split.gallery) == info["num_test_rows"] - info["num_junk_tracklets"]
    assert not set(split.query) & set(split.gallery)
    assert {c for _, _, c in split.query + split.gallery} <= set(range(6))
    assert {pid for _, pid, _ in split.query} == set(info["test_pids"])  # MARS ids, not relabelled
    # a query with no cross-camera match in torchreid's gallery, but one among the other queries:
    # the reason the evaluator ranks against query + gallery
    orphan = [(pid, cam) for _, pid, cam in split.query
              if not any(g == pid and gc != cam for _, g, gc in split.gallery)]
    assert any(any(p == pid and c != cam for _, p, c in split.query) for pid, cam in orphan)
    assert "query + gallery" in split.protocol_notes
    # file naming: pid, camera, tracklet, frame
    name = Path(split.query[0][0][0]).name
    assert name[:4] == f"{split.query[0][1]:04d}" and int(name[5]) - 1 == split.query[0][2]
    assert name[6] == "T" and name[11] == "F"


def test_tracklet_lengths_cover_padding_cases(synth: Path) -> None:
    split = load_dataset("mars", synth)
    lengths = {len(p) for p, _, _ in split.query + split.gallery}
    assert {1, 2, 3, 5, 7} <= lengths and max(lengths) >= 12


def test_lsvid_roundtrip_and_query_from_mat(synth: Path) -> None:
    m = load_manifest("lsvid", synth)
    split = load_dataset("ls-vid", synth)
    _assert_matches_manifest(split, synth, m["splits"][0])
    ds = synth / "LS-VID"
    mat = ds / "test" / "data" / "info_test.mat"
    assert matfile_version(str(mat)) == (2, 0)  # MATLAB v7.3 (HDF5) header
    with h5py.File(mat, "r") as f:
        q = f["query"]
        assert q.shape == (1, len(split.query))  # MATLAB column vector, stored transposed
        assert q.attrs["MATLAB_class"] == b"double"
        idx = [int(v) - 1 for v in q[0, :]]
    lines = (ds / "list_sequence" / "list_seq_test.txt").read_text().split("\n")
    for (paths, pid, camid), i in zip(split.query, idx, strict=True):
        prefix, lpid = lines[i].rsplit(" ", 1)
        assert int(lpid) == pid
        assert all(Path(p).name.startswith(Path(prefix).name) for p in paths)
        assert camid == int(Path(paths[0]).name.split("_")[2]) - 1
        assert list(paths) == sorted(paths)
    assert len(split.query) + len(split.gallery) == len([x for x in lines if x])
    assert {c for _, _, c in split.query + split.gallery} <= set(range(15))


def test_lsvid_query_follows_info_test_mat(tmp_path: Path) -> None:
    root = make_synthetic("lsvid", tmp_path)
    before = load_dataset("lsvid", root)
    lines = (root / "LS-VID" / "list_sequence" / "list_seq_test.txt").read_text().split()
    rows = [3, 1, 6]  # 1-based, deliberately unsorted
    write_matlab_v73(root / "LS-VID" / "test" / "data" / "info_test.mat",
                     {"query": np.array(rows, float).reshape(-1, 1)})
    after = load_dataset("lsvid", root)
    assert [pid for _, pid, _ in after.query] == [int(lines[2 * (r - 1) + 1]) for r in rows]
    assert len(after.gallery) == len(before.query) + len(before.gallery) - 3
    assert after.query != before.query


def test_lsvid_registered_with_torchreid(synth: Path) -> None:
    cls = register_lsvid()
    assert register_lsvid() is cls  # idempotent
    tds = torchreid_datasets()[0]
    ds = tds.init_video_dataset("lsvid", root=str(synth), transform=lambda x: x, verbose=False)
    assert type(ds).__name__ == "LSVID"
    assert len(ds.query) == len(load_manifest("lsvid", synth)["splits"][0]["query"])


@pytest.mark.parametrize("kind", ["ilidsvid", "prid2011"])
def test_two_camera_splits(synth: Path, kind: str) -> None:
    m = load_manifest(kind, synth)
    assert num_splits(kind) == 10 and len(m["splits"]) == 10
    test_sets = set()
    for sid in range(10):
        split = load_dataset(kind, synth, split_id=sid)
        exp = m["splits"][sid]
        _assert_matches_manifest(split, synth, exp)
        n = DEFAULT_NUM_IDS[kind] // 2
        assert [c for _, _, c in split.query] == [0] * n and [c for _, _, c in split.gallery] == [1] * n
        assert [p for _, p, _ in split.query] == list(range(n)) == [p for _, p, _ in split.gallery]
        assert not set(exp["train_dirs"]) & set(exp["test_dirs"])
        train_frames = {f for p, _, _ in split.train for f in p}
        assert not train_frames & {f for p, _, _ in split.query + split.gallery for f in p}
        assert all(list(p) == sorted(p) for p, _, _ in split.query + split.gallery)
        assert f"split {sid} of 10" in split.protocol_notes
        test_sets.add(tuple(exp["test_dirs"]))
    assert len(test_sets) == 10  # the 10 splits differ


def test_prid_ignores_single_camera_persons(synth: Path) -> None:
    m = load_manifest("prid2011", synth)
    extra = m["info"]["single_camera_persons"]
    assert extra["cam_a"] and extra["cam_b"]
    split = load_dataset("prid", synth)
    used = {Path(p[0]).parent.name for p, _, _ in split.query + split.gallery + split.train}
    assert not used & (set(extra["cam_a"]) | set(extra["cam_b"]))


def test_ilids_splits_equal_torchreid_prepare_split(tmp_path: Path) -> None:
    """With the real 300 persons, our splits.json is byte-for-byte what torchreid's prepare_split writes."""
    root = make_synthetic("ilidsvid", tmp_path / "a", num_ids=300, img_size=(8, 4), lengths=(1,))
    ref = tmp_path / "b"
    shutil.copytree(root, ref)
    load_dataset("ilidsvid", root, split_id=3)
    torchreid_datasets()[1].iLIDSVID(root=str(ref), split_id=3, transform=lambda x: x, verbose=False)
    ours = (root / "ilids-vid" / "splits.json").read_text()
    assert ours == (ref / "ilids-vid" / "splits.json").read_text()
    expected = [s["test_dirs"] for s in load_manifest("ilidsvid", root)["splits"]]
    assert [s["test"] for s in json.loads(ours)] == expected


def test_dukev_roundtrip(synth: Path) -> None:
    m = load_manifest("dukev", synth)
    with pytest.warns(UserWarning, match="do not start at F0001"):
        split = load_dataset("dukemtmcvidreid", synth)
    _assert_matches_manifest(split, synth, m["splits"][0], ordered=False)
    for paths, pid, camid in split.query + split.gallery:
        name = Path(paths[0]).name
        assert int(name[:4]) == pid and int(name[6]) - 1 == camid
    gallery_only = {p for _, p, _ in split.gallery} - {p for _, p, _ in split.query}
    assert set(m["info"]["distractor_pids"]) <= gallery_only
    # torchreid's quirk: a tracklet starting at F0002 loses its last frame
    assert m["info"]["offset_start_tracklets"] == 1
    assert any(Path(p[0]).name.split("_")[2] == "F0002" for p, _, _ in split.gallery)
    assert (synth / "dukemtmc-vidreid" / "split_gallery.json").is_file()  # torchreid's cache
    assert load_dataset("dukev", synth).gallery == split.gallery  # read back from the cache


def _duke_split(root: Path):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        split = load_dataset("dukev", root)
    return split, [str(w.message) for w in caught if "F0001" not in str(w.message)]


def test_dukev_cache_of_a_moved_or_changed_folder_is_not_used(tmp_path: Path) -> None:
    """torchreid's split_*.json hold absolute paths and win over the folder: a copied dataset evaluated the old
    one, frames or tracklets added later were never seen. A cache is used only when it lists the folder as it is."""
    old = make_synthetic("dukev", tmp_path / "old", num_ids=6)
    first, _ = _duke_split(old)  # writes torchreid's caches
    new = tmp_path / "copy"
    shutil.copytree(old, new)  # the caches come along, listing the old folder's frames
    copied, said = _duke_split(new)
    assert all(p.startswith(str(new)) for paths, _, _ in copied.query + copied.gallery + copied.train for p in paths)
    assert sorted(copied.gallery) == sorted((tuple(p.replace(str(old), str(new)) for p in paths), pid, cam)
                                            for paths, pid, cam in first.gallery)
    assert any("split_gallery.json lists frames under" in w and "(moved or copied)" in w for w in said), said
    assert _duke_split(new)[1] == []  # the rewritten cache fits: used silently
    # a tracklet added to the gallery and a frame appended to a query tracklet
    gallery = new / "dukemtmc-vidreid" / "DukeMTMC-VideoReID" / "gallery"
    person = next(p for p in sorted(gallery.iterdir()))
    shutil.copytree(next(person.iterdir()), person / "9999")
    qpaths = next(paths for paths, _, _ in copied.query if "_F0001_" in Path(paths[0]).name)
    tdir = Path(qpaths[0]).parent
    frames = sorted(tdir.glob("*.jpg"))
    extra = tdir / re.sub(r"F\d{4}", f"F{len(frames) + 1:04d}", frames[0].name)
    shutil.copy(frames[0], extra)
    changed, said = _duke_split(new)
    assert len(changed.gallery) == len(copied.gallery) + 1
    assert any(str(person / "9999") in paths[0] for paths, _, _ in changed.gallery)
    grown = next(paths for paths, _, _ in changed.query if Path(paths[0]).parent == tdir)
    assert str(extra) in grown and len(grown) > len(qpaths)
    assert any("split_gallery.json lists 11 tracklets, the folder holds 12" in w for w in said), said
    assert any("split_query.json lists" in w and str(tdir) in w for w in said), said


def test_root_may_be_the_dataset_folder(synth: Path, tmp_path: Path) -> None:
    assert load_dataset("mars", synth / "mars").query == load_dataset("mars", synth).query
    renamed = tmp_path / "MARS-v1"
    shutil.copytree(synth / "mars", renamed)
    split = load_dataset("mars", renamed)
    assert split.dataset_dir == str(renamed) and all(p[0].startswith(str(renamed)) for p, _, _ in split.query)


# ----------------------------------------------------------------------------------------------- errors


def test_unknown_name_lists_valid_names() -> None:
    with pytest.raises(ValueError) as exc:
        load_dataset("market1501", "/nonexistent")
    for name in VALID_DATASETS:
        assert name in str(exc.value)
    assert canonical_name("iLIDS-VID") == "ilidsvid" and canonical_name("PRID") == "prid2011"
    assert canonical_name("DukeMTMCVidReID") == "dukev" and canonical_name("LS-VID") == "lsvid"


@pytest.mark.parametrize("kind", VALID_DATASETS)
def test_missing_folder_is_clear_and_never_downloads(tmp_path: Path, kind: str) -> None:
    with pytest.raises(DatasetLayoutError) as exc:
        load_dataset(kind, tmp_path)
    msg = str(exc.value)
    assert str(tmp_path / get_spec(kind).folder) in msg and "Expected layout" in msg
    assert isinstance(exc.value, FileNotFoundError)
    assert list(tmp_path.iterdir()) == []  # torchreid would have created the folder to download into
    with pytest.raises(DatasetLayoutError, match="does not exist"):
        load_dataset(kind, tmp_path / "nope")


@pytest.mark.parametrize(("kind", "rel"), [
    ("mars", "mars/info/query_IDX.mat"),
    ("mars", "mars/info/test_name.txt"),
    ("lsvid", "LS-VID/test/data/info_test.mat"),
    ("ilidsvid", "ilids-vid/train-test people splits/train_test_splits_ilidsvid.mat"),
    ("prid2011", "prid2011/splits_prid2011.json"),
    ("dukev", "dukemtmc-vidreid/DukeMTMC-VideoReID/gallery"),
])
def test_missing_info_file_is_named(tmp_path: Path, kind: str, rel: str) -> None:
    root = make_synthetic(kind, tmp_path, num_ids=8)
    target = root / rel
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    with pytest.raises(DatasetLayoutError) as exc:
        load_dataset(kind, root)
    assert str(target) in str(exc.value) and "Expected layout" in str(exc.value)


@pytest.mark.parametrize(("kind", "bad"), [("ilidsvid", 10), ("prid2011", -1), ("mars", 1), ("dukev", 3)])
def test_split_out_of_range(synth: Path, kind: str, bad: int) -> None:
    with pytest.raises(ValueError, match="out of range"):
        load_dataset(kind, synth, split_id=bad)
    assert num_splits(kind) == (10 if kind in ("ilidsvid", "prid2011") else 1)


def test_empty_tracklet_mars(tmp_path: Path) -> None:
    root = make_synthetic("mars", tmp_path)
    victim = load_dataset("mars", root).gallery[4]
    for p in victim[0]:
        Path(p).unlink()
    with pytest.raises(EmptyTrackletError) as exc:
        load_dataset("mars", root)
    assert "gallery tracklet #4" in str(exc.value) and f"pid {victim[1]}" in str(exc.value)


def test_empty_tracklet_mars_info_row(tmp_path: Path) -> None:
    root = make_synthetic("mars", tmp_path)
    path = root / "mars" / "info" / "tracks_test_info.mat"
    rows = loadmat(str(path))["track_test_info"]
    rows[2, 1] = rows[2, 0] - 1  # end before start
    from scipy.io import savemat

    savemat(str(path), {"track_test_info": rows})
    with pytest.raises(EmptyTrackletError, match="tracklet #3"):
        load_dataset("mars", root)


def test_empty_tracklet_ilids(tmp_path: Path) -> None:
    root = make_synthetic("ilidsvid", tmp_path, num_ids=8)
    person = load_manifest("ilidsvid", root)["splits"][0]["test_dirs"][1]
    for f in (root / "ilids-vid" / "i-LIDS-VID" / "sequences" / "cam2" / person).iterdir():
        f.unlink()
    with pytest.raises(EmptyTrackletError, match=f"cam2/{person}"):
        load_dataset("ilidsvid", root)


def test_empty_tracklet_lsvid(tmp_path: Path) -> None:
    root = make_synthetic("lsvid", tmp_path)
    lst = root / "LS-VID" / "list_sequence" / "list_seq_test.txt"
    lst.write_text(lst.read_text() + "tracklet_test/0001/99999_ 1\n")
    with pytest.raises(EmptyTrackletError, match="99999_"):
        load_dataset("lsvid", root)


def test_empty_tracklet_dukev(tmp_path: Path) -> None:
    root = make_synthetic("dukev", tmp_path)
    tdir = next((root / "dukemtmc-vidreid" / "DukeMTMC-VideoReID" / "query").iterdir())
    tdir = next(tdir.iterdir())
    for f in tdir.iterdir():
        f.unlink()
    with pytest.raises(EmptyTrackletError, match=f"{tdir.parent.name}/{tdir.name}"):
        load_dataset("dukev", root)


# -------------------------------------------------------------------------------------------- generator


def test_generator_is_deterministic(tmp_path: Path) -> None:
    a = make_synthetic("prid2011", tmp_path / "a", num_ids=6, seed=3)
    b = make_synthetic("prid2011", tmp_path / "b", num_ids=6, seed=3)
    c = make_synthetic("prid2011", tmp_path / "c", num_ids=6, seed=4)
    files = sorted(p.relative_to(a) for p in a.rglob("*.png"))
    assert files == sorted(p.relative_to(b) for p in b.rglob("*.png"))
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)
    assert load_manifest("prid", a)["splits"] == load_manifest("prid", b)["splits"]
    assert load_manifest("prid", a)["splits"] != load_manifest("prid", c)["splits"]


@pytest.mark.slow
def test_parallel_rendering_writes_the_same_files(tmp_path: Path) -> None:
    """Frames drawn in worker processes are byte-identical to frames drawn in this one (several chunks)."""
    kw = dict(num_ids=12, img_size=(16, 8), lengths=(60, 90))
    a = make_synthetic("mars", tmp_path / "a", **kw)
    b = make_synthetic("mars", tmp_path / "b", workers=2, **kw)
    files = sorted(p.relative_to(a) for p in a.rglob("*.jpg"))
    assert len(files) > 2048 and load_manifest("mars", a)["num_images"] == len(files)
    assert files == sorted(p.relative_to(b) for p in b.rglob("*.jpg"))
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)
    assert load_manifest("mars", a)["splits"] == load_manifest("mars", b)["splits"]


@pytest.mark.slow
def test_parallel_rendering_from_an_unguarded_script_is_a_clear_error(tmp_path: Path) -> None:
    """Spawned renderers import the calling script again; without a __main__ guard they die at start-up. The
    caller gets what to do, not a BrokenProcessPool traceback, and no half-written dataset is left."""
    script = tmp_path / "make.py"
    script.write_text("from reid_eval.synthetic import make_synthetic\n"
                      f"make_synthetic('mars', {str(tmp_path / 'data')!r}, num_ids=12, img_size=(8, 4), "
                      "lengths=(60, 90), workers=2)\n")
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300,
                       env=child_env())
    assert r.returncode == 1
    # (the last stderr lines may be a resource_tracker warning from the dead processes)
    error = re.search(r"^reid_eval\.errors\.RenderersDiedError: a process rendering the synthetic dataset could not "
                      r"start \(workers=2, exit code 1\).*$", r.stderr, re.M)
    assert error, r.stderr[-2000:]
    assert "if __name__ == '__main__':" in error.group() and "workers=0" in error.group()
    assert "BrokenProcessPool" not in r.stderr
    assert not (tmp_path / "data" / "mars").exists()
    assert [p.name for p in (tmp_path / "data").iterdir()] == []  # the temporary folder is gone too


@pytest.mark.skipif(not Path("/proc/self/io").exists(), reason="reads /proc/PID/io (Linux)")
@pytest.mark.slow  # 13-20 s in CI: out of the default run (under 5 minutes)
def test_renderer_killed_mid_run_is_a_clear_error(tmp_path: Path) -> None:
    """A rendering process killed while it writes frames (SIGKILL, what the kernel's OOM killer sends) gives a
    RenderersDiedError that blames the kill, not the calling script, the other renderers are stopped, and no
    dataset or temporary folder is left. (Python 3.10's ProcessPoolExecutor hung here.)"""
    # kill a renderer seen writing (frames: the parent already wrote the .pyc files), so it has surely started
    def writing_frames(child: multiprocessing.Process) -> bool:
        try:
            io = Path(f"/proc/{child.pid}/io").read_text()
        except OSError:  # it has exited already
            return False
        return int(re.search(r"^wchar: (\d+)$", io, re.M).group(1)) > 64 * 1024

    others = set(multiprocessing.active_children())  # e.g. torch.compile's worker pool from earlier tests
    with killing_a_child(writing_frames) as killed, pytest.raises(RenderersDiedError) as e:
        make_synthetic("mars", tmp_path / "data", num_ids=40, img_size=(64, 32), lengths=(120,), workers=2)
    assert killed and killed[0].exitcode == -signal.SIGKILL
    assert str(e.value).startswith("a process rendering the synthetic dataset died while drawing frames "
                                   "(workers=2, killed by signal 9): it was killed (out of memory?). Try again "
                                   "with fewer workers, or workers=0.")
    assert set(multiprocessing.active_children()) <= others  # the other renderer was stopped and reaped
    assert [p.name for p in (tmp_path / "data").iterdir()] == []


def test_mars_scale_identity_count(tmp_path: Path) -> None:
    """More identities than real MARS's 1..1500 (a MARS-scale benchmark needs ~4700) are numbered past 1500
    and read back by torchreid's parser; beyond what 4-digit file names hold is a clear error."""
    root = make_synthetic("mars", tmp_path, num_ids=1600, img_size=(8, 4), lengths=(1,))
    split = load_dataset("mars", root)
    test_pids = load_manifest("mars", root)["info"]["test_pids"]
    assert max(test_pids) > 1500
    assert {pid for _, pid, _ in split.query} == set(test_pids)
    with pytest.raises(ValueError, match=r"num_ids must be in \[4, 9999\] for mars"):
        make_synthetic("mars", tmp_path / "x", num_ids=10_000)
    with pytest.raises(ValueError, match="workers must be >= 0"):
        make_synthetic("mars", tmp_path / "x", workers=-1)


def test_identities_are_separable_but_not_trivial(synth: Path) -> None:
    """A colour-layout feature ranks the right identity first for most queries, and a query's own
    identity looks different in another camera (so the task is not pixel matching)."""
    split = load_dataset("mars", synth)

    def feat(paths: tuple[str, ...]) -> np.ndarray:
        x = np.stack([np.asarray(Image.open(p).convert("RGB"), np.float32) for p in paths]).mean(0)
        x = x.reshape(8, 8, 4, 8, 3).mean((1, 3)).ravel()
        return (x - x.mean()) / (x.std() + 1e-6)

    gal = split.query + split.gallery
    gf = np.stack([feat(p) for p, _, _ in gal])
    hits, cross_cam_diff = [], []
    for paths, pid, cam in split.query:
        q = feat(paths)
        d = ((gf - q) ** 2).sum(1)
        keep = [i for i, (_, g, c) in enumerate(gal) if not (g == pid and c == cam)]
        same = [i for i in keep if gal[i][1] == pid]
        if not same:  # no cross-camera match at all
            continue
        best = min(keep, key=lambda i: d[i])
        hits.append(gal[best][1] == pid)
        cross_cam_diff.append(min(d[i] for i in same))
    assert len(hits) >= 20 and np.mean(hits) >= 0.8
    assert min(cross_cam_diff) > 0  # never an exact copy across cameras
    img = np.asarray(Image.open(split.query[0][0][0]))
    assert img.shape == (64, 32, 3)


def test_refuses_to_overwrite_real_data_and_reuses_synthetic(tmp_path: Path) -> None:
    (tmp_path / "mars").mkdir()
    (tmp_path / "mars" / "precious.txt").write_text("x")
    with pytest.raises(FileExistsError):
        make_synthetic("mars", tmp_path)
    assert (tmp_path / "mars" / "precious.txt").exists()
    other = tmp_path / "o"
    make_synthetic("mars", other, num_ids=6)
    stamp = (other / "mars" / "synthetic_manifest.json").stat().st_mtime_ns
    make_synthetic("mars", other, num_ids=6)
    assert (other / "mars" / "synthetic_manifest.json").stat().st_mtime_ns == stamp
    make_synthetic("mars", other, num_ids=8)  # other parameters: rewritten
    assert load_manifest("mars", other)["params"]["num_ids"] == 8
    assert [p.name for p in other.iterdir()] == ["mars"]  # no temporary folder left behind


def test_demo_dataset_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SINET_TIMM_CACHE", str(tmp_path / "cache"))
    root = demo_dataset_root()
    assert root == tmp_path / "cache" / "synthetic-mars"
    split = load_dataset("mars", root)
    assert len(split.query) == len(load_manifest("mars", root)["splits"][0]["query"]) > 0
    assert demo_dataset_root() == root  # reused, not rewritten


@pytest.mark.slow  # 13-20 s in CI: out of the default run (under 5 minutes)
def test_cli_entry_point(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "sinet_cli.synthetic", "ilids-vid", str(tmp_path), "--num-ids", "6"]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, check=True, env=child_env()).stdout
    assert "query" in out and (tmp_path / "ilids-vid" / "synthetic_manifest.json").is_file()
    assert f"sinet-eval --dataset ilidsvid --root {tmp_path}" in out  # the hint it prints is a working command


def test_one_spec_per_benchmark() -> None:
    """Every fact of a benchmark is in its spec: names and aliases resolve to it, nothing is claimed twice."""
    names = [n for s in SPECS for n in (s.name, *s.aliases)]
    assert len(names) == len(set(names)) and VALID_DATASETS == tuple(s.name for s in SPECS)
    for spec in SPECS:
        for n in (spec.name, *spec.aliases, spec.name.upper()):
            assert get_spec(n) is spec
        assert spec.num_splits >= 1 and spec.layout.startswith(f"<root>/{spec.folder}/")
    assert [s.name for s in SPECS if s.add_query_to_gallery] == ["mars"]  # the released gallery rule
    assert {s.name: s.train_chunk for s in SPECS if s.train_chunk} == {"lsvid": 48, "dukev": 32}


def test_torchreid_flavor() -> None:
    import importlib.util

    pypi = importlib.util.find_spec("torchreid.reid") is not None
    assert torchreid_flavor() == ("pypi" if pypi else "upstream")
    assert torchreid_datasets()[0].__name__ == ("torchreid.reid.data.datasets" if pypi else "torchreid.data.datasets")
