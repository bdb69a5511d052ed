"""Exception types of arnas-ray.

Every error the project raises on purpose is an :class:`ArnasError`; each subclass also
inherits the builtin it refines (optuna's pattern), so ``except ValueError`` keeps working.
"""

from __future__ import annotations

__all__ = [
    "ArnasError",
    "CheckpointError",
    "DivergenceError",
    "FileFormatError",
    "LockError",
    "SpecError",
]


class ArnasError(Exception):
    """Base class of every error raised deliberately by arnas-ray."""


class SpecError(ArnasError, ValueError):
    """Bad user input: names the field path, the value and what is allowed.

    Args:
        field: dotted path of the offending field (``"search.epochs"``), or ``""``.
        message: what is wrong and what is allowed.
    """

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}" if field else message)

    def __reduce__(self):  # keep picklable across Ray workers
        return (type(self), (self.field, self.message))


class FileFormatError(SpecError):
    """An input file cannot be read or does not hold what was expected.

    Its ``field`` is the file's path, so the message reads ``FILE: what is wrong, what was
    expected`` (the form the command line prints after ``arnas-ray: error:``).

    Example:
        >>> str(FileFormatError("g.json", "not valid JSON; expected a genotype object"))
        'g.json: not valid JSON; expected a genotype object'
    """


class CheckpointError(ArnasError, RuntimeError):
    """A checkpoint file is missing, truncated, corrupt, unsafe to load or of another run;
    the message starts with the file."""


class DivergenceError(ArnasError, FloatingPointError):
    """A loss or gradient became non-finite; names the epoch and the step."""

    def __init__(self, message: str, *, epoch: int = -1, step: int = -1) -> None:
        self.epoch = epoch
        self.step = step
        super().__init__(message)

    def __reduce__(self):
        return (_rebuild_divergence, (str(self), self.epoch, self.step))


def _rebuild_divergence(message: str, epoch: int, step: int) -> DivergenceError:
    return DivergenceError(message, epoch=epoch, step=step)


class LockError(ArnasError, RuntimeError):
    """Another live driver holds the run directory."""
