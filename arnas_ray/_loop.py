"""Torch-free pieces shared by the training loops (the search and the retraining).

Both loops resume from a checkpoint, stop on a non-finite loss and seed every random stream
of an epoch from ``(seed, epoch)``, so that a resumed run repeats the uninterrupted one. They
do it in one way, defined here:

* :func:`check_resumable` compares the settings a checkpoint was written with against the
  current ones and refuses a mismatch with one message format
  (``FILE: the checkpoint was written with FIELD=OLD, but this run has FIELD=NEW; REMEDY``);
  :func:`config_differences` is the comparison alone.
* :func:`diverged` builds the :class:`~arnas_ray.errors.DivergenceError` whose one message
  says where the run diverged, what became non-finite, the learning rates and which
  checkpoint is kept.
* :func:`stream_seed` gives each random stream of each epoch its own 63-bit seed.
* :func:`write_history` and :func:`read_history` keep the per-epoch records as
  ``history.jsonl`` (one JSON object a line, written atomically); reading names the file
  and the line of any damage.
* :func:`steady_gc` keeps Python's cyclic garbage collector out of the steps' way.

Nothing here imports torch, so the helpers are usable (and testable) anywhere.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import json
import os
from collections.abc import Collection, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from arnas_ray._atomic import atomic_write_text
from arnas_ray.errors import CheckpointError, DivergenceError, FileFormatError

__all__ = [
    "check_resumable",
    "config_differences",
    "diverged",
    "read_history",
    "stream_seed",
    "write_history",
]

#: What :func:`check_resumable` tells the user to do when it refuses a checkpoint.
DEFAULT_REMEDY = "start over in another folder, or delete the checkpoint"
_MAX_VALUE_CHARS = 60
_SEED_BITS = 63  # fits torch.Generator.manual_seed, numpy and Python's random


def _short(value: Any) -> str:
    """``repr(value)``, cut to a readable length (genotype JSON can be long)."""
    text = repr(value)
    if len(text) > _MAX_VALUE_CHARS:
        text = text[: _MAX_VALUE_CHARS - 3] + "..."
    return text


def config_differences(
    saved: Mapping[str, Any], current: Mapping[str, Any], *, free: Collection[str] = ()
) -> list[str]:
    """The fields whose values differ between two settings mappings, sorted.

    A field present on one side only counts as different (its value on the other side is
    taken as ``None``, so a new field whose value is ``None`` matches an old checkpoint).

    Args:
        saved: the settings stored in the checkpoint.
        current: the settings of this run.
        free: fields allowed to differ (they do not change the mathematics, e.g. the number
            of data loader workers).

    Returns:
        The names of the differing fields, sorted; empty when the run may resume.

    Example:
        >>> config_differences({"lr": 0.1, "seed": 0}, {"lr": 0.05, "seed": 0})
        ['lr']
        >>> config_differences({"num_workers": 0}, {"num_workers": 4}, free=("num_workers",))
        []
    """
    keys = set(saved) | set(current)
    return sorted(k for k in keys if k not in free and saved.get(k) != current.get(k))


def check_resumable(
    saved: Any,
    current: Mapping[str, Any],
    *,
    path: str | os.PathLike[str],
    free: Collection[str] = (),
    remedy: str = DEFAULT_REMEDY,
) -> None:
    """Refuse to resume from a checkpoint written with other settings.

    Args:
        saved: the settings stored in the checkpoint (a mapping; anything else is refused).
        current: the settings of this run, in the same plain-data form.
        path: the checkpoint file, named first in the message.
        free: fields allowed to differ (see :func:`config_differences`).
        remedy: what the user can do instead, the last part of the message.

    Raises:
        CheckpointError: ``saved`` is not a mapping, or a field differs. The message names the
            file, the first differing field with both values, how many more differ, and the
            remedy.

    Example:
        >>> check_resumable({"lr": 0.1}, {"lr": 0.1}, path="run/checkpoint.pt")
        >>> check_resumable({"lr": 0.1, "seed": 0}, {"lr": 0.05, "seed": 1},
        ...                 path="run/checkpoint.pt")
        Traceback (most recent call last):
        arnas_ray.errors.CheckpointError: run/checkpoint.pt: the checkpoint was written with \
