"""``SearchResult``: what one search produced, and the records a search keeps.

Per-epoch metrics (the callback's dict, ``SearchResult.history``, the checkpoint's history;
plain JSON values): ``epoch`` (1-based), ``nat_acc`` and ``pgd_acc`` (supernet in eval mode on
the first ``eval_samples`` items of ``val``, PGD with ``eval_attack_steps`` steps),
``gamma_mean``, ``gamma_last`` (weight of the natural objective), ``genotype`` (JSON),
``entropy_<cell type>`` and ``entropy_mean`` (mean op-weight entropy, nats),
``genotype_changes`` (edges of the derived genotype not in the previous epoch's; epoch 1:
against the initial alphas), the step summaries of
:data:`arnas_ray._diagnostics.EPOCH_FIELDS` (``gamma_min``, ``gamma_max``, ``gamma_frac_0``,
``gamma_frac_1``, ``gamma_frac_half``, ``cos_mean``, ``descent_frac``, ``norm_nat_mean``,
``norm_adv_mean``, ``norm_d_mean``, ``loss_nat_mean``, ``loss_adv_mean``; ``nan`` where not
measured), ``degeneracy`` (:func:`arnas_ray._diagnostics.search_degeneracy` over the MGDA
steps so far; ``""`` when none), ``train_loss``, ``lr``, ``steps``, ``strategy_used``,
``search_s``, ``epoch_s`` (wall seconds, with the evaluation) and ``images_per_s``.

Per-step records (:func:`arnas_ray._diagnostics.step_record`: ``epoch``, ``step``,
``strategy``, gamma, losses, norms, cosine, dot products, entropy, ``descent``) go to
``SearchResult.steps``, the checkpoint, and ``steps.jsonl`` beside it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from arnas_ray.space import Genotype

__all__ = ["SearchResult"]


@dataclass
class SearchResult:
    """What one search produced (``steps``: the per-step records, left out of :meth:`to_dict`;
    ``degeneracy``: the warning of :func:`arnas_ray._diagnostics.search_degeneracy` or None)."""

    genotype: Genotype
    alphas: dict[str, list[list[float]]]
    history: list[dict[str, Any]]
    nat_acc: float
    pgd_acc: float
    params: int
    macs: int
    wall_s: float
    epochs: int
    extra: dict[str, Any] = field(default_factory=dict)
    steps: list[dict[str, Any]] = field(default_factory=list)
    degeneracy: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "genotype": self.genotype.to_dict(), "alphas": self.alphas, "history": self.history,
            "nat_acc": self.nat_acc, "pgd_acc": self.pgd_acc, "params": self.params, "macs": self.macs,
            "wall_s": self.wall_s, "epochs": self.epochs, "degeneracy": self.degeneracy, **self.extra,
        }
