"""The robust evaluation suite: natural, FGSM, PGD-20, PGD-100, AutoAttack and transfer attacks.

:func:`evaluate` runs every requested attack batch by batch (the data is read once) with the
model in eval mode, and returns an :class:`EvalResult`. Its sanity checks are reported, not
hidden and not raised: a stronger attack must not leave more examples correct than a weaker
one (natural >= FGSM >= PGD-20 >= PGD-100, within one example), AutoAttack must not exceed
PGD-100 by more than one point, and a black-box transfer attack must not beat white-box PGD-20.
A violation is the classic symptom of gradient masking (Athalye et al., 2018) and adds a
``"suspected gradient masking: ..."`` line to ``EvalResult.warnings``.

Attack settings follow the paper at ``eps`` (8/255 by default): FGSM one step of ``eps``;
PGD-20 and PGD-100 with step ``alpha`` (``eps / 4`` = 2/255 by default) and a random start;
AutoAttack standard (APGD-CE, APGD-T, FAB-T, Square); transfer: PGD-20 crafted on a source
model and evaluated on the target.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from arnas_ray._config import check, check_choice
from arnas_ray._metrics import ATTACK_COLUMNS, EVAL_ATTACKS
from arnas_ray._registry import Registry
from arnas_ray.attacks import AttackSpec, attack, autoattack, logits_of
from arnas_ray.data import DataSplits, make_loader
from arnas_ray.space import count_macs, count_params
from arnas_ray.train._model import load_model

__all__ = ["EVAL_ATTACKS", "EVAL_SPECS", "EvalResult", "accuracies", "evaluate", "load_model",
           "sanity_warnings"]

logger = logging.getLogger(__name__)

SpecAt = Callable[[float, float], "AttackSpec | None"]
"""Builds an evaluation attack's spec at ``(eps, alpha)``; ``None`` means clean inputs."""

#: What each evaluation attack of :data:`~arnas_ray._metrics.EVAL_ATTACKS` runs: its spec at
#: ``(eps, alpha)``. The names and their order come from ``EVAL_ATTACKS`` (torch-free, read by
#: the sweep spec, the results table and the command line too).
EVAL_SPECS: Registry[SpecAt] = Registry("evaluation attack")
EVAL_SPECS.add("natural", lambda eps, alpha: None)
EVAL_SPECS.add("fgsm", lambda eps, alpha: AttackSpec(kind="fgsm", eps=eps, alpha=alpha, steps=1,
                                                     random_start=False))
EVAL_SPECS.add("pgd20", lambda eps, alpha: AttackSpec(kind="pgd", eps=eps, alpha=alpha, steps=20))
EVAL_SPECS.add("pgd100", lambda eps, alpha: AttackSpec(kind="pgd", eps=eps, alpha=alpha,
                                                       steps=100))
EVAL_SPECS.add("aa", lambda eps, alpha: AttackSpec(kind="autoattack", eps=eps, alpha=alpha,
                                                   version="standard"))
if tuple(EVAL_SPECS) != EVAL_ATTACKS:  # an internal invariant: one spec per name, in order
    raise RuntimeError(f"EVAL_SPECS {tuple(EVAL_SPECS)} != EVAL_ATTACKS {EVAL_ATTACKS}")


