"""The errors of ``reid_eval``: all subclasses of the project's one base, :class:`SinetTimmError`.

Every command prints them as one ``error: ...`` line and exits with status 2. Each carries what a caller needs as
attributes (never parse the message): :class:`FrameReadError` has ``path`` and ``reason``, :class:`WorkersDiedError`
``report``, :class:`NonFiniteFeaturesError` ``tracklets`` and ``weights_finite``.
"""
from __future__ import annotations

from sinet_timm.errors import OutputExistsError, SinetTimmError

__all__ = [
    'CacheError', 'DatasetLayoutError', 'EmptyTrackletError', 'EvalError', 'FeatureFileError', 'FrameReadError',
    'ModelOutputError', 'NonFiniteFeaturesError', 'OutputExistsError', 'RenderersDiedError', 'ResultsFileError',
    'SearchError', 'SinetTimmError', 'TrackletInputError', 'VizError', 'WorkersDiedError', 'WorkersStuckError',
]


class EvalError(SinetTimmError, ValueError):
    """An option or argument of the evaluation is invalid (device, split, model name, batch size, ...)."""


class DatasetLayoutError(SinetTimmError, FileNotFoundError):
    """A dataset folder is missing, incomplete or malformed (raised before torchreid is called)."""


class EmptyTrackletError(DatasetLayoutError):
    """A tracklet listed by the dataset has no frame on disk."""


class FrameReadError(SinetTimmError, OSError):
    """A frame image could not be read or decoded: ``path`` and ``reason`` say which and why."""

    def __init__(self, path: str, reason: str, advice: str = '', what: str = 'frame'):
        self.path, self.reason, self.advice, self.what = str(path), reason, advice, what
        super().__init__(f'cannot read {what} {path}: {reason}' + (f'. {advice}' if advice else ''))

    def __reduce__(self):  # picklable with its fields (DataLoader workers, multiprocessing)
        return type(self), (self.path, self.reason, self.advice, self.what)


class WorkersDiedError(SinetTimmError, RuntimeError):
    """A DataLoader worker died: killed (typically for lack of memory) or crashed in native code. ``report`` is
    torch's line about it; the message adds what to do."""

    def __init__(self, report: str, advice: str) -> None:
        super().__init__(f'a DataLoader worker died ({report}); {advice}')
        self.report = report


class WorkersStuckError(SinetTimmError, RuntimeError):
    """The DataLoader workers cannot hand batches to the main process (shared memory full or limited by a file
    size limit), or gave none for a long time: a run that would otherwise wait forever."""


class CacheError(SinetTimmError, OSError):
    """The feature cache cannot be written (read-only or full disk)."""


class NonFiniteFeaturesError(SinetTimmError, ValueError):
    """The model produced NaN or Inf embeddings: ``tracklets`` names them, ``weights_finite`` says whether the
    weights themselves are all finite."""

    def __init__(self, message: str, tracklets: list[str], weights_finite: bool | None) -> None:
        super().__init__(message)
        self.tracklets, self.weights_finite = tracklets, weights_finite


class ModelOutputError(SinetTimmError, ValueError):
    """The model's output is not a (clips, D) floating-point tensor of embeddings (tuple, dict, maps, wrong rows,
    zero or changing width, integers), or the model cannot run on the input (weights on the meta device)."""


class TrackletInputError(SinetTimmError, ValueError):
    """The tracklet input (folder, list file or video) is missing, empty or holds something that is not a frame."""


class FeatureFileError(SinetTimmError, ValueError):
    """A features file is missing, unreadable, holds non-finite values, or is not one that ``sinet-extract`` wrote."""


class ResultsFileError(SinetTimmError, ValueError):
    """A results JSON (``sinet-eval --compare``) is missing, is not JSON, or is not one that ``sinet-eval`` wrote."""


class SearchError(SinetTimmError, ValueError):
    """The query and gallery features cannot be compared (or the search arguments are invalid)."""


class VizError(SinetTimmError, ValueError):
    """A picture cannot be made from the given input (missing file, run without saved features, ...)."""


class RenderersDiedError(SinetTimmError, RuntimeError):
    """A process rendering a synthetic dataset could not start or died."""