lr=0.1, but this run has lr=0.05 (1 more field differs: seed); start over in another folder, \
or delete the checkpoint
    """
    where = os.fspath(path)
    if not isinstance(saved, Mapping):
        raise CheckpointError(
            f"{where}: the checkpoint holds no run settings (expected a mapping of fields, got "
            f"{type(saved).__name__}); {remedy}"
        )
    diff = config_differences(saved, current, free=free)
    if not diff:
        return
    first, rest = diff[0], diff[1:]
    more = ""
    if rest:
        noun = "field differs" if len(rest) == 1 else "fields differ"
        more = f" ({len(rest)} more {noun}: {', '.join(rest)})"
    raise CheckpointError(
        f"{where}: the checkpoint was written with {first}={_short(saved.get(first))}, but this "
        f"run has {first}={_short(current.get(first))}{more}; {remedy}"
    )


def diverged(
    *,
    epoch: int,
    step: int,
    what: str,
    lrs: Mapping[str, float],
    checkpoint: str | os.PathLike[str] | None,
    checkpoint_epoch: int | None = None,
    hint: str = "lower the learning rates",
) -> DivergenceError:
    """The error of a run stopped by a non-finite value, with the one message format.

    Args:
        epoch: the epoch that diverged, 1-based.
        step: the step that diverged, as the loop counts it.
        what: what became non-finite (``"training loss or gradient norm"``).
        lrs: the learning rates in use, by name (``{"lr": 0.1, "arch_lr": 3e-4}``).
        checkpoint: the last good checkpoint, which is kept; ``None`` when none was written.
        checkpoint_epoch: the epoch (1-based) that checkpoint holds, when known.
        hint: what to change before trying again.

    Returns:
        A :class:`~arnas_ray.errors.DivergenceError` with ``epoch`` and ``step`` set.

    Example:
        >>> err = diverged(epoch=2, step=5, what="training loss", lrs={"lr": 0.1},
        ...                checkpoint="run/checkpoint.pt", checkpoint_epoch=1)
        >>> (err.epoch, err.step)
        (2, 5)
        >>> str(err)
        "non-finite training loss at epoch 2, step 5 (lr=0.1); lower the learning rates; \
the last good checkpoint 'run/checkpoint.pt' (epoch 1) is kept"
        >>> str(diverged(epoch=1, step=0, what="loss", lrs={}, checkpoint=None))
        'non-finite loss at epoch 1, step 0; lower the learning rates; no checkpoint had been \
written yet'
    """
    rates = ", ".join(f"{name}={value:g}" for name, value in lrs.items())
    where = f"non-finite {what} at epoch {epoch}, step {step}" + (f" ({rates})" if rates else "")
    if checkpoint is None:
        kept = "no checkpoint had been written yet"
    else:
        of_epoch = f" (epoch {checkpoint_epoch})" if checkpoint_epoch is not None else ""
        kept = f"the last good checkpoint {os.fspath(checkpoint)!r}{of_epoch} is kept"
    return DivergenceError(f"{where}; {hint}; {kept}", epoch=epoch, step=step)


def stream_seed(seed: int, epoch: int, stream: str) -> int:
    """The seed of one random stream (``"train-data"``, ``"val-attack"``...) of one epoch.

    The value is the first 63 bits of the BLAKE2b hash of ``"seed/epoch/stream"``: it depends
    on nothing but the three arguments (so a resumed run draws what the uninterrupted one
    drew), and different streams, epochs or run seeds do not share a seed (no collision
    between, say, the data order of epoch 1 and the attacks of epoch 0, as an additive scheme
    ``seed * K + epoch + stream`` has).

    Args:
        seed: the run seed, ``>= 0``.
        epoch: 0-based epoch, ``>= 0``.
        stream: a non-empty name of the stream; each loop documents the names it uses.

    Returns:
        An ``int`` in ``[0, 2**63)``.

    Raises:
        ValueError: a negative seed or epoch, or an empty stream name.

    Example:
        >>> stream_seed(0, 0, "train-data") == stream_seed(0, 0, "train-data")
        True
        >>> stream_seed(0, 1, "train-data") != stream_seed(0, 0, "train-attack")
        True
        >>> 0 <= stream_seed(7, 3, "val-attack") < 2**63
        True
    """
    for name, value in (("seed", seed), ("epoch", epoch)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"`{name} >= 0` (an int) must hold, but got {name}={value!r}")
    if not isinstance(stream, str) or not stream:
        raise ValueError(f"stream must be a non-empty name, got {stream!r}")
    digest = hashlib.blake2b(f"{seed}/{epoch}/{stream}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> (64 - _SEED_BITS)


def write_history(path: str | os.PathLike[str], records: Sequence[Mapping[str, Any]]) -> Path:
    """Write the per-epoch records as JSON lines (keys sorted), atomically.

    Example:
        >>> import tempfile
        >>> path = Path(tempfile.mkdtemp()) / "history.jsonl"
        >>> _ = write_history(path, [{"epoch": 1, "loss": 0.5}, {"epoch": 2, "loss": 0.25}])
        >>> [r["loss"] for r in read_history(path)]
        [0.5, 0.25]
    """
    return atomic_write_text(path, "".join(json.dumps(dict(r), sort_keys=True) + "\n"
                                           for r in records))


def read_history(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The records of a ``history.jsonl`` written by :func:`write_history` (blank lines skipped).

    Raises:
        FileFormatError: the file cannot be read, or a line is not a JSON object with an
            integer ``epoch``; the message names the file and the line.
    """
    p = Path(path)
    try:
        lines = p.read_bytes().decode("utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise FileFormatError(str(p), f"cannot be read ({exc}); expected a history.jsonl of "
                                      "one JSON object per epoch") from None
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except (ValueError, RecursionError):
            record = None
        epoch = record.get("epoch") if isinstance(record, dict) else None
        if not isinstance(epoch, int) or isinstance(epoch, bool):
            raise FileFormatError(str(p), f"line {number} is not a JSON object with an integer "
                                          "'epoch'; expected one such object per epoch")
        records.append(record)
    return records


#: allocations of container objects between two collections of the young generation inside
#: :func:`steady_gc` (Python's default: 700)
GC_YOUNG = 20_000


@contextlib.contextmanager
def steady_gc(young: int = GC_YOUNG) -> Iterator[None]:
    """Inside, the objects that exist on entry (modules, parameters, imported libraries: about
    370,000 in a search worker) are left out of every collection (:func:`gc.freeze`), and the
    young generation is collected every ``young`` allocations; both are restored on exit.

    A search step allocates about 44,000 container objects (autograd nodes, tensors, tuples)
    and frees them by reference counting; at Python's defaults it ran about 64 collections
    per step and, every few steps, a full one that walked every object of the process (150
    ms on a 2-core EPYC, against 2.5-3 s steps). Cycles are still collected, only less often.
    """
    before = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(young, *before[1:])
    try:
        yield
    finally:
        gc.set_threshold(*before)
        gc.unfreeze()