@dataclass
class EvalResult:
    """Accuracies in [0, 1] (``None`` for an attack that was not run) and the model's size.

    Attributes:
        nat_acc, fgsm_acc, pgd20_acc, pgd100_acc: on the ``n`` evaluated examples (the
            ``ATTACK_COLUMNS`` of :mod:`arnas_ray._metrics`, the results table's columns).
        aa_acc: AutoAttack, on the first ``aa_n`` examples (``aa_subset``).
        transfer_acc: target accuracy on PGD-20 examples crafted on the source model.
        n: examples evaluated. aa_n: examples attacked by AutoAttack.
        eps, alpha: the L-inf budget and the PGD step.
        params: trainable parameters (auxiliary head excluded). macs: per image.
        wall_s: seconds spent.
        warnings: sanity violations ("suspected gradient masking: ...").
    """

    nat_acc: float | None = None
    fgsm_acc: float | None = None
    pgd20_acc: float | None = None
    pgd100_acc: float | None = None
    aa_acc: float | None = None
    transfer_acc: float | None = None
    n: int = 0
    aa_n: int | None = None
    eps: float = 8 / 255
    alpha: float = 2 / 255
    params: int = 0
    macs: int = 0
    wall_s: float = 0.0
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every field."""
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        """One line of JSON."""
        return json.dumps(self.to_dict())


def _gap(n: int) -> float:
    """One example, as an accuracy difference (the tolerance of the ordering checks)."""
    return 1.0 / max(n, 1) + 1e-9


def sanity_warnings(
    *,
    n: int,
    nat_acc: float | None = None,
    fgsm_acc: float | None = None,
    pgd20_acc: float | None = None,
    pgd100_acc: float | None = None,
    aa_acc: float | None = None,
    aa_reference: float | None = None,
    transfer_acc: float | None = None,
) -> list[str]:
    """The ordering checks of an evaluation, as warnings (empty when all hold).

    Args:
        n: examples the natural/FGSM/PGD accuracies were measured on.
        nat_acc, fgsm_acc, pgd20_acc, pgd100_acc: accuracies (``None``: not run); each must not
            exceed the previous one present by more than one example.
        aa_acc: AutoAttack accuracy; must be <= ``aa_reference`` + 0.01 (one point).
        aa_reference: the strongest PGD accuracy on the AutoAttack subset (defaults to the
            strongest of ``pgd100_acc``, ``pgd20_acc``, ``fgsm_acc``, ``nat_acc`` given).
        transfer_acc: accuracy under the black-box transfer attack; must not fall below
            ``pgd20_acc`` by more than one example.

    Returns:
        One ``"suspected gradient masking: ..."`` line per violated check.

    Example:
        >>> sanity_warnings(n=100, nat_acc=0.9, fgsm_acc=0.5, pgd20_acc=0.6)[0][:27]
        'suspected gradient masking:'
    """
    out: list[str] = []
    chain = [("natural", nat_acc), ("FGSM", fgsm_acc), ("PGD-20", pgd20_acc),
             ("PGD-100", pgd100_acc)]
    present = [(name, acc) for name, acc in chain if acc is not None]
    for (weak, weak_acc), (strong, strong_acc) in zip(present, present[1:]):
        if strong_acc > weak_acc + _gap(n):
            out.append(
                f"suspected gradient masking: {strong} accuracy {strong_acc:.4f} exceeds "
                f"{weak} accuracy {weak_acc:.4f} by more than one example (n={n}); a stronger "
                "attack should not leave more examples correct"
            )
    if aa_acc is not None:
        ref = aa_reference
        if ref is None and present:
            ref = present[-1][1]
        if ref is not None and aa_acc > ref + 0.01 + 1e-9:
            out.append(
                f"suspected gradient masking: AutoAttack accuracy {aa_acc:.4f} exceeds the PGD "
                f"accuracy {ref:.4f} on the same examples by more than one point"
            )
    if transfer_acc is not None and pgd20_acc is not None and transfer_acc < pgd20_acc - _gap(n):
        out.append(
            f"suspected gradient masking: the black-box transfer attack (accuracy "
            f"{transfer_acc:.4f}) is stronger than white-box PGD-20 ({pgd20_acc:.4f}), n={n}"
        )
    return out


def _batches(data: Any, batch_size: int) -> Iterable[tuple[Tensor, Tensor]]:
    """Batches of a DataSplits (its test split), a map-style Dataset, or an iterable of batches."""
    if isinstance(data, DataSplits):
        data = data.test
    if isinstance(data, Dataset) and not isinstance(data, DataLoader) and hasattr(data, "__len__"):
        return make_loader(data, batch_size, shuffle=False)
    return data


def _limited(batches: Iterable[tuple[Tensor, Tensor]], limit: int | None
             ) -> Iterable[tuple[Tensor, Tensor]]:
    seen = 0
    for x, y in batches:
        if limit is not None:
            if seen >= limit:
                return
            x, y = x[: limit - seen], y[: limit - seen]
        seen += int(y.shape[0])
        yield x, y


def _predict_correct(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    with torch.no_grad():
        return logits_of(model(x)).argmax(dim=1) == y  # [N] bool


def _generators(names: Iterable[str], seed: int, device: torch.device
                ) -> dict[str, torch.Generator]:
    """One generator per attack, the ``i``-th seeded ``seed + 7919 * i``: one attack's numbers
    do not depend on which others run."""
    return {name: torch.Generator(device=device).manual_seed(seed + 7919 * i)
            for i, name in enumerate(names)}


def accuracies(
    model: nn.Module,
    batches: Iterable[tuple[Tensor, Tensor]],
    device: torch.device | str,
    specs: Mapping[str, AttackSpec | None],
    *,
    seed: int = 0,
    limit: int | None = None,
) -> dict[str, float]:
    """Accuracy of ``model`` (in its current mode) under each attack of ``specs`` (``None``: clean).

    Each attack draws its random starts from its own generator seeded from ``seed``, so one
    attack's numbers do not depend on which others run. Returns ``nan`` for no data.
    """
    device = torch.device(device)
    gens = _generators(specs, seed, device)
    correct = dict.fromkeys(specs, 0)
    n = 0
    for x, y in _limited(batches, limit):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        for name, spec in specs.items():
            xa = x if spec is None else attack(model, x, y, spec, generator=gens[name])
            correct[name] += int(_predict_correct(model, xa, y).sum())
        n += int(y.shape[0])
    return {name: (c / n if n else math.nan) for name, c in correct.items()}


class _Plan:
    """What one :func:`evaluate` call runs on every batch: the specs, one generator per attack."""

    def __init__(self, attacks: Sequence[str], *, eps: float, alpha: float, seed: int,
                 device: torch.device, aa_subset: int | None, batch_size: int,
                 aa_options: Mapping[str, Any] | None, transfer_from: nn.Module | None) -> None:
        self.want = set(attacks)
        self.specs = {name: EVAL_SPECS[name](eps, alpha) for name in EVAL_ATTACKS}
        self.gens = _generators([*EVAL_ATTACKS[1:], "transfer"], seed, device)
        self.aa_subset, self.batch_size = aa_subset, batch_size
        self.aa_options = dict(aa_options or {})
        self.transfer_from = transfer_from

    def white_box(self) -> list[str]:
        """The requested FGSM/PGD attacks, weakest first."""
        return [n for n in EVAL_ATTACKS if n in self.want and self.specs[n] is not None
                and self.specs[n].kind != "autoattack"]


@dataclass
class _Tally:
    """Correct predictions per attack (and ``transfer``, ``pgd_on_aa``), examples seen."""

    correct: dict[str, int] = field(default_factory=lambda: dict.fromkeys(
        (*EVAL_ATTACKS, "transfer", "pgd_on_aa"), 0))
    n: int = 0
    aa_n: int = 0
    image_shape: tuple[int, ...] | None = None


def _evaluate_batch(model: nn.Module, x: Tensor, y: Tensor, plan: _Plan, tally: _Tally) -> None:
    bs = int(y.shape[0])
    tally.image_shape = tuple(x.shape[1:])
    if "natural" in plan.want:
        tally.correct["natural"] += int(_predict_correct(model, x, y).sum())
    strongest = None  # per-example correctness under the strongest PGD run
    for name in plan.white_box():
        x_adv = attack(model, x, y, plan.specs[name], generator=plan.gens[name])
        strongest = _predict_correct(model, x_adv, y)
        tally.correct[name] += int(strongest.sum())
    if "aa" in plan.want:
        limit = bs if plan.aa_subset is None else plan.aa_subset - tally.aa_n
        take = max(0, min(bs, limit))
        if take > 0:
            x_aa = autoattack(model, x[:take], y[:take], plan.specs["aa"], generator=plan.gens["aa"],
                              batch_size=plan.batch_size, **plan.aa_options)
            tally.correct["aa"] += int(_predict_correct(model, x_aa, y[:take]).sum())
            if strongest is not None:
                tally.correct["pgd_on_aa"] += int(strongest[:take].sum())
            tally.aa_n += take
    if plan.transfer_from is not None:
        x_tr = attack(plan.transfer_from, x, y, plan.specs["pgd20"], generator=plan.gens["transfer"])
        tally.correct["transfer"] += int(_predict_correct(model, x_tr, y).sum())
    tally.n += bs


@contextlib.contextmanager
def _eval_mode(models: Sequence[nn.Module], device: torch.device) -> Iterator[None]:
    """The models on ``device`` in eval mode; their previous modes restored afterwards."""
    modes = [m.training for m in models]
    try:
        for m in models:
            m.to(device).eval()
        yield
    finally:
        for m, mode in zip(models, modes):
            m.train(mode)


def _macs(model: nn.Module, image_shape: tuple[int, ...] | None, device: torch.device) -> int:
    """MACs per image of square ``[C, S, S]`` inputs (0 when the shape is unknown)."""
    if image_shape is None or len(image_shape) != 3 or image_shape[1] != image_shape[2]:
        return 0
    return count_macs(model, image_shape[1], image_shape[0], device)


def _result(plan: _Plan, tally: _Tally, *, eps: float, alpha: float, params: int,
            macs: int) -> EvalResult:
    """The accuracies (``None`` for what did not run) and the sanity warnings."""
    def acc(name: str, denominator: int) -> float | None:
        ran = name in plan.want or (name == "transfer" and plan.transfer_from is not None)
        return tally.correct[name] / denominator if ran and denominator else None

    n, aa_n = tally.n, tally.aa_n
    accs = {ATTACK_COLUMNS[a]: acc(a, aa_n if a == "aa" else n) for a in EVAL_ATTACKS}
    result = EvalResult(**accs, transfer_acc=acc("transfer", n), n=n,
                        aa_n=aa_n if "aa" in plan.want else None, eps=eps, alpha=alpha,
                        params=params, macs=macs)
    aa_reference = tally.correct["pgd_on_aa"] / aa_n if (plan.white_box() and aa_n) else None
    result.warnings = sanity_warnings(
        n=n, nat_acc=result.nat_acc, fgsm_acc=result.fgsm_acc, pgd20_acc=result.pgd20_acc,
        pgd100_acc=result.pgd100_acc, aa_acc=result.aa_acc, aa_reference=aa_reference,
        transfer_acc=result.transfer_acc,
    )
    for line in result.warnings:
        logger.warning("%s", line)
    return result


def _check_arguments(attacks: Sequence[str], batch_size: int, aa_subset: int | None,
                     limit: int | None) -> None:
    for i, name in enumerate(attacks):
        check_choice(name, EVAL_ATTACKS, f"attacks[{i}]")
    check(batch_size >= 1, "batch_size", "batch_size >= 1", batch_size)
    check(aa_subset is None or aa_subset >= 1, "aa_subset", "aa_subset >= 1", aa_subset)
    check(limit is None or limit >= 1, "limit", "limit >= 1", limit)


def evaluate(model: nn.Module,
             data_or_loader: DataSplits | Dataset[Any] | Iterable[tuple[Tensor, Tensor]],
             device: torch.device | str, *, attacks: Sequence[str] = EVAL_ATTACKS,
             aa_subset: int | None = None, transfer_from: nn.Module | None = None,
             batch_size: int = 256, seed: int = 0, limit: int | None = None,
             eps: float = 8 / 255, alpha: float | None = None,
             aa_options: Mapping[str, Any] | None = None) -> EvalResult:
    """Evaluate ``model`` under the requested attacks, with sanity checks.

    The model (and ``transfer_from``) is moved to ``device`` and put in eval mode; the previous
    modes are restored afterwards.

    Args:
        model: the target; returns logits (or a tuple whose first element is the logits).
        data_or_loader: a :class:`DataSplits` (its **test** split is used), a map-style
            dataset, or an iterable of ``(x, y)`` batches.
        device: where to run.
        attacks: names from :data:`EVAL_ATTACKS`.
        aa_subset: run AutoAttack on the first ``aa_subset`` examples only (quick estimate).
        transfer_from: a source model; PGD-20 examples crafted on it are fed to ``model``
            (black-box transfer attack), reported as ``transfer_acc``.
        batch_size: examples per batch when a dataset is given.
        seed: seeds the random starts (and AutoAttack). limit: at most this many examples.
        eps: L-inf radius in the [0, 1] pixel space; alpha: PGD step (``eps / 4`` by default).
        aa_options: extra keyword arguments of :func:`~arnas_ray.attacks.autoattack`
            (``n_iter``, ``n_queries``), for tests.

    Returns:
        The :class:`EvalResult`, with ``warnings`` listing any sanity violation.

    Raises:
        SpecError: an unknown attack name or an out-of-range argument.
        MissingAutoAttackError: ``"aa"`` was asked for without ``pyautoattack``.

    Example:
        >>> res = evaluate(net, splits, "cpu", attacks=("natural", "pgd20"))  # doctest: +SKIP
    """
    _check_arguments(attacks, batch_size, aa_subset, limit)
    alpha = eps / 4 if alpha is None else alpha
    device = torch.device(device)
    t0 = time.perf_counter()
    plan = _Plan(attacks, eps=eps, alpha=alpha, seed=seed, device=device, aa_subset=aa_subset,
                 batch_size=batch_size, aa_options=aa_options, transfer_from=transfer_from)
    tally = _Tally()
    models = [model] + ([transfer_from] if transfer_from is not None else [])
    with _eval_mode(models, device):
        for x, y in _limited(_batches(data_or_loader, batch_size), limit):
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            _evaluate_batch(model, x, y, plan, tally)
        params, macs = count_params(model), _macs(model, tally.image_shape, device)
    result = _result(plan, tally, eps=eps, alpha=alpha, params=params, macs=macs)
    result.wall_s = time.perf_counter() - t0
    return result
