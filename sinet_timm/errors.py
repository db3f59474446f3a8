"""One hierarchy for every error a user can cause, across the whole project.

:class:`SinetTimmError` is the base: every command prints such an error as one ``error: ...`` line and exits with
status 2, and a Python caller can catch it to tell a user mistake (a wrong path, a bad file, an impossible option)
from a bug. Subclasses exist where callers must tell the cases apart; each also derives from the builtin exception
it used to be (``ValueError``, ``FileNotFoundError``, ...), so ``except ValueError`` in existing code still works.

This module lives in the lowest layer (``sinet_timm``) so that ``reid_eval``, ``sinet_train`` and the commands can
all subclass the same base.
"""
from __future__ import annotations

__all__ = [
    'CheckpointError', 'HubError', 'ModelInputError', 'NumClassesMismatch', 'OutputExistsError', 'OutputWriteError',
    'SinetTimmError', 'WeightsUnavailableError', 'ZooConfigError',
]


class SinetTimmError(Exception):
    """Base of every error a user can cause (bad input, files, options or environment); never a bug."""


class ZooConfigError(SinetTimmError, ValueError):
    """A zoo file (``hub_configs/*.yaml``) is malformed or names an unknown entry."""


class CheckpointError(SinetTimmError, ValueError):
    """A checkpoint file is unreadable, holds no usable weights, or does not fit the requested architecture."""


class NumClassesMismatch(CheckpointError):
    """The checkpoint's classifier does not have the expected number of training identities."""

    def __init__(self, path: object, found: int, expected: int, hint: str = ''):
        self.path, self.found, self.expected = path, found, expected
        super().__init__(f'{path} has a classifier for {found} training identities, expected {expected}.{hint}')


class WeightsUnavailableError(SinetTimmError, RuntimeError):
    """Pretrained weights could not be downloaded or found in the local Hub cache."""


class HubError(SinetTimmError, RuntimeError):
    """A Hub folder or upload cannot be made: missing files, unreachable services, metrics that do not fit."""


class ModelInputError(SinetTimmError, ValueError, TypeError):
    """A tensor the model cannot take (shape, dtype, frame count or frame size); the message says what to change."""


class OutputExistsError(SinetTimmError, FileExistsError):
    """An output file or folder exists and may not be replaced without the caller's say-so (``--overwrite``)."""


class OutputWriteError(SinetTimmError, OSError):
    """An output could not be written (a full disk, a read-only folder, a folder in the way): ``path`` names it,
    ``reason`` says why. What was there before is left as it was (outputs are written beside and then renamed)."""

    def __init__(self, path: object, reason: str) -> None:
        self.path, self.reason = str(path), reason
        super().__init__(f'could not write {path}: {reason}')

    def __reduce__(self):  # picklable with its fields
        return type(self), (self.path, self.reason)
