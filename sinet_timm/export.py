"""ONNX export of a video re-ID model, checked against PyTorch with onnxruntime (the library behind
``sinet-export``).

The graph is made by torch's current exporter (``torch.onnx.export(..., dynamo=True)``, i.e. ``torch.export``
then ONNX), with the number of frames per clip fixed at export and a dynamic batch axis:

* clips: input ``clips`` of shape ``(batch, frames, 3, H, W)``, output ``embedding`` ``(batch, D)``;
* ``image=True``: input ``images`` of shape ``(batch, 3, H, W)``, one person crop each, embedded as the dense
  protocol embeds a one-frame tracklet (the crop repeated ``clip_len`` times inside the graph).

A model that takes camera ids (``pretrained_cfg['camera_input']``) gets a second input ``camids``, int64
``(batch,)``. The file carries what an evaluation or a tracker needs in its metadata (:func:`onnx_metadata`, JSON
values: input size, mean/std, interpolation, frames per clip, protocol, camera input, architecture, the weights'
sha256, the embedding width), so ``reid_eval`` evaluates it with no side file. :func:`quantize_onnx` writes an
INT8 copy (onnxruntime quantization, dynamic or static with calibration clips).

Inputs are float frames normalised as ``timm.data.resolve_data_config`` says (ImageNet mean/std). The check runs
the ONNX file in onnxruntime (CPU) on random inputs of another batch size than the export's and compares with the
PyTorch model: the largest absolute difference must be at most ``tolerance`` (1e-4) times the embedding scale
(the largest absolute value of the PyTorch embeddings). ``onnx``, ``onnxscript`` and ``onnxruntime`` come with the
``[export]`` extra.

Requests are checked before anything is exported: ``opset`` must be one the exporter writes (``MIN_OPSET``, 18,
up to the newest opset of the installed ``onnx``; torch's exporter builds opset 18 graphs and its down-conversion
fails on these models, leaving opset 18 without a word, so older opsets are refused), ``batch`` a whole number from
1 to ``MAX_BATCH`` (it only traces the graph: the batch axis stays dynamic), and the memory the example input and
the check need (about ``CHECK_BYTES_PER_PIXEL`` bytes per frame pixel, measured: 12 MiB per 256x128 frame in
PyTorch plus onnxruntime) must be available: ``--frames 4000`` is refused in one line instead of ending in
onnxruntime running out of memory. The written file's opset is compared with the request.
"""
import contextlib
import dataclasses
import hashlib
import io
import json
import shutil
import statistics
import tempfile
import time
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from . import __version__
from .errors import OutputExistsError, SinetTimmError
from .framewise import VideoReIDNet
from .paths import replace_file

__all__ = ['ExportError', 'ExportReport', 'METADATA_FORMAT', 'STATIC_OPS', 'check_onnx', 'export_onnx', 'file_sha256',
           'int8_path', 'onnx_metadata', 'onnx_speed', 'quantize_onnx', 'read_metadata', 'weights_sha256',
           'write_metadata']

TOLERANCE = 1e-4
MIN_OPSET = 18  # the opset torch's exporter builds graphs in (its down-conversion fails on these models)
MAX_BATCH = 64  # the example batch only traces the graph (the batch axis stays dynamic)
CHECK_BATCH = 3  # the check runs another batch size than the export's
CHECK_BYTES_PER_PIXEL = 400  # peak memory of the check per frame pixel (PyTorch + onnxruntime, float32; measured)
METADATA_FORMAT = 'sinet-timm/reid-embedding-1'  # the metadata schema: its keys are listed in onnx_metadata
CAMERA_INPUT = 'camids'
STATIC_OPS = ('Conv', 'MatMul', 'Gemm')  # what static INT8 quantizes (see quantize_onnx)


class ExportError(SinetTimmError, RuntimeError):
    """The model cannot be exported, or a package the export needs is missing."""


