"""Deliberate faults, for tests and failure drills only (never part of a sweep spec).

The driver reads ``$ARNAS_RAY_TEST_FAULTS`` (JSON) once and hands the faults to the trials in
their Tune config, so they reach every node without touching the nodes' environments::

    ARNAS_RAY_TEST_FAULTS='{"diverge": ["arnas_1-2-2_mgda_s2"], "raise": ["robust-first_1-2-2_mgda_s2"]}'

* ``diverge``: trial keys whose search runs with ``lr = DIVERGE_LR``: the loss becomes
  non-finite in the first epoch and the trial ends ``failed`` with the epoch and step;
* ``raise``: trial keys whose trainable raises at start (Tune records an error file);
* ``pause_s``: seconds every search trial waits after its first epoch's report (its
  checkpoint is in storage by then): a window in which a test stops or kills the sweep while
  its trials are surely mid-search. A trial resumed from that checkpoint does not wait again.

Example:
    >>> Faults.from_env({FAULTS_ENV: '{"diverge": ["k"]}'}).diverge
    ('k',)
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from arnas_ray.errors import SpecError

__all__ = ["DIVERGE_LR", "FAULTS_ENV", "Faults", "InjectedFault"]

FAULTS_ENV = "ARNAS_RAY_TEST_FAULTS"
#: large enough that the first weight step sends the weights to ~1e30 and the next loss is
#: non-finite, small enough to stay a finite float32 (the loop's own divergence check fires)
DIVERGE_LR = 1e30
C = TypeVar("C")


class InjectedFault(RuntimeError):
    """The error a ``raise`` fault raises inside a trial."""


@dataclass(frozen=True)
class Faults:
    diverge: tuple[str, ...] = ()
    raise_in: tuple[str, ...] = ()
    pause_s: float = 0.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Faults:
        text = (os.environ if environ is None else environ).get(FAULTS_ENV, "").strip()
        if not text:
            return cls()
        try:
            data = json.loads(text)
        except ValueError:
            raise SpecError(FAULTS_ENV, f"expected JSON such as {{\"diverge\": [KEY]}}, got {text!r}") from None
        return cls.from_dict(data)

    @classmethod
    def from_dict(cls, data: Any) -> Faults:
        if data is None:
            return cls()
        if not isinstance(data, Mapping) or set(data) - {"diverge", "raise", "pause_s"}:
            raise SpecError(FAULTS_ENV, f"expected a mapping with 'diverge', 'raise' and/or 'pause_s', got {data!r}")
        pause = data.get("pause_s", 0.0)
        if isinstance(pause, bool) or not isinstance(pause, (int, float)) or not 0 <= pause < 3600:
            raise SpecError(f"{FAULTS_ENV}.pause_s", f"expected seconds in [0, 3600), got {pause!r}")
        return cls(tuple(map(str, data.get("diverge", ()))), tuple(map(str, data.get("raise", ()))), float(pause))

    def to_dict(self) -> dict[str, Any]:
        return {"diverge": list(self.diverge), "raise": list(self.raise_in), "pause_s": self.pause_s}

    def __bool__(self) -> bool:
        return bool(self.diverge or self.raise_in or self.pause_s)

    def search_config(self, key: str, config: C) -> C:
        """``config`` with the fault of trial ``key`` applied (a diverging learning rate)."""
        if key in self.diverge:
            return dataclasses.replace(config, lr=DIVERGE_LR)  # type: ignore[type-var]
        return config

    def after_epoch(self, epoch: int) -> None:
        """Wait ``pause_s`` after a search trial's first epoch (its report and checkpoint are out)."""
        if self.pause_s and epoch == 1:
            time.sleep(self.pause_s)

    def check(self, key: str) -> None:
        """Raise :class:`InjectedFault` when trial ``key`` is to fail."""
        if key in self.raise_in:
            raise InjectedFault(f"injected fault in trial {key} ({FAULTS_ENV})")
