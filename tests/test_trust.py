"""Numbers you can trust: the feature cache is verified, non-finite values stop the run, bad files and paths are one
line (exit 2) and lose nothing. Every file here is corrupted by the test itself."""
from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import timm
import torch
from conftest import child_env, interrupted_eval
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file as safetensors_load
from safetensors.torch import save_file
from timm.models import save_for_hf

import reid_eval
from reid_eval.cache import CacheWarning, tensor_sha256
from reid_eval.synthetic import make_synthetic
from sinet_cli import convert as convert_cmd
from sinet_cli import extract as extract_cmd
from sinet_cli import search as search_cmd
from sinet_cli import viz as viz_cmd
from sinet_cli.eval import main as eval_main
from sinet_timm.errors import CheckpointError, OutputWriteError
from sinet_timm.paths import replace_file

FAST = ['--mode', 'sampled', '--workers', '0', '--no-progress', '--device', 'cpu']


@pytest.fixture(scope='module')
def prid(tmp_path_factory) -> Path:
    return make_synthetic('prid2011', tmp_path_factory.mktemp('trust') / 'data', num_ids=12, lengths=(1, 2, 3))


def _evaluate(root: Path, cache: Path | None, **kw) -> reid_eval.EvalResult:
    """vreid_r50 (random weights) on 128x64 frames (4x faster than 256x128): 12 tracklets, 12 clips, 6 shards."""
    return reid_eval.evaluate('vreid_r50', 'prid2011', root, pretrained=False, seed=0, mode='sampled', workers=0,
                              progress=False, device='cpu', cache=cache is not None, cache_dir=cache,
                              shard_clips=kw.pop('shard_clips', 2), data_config={'input_size': (3, 128, 64)}, **kw)


@pytest.fixture(scope='module')
def baseline(prid) -> reid_eval.EvalResult:
    return _evaluate(prid, None)


def _shards(cache: Path) -> list[Path]:
    return sorted(cache.rglob('shard_*.safetensors'))


def _rewrite(path: Path, emb: torch.Tensor, **meta_changes: str) -> None:
    """Rewrite a shard with other values, keeping (or changing) its metadata: a damaged or forged shard."""
    with safe_open(str(path), framework='pt') as f:
        meta = dict(f.metadata())
    meta.update(meta_changes)
    save_file({'emb': emb}, str(path), metadata=meta)


CORRUPTIONS = {
    'random values': (lambda p, e: _rewrite(p, torch.randn_like(e)), 'do not match the checksum'),
    'all NaN (checksum forged)': (lambda p, e: _rewrite(p, torch.full_like(e, float('nan')),
                                                        sha256=tensor_sha256(torch.full_like(e, float('nan')))),
                                  'NaN or Inf'),
    'flipped bytes': (lambda p, e: p.write_bytes(p.read_bytes()[:-40] + bytes(b ^ 0xFF for b in p.read_bytes()[-40:])),
                      'do not match the checksum'),
    'truncated': (lambda p, e: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]), 'not a readable safetensors'),
    'zero bytes': (lambda p, e: p.write_bytes(b''), 'not a readable safetensors'),
    'foreign file': (lambda p, e: save_file({'emb': e}, str(p)), 'written for another extraction'),
}


def test_damaged_shards_are_recomputed_with_one_warning_each(prid, baseline, tmp_path):
    """Each shard damaged another way (overwritten values: mAP 20.1 before; NaN: 66.1; flipped bytes, truncated,
    empty, foreign): each is named in one warning and recomputed, the numbers are right, the rest is reused."""
    cache = tmp_path / 'cache'
    first = _evaluate(prid, cache)
    assert first.metrics == baseline.metrics and first.per_split[0].cache['computed_shards'] == len(CORRUPTIONS)
    shards = _shards(cache)
    for path, (damage, _) in zip(shards, CORRUPTIONS.values(), strict=True):
        with safe_open(str(path), framework='pt') as f:
            emb = f.get_tensor('emb')
        damage(path, emb)
    with pytest.warns(CacheWarning) as caught:
        again = _evaluate(prid, cache)
    messages = [str(w.message) for w in caught if issubclass(w.category, CacheWarning)]
    assert len(messages) == len(CORRUPTIONS)
    for msg, path, (_, reason) in zip(messages, shards, CORRUPTIONS.values(), strict=True):
        assert msg.startswith(f'cached feature shard {path} is unusable (') and reason in msg, msg
        assert msg.endswith('recomputing it')
    assert again.metrics == baseline.metrics  # the right numbers, never the damaged ones
    assert again.per_split[0].cache['computed_shards'] == len(CORRUPTIONS)
    assert _evaluate(prid, cache).per_split[0].cache['reused_shards'] == len(CORRUPTIONS)  # repaired


