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
"""
import contextlib
import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import OutputExistsError, SinetTimmError
from .framewise import VideoReIDNet

__all__ = ['ExportError', 'ExportReport', 'check_onnx', 'export_onnx']

TOLERANCE = 1e-4


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
    if not image and (frames < 1 or frames % model.clip_len):
        raise ExportError(f'--frames must be a positive multiple of {model.clip_len} (the clip length), got {frames}')
    try:
        import onnxscript  # noqa: F401  (torch's exporter needs it; an optional dependency, the [export] extra)
    except ImportError as e:
        raise ExportError('ONNX export needs onnx, onnxscript and onnxruntime: pip install "sinet-timm[export]"') \
            from e
    model = model.eval()
    example = _example(model, frames, image, batch, seed=0)
    name = 'images' if image else 'clips'
    output.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter('ignore')  # the exporter's deprecation and tracing chatter
        try:
            torch.onnx.export(model, (example,), str(output), dynamo=True, input_names=[name],
                              output_names=['embedding'], dynamic_shapes={'x': {0: torch.export.Dim('batch')}},
                              external_data=False, opset_version=opset, verbose=False)
        except Exception as e:  # the exporter raises many types; say which step failed, in one line
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ExportError(f'torch.onnx.export failed: {type(e).__name__}: {first}') from e
    shape: tuple[str | int, ...] = ('batch', *example.shape[1:])
    report = ExportReport(output, name, shape, model.num_features)
    return check_onnx(model, report, frames=frames, image=image) if check else report


def check_onnx(model: VideoReIDNet, report: ExportReport, *, frames: int = 4, image: bool = False,
               batch: int = 3) -> ExportReport:
    """Run the exported file in onnxruntime on random inputs (another batch size than the export's) and compare
    with ``model``; the report gets the largest absolute difference and the embedding scale."""
    try:
        import onnxruntime  # an optional dependency (the [export] extra)
    except ImportError as e:
        raise ExportError('checking the export needs onnxruntime: pip install "sinet-timm[export]"') from e
    x = _example(model, frames, image, batch, seed=1)
    session = onnxruntime.InferenceSession(str(report.path), providers=['CPUExecutionProvider'])
    got = torch.from_numpy(session.run(None, {report.input_name: x.numpy()})[0])
    with torch.no_grad():
        ref = model(x)
    if got.shape != ref.shape:
        raise ExportError(f'the ONNX graph gives {tuple(got.shape)} embeddings for {tuple(x.shape)} inputs, PyTorch '
                          f'{tuple(ref.shape)}')
    return ExportReport(report.path, report.input_name, report.input_shape, report.embedding_dim, batch,
                        float((got - ref).abs().max()), float(ref.abs().max()))
