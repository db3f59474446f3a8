"""The cases of the adversarial battery (issue 28) on the feature side: what computes the features keys their
cache, shards are checked for dtype and width, module outputs of the wrong form, weights on the meta device,
half / bfloat16 models, options of the wrong type, frames rewritten with their mtime set back, and a cache that
cannot be written. Each test failed before its fix."""
from __future__ import annotations

import io
import os
import resource
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from conftest import child_env
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save_file

import reid_eval
from reid_eval import extraction
from reid_eval.cache import CacheWarning, tensor_sha256
from reid_eval.errors import CacheError, EvalError, ModelOutputError, WorkersStuckError
from reid_eval.synthetic import make_synthetic

SMALL = {'input_size': (3, 64, 32)}


@pytest.fixture(scope='module')
def prid(tmp_path_factory) -> Path:
    return make_synthetic('prid2011', tmp_path_factory.mktemp('battery') / 'data', num_ids=12, lengths=(1, 2, 3))


class ColourPool(nn.Module):
    """Embeds a clip by pooling its pixels per channel and a linear map: cheap, and sensitive to the pool."""

    def __init__(self, global_pool: str = 'avg', dim: int = 16):
        super().__init__()
        self.global_pool = global_pool
        torch.manual_seed(0)
        self.proj = nn.Linear(3 * 8 * 4, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t = x.shape[:2]
        f = x.flatten(0, 1)
        f = nn.functional.adaptive_avg_pool2d(f, (8, 4)) if self.global_pool == 'avg' else \
            nn.functional.adaptive_max_pool2d(f, (8, 4))
        return self.proj(f.flatten(1)).unflatten(0, (b, t)).mean(1)


def _eval(model, root: Path, cache: Path | None, **kw) -> reid_eval.EvalResult:
    return reid_eval.evaluate(model, 'prid2011', root, mode='sampled', workers=0, progress=False, device='cpu',
                              cache=cache is not None, cache_dir=cache, shard_clips=kw.pop('shard_clips', 4),
                              data_config=SMALL, **kw)


def test_the_cache_key_covers_what_computes_the_features(prid, tmp_path):
    """Same weights, global pool 'avg' then 'max': before, the second run reused the first one's features."""
    cache = tmp_path / 'cache'
    avg = _eval(ColourPool('avg'), prid, cache)
    mx = _eval(ColourPool('max'), prid, cache)
    assert mx.per_split[0].cache['reused_shards'] == 0
    fresh = _eval(ColourPool('max'), prid, None)
    torch.testing.assert_close(mx.gallery.features, fresh.gallery.features, rtol=0, atol=0)
    assert not torch.equal(mx.gallery.features, avg.gallery.features)
    again = _eval(ColourPool('max'), prid, cache)  # the same computation is still reused
    assert again.per_split[0].cache['computed_shards'] == 0 and again.metrics == mx.metrics


def test_an_explicit_cache_key_names_the_computation(prid, tmp_path):
    cache = tmp_path / 'cache'
    a, b = ColourPool('avg'), ColourPool('avg')
    a.cache_key, b.cache_key = 'colour-avg-v1', 'colour-avg-v2'
    _eval(a, prid, cache)
    assert _eval(b, prid, cache).per_split[0].cache['reused_shards'] == 0
    assert _eval(a, prid, cache).per_split[0].cache['computed_shards'] == 0


class Opaque:
    """An object whose repr says nothing of what it computes."""


def test_what_cannot_be_identified_is_not_cached(prid, tmp_path):
    model = ColourPool('avg')
    model.helper = Opaque()
    with pytest.warns(CacheWarning, match=r'not cached .*helper is a Opaque.*cache_key'):
        res = _eval(model, prid, tmp_path / 'cache')
    assert res.per_split[0].cache['folder'] is None and not list((tmp_path / 'cache').rglob('*.safetensors'))
    torch.testing.assert_close(res.gallery.features, _eval(ColourPool('avg'), prid, None).gallery.features)


def _forge(path: Path, emb: torch.Tensor) -> None:
    """Rewrite a shard with ``emb`` and its metadata kept, the checksum forged to match."""
    with safe_open(str(path), framework='pt') as f:
        meta = dict(f.metadata())
    save_file({'emb': emb}, str(path), metadata=dict(meta, sha256=tensor_sha256(emb)))


@pytest.mark.parametrize('forgery', ['int32', 'float64', 'wider', 'narrower'])
def test_shards_of_another_dtype_or_width_are_recomputed(prid, tmp_path, forgery):
    cache = tmp_path / 'cache'
    first = _eval(ColourPool(), prid, cache)
    shard = sorted(cache.rglob('shard_*.safetensors'))[1]
    with safe_open(str(shard), framework='pt') as f:
        emb = f.get_tensor('emb')
    _forge(shard, {'int32': lambda: (emb * 100).to(torch.int32), 'float64': lambda: emb.double(),
                   'wider': lambda: torch.randn(emb.shape[0], 64),
                   'narrower': lambda: emb[:, :4].contiguous()}[forgery]())
    with pytest.warns(CacheWarning, match='float32|width'):
        res = _eval(ColourPool(), prid, cache)
    assert res.metrics == first.metrics
    torch.testing.assert_close(res.gallery.features, first.gallery.features, rtol=0, atol=0)


def test_every_shard_forged_to_one_wrong_width_still_cannot_mix_with_computed_ones(prid, tmp_path):
    cache = tmp_path / 'cache'
    first = _eval(ColourPool(), prid, cache)
    shards = sorted(cache.rglob('shard_*.safetensors'))
    for s in shards[:-1]:
        with safe_open(str(s), framework='pt') as f:
            emb = f.get_tensor('emb')
        _forge(s, torch.cat([emb, emb], 1))
    shards[-1].unlink()  # this one is computed: its width is the model's
    with pytest.warns(CacheWarning, match='another width than the model gives'):
        res = _eval(ColourPool(), prid, cache)
    assert res.metrics == first.metrics


class Returns(nn.Module):
    """A model whose output has the form under test."""

    def __init__(self, form: str):
        super().__init__()
        self.form, self.calls = form, 0
        self.proj = nn.Linear(3, 8)

    def forward(self, x: torch.Tensor):
        e = self.proj(x.mean((1, 3, 4)))
        b, self.calls = e.shape[0], self.calls + 1
        return {
            'trailing singleton': lambda: e.unsqueeze(-1), 'tuple': lambda: (e, e), 'list': lambda: [e],
            'dict': lambda: {'emb': e}, 'maps': lambda: e[:, :, None, None].expand(b, 8, 2, 2),
            'changing width': lambda: e if self.calls == 1 else e[:, :4], 'one per clip': lambda: e[:, 0],
            'one row short': lambda: e[1:], 'twice the rows': lambda: torch.cat([e, e]), 'scalar': lambda: e.sum(),
            'zero width': lambda: e[:, :0], 'integers': lambda: (e * 100).long(),
        }[self.form]()


@pytest.mark.parametrize('form, said', [
    ('trailing singleton', r'shape \(2, 8, 1\)'), ('tuple', 'returned a tuple of 2'), ('list', 'a list of 1'),
    ('dict', 'a dict of 1'), ('maps', r'shape \(2, 8, 2, 2\)'), ('changing width', '4-wide embeddings after 8-wide'),
    ('one per clip', r'shape \(2,\)'), ('one row short', r'shape \(1, 8\)'), ('twice the rows', r'shape \(4, 8\)'),
    ('scalar', r'shape \(\)'), ('zero width', r'zero-width embeddings \(2, 0\)'), ('integers', 'torch.int64'),
])
def test_outputs_of_the_wrong_form_name_the_module_and_the_shapes(prid, form, said):
    with pytest.raises(ModelOutputError, match=rf'Returns (returned )?.*{said}.*expected a \(2, D\)'):
        _eval(Returns(form), prid, None, batch_clips=2)


def test_weights_on_the_meta_device_are_one_error(prid):
    with torch.device('meta'):
        model = ColourPool()
    with pytest.raises(ModelOutputError, match='meta device.*to_empty'):
        _eval(model, prid, None)


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_half_and_bfloat16_models_get_their_input_in_their_dtype(prid, dtype):
    ref = _eval(ColourPool(), prid, None)
    res = _eval(ColourPool().to(dtype), prid, None)
    cos = nn.functional.cosine_similarity(res.gallery.features, ref.gallery.features)
    assert res.gallery.features.dtype == torch.float32 and bool(cos.min() > 0.999)


@pytest.mark.parametrize('option, said', [
    (dict(rerank=reid_eval.RerankOptions(lambda_value='0.3')), "--rerank-lambda must be in .*'0.3'"),
    (dict(rerank=reid_eval.RerankOptions(k1=True)), '--rerank-k1 must be a positive integer, got True'),
    (dict(shard_clips='4'), "--shard-clips must be a positive number of clips, got '4' .an integer."),
    (dict(batch_clips=2.5), '--batch-clips must be a positive number of clips, got 2.5'),
    (dict(workers=None), '--workers must be >= 0'),
    (dict(rank_chunk=True), '--rank-chunk must be a positive number of queries, got True'),
    (dict(data_config={'input_size': (3, 0, 0)}), r'input_size=\(3, 0, 0\) cannot work: expected \(3, H, W\)'),
    (dict(data_config={'input_size': (1, 64, 32)}), r'input_size=\(1, 64, 32\)'),
    (dict(data_config={'mean': 'abc'}), "mean=.*'a'.* cannot work: expected three finite numbers"),
    (dict(data_config={'std': (0.2, 0.0, 0.2)}), 'std=.* expected three positive numbers'),
    (dict(data_config={'interpolation': 'nope'}), "interpolation='nope' cannot work: expected one of nearest"),
    (dict(data_config={'crop_pct': -1}), 'crop_pct=-1'),
])
def test_options_of_the_wrong_type_or_value_are_named(prid, option, said):
    with pytest.raises(EvalError, match=said):
        reid_eval.evaluate(ColourPool(), 'prid2011', prid, mode='sampled', device='cpu', progress=False, cache=False,
                           **{'workers': 0, **option})


def test_a_frame_rewritten_with_its_mtime_set_back_is_noticed(prid, tmp_path):
    root = tmp_path / 'data'
    shutil.copytree(prid, root)
    cache = tmp_path / 'cache'
    _eval(ColourPool(), root, cache)
    frame = Path(reid_eval.load_dataset('prid2011', root).gallery[-1][0][0])
    st, before = frame.stat(), frame.read_bytes()
    with Image.open(frame) as img:
        fmt, size = img.format, img.size
    buf = io.BytesIO()
    Image.new('RGB', size, (250, 20, 200)).save(buf, format=fmt)  # a flat image: smaller than the original
    assert buf.tell() <= len(before)
    frame.write_bytes(buf.getvalue().ljust(len(before), b'\0'))  # the same size: decoders ignore the tail
    os.utime(frame, ns=(st.st_atime_ns, st.st_mtime_ns))  # touch -r: the mtime as before
    assert frame.stat().st_mtime_ns == st.st_mtime_ns and frame.stat().st_size == st.st_size
    with pytest.warns(CacheWarning, match='frame files changed'):
        after = _eval(ColourPool(), root, cache)
    torch.testing.assert_close(after.gallery.features, _eval(ColourPool(), root, None).gallery.features, rtol=0,
                               atol=0)


@pytest.mark.slow  # a child process: about 10 s
def test_a_file_size_limit_on_the_cache_is_one_line(prid, tmp_path):
    """``ulimit -f``: safetensors' write error is not an OSError; it was a traceback."""
    cache = tmp_path / 'cache'
    code = f'''
        import sys
        from sinet_cli.eval import main
        sys.exit(main(['--model', 'vreid_r50', '--no-pretrained', '--dataset', 'prid2011', '--root', {str(prid)!r},
                       '--mode', 'sampled', '--workers', '0', '--no-progress', '--device', 'cpu',
                       '--cache-dir', {str(cache)!r}, '--shard-clips', '1', '--output',
                       {str(tmp_path / 'r.json')!r}]))'''

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (8192, 8192))
    out = subprocess.run([sys.executable, '-c', textwrap.dedent(code)], capture_output=True, text=True, timeout=240,
                         env=child_env(), preexec_fn=limit)
    assert out.returncode == 2, out.stderr[-2000:]
    lines = [ln for ln in out.stderr.splitlines() if ln.strip()]
    assert lines[-1].startswith('error: cannot write the feature cache') and 'Traceback' not in out.stderr
    assert not list(cache.rglob('*.tmp'))