def test_the_command_prints_the_warning_as_one_line(prid, baseline, tmp_path, capsys):
    args = ['--model', 'vreid_r50', '--no-pretrained', '--dataset', 'prid2011', '--root', str(prid), *FAST,
            '--cache-dir', str(tmp_path / 'c'), '--shard-clips', '6', '--output', str(tmp_path / 'r.json')]
    assert eval_main(args) == 0
    metrics = json.loads((tmp_path / 'r.json').read_text())['metrics']
    _shards(tmp_path / 'c')[0].write_bytes(b'')
    capsys.readouterr()
    assert eval_main([*args, '--overwrite']) == 0
    err = capsys.readouterr().err
    warning = [line for line in err.splitlines() if line.startswith('warning:')]
    assert len(warning) == 1 and 'shard_00000.safetensors is unusable' in warning[0] and 'Traceback' not in err
    assert err.count('\n') == 1
    assert json.loads((tmp_path / 'r.json').read_text())['metrics'] == metrics


def test_a_cache_of_another_shard_size_is_never_used(prid, baseline, tmp_path):
    """A partial or full cache written with another --shard-clips gave 70.8 instead of 83.3, or a traceback."""
    cache = tmp_path / 'cache'
    _evaluate(prid, cache, shard_clips=4)
    _shards(cache)[-1].unlink()  # a partial cache
    for size in (3, 100):
        res = _evaluate(prid, cache, shard_clips=size)
        assert res.metrics == baseline.metrics and res.per_split[0].cache['reused_shards'] == 0


def test_frames_replaced_in_place_invalidate_exactly_their_shards(prid, tmp_path):
    root = tmp_path / 'data'
    shutil.copytree(prid, root)
    cache = tmp_path / 'cache'
    before = _evaluate(root, cache)
    frame = Path(reid_eval.load_dataset('prid2011', root).gallery[-1][0][0])
    with Image.open(frame) as img:
        Image.new('RGB', img.size, (250, 20, 200)).save(frame)  # same name, other content
    with pytest.warns(CacheWarning, match='frame files changed'):
        after = _evaluate(root, cache)
    assert after.per_split[0].cache['computed_shards'] == 1 and after.per_split[0].cache['reused_shards'] == 5
    fresh = _evaluate(root, None)
    assert after.metrics == fresh.metrics
    torch.testing.assert_close(after.gallery.features, fresh.gallery.features, rtol=0, atol=0)
    assert not torch.equal(after.gallery.features[-1], before.gallery.features[-1])  # the stale one was not used


def test_an_unwritable_cache_is_one_line(prid, tmp_path, capsys):
    if os.geteuid() == 0:  # root writes through permission bits: use a folder the kernel refuses
        cache = Path('/sys/sinet-timm-cache')
    else:
        (tmp_path / 'ro').mkdir(mode=0o500)
        cache = tmp_path / 'ro' / 'cache'
    args = ['--model', 'vreid_r50', '--no-pretrained', '--dataset', 'prid2011', '--root', str(prid), *FAST,
            '--cache-dir', str(cache), '--output', str(tmp_path / 'r.json')]
    assert eval_main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith('error: cannot write the feature cache') and err.count('\n') == 1
    assert '--no-cache' in err and '--cache-dir' in err and not (tmp_path / 'r.json').exists()


