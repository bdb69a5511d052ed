"""Names of the evaluation attacks and the results-table columns they fill (standard library only).

One home for these names: the evaluation suite (``train/evaluate.py``), the sweep spec, the
results table, the report and the CLI all import them from here, and nothing else defines them.

Example:
    >>> ATTACK_COLUMNS["pgd20"]
    'pgd20_acc'
    >>> retrain_objectives(("natural", "fgsm", "pgd20"))
    {'nat_acc': 'max', 'pgd20_acc': 'max'}
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = [
    "ACCURACY_COLUMNS",
    "ATTACK_COLUMNS",
    "DEFAULT_EVAL_ATTACKS",
    "EVAL_ATTACKS",
    "SEARCH_OBJECTIVES",
    "STRENGTH_ORDER",
    "retrain_objectives",
    "strongest_attack",
]

#: evaluation attacks of a retrained network, in the order the suite runs them
EVAL_ATTACKS: tuple[str, ...] = ("natural", "fgsm", "pgd20", "pgd100", "aa")
#: what a retrained network is evaluated on unless the spec or the command says otherwise:
#: every attack but AutoAttack (slow; ask for it with ``aa``)
DEFAULT_EVAL_ATTACKS: tuple[str, ...] = tuple(a for a in EVAL_ATTACKS if a != "aa")
#: the results-table column of each evaluation attack
ATTACK_COLUMNS: dict[str, str] = {"natural": "nat_acc", "fgsm": "fgsm_acc", "pgd20": "pgd20_acc",
                                  "pgd100": "pgd100_acc", "aa": "aa_acc"}
#: the attacks from the strongest to the weakest (AutoAttack >= PGD-100 >= PGD-20 >= FGSM)
STRENGTH_ORDER: tuple[str, ...] = ("aa", "pgd100", "pgd20", "fgsm")
#: objectives of the search stage: the supernet's natural and PGD accuracy on held-out data
SEARCH_OBJECTIVES: dict[str, str] = {"nat_acc": "max", "pgd_acc": "max"}
#: every accuracy column of the results table: the supernet's, then each attack's after retraining
ACCURACY_COLUMNS: tuple[str, ...] = (*SEARCH_OBJECTIVES,
                                     *(ATTACK_COLUMNS[a] for a in EVAL_ATTACKS if a != "natural"))


def strongest_attack(attacks: Iterable[str]) -> str | None:
    """The strongest attack among ``attacks`` (``None`` when only ``natural`` is evaluated)."""
    given = set(attacks)
    return next((a for a in STRENGTH_ORDER if a in given), None)


def retrain_objectives(attacks: Iterable[str]) -> dict[str, str]:
    """The default objectives of the retrain stage: natural accuracy (when evaluated) and the
    accuracy under the strongest evaluated attack, both maximised."""
    attacks = tuple(attacks)
    out: dict[str, str] = {}
    if "natural" in attacks:
        out["nat_acc"] = "max"
    strongest = strongest_attack(attacks)
    if strongest is not None:
        out[ATTACK_COLUMNS[strongest]] = "max"
    return out