@dataclass(frozen=True)
class ExportReport:
    """What was exported and how closely onnxruntime reproduces PyTorch."""

    path: Path
    input_name: str
    input_shape: tuple[str | int, ...]  # 'batch' for the dynamic axis
    embedding_dim: int
    checked_batch: int | None = None
    max_abs_diff: float | None = None
    scale: float | None = None
    tolerance: float = TOLERANCE
    camera_input: bool = False  # a second input 'camids', int64 (batch,)
    metadata: dict[str, str] = field(default_factory=dict)  # what the file's metadata_props hold (JSON values)

    @property
    def ok(self) -> bool | None:
        """Whether the check passed (None when it was not run)."""
        if self.max_abs_diff is None or self.scale is None:
            return None
        return self.max_abs_diff <= self.tolerance * self.scale


def _declared_video_model(model: nn.Module) -> bool:
    """A clip model of another family: its pretrained cfg names a test protocol and it has the attributes the
    export reads (``img_size``, ``in_chans``, ``clip_len``, ``num_features``, ``num_classes``)."""
    cfg = getattr(model, 'pretrained_cfg', None) or {}
    return isinstance(model, nn.Module) and bool(cfg.get('protocol')) and all(
        hasattr(model, a) for a in ('img_size', 'in_chans', 'clip_len', 'num_features', 'num_classes'))


def _takes_cameras(model: nn.Module) -> bool:
    return bool((getattr(model, 'pretrained_cfg', None) or {}).get('camera_input'))


def _camera_example(model: nn.Module, batch: int, seed: int) -> tuple[torch.Tensor, ...]:
    """``(camids,)`` for a model that takes camera ids (int64 ``(batch,)``, valid ids of its cameras), else ``()``."""
    if not _takes_cameras(model):
        return ()
    n = int((getattr(model, 'pretrained_cfg', None) or {}).get('num_cameras') or 1)
    return (torch.randint(0, n, (batch,), generator=torch.Generator().manual_seed(seed), dtype=torch.long),)


def _example(model: VideoReIDNet, frames: int, image: bool, batch: int, seed: int) -> torch.Tensor:
    h, w = model.img_size
    g = torch.Generator().manual_seed(seed)
    shape = (batch, model.in_chans, h, w) if image else (batch, frames, model.in_chans, h, w)
    return torch.randn(shape, generator=g)