@pytest.mark.parametrize('value', ['0', '-3'])
def test_shard_clips_must_be_positive(tmp_path, capsys, value):
    assert eval_main(['--shard-clips', value, '--output', str(tmp_path / 'r.json')]) == 2
    assert capsys.readouterr().err == f'error: --shard-clips must be a positive number of clips, got {value}\n'


# ---------------------------------------------------------------------------------------------------------
# non-finite values


def test_a_nan_weight_stops_the_run_naming_the_tracklets(prid, tmp_path, capsys):
    torch.manual_seed(0)
    m = timm.create_model('vreid_r50')
    with torch.no_grad():
        m.layer4[0].conv2.weight[0, 0, 0, 0] = float('nan')
    save_for_hf(m, str(tmp_path / 'nan'), safe_serialization=True)
    args = ['--model', f'local-dir:{tmp_path / "nan"}', '--dataset', 'prid2011', '--root', str(prid), *FAST,
            '--no-cache', '--output', str(tmp_path / 'r.json')]
    assert eval_main(args) == 2
    err = capsys.readouterr().err
    error = [line for line in err.splitlines() if line.startswith('error:')]
    assert len(error) == 1 and 'non-finite (NaN or Inf) embeddings for 12 tracklet(s): prid_2011/multi_shot' in error[0]
    assert 'weights themselves hold non-finite values (1 tensors, e.g. layer4.0.conv2.weight)' in error[0]
    assert 'warning: the weights of local-dir' in err  # said once at load, too
    assert not (tmp_path / 'r.json').exists()


def test_non_finite_feature_files_are_refused(prid, tmp_path, capsys):
    from reid_eval.featurefile import save_features

    feats = torch.randn(3, 8)
    feats[1, 2] = float('inf')
    bad = save_features(tmp_path / 'bad.safetensors', feats, ['a', 'b', 'c'], model='m', weights_sha256='0' * 64)
    good = save_features(tmp_path / 'good.safetensors', torch.randn(2, 8), ['x', 'y'], model='m',
                         weights_sha256='0' * 64)
    assert search_cmd.main(['-q', str(bad), '-g', str(good)]) == 2
    assert 'holds NaN or Inf embeddings for 1 tracklet(s) (b)' in capsys.readouterr().err
    # a sinet-eval run whose saved features were damaged afterwards
    run = tmp_path / 'run.json'
    assert eval_main(['--model', 'vreid_r50', '--no-pretrained', '--dataset', 'prid2011', '--root', str(prid), *FAST,
                      '--no-cache', '--save-features', '--output', str(run)]) == 0
    f = run.with_name('run.features.safetensors')
    with safe_open(str(f), framework='pt') as fh:
        tensors = {k: fh.get_tensor(k) for k in fh.keys()}
        meta = fh.metadata()
    tensors['gallery_features'][0] = float('nan')
    save_file(tensors, str(f), metadata=meta)
    capsys.readouterr()
    assert viz_cmd.main(['ranks', str(run), '--output', str(tmp_path / 'r.png')]) == 2
    assert 'gallery_features holds NaN or Inf values' in capsys.readouterr().err


def test_integer_weights_are_refused(tmp_path, capsys):
    m = timm.create_model('vreid_r50')
    sd = {k: v.to(torch.int32) if v.is_floating_point() else v for k, v in m.state_dict().items()}
    save_file(sd, str(tmp_path / 'int.safetensors'))
    with pytest.raises(CheckpointError, match=r'int.safetensors.*holds torch.int32 values where the model has '
                                              r'floating-point weights'):
        timm.create_model('vreid_r50', pretrained=True,
                          pretrained_cfg_overlay=dict(file=str(tmp_path / 'int.safetensors')))
    assert eval_main(['--checkpoint', str(tmp_path / 'int.safetensors'), '--dataset', 'synthetic',
                      '--output', str(tmp_path / 'r.json')]) == 2
    assert 'torch.int32 values where the model has floating-point weights' in capsys.readouterr().err


