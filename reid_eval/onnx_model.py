"""An exported ONNX file as a model of the evaluation: :class:`OnnxModel` runs it in onnxruntime.

``sinet-export`` writes what the evaluation needs into the file's metadata (:func:`sinet_timm.export.onnx_metadata`:
input size, mean/std, interpolation, frames per clip, test protocol, camera input), so the file alone is
evaluated exactly as its PyTorch model would be: :func:`reid_eval.models.load_model` (and so ``evaluate("m.onnx",
...)`` and ``sinet-eval --model m.onnx``) wraps it in an :class:`OnnxModel`, a module mapping float clips
``(B, T, 3, H, W)`` to ``(B, D)`` float32 embeddings. It has no torch weights: its features are cached under the
sha256 of the file (``cache_key = 'onnx:<sha256>'``), which results JSONs give as ``weights_sha256``.

The runtime runs on the clips' device: onnxruntime's CUDA provider for CUDA tensors when the installed onnxruntime
has it (the ``onnxruntime-gpu`` package), else its CPU provider (with a warning for CUDA tensors).
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from sinet_timm.errors import ModelInputError
from sinet_timm.export import CAMERA_INPUT, METADATA_FORMAT, file_sha256

from .errors import EvalError

__all__ = ['ONNX_SUFFIX', 'OnnxModel', 'OnnxRuntimeWarning']

ONNX_SUFFIX = '.onnx'
REEXPORT = 'export it again with sinet-export (sinet-export --model NAME --output FILE.onnx), which writes them'
# metadata keys the evaluation cannot do without (the others have the family's defaults)
REQUIRED = ('graph', 'input_size', 'clip_len', 'mean', 'std', 'interpolation')


class OnnxRuntimeWarning(UserWarning):
    """The file runs on another provider than the clips' device asks for (no CUDA provider installed)."""


def _runtime() -> Any:
    try:
        import onnxruntime
    except ImportError:
        raise EvalError('evaluating an ONNX file needs onnxruntime: pip install "sinet-timm[export]" (or '
                        'onnxruntime-gpu for CUDA)') from None
    return onnxruntime


def _metadata(props: dict[str, str], path: Path) -> dict[str, Any]:
    """The JSON values of the file's metadata, or one line saying what is missing and how to get it."""
    if props.get('format') is None:
        raise EvalError(f'{path} has no sinet-timm metadata (input size, mean/std, frames per clip, protocol), so '
                        f'it cannot be evaluated as its model would be: {REEXPORT}')
    try:
        meta = {k: json.loads(v) for k, v in props.items() if not k.startswith('onnx.')}
    except json.JSONDecodeError as e:
        raise EvalError(f'{path}: metadata value is not JSON ({e}); {REEXPORT}') from None
    if meta['format'] != METADATA_FORMAT:
        raise EvalError(f'{path} has metadata of format {meta["format"]!r}, this version reads {METADATA_FORMAT!r}: '
                        f'{REEXPORT}')
    missing = [k for k in REQUIRED if k not in meta]
    if missing:
        raise EvalError(f'{path} lacks the metadata {", ".join(missing)}; {REEXPORT}')
    return meta