def _is_count(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def max_opset() -> int:
    """The newest opset the installed ``onnx`` knows (what torch's exporter can write)."""
    import onnx  # an optional dependency (the [export] extra)
    return int(onnx.defs.onnx_opset_version())


def check_export_options(batch: int = 2, opset: int | None = None) -> None:
    """Raise :class:`ExportError` for an example batch or an opset the export cannot honour (see the module
    docstring); needs no model, so a command says it before loading one."""
    if not _is_count(batch) or not 1 <= batch <= MAX_BATCH:
        raise ExportError(f'--batch must be a whole number from 1 to {MAX_BATCH}, got {batch!r}: it is only the '
                          'example that traces the graph (the batch axis stays dynamic)')
    if opset is not None:
        try:
            newest = max_opset()
        except ImportError as e:
            raise ExportError('ONNX export needs onnx, onnxscript and onnxruntime: pip install "sinet-timm[export]"') \
                from e
        if not _is_count(opset) or not MIN_OPSET <= opset <= newest:
            raise ExportError(f'--opset {opset}: torch\'s exporter writes opsets {MIN_OPSET} to {newest} (the newest '
                              'the installed onnx knows) and cannot convert these models to older ones; leave --opset '
                              'out for its default')


def _available_memory() -> int | None:
    """Bytes of memory available now (Linux's MemAvailable), or None where it cannot be read."""
    try:
        with open('/proc/meminfo') as f:
            for line in f:
                if line.startswith('MemAvailable:'):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _check_memory(model: VideoReIDNet, frames: int, image: bool, batch: int, check: bool) -> None:
    """Refuse, in one line, an export whose example input or check cannot fit in the memory available."""
    h, w = model.img_size
    per_item = (1 if image else frames) * h * w
    need = batch * per_item * model.in_chans * 4 + (CHECK_BATCH * per_item * CHECK_BYTES_PER_PIXEL if check else 0)
    free = _available_memory()
    if free is not None and need > free:
        gib = 1024 ** 3
        what = f'{frames} frames per clip' if not image else f'a batch of {batch}'
        raise ExportError(f'exporting {what} needs about {need / gib:.1f} GiB (example input'
                          f'{" and the onnxruntime check" if check else ""}), more than the {free / gib:.1f} GiB '
                          'available: export fewer --frames (the model averages 4-frame clips, so a graph of 4 '
                          'frames embeds any tracklet clip by clip)' + ('' if not check else ', or pass --no-check'))


def export_onnx(model: VideoReIDNet, output: str | Path, *, frames: int = 4, image: bool = False, batch: int = 2,
                opset: int | None = None, overwrite: bool = False, check: bool = True) -> ExportReport:
    """Export ``model`` (an embedding model: ``num_classes=0``) to ``output`` as one self-contained ONNX file.

    ``frames``: frames per clip, fixed in the graph (a multiple of the model's ``clip_len``); ``image``: the
    single-crop graph instead; ``batch``: the example batch size (the batch axis stays dynamic). With ``check`` the
    file is run in onnxruntime and compared (:func:`check_onnx`).
    """
    output = Path(output)
    if output.exists() and not overwrite:
        raise OutputExistsError(f'{output} exists; pass --overwrite to replace it or choose another --output')
    if not isinstance(model, VideoReIDNet) and not _declared_video_model(model):
        raise ExportError(f'{type(model).__name__} is not a model of this family; sinet-export exports SINet / SANet '
                          'models')
    if model.num_classes != 0:
        raise ExportError('export the re-ID embedding: create the model with num_classes=0')
    if not image and (not _is_count(frames) or frames < 1 or frames % model.clip_len):
        raise ExportError(f'--frames must be a positive multiple of {model.clip_len} (the clip length), got {frames}')
    check_export_options(batch, opset)
    _check_memory(model, frames, image, batch, check)
    try:
        import onnxscript  # noqa: F401  (torch's exporter needs it; an optional dependency, the [export] extra)
    except ImportError as e:
        raise ExportError('ONNX export needs onnx, onnxscript and onnxruntime: pip install "sinet-timm[export]"') \
            from e
    model = model.eval()
    example = _example(model, frames, image, batch, seed=0)
    name = 'images' if image else 'clips'
    cameras = _camera_example(model, batch, seed=0)
    args, names = (example, *cameras), [name] + [CAMERA_INPUT] * len(cameras)

    def write(tmp: Path) -> None:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter('ignore')  # the exporter's deprecation and tracing chatter
            batch_dim = torch.export.Dim('batch')  # one dynamic batch axis, shared by the clips and their camera ids
            try:
                torch.onnx.export(model, args, str(tmp), dynamo=True, input_names=names,
                                  output_names=['embedding'], dynamic_shapes=tuple({0: batch_dim} for _ in args),
                                  external_data=False, opset_version=opset, verbose=False)
            except OSError:
                raise  # a full disk or a read-only folder: replace_file says which file
            except Exception as e:  # the exporter raises many types; say which step failed, in one line
                first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                raise ExportError(f'torch.onnx.export failed: {type(e).__name__}: {first}') from e
        written = _written_opset(tmp)
        if opset is not None and written != opset:  # refused before it replaces anything at output
            raise ExportError(f'torch\'s exporter wrote opset {written}, not the --opset {opset} asked for; leave '
                              '--opset out for its default')

    replace_file(output, write)  # beside, then renamed: a failure leaves an existing file whole
    shape: tuple[str | int, ...] = ('batch', *example.shape[1:])
    metadata = write_metadata(output, onnx_metadata(model, frames=frames, image=image, inputs=names))
    report = ExportReport(output, name, shape, model.num_features, camera_input=bool(cameras), metadata=metadata)
    return check_onnx(model, report, frames=frames, image=image) if check else report


def _written_opset(path: Path) -> int | None:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return next((int(o.version) for o in model.opset_import if o.domain in ('', 'ai.onnx')), None)


def check_onnx(model: VideoReIDNet, report: ExportReport, *, frames: int = 4, image: bool = False,
               batch: int = CHECK_BATCH) -> ExportReport:
    """Run the exported file in onnxruntime on random inputs (another batch size than the export's) and compare
    with ``model``; the report gets the largest absolute difference and the embedding scale."""
    try:
        import onnxruntime  # an optional dependency (the [export] extra)
    except ImportError as e:
        raise ExportError('checking the export needs onnxruntime: pip install "sinet-timm[export]"') from e
    try:
        x = _example(model, frames, image, batch, seed=1)
        cameras = _camera_example(model, batch, seed=1) if report.camera_input else ()
        session = onnxruntime.InferenceSession(str(report.path), providers=['CPUExecutionProvider'])
        feeds = {report.input_name: x.numpy(), **({CAMERA_INPUT: cameras[0].numpy()} if cameras else {})}
        got = torch.from_numpy(session.run(None, feeds)[0])
        with torch.no_grad():
            ref = model(x, camids=cameras[0]) if cameras else model(x)
    except Exception as e:  # out of memory in onnxruntime or PyTorch, an opset onnxruntime does not run, ...
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ExportError(f'{report.path} is written, but checking it failed: {type(e).__name__}: {first[:300]}; '
                          'export fewer --frames, or pass --no-check to skip the check') from None
    if got.shape != ref.shape:
        raise ExportError(f'the ONNX graph gives {tuple(got.shape)} embeddings for {tuple(x.shape)} inputs, PyTorch '
                          f'{tuple(ref.shape)}')
    return dataclasses.replace(report, checked_batch=batch, max_abs_diff=float((got - ref).abs().max()),
                               scale=float(ref.abs().max()))


# --- what the file says about itself ----------------------------------------------------------------------------
def weights_sha256(model: nn.Module) -> str:
    """Content hash of a model's state dict (names, dtypes, shapes and values), whatever file it came from."""
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        t = v.detach().cpu().contiguous()
        h.update(f'{k}:{t.dtype}:{tuple(t.shape)};'.encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b'')
    return h.hexdigest()


def file_sha256(path: str | Path) -> str:
    """sha256 of a file's bytes (what ``sha256sum`` prints), read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            h.update(block)
    return h.hexdigest()


def _producer() -> str:
    try:
        return f'sinet-timm {version("sinet-timm")}'
    except PackageNotFoundError:  # a checkout that is not installed
        return f'sinet-timm {__version__}'


def onnx_metadata(model: nn.Module, *, frames: int, image: bool = False, inputs: Sequence[str] = ('clips',)
                  ) -> dict[str, str]:
    """What an exported file says about itself (ONNX ``metadata_props``; every value is JSON):

    ``format`` (this schema), ``model`` and ``architecture``, ``graph`` (``clips``: input ``(batch, clip_len, 3, H,
    W)``; ``image``: ``(batch, 3, H, W)`` crops, each embedded as a one-frame tracklet), ``inputs`` / ``output``
    (names), ``input_size`` ``[3, H, W]``, ``clip_len`` (frames per clip of the clip graph; the clip a crop is
    repeated to in the image graph), the preprocessing (``mean``, ``std``, ``interpolation``, ``crop_pct``,
    ``crop_mode``), the test ``protocol``, ``camera_input`` and ``num_cameras``, ``embedding_dim``, ``distance``
    (``cosine``: L2-normalise the embeddings, then ``1 - a.b``), ``weights_sha256`` (of the PyTorch state dict, as
    results JSONs give it) and ``producer`` / ``torch`` (versions)."""
    cfg = dict(getattr(model, 'pretrained_cfg', None) or {})
    arch = cfg.get('architecture') or type(model).__name__
    h, w = model.img_size
    values: dict[str, Any] = {
        'format': METADATA_FORMAT,
        'model': f'{arch}.{cfg["tag"]}' if cfg.get('tag') else arch,
        'architecture': arch,
        'graph': 'image' if image else 'clips',
        'inputs': list(inputs),
        'output': 'embedding',
        'input_size': [int(model.in_chans), int(h), int(w)],
        'clip_len': int(model.clip_len if image else frames),
        'mean': [float(v) for v in cfg.get('mean', (0.485, 0.456, 0.406))],
        'std': [float(v) for v in cfg.get('std', (0.229, 0.224, 0.225))],
        'interpolation': cfg.get('interpolation') or 'bicubic',
        'crop_pct': float(cfg.get('crop_pct') or 1.0),
        'crop_mode': cfg.get('crop_mode') or 'squash',
        'protocol': cfg.get('protocol') or 'dense',
        'camera_input': _takes_cameras(model),
        'num_cameras': cfg.get('num_cameras') if _takes_cameras(model) else None,
        'embedding_dim': int(model.num_features),
        'distance': 'cosine',
        'weights_sha256': weights_sha256(model),
        'producer': _producer(),
        'torch': str(torch.__version__),
    }
    return {k: json.dumps(v) for k, v in values.items()}


def write_metadata(path: str | Path, props: dict[str, str]) -> dict[str, str]:
    """Set ``props`` in the ONNX file's ``metadata_props`` (replacing keys of the same name, keeping the others);
    returns the file's metadata as it now is."""
    import onnx

    model = onnx.load(str(path))
    kept = {p.key: p.value for p in model.metadata_props if p.key not in props}
    merged = {**kept, **props}
    del model.metadata_props[:]
    for k, v in merged.items():
        model.metadata_props.add(key=k, value=v)
    onnx.save(model, str(path))
    return merged


def read_metadata(path: str | Path) -> dict[str, str]:
    """The file's ``metadata_props`` as written (values are JSON where :func:`onnx_metadata` wrote them)."""
    import onnx

    return {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}


# --- INT8 -------------------------------------------------------------------------------------------------------
def int8_path(path: str | Path) -> Path:
    """Where the INT8 copy of ``model.onnx`` goes: ``model.int8.onnx`` beside it."""
    path = Path(path)
    return path.with_name(f'{path.stem}.int8{path.suffix or ".onnx"}')


def quantize_onnx(src: str | Path, dst: str | Path | None = None, *,
                  calibration: Iterable[dict[str, np.ndarray]] | None = None, calibration_note: str = '',
                  overwrite: bool = False) -> Path:
    """An INT8 copy of the exported file ``src`` (default ``dst``: :func:`int8_path`), by onnxruntime's quantizer.

    Without ``calibration``: dynamic quantization (int8 weights, activations quantized per batch at run time; for a
    convolutional network onnxruntime runs ConvInteger, which on CPUs is often slower than float32). With
    ``calibration`` (the graph's input feeds, e.g. normalised clips of a dataset): static quantization in the QDQ
    format of the convolutions and matrix products only (:data:`STATIC_OPS`), int8 weights per channel and uint8
    activations (U8S8) with MinMax ranges from those feeds; the temporal modules' element-wise arithmetic stays
    float32. Measured on a 2-core AVX2 CPU (SINet / SBNet, 256x128, random weights, 16 calibration clips of the
    synthetic set): about 1.6x onnxruntime fp32's clips/s, synthetic mAP within a few points, where quantizing every
    op lost about 40 points and int8 activations (S8S8) ran no faster than fp32. The metadata of ``src`` is copied,
    plus ``quantization`` (what was done, ``calibration_note``) and ``quantized_from`` (the sha256 of ``src``)."""
    try:
        import onnxruntime
        from onnxruntime.quantization import (
            CalibrationDataReader,
            CalibrationMethod,
            QuantFormat,
            QuantType,
            quantize_dynamic,
            quantize_static,
        )
        from onnxruntime.quantization.shape_inference import quant_pre_process
    except ImportError as e:
        raise ExportError('INT8 quantization needs onnx and onnxruntime: pip install "sinet-timm[export]"') from e
    src = Path(src)
    dst = Path(dst) if dst is not None else int8_path(src)
    if dst.exists() and not overwrite:
        raise OutputExistsError(f'{dst} exists; pass --overwrite to replace it or choose another --output')
    props = read_metadata(src)
    feeds = list(calibration) if calibration is not None else None
    if feeds is not None and not feeds:
        raise ExportError('static quantization needs at least one batch of calibration clips; got none')

    class _Feeds(CalibrationDataReader):
        def __init__(self, batches: list[dict[str, np.ndarray]]):
            self._it = iter(batches)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._it, None)

    with tempfile.TemporaryDirectory(prefix='sinet-int8-') as tmp, warnings.catch_warnings(), \
            contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter('ignore')
        pre = Path(tmp) / 'pre.onnx'
        try:  # constant folding and shapes first, as onnxruntime advises; the graph as exported if it fails
            quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        except Exception:  # noqa: BLE001  (an optional optimisation: any failure keeps the exported graph)
            pre = src
        tmp_out = Path(tmp) / 'int8.onnx'
        try:
            if feeds is None:
                quantize_dynamic(str(pre), str(tmp_out), weight_type=QuantType.QInt8)
                how = 'dynamic: int8 weights, activations quantized at run time'
            else:
                quantize_static(str(pre), str(tmp_out), _Feeds(feeds), quant_format=QuantFormat.QDQ,
                                per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                                op_types_to_quantize=list(STATIC_OPS), calibrate_method=CalibrationMethod.MinMax)
                n = sum(len(next(iter(f.values()))) for f in feeds)
                how = (f'static: QDQ, {"/".join(STATIC_OPS)} with int8 per-channel weights and uint8 activations, '
                       f'MinMax ranges from {n} calibration clips' +
                       (f' ({calibration_note})' if calibration_note else ''))
        except Exception as e:  # the quantizer raises many types; one line says which step failed
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ExportError(f'onnxruntime quantization of {src} failed: {type(e).__name__}: {first}') from e
        write_metadata(tmp_out, {**props, 'quantization': json.dumps(f'int8 {how} (onnxruntime '
                                                                       f'{onnxruntime.__version__})'),
                                 'quantized_from': json.dumps(file_sha256(src))})
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(tmp_out), str(dst))
    return dst