@pytest.mark.parametrize('arch, kwargs', [('vkd_r34', {}), ('tfclip_vit_b16', dict(depth=1))])
def test_integer_weights_are_refused_by_every_family(arch, kwargs, tmp_path):
    """The check is every family's (one helper, sinet_timm/_checkpoint.py): a file of whole numbers is refused."""
    m = timm.create_model(arch, **kwargs)
    sd = {k: v.to(torch.int64) if v.is_floating_point() else v for k, v in m.state_dict().items()}
    save_file(sd, str(tmp_path / 'int.safetensors'))
    with pytest.raises(CheckpointError, match=r'holds torch.int64 values where the model has floating-point'):
        timm.create_model(arch, pretrained=True, pretrained_cfg_overlay=dict(file=str(tmp_path / 'int.safetensors')),
                          **kwargs)


# ---------------------------------------------------------------------------------------------------------
# bad input: one line, exit 2, nothing lost


def test_bad_models_and_checkpoints_are_one_line(tmp_path, capsys):
    (tmp_path / 'junk').mkdir()
    (tmp_path / 'junk' / 'config.json').write_text('{not json')
    (tmp_path / 'notes.pth.tar').write_text('this is a text file, not weights\n')
    cases = [
        (['--model', f'local-dir:{tmp_path / "missing"}'], f'{tmp_path / "missing"} is not a folder'),
        (['--model', f'local-dir:{tmp_path / "junk"}'], f'{tmp_path / "junk" / "config.json"} is not a readable JSON'),
        (['--checkpoint', str(tmp_path / 'notes.pth.tar')], 'is not a PyTorch checkpoint that can be read safely'),
    ]
    for args, message in cases:
        assert eval_main([*args, '--dataset', 'synthetic', '--output', str(tmp_path / 'r.json')]) == 2
        err = capsys.readouterr().err
        assert err.count('\n') == 1 and err.startswith('error: ') and message in err, err
        assert 'weights_only=False' not in err and 'Traceback' not in err


def _hub_folder(folder: Path, model: torch.nn.Module, **config_changes) -> Path:
    """A Hub-ready folder (timm's save_for_hf) with config.json fields changed."""
    save_for_hf(model, str(folder), safe_serialization=True)
    cfg = json.loads((folder / 'config.json').read_text())
    (folder / 'config.json').write_text(json.dumps({**cfg, **config_changes}))
    return folder


