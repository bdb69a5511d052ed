"""Atomic, safe checkpoint files (``torch.save`` to a temp file + rename; ``weights_only`` load).

Every refusal is a :class:`~arnas_ray.errors.CheckpointError` whose message is one line that
starts with the file: ``FILE: what is wrong; what was expected``. None of them repeats
torch's advice to load with ``weights_only=False``: a file that needs it is exactly the kind
of file that must not be unpickled.
"""

from __future__ import annotations

import os
import pickle
import re
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch

from arnas_ray._atomic import atomic_path
from arnas_ray.errors import CheckpointError

__all__ = ["load_checkpoint", "rng_state", "save_checkpoint", "set_rng_state"]

_EXPECTED = "expected a checkpoint (a zip archive written by torch.save) of arnas-ray"
_UNSAFE_GLOBAL = re.compile(r"Unsupported global: GLOBAL ([\w.]+)")
_UNPICKLER_REASON = re.compile(r"WeightsUnpickler error:\s*(.+?)\s*(?:\n\n|$)", re.S)
_MAX_REASON = 160


def save_checkpoint(path: str | os.PathLike[str], state: dict[str, Any]) -> Path:
    """Write ``state`` (tensors, numbers, strings, lists, dicts) to ``path`` atomically."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return Path(path)


def _reason(exc: BaseException) -> str:
    """A short, safe description of why torch could not load a file: the unpickler's own
    reason when there is one, never torch's suggestion to load unsafely."""
    text = str(exc)
    match = _UNPICKLER_REASON.search(text)
    reason = match.group(1) if match else (text.splitlines()[0] if text else "")
    if "weights_only" in reason or "Weights only load failed" in reason:
        reason = ""
    reason = " ".join(reason.split())[:_MAX_REASON]
    return f"{type(exc).__name__}: {reason}" if reason else type(exc).__name__


def _is_zip(p: Path) -> bool:
    try:
        return zipfile.is_zipfile(p)
    except (zipfile.BadZipFile, OSError, ValueError):  # e.g. a damaged end-of-archive record
        return False


def _load(p: Path, map_location: Any) -> Any:
    if not _is_zip(p):  # text, random bytes, a truncated archive, a legacy pickle
        raise CheckpointError(f"{p}: not a checkpoint, or a truncated or corrupt one: it holds "
                              f"no complete zip archive; {_EXPECTED}")
    try:
        with warnings.catch_warnings():  # a damaged file warns about its pickle protocol
            warnings.simplefilter("ignore")
            return torch.load(p, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch's loader raises many types on damaged archives
        unsafe = (_UNSAFE_GLOBAL.search(str(exc)) if isinstance(exc, pickle.UnpicklingError)
                  else None)
        if unsafe:
            raise CheckpointError(
                f"{p}: refused: it holds a Python object of type {unsafe.group(1)}, and "
                "arnas-ray loads only tensors, numbers, strings, lists and dicts "
                f"(weights_only=True); {_EXPECTED}") from None
        raise CheckpointError(f"{p}: truncated or corrupt: it holds no readable checkpoint "
                              f"({_reason(exc)}); {_EXPECTED}") from None


def load_checkpoint(path: str | os.PathLike[str], *, map_location: Any = "cpu") -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True``; never unpickles arbitrary objects.

    Raises:
        CheckpointError: the file is missing, not a zip archive (text, random bytes, a
            truncated file), corrupt inside, or holds non-tensor objects (e.g. a malicious
            pickle), or is not a dict; the message starts with the file and says what was
            expected.
    """
    p = Path(path)
    if not p.is_file():
        state = "is a folder, not a file" if p.is_dir() else "does not exist"
        raise CheckpointError(f"{p}: the checkpoint {state}")
    try:
        with p.open("rb"):
            pass
    except OSError as exc:  # unreadable (permissions, I/O error)
        raise CheckpointError(f"{p}: cannot be read ({exc.strerror or exc}); {_EXPECTED}") from None
    state = _load(p, map_location)
    if not isinstance(state, dict):
        raise CheckpointError(f"{p}: holds a {type(state).__name__}; {_EXPECTED}, holding a dict")
    return state


def rng_state() -> dict[str, Any]:
    """Torch CPU (and CUDA, when present) RNG states, for exact resume."""
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