def onnx_speed(paths: Sequence[str | Path], *, batch: int = 4, rounds: int = 5, warmup: int = 1,
               threads: int | None = None) -> list[float]:
    """CPU clips (or crops) per second of each ONNX file in onnxruntime, on the same random batch, timed side by
    side: every round runs every file once; the rate is ``batch`` over the median time of a run."""
    import onnxruntime

    opts = onnxruntime.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    sessions = [onnxruntime.InferenceSession(str(p), opts, providers=['CPUExecutionProvider']) for p in paths]
    rng = np.random.default_rng(0)
    feeds = []
    for s in sessions:
        feed = {}
        for i in s.get_inputs():
            shape = [batch] + [d if isinstance(d, int) else 1 for d in i.shape[1:]]
            feed[i.name] = (np.zeros(shape, np.int64) if 'int64' in i.type
                            else rng.standard_normal(shape).astype(np.float32))
        feeds.append(feed)
    for s, f in zip(sessions, feeds, strict=True):
        for _ in range(warmup):
            s.run(None, f)
    times: list[list[float]] = [[] for _ in sessions]
    for _ in range(max(1, rounds)):
        for k, (s, f) in enumerate(zip(sessions, feeds, strict=True)):
            t = time.perf_counter()
            s.run(None, f)
            times[k].append(time.perf_counter() - t)
    return [batch / statistics.median(t) for t in times]