def test_a_cache_whose_clean_up_fails_too_is_one_line(prid, tmp_path):
    """Half the shards cached, and the rest can neither be written nor their temporary files removed (as on a
    read-only disk, where the clean-up's EROFS was a traceback over the real error): one CacheError, and the
    finished shards are kept."""
    cache = tmp_path / 'cache'
    _eval(ColourPool(), prid, cache)
    shards = sorted(cache.rglob('shard_*.safetensors'))
    for s in shards[len(shards) // 2:]:
        s.unlink()
        (s.parent / f'.{s.name}.{os.getpid()}.tmp' / 'x').mkdir(parents=True)  # not writable, not removable
    with pytest.raises(CacheError, match='cannot write the feature cache'):
        _eval(ColourPool(), prid, cache)
    assert sorted(cache.rglob('shard_*.safetensors')) == shards[:len(shards) // 2]


def test_a_file_size_limit_that_workers_cannot_pass_batches_through_is_said_first(prid):
    """``ulimit -f 20``: each worker failed in a background thread and the run waited forever."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (20 * 1024, hard))
    try:
        with pytest.raises(WorkersStuckError, match=r'ulimit -f: 20480 bytes.*--workers 0'):
            reid_eval.evaluate(ColourPool(), 'prid2011', prid, mode='sampled', workers=2, progress=False,
                               device='cpu', cache=False, data_config=SMALL)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


def _slow_frame(img):
    time.sleep(30)
    return torch.zeros(3, 8, 4)


def test_workers_that_hand_over_nothing_are_said_to_be_stuck(prid, monkeypatch):
    monkeypatch.setattr(extraction, 'WORKER_TIMEOUT_S', 1)
    data = reid_eval.load_dataset('prid2011', prid)
    plan = extraction.ExtractPlan.build(list(data.query), 'sampled', 4)
    t0 = time.perf_counter()
    with pytest.raises(WorkersStuckError, match='handed over no batch for 1 s.*--workers 0'):
        extraction.extract_features(ColourPool(), plan, _slow_frame, None, torch.device('cpu'), workers=1,
                                    progress=False)
    assert time.perf_counter() - t0 < 20