def test_local_dir_loads_are_strict(tmp_path, capsys):
    """A local-dir: folder loads all or nothing, as --checkpoint does: a missing tensor, a config.json naming
    another architecture, a truncated or missing model.safetensors, a folder holding only a pickle: one line,
    exit 2, never metrics of random tensors."""
    torch.manual_seed(0)
    trained = timm.create_model('vreid_r50', num_classes=10)  # a classifier: timm then loads num_classes=0 loosely
    missing = _hub_folder(tmp_path / 'missing', trained)
    state = dict(safetensors_load(str(missing / 'model.safetensors')))
    save_file({k: v for k, v in state.items() if k != 'bn1.bias'}, str(missing / 'model.safetensors'))
    other = _hub_folder(tmp_path / 'other', trained, architecture='sinet_r50')
    truncated = _hub_folder(tmp_path / 'truncated', trained)
    data = (truncated / 'model.safetensors').read_bytes()
    (truncated / 'model.safetensors').write_bytes(data[:len(data) // 2])
    absent = _hub_folder(tmp_path / 'absent', trained)
    (absent / 'model.safetensors').unlink()
    pickled = _hub_folder(tmp_path / 'pickled', trained)
    (pickled / 'model.safetensors').unlink()
    torch.save(state, pickled / 'pytorch_model.bin')
    cases = [(missing, 'does not fit vreid_r50: 1 tensor(s) missing (bn1.bias)'),
             (other, '(config.json names sinet_r50) does not fit sinet_r50: 132 tensor(s) missing (layer2.2.reduce.'),
             (truncated, f'{truncated / "model.safetensors"} is truncated or not a safetensors file'),
             (absent, f'{absent / "model.safetensors"} is missing'),
             (pickled, 'only pytorch_model.bin: a pickle, which is not loaded (unpickling can run code). Convert it '
                       f'once: `sinet-convert {pickled / "pytorch_model.bin"} NEW_FOLDER`')]
    for folder, message in cases:
        assert eval_main(['--model', f'local-dir:{folder}', '--dataset', 'synthetic',
                          '--output', str(tmp_path / 'r.json')]) == 2
        out, err = capsys.readouterr()
        assert err.count('\n') == 1 and err.startswith('error: ') and message in err, err
        assert 'mAP' not in out and not (tmp_path / 'r.json').exists()
        assert folder != other or 'The weights look like vreid_r50' in err
    with pytest.raises(CheckpointError, match=re.escape(cases[0][1])):  # timm.create_model itself (our builder)
        timm.create_model(f'local-dir:{missing}', pretrained=True, num_classes=0)


def test_local_dir_of_an_image_model_is_strict_too(tmp_path):
    """A timm image model's folder whose config.json names another architecture (resnet18 weights, resnet34 in
    config.json): timm would fill the layers resnet18 lacks with random tensors."""
    folder = _hub_folder(tmp_path / 'r18', timm.create_model('resnet18', num_classes=10), architecture='resnet34')
    with pytest.raises(CheckpointError, match=r'config.json names resnet34\) does not fit resnet34: \d+ tensor\(s\) '
                                              r'missing \(layer1.2.conv1.weight'):
        reid_eval.load_model(f'local-dir:{folder}')


def test_outputs_that_are_folders_or_lie_under_files(tmp_path, capsys):
    (tmp_path / 'a_file').write_text('mine')
    src = tmp_path / 'ckpt.pth.tar'
    torch.save({'state_dict': timm.create_model('vreid_r50').state_dict()}, src)
    for out in (tmp_path / 'a_file', tmp_path / 'a_file' / 'sub'):
        assert convert_cmd.main([str(src), str(out)]) == 2
        err = capsys.readouterr().err
        assert err.count('\n') == 1 and ('is a file' in err or 'which is a file' in err), err
    assert (tmp_path / 'a_file').read_text() == 'mine'
    # sinet-extract --output naming a folder: said before anything is computed, the folder untouched
    frames = tmp_path / 'tracks' / 'alice'
    frames.mkdir(parents=True)
    Image.new('RGB', (32, 64), (10, 200, 30)).save(frames / '1.png')
    (tmp_path / 'outdir').mkdir()
    (tmp_path / 'outdir' / 'keep.txt').write_text('mine')
    t0 = time.perf_counter()
    assert extract_cmd.main([str(tmp_path / 'tracks'), '--output', str(tmp_path / 'outdir'), '--overwrite',
                             '--model', 'vreid_r50', '--no-pretrained', '--workers', '0', '--no-progress']) == 2
    err = capsys.readouterr().err
    assert 'is a folder; give a file name' in err and err.count('\n') == 1
    assert os.listdir(tmp_path / 'outdir') == ['keep.txt'] and time.perf_counter() - t0 < 30


@contextlib.contextmanager
def _file_size_limit(limit: int):
    """Files of this process may not grow past ``limit`` bytes (EFBIG, as on a full disk; Python ignores SIGXFSZ);
    the limit is lifted on leaving."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


def test_failed_writes_keep_what_was_there(tmp_path):
    """Outputs are written beside and renamed: a failed write is one OutputWriteError naming the file and leaves
    an existing file whole, no partial file behind; a folder is never replaced; a device is written directly."""
    mine = tmp_path / 'r.json'
    mine.write_text('mine')

    def half_then_full(tmp: Path) -> None:
        tmp.write_text('{"half": ')
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with pytest.raises(OutputWriteError, match=f'could not write {mine}: No space left on device'):
        replace_file(mine, half_then_full)
    assert mine.read_text() == 'mine' and os.listdir(tmp_path) == ['r.json']
    (tmp_path / 'folder').mkdir()
    (tmp_path / 'folder' / 'keep.txt').write_text('mine')
    with pytest.raises(OutputWriteError, match='it is a folder'):
        replace_file(tmp_path / 'folder', lambda tmp: tmp.write_text('{}'))
    assert os.listdir(tmp_path / 'folder') == ['keep.txt']
    with pytest.raises(OutputWriteError, match='could not write /dev/full: No space left on device'):
        replace_file('/dev/full', lambda tmp: tmp.write_text('{}'))


def test_results_that_cannot_be_written_are_one_line_after_the_metrics(tmp_path, capsys):
    """sinet-eval on a full disk (stand-in: a file size limit) prints the metrics, then one line saying what could
    not be written (exit 2); --overwrite never replaces a folder, and is refused before the run."""
    tiny = make_synthetic('prid2011', tmp_path / 'data', num_ids=4, lengths=(1, 2))  # 16 frames
    tmp_path = tmp_path / 'out'
    tmp_path.mkdir()
    out = tmp_path / 'r.json'
    out.write_text('mine')
    args = ['--model', 'vreid_r50', '--no-pretrained', '--dataset', 'prid2011', '--root', str(tiny), *FAST,
            '--no-cache', '--save-features', '--output', str(out), '--overwrite']
    with _file_size_limit(4096):
        code = eval_main(args)
    captured = capsys.readouterr()
    assert code == 2 and 'ours' in captured.out and 'mAP' in captured.out, captured
    features = tmp_path / 'r.features.safetensors'
    assert captured.err == (f'error: could not write {features}: File too large; the metrics above are not saved in '
                            f'{out}\n'), captured.err
    assert out.read_text() == 'mine' and sorted(os.listdir(tmp_path)) == ['r.json']
    (tmp_path / 'runs').mkdir()
    (tmp_path / 'runs' / 'notes.txt').write_text('mine')
    assert eval_main([*args[:-2], str(tmp_path / 'runs'), '--overwrite']) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith(f'error: --output {tmp_path / "runs"} is a folder') and 'mAP' not in captured.out
    assert os.listdir(tmp_path / 'runs') == ['notes.txt']


def test_paths_with_bytes_that_are_not_utf8(prid, tmp_path, capsys):
    """Input paths with such bytes work (the root is stored exactly, metadata shows escapes); output paths
    safetensors cannot write are one line."""
    root = Path(os.fsdecode(bytes(tmp_path) + b'/d\xffata'))
    shutil.copytree(prid, root)
    run = tmp_path / 'run.json'
    assert eval_main(['--model', 'vreid_r50', '--no-pretrained', '--dataset', 'prid2011', '--root', str(root), *FAST,
                      '--no-cache', '--save-features', '--output', str(run)]) == 0
    assert json.loads(run.read_text())['root'] == str(root)
    assert viz_cmd.main(['ranks', str(run), '--output', str(tmp_path / 'ranks.png')]) == 0
    bad_out = Path(os.fsdecode(bytes(tmp_path) + b'/f\xff.safetensors'))
    assert extract_cmd.main([str(root / 'prid2011/prid_2011/multi_shot/cam_a'), '--output', str(bad_out),
                             '--model', 'vreid_r50', '--no-pretrained', '--workers', '0', '--no-progress']) == 2
    assert 'holds bytes that are not UTF-8' in capsys.readouterr().err
    bad_cache = Path(os.fsdecode(bytes(tmp_path) + b'/c\xffache'))
    assert eval_main(['--model', 'vreid_r50', '--no-pretrained', '--dataset', 'prid2011', '--root', str(prid), *FAST,
                      '--cache-dir', str(bad_cache), '--output', str(tmp_path / 'r2.json')]) == 2
    err = capsys.readouterr().err
    assert 'are not UTF-8' in err and err.count('\n') == 1


def test_viz_reads_only_results_json(prid, tmp_path, capsys):
    (tmp_path / 'picture.png').write_bytes(b'\x89PNG\r\n\x1a\n\x00\x00 binary')
    (tmp_path / 'list.json').write_text('[1, 2, 3]')
    for f in ('picture.png', 'list.json'):
        assert viz_cmd.main(['cmc', str(tmp_path / f)]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f'error: {tmp_path / f} is not a sinet-eval results JSON') and err.count('\n') == 1


def test_viz_ranks_from_another_folder(prid, tmp_path, monkeypatch):
    """The run stores an absolute dataset root: sinet-viz ranks works from anywhere."""
    monkeypatch.chdir(prid.parent)
    run = tmp_path / 'run.json'
    assert eval_main(['--model', 'vreid_r50', '--no-pretrained', '--dataset', 'prid2011', '--root', prid.name, *FAST,
                      '--no-cache', '--save-features', '--output', str(run)]) == 0
    monkeypatch.chdir(tmp_path)
    assert viz_cmd.main(['ranks', str(run), '--output', 'ranks.png']) == 0 and (tmp_path / 'ranks.png').is_file()


@pytest.mark.slow  # 13-20 s in CI: out of the default run (under 5 minutes)
def test_a_malformed_zoo_file_leaves_the_others_usable(tmp_path):
    zoo = tmp_path / 'zoo'
    shutil.copytree(Path(__file__).resolve().parents[1] / 'hub_configs', zoo)
    (zoo / 'sinet_r50.broken.yaml').write_text('name: sinet_r50.broken\narchitecture: [unclosed\n')
    code = textwrap.dedent("""
        import timm, sinet_timm
        print('ZOO', sorted(n for n in timm.list_pretrained('sinet_r50*')))
    """)
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=120,
                       env=child_env(SINET_TIMM_ZOO_DIR=str(zoo)))
    assert r.returncode == 0, r.stderr
    assert "ZOO ['sinet_r50.lsvid', 'sinet_r50.mars', 'sinet_r50.tv_in1k']" in r.stdout
    assert 'sinet_r50.broken.yaml: not valid YAML' in r.stderr and 'left out of the zoo' in r.stderr
    # a command says it in one line (its warning printer is in place before the library is imported)
    r = subprocess.run([sys.executable, '-c', 'import sys; from sinet_cli.hub import main; sys.exit(main())', 'list'],
                       capture_output=True, text=True, timeout=120, env=child_env(SINET_TIMM_ZOO_DIR=str(zoo)))
    assert r.returncode == 0 and r.stderr.splitlines() == [
        f'warning: {zoo / "sinet_r50.broken.yaml"}: not valid YAML (line 3, column 1: expected \',\' or \']\', but got '
        "'<stream end>'); this entry is left out of the zoo"], r.stderr


def test_a_zoo_dir_that_does_not_exist_leaves_the_commands_working(tmp_path):
    """SINET_TIMM_ZOO_DIR naming no folder: the import works (an empty zoo, one warning line); asking for a zoo
    entry is then one line saying why it is missing, exit 2."""
    code = 'import sys; from sinet_cli.eval import main; sys.exit(main(sys.argv[1:]))'
    r = subprocess.run([sys.executable, '-c', code, '--model', 'sinet_r50.mars', '--dataset', 'synthetic',
                        '--output', str(tmp_path / 'r.json')], capture_output=True, text=True, timeout=120,
                       env=child_env(SINET_TIMM_ZOO_DIR=str(tmp_path / 'nowhere')))
    lines = r.stderr.splitlines()
    assert r.returncode == 2 and len(lines) == 2 and 'Traceback' not in r.stderr, r.stderr
    problem = f'SINET_TIMM_ZOO_DIR={tmp_path / "nowhere"} is not a folder: the zoo is empty'
    assert lines[0].startswith(f'warning: {problem}')
    assert lines[1].startswith('error: sinet_r50.mars: Invalid pretrained tag') and problem in lines[1]


def test_ctrl_c_is_one_line(prid, tmp_path):
    """Ctrl-C (SIGINT to the whole process group, as a terminal sends it) during extraction: one line saying what
    a rerun resumes, exit status 130, no traceback from the command or its decoding worker."""
    _, r = interrupted_eval(prid, tmp_path)
    err = r.stderr
    assert r.returncode == 130, err[-2000:]
    assert err.strip().splitlines() == ['interrupted: finished feature shards are kept in the cache; a rerun of the '
                                        'same command resumes from them']
    assert not (tmp_path / 'r.json').exists()