class OnnxModel(nn.Module):
    """An ONNX file written by ``sinet-export``, run in onnxruntime: ``forward(x, camids=None)`` maps float clips
    ``(B, T, 3, H, W)``, normalised as ``pretrained_cfg`` says, to ``(B, D)`` float32 embeddings.

    ``pretrained_cfg`` is built from the file's metadata, so ``timm.data.resolve_data_config({}, model=m)`` and
    the protocol choice work as for the PyTorch model. The batch axis is dynamic in files of ``sinet-export``; a
    file with a fixed batch gets its batches split (the last padded). A single-crop file (``--image``) embeds every
    frame of a clip on its own and averages them."""

    def __init__(self, path: str | Path):
        super().__init__()
        path = Path(path).expanduser()
        if not path.is_file():
            raise EvalError(f'{path}: no such ONNX file' + (' (it is a folder)' if path.is_dir() else '') +
                            '; write one with sinet-export --model NAME --output FILE.onnx')
        self.path = path.resolve()
        ort = _runtime()
        self._sessions: dict[str, Any] = {}
        try:
            session = ort.InferenceSession(str(self.path), providers=['CPUExecutionProvider'])
        except Exception as e:  # onnxruntime raises its own types (InvalidProtobuf, Fail, ...): one line
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise EvalError(f'{path} is not an ONNX file onnxruntime {ort.__version__} can run ({first}); '
                            f'{REEXPORT}') from None
        self._sessions['cpu'] = session
        self.metadata = _metadata(dict(session.get_modelmeta().custom_metadata_map), path)
        meta = self.metadata
        self.sha256 = file_sha256(self.path)
        self.cache_key = f'onnx:{self.sha256}'  # what computes the features: this file (reid_eval.models)
        self.weights_digest = self.sha256  # results JSONs name the file's sha256 as its weights
        self.graph = meta['graph']
        self.clip_len = int(meta['clip_len'])
        self.num_features = meta.get('embedding_dim')
        self.num_classes = 0
        self.architecture = meta.get('architecture')
        inputs = session.get_inputs()
        self.input_name = inputs[0].name
        self.input_shape = tuple(inputs[0].shape)
        self.camera_input = bool(meta.get('camera_input')) and any(i.name == CAMERA_INPUT for i in inputs)
        fixed = self.input_shape[0]
        self.fixed_batch = fixed if isinstance(fixed, int) and fixed > 0 else None
        self.quantization = meta.get('quantization')
        self.pretrained_cfg = {
            'architecture': self.architecture, 'tag': None, 'num_classes': 0,
            'input_size': tuple(meta['input_size']), 'fixed_input_size': True,
            'mean': tuple(meta['mean']), 'std': tuple(meta['std']), 'interpolation': meta['interpolation'],
            'crop_pct': float(meta.get('crop_pct', 1.0)), 'crop_mode': meta.get('crop_mode', 'squash'),
            'protocol': meta.get('protocol') or 'dense', 'camera_input': self.camera_input,
            'num_cameras': meta.get('num_cameras'),
        }
        self.camera_fallback: str | None = None  # set by the evaluation's --camera-fallback (refused in forward)

    def extra_repr(self) -> str:
        return f'{self.path}, graph={self.graph}, clip_len={self.clip_len}'

    def provider(self, device: torch.device | str = 'cpu') -> str:
        """The onnxruntime provider that runs the file for inputs on ``device``."""
        return self._session(torch.device(device)).get_providers()[0]

    def weights_label(self, device: torch.device | str = 'cpu') -> str:
        """How results name what ran: ``onnx:<file> (onnxruntime 1.x, CPUExecutionProvider)`` (+ ``, int8 ...``)."""
        ort = _runtime()
        quant = ', int8' if self.quantization else ''
        return f'onnx:{self.path} (onnxruntime {ort.__version__}, {self.provider(device)}{quant})'

    def _session(self, device: torch.device) -> Any:
        key = str(device) if device.type == 'cuda' else 'cpu'
        if key in self._sessions:
            return self._sessions[key]
        ort = _runtime()
        if 'CUDAExecutionProvider' in ort.get_available_providers():
            providers = [('CUDAExecutionProvider', {'device_id': device.index or 0}), 'CPUExecutionProvider']
            session = ort.InferenceSession(str(self.path), providers=providers)
        else:
            warnings.warn(f'onnxruntime {ort.__version__} has no CUDA provider (pip install onnxruntime-gpu): '
                          f'{self.path.name} runs on the CPU', OnnxRuntimeWarning, stacklevel=3)
            session = self._sessions['cpu']
        self._sessions[key] = session
        return session

    def _check(self, x: torch.Tensor) -> None:
        c, h, w = self.pretrained_cfg['input_size']
        if self.graph == 'clips' and (x.dim() != 5 or x.shape[1] != self.clip_len):
            got = f'{x.shape[1]}-frame clips' if x.dim() == 5 else f'a {x.dim()}-D tensor {list(x.shape)}'
            raise ModelInputError(f'{self.path.name} takes clips of {self.clip_len} frames (fixed at export), got '
                                  f'{got}: use clip_len={self.clip_len}, or export again with sinet-export --frames '
                                  f'{x.shape[1] if x.dim() == 5 else "T"}')
        if x.dim() not in (4, 5) or tuple(x.shape[-3:]) != (c, h, w):
            raise ModelInputError(f'{self.path.name} takes {c}x{h}x{w} frames (fixed at export), got shape '
                                  f'{list(x.shape)}: resize frames as pretrained_cfg says (timm.data.'
                                  'resolve_data_config), or export again at that size')
        if not x.is_floating_point():
            raise ModelInputError(f'{self.path.name} takes float frames normalised with the mean/std of its '
                                  f'metadata, got {x.dtype}')

    def _run(self, session: Any, x: np.ndarray, camids: np.ndarray | None) -> np.ndarray:
        feeds = {self.input_name: x}
        if camids is not None:
            feeds[CAMERA_INPUT] = camids
        return session.run(None, feeds)[0]

    def _batched(self, session: Any, x: np.ndarray, camids: np.ndarray | None) -> np.ndarray:
        """Run ``x`` whole (dynamic batch) or in the file's fixed batch, the last one padded with its last row."""
        n = self.fixed_batch
        if n is None or len(x) == n:
            return self._run(session, x, camids)
        out = []
        for lo in range(0, len(x), n):
            part, cams = x[lo:lo + n], camids[lo:lo + n] if camids is not None else None
            k = len(part)
            if k < n:
                part = np.concatenate([part, np.repeat(part[-1:], n - k, axis=0)])
                cams = np.concatenate([cams, np.repeat(cams[-1:], n - k)]) if cams is not None else None
            out.append(self._run(session, part, cams)[:k])
        return np.concatenate(out)

    def forward(self, x: torch.Tensor, camids: torch.Tensor | None = None) -> torch.Tensor:
        self._check(x)
        if self.camera_input and camids is None:
            raise ModelInputError(
                f'{self.path.name} takes camera ids (input {CAMERA_INPUT!r}, int64 (batch,)) and got none: give '
                'each tracklet its camera' + ('; the mean-camera fallback (--camera-fallback mean) is not part of '
                                              'the exported graph' if self.camera_fallback else ''))
        session = self._session(x.device)
        cams = None
        if self.camera_input:
            cams = np.ascontiguousarray(camids.detach().to('cpu', torch.int64).reshape(-1).numpy())
        arr = x.detach().to('cpu', torch.float32)
        per_frame = self.graph == 'image' and x.dim() == 5  # single-crop graph: every frame on its own
        if per_frame:
            arr = arr.flatten(0, 1)
            cams = np.repeat(cams, x.shape[1]) if cams is not None else None
        out = self._batched(session, np.ascontiguousarray(arr.numpy()), cams)
        emb = torch.from_numpy(np.asarray(out, dtype=np.float32))
        if per_frame:
            emb = emb.unflatten(0, tuple(x.shape[:2])).mean(dim=1)
        return emb.to(x.device)
