"""ONNX export of a video re-ID model, checked against PyTorch with onnxruntime (the library behind
``sinet-export``).

The graph is made by torch's current exporter (``torch.onnx.export(..., dynamo=True)``, i.e. ``torch.export``
then ONNX), with the number of frames per clip fixed at export and a dynamic batch axis:

* clips: input ``clips`` of shape ``(batch, frames, 3, H, W)``, output ``embedding`` ``(batch, D)``;
* ``image=True``: input ``images`` of shape ``(batch, 3, H, W)``, one person crop each, embedded as the dense
  protocol embeds a one-frame tracklet (the crop repeated ``clip_len`` times inside the graph).

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
import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import OutputExistsError, SinetTimmError
from .framewise import VideoReIDNet
from .paths import replace_file

__all__ = ['ExportError', 'ExportReport', 'check_onnx', 'export_onnx']

TOLERANCE = 1e-4
MIN_OPSET = 18  # the opset torch's exporter builds graphs in (its down-conversion fails on these models)
MAX_BATCH = 64  # the example batch only traces the graph (the batch axis stays dynamic)
CHECK_BATCH = 3  # the check runs another batch size than the export's
CHECK_BYTES_PER_PIXEL = 400  # peak memory of the check per frame pixel (PyTorch + onnxruntime, float32; measured)


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

    @property
    def ok(self) -> bool | None:
        """Whether the check passed (None when it was not run)."""
        if self.max_abs_diff is None or self.scale is None:
            return None
        return self.max_abs_diff <= self.tolerance * self.scale


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
    if not isinstance(model, VideoReIDNet):
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

    def write(tmp: Path) -> None:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter('ignore')  # the exporter's deprecation and tracing chatter
            try:
                torch.onnx.export(model, (example,), str(tmp), dynamo=True, input_names=[name],
                                  output_names=['embedding'], dynamic_shapes={'x': {0: torch.export.Dim('batch')}},
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
    report = ExportReport(output, name, shape, model.num_features)
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
        session = onnxruntime.InferenceSession(str(report.path), providers=['CPUExecutionProvider'])
        got = torch.from_numpy(session.run(None, {report.input_name: x.numpy()})[0])
        with torch.no_grad():
            ref = model(x)
    except Exception as e:  # out of memory in onnxruntime or PyTorch, an opset onnxruntime does not run, ...
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ExportError(f'{report.path} is written, but checking it failed: {type(e).__name__}: {first[:300]}; '
                          'export fewer --frames, or pass --no-check to skip the check') from None
    if got.shape != ref.shape:
        raise ExportError(f'the ONNX graph gives {tuple(got.shape)} embeddings for {tuple(x.shape)} inputs, PyTorch '
                          f'{tuple(ref.shape)}')
    return ExportReport(report.path, report.input_name, report.input_shape, report.embedding_dim, batch,
                        float((got - ref).abs().max()), float(ref.abs().max()))
