"""White-box adversarial attacks behind one contract: FGSM, PGD (L-inf) and AutoAttack.

Every attack is a registered function ``attack_fn(model, x, y, spec, *, generator=None)``
that returns adversarial inputs of the shape of ``x``:

* ``model`` is any callable returning logits ``[N, K]``; when it returns a tuple (DARTS
  networks with an auxiliary head do) the first element is taken.
* ``x`` lies in the pixel space ``spec.clip`` (``[0, 1]`` by default): ``eps`` and ``alpha``
  are measured in that space, so a model that normalises must do so inside its ``forward``.
* The attack runs in whatever train/eval mode the caller set and never changes it: the ARNAS
  search attacks the supernet in train mode (batch statistics), evaluation attacks in eval
  mode. Only the gradient with respect to the input is computed (``torch.autograd.grad``),
  so no parameter ``.grad`` is written and no optimiser is built.

Example:
    >>> import torch
    >>> from torch import nn
    >>> model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 10)).eval()
    >>> x, y = torch.rand(2, 3, 4, 4), torch.tensor([1, 2])
    >>> x_adv = attack(model, x, y, PRESETS["pgd20"], generator=torch.Generator().manual_seed(0))
    >>> bool((x_adv - x).abs().max() <= PRESETS["pgd20"].eps + 1e-6)
    True
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from arnas_ray._config import check, check_choice
from arnas_ray._registry import Registry
from arnas_ray.errors import SpecError

__all__ = [
    "AA_ATTACKS",
    "AA_VERSIONS",
    "ATTACKS",
    "ATTACK_KINDS",
    "AttackFn",
    "AttackSpec",
    "MissingAutoAttackError",
    "NORMS",
    "PRESETS",
    "attack",
    "autoattack",
    "fgsm",
    "frozen_parameters",
    "pgd",
    "pgd_groups",
    "robust_accuracy",
]

logger = logging.getLogger(__name__)

ATTACK_KINDS: tuple[str, ...] = ("fgsm", "pgd", "autoattack")
NORMS: tuple[str, ...] = ("linf", "l2")
#: Versions of the official AutoAttack; ``custom`` runs ``AttackSpec.aa_attacks``.
AA_VERSIONS: tuple[str, ...] = ("standard", "plus", "rand", "custom")
#: Attack names understood by the official AutoAttack (``version="custom"``).
AA_ATTACKS: tuple[str, ...] = ("apgd-ce", "apgd-dlr", "fab", "square", "apgd-t", "fab-t")

Model = Callable[[Tensor], Any]
"""A callable returning logits ``[N, K]``, or a tuple whose first element is the logits."""


@dataclass(frozen=True)
class AttackSpec:
    """What to attack with; validated at construction, built from YAML by ``from_dict``.

    Attributes:
        kind: one of :data:`ATTACK_KINDS`.
        eps: L-inf radius in the pixel space ``clip`` (8/255 is the CIFAR convention).
        alpha: PGD step size (FGSM steps by ``eps`` and ignores it).
        steps: PGD iterations (0 keeps the random start only); FGSM ignores it.
        random_start: PGD starts at ``x + U(-eps, eps)`` (Madry et al.) instead of ``x``.
        restarts: PGD restarts; per example the first perturbation that fools the model is
            kept, otherwise the one with the highest loss. Needs ``random_start`` when > 1.
        clip: ``(low, high)`` bounds of the input domain; outputs always lie inside.
        norm: distance measure; only ``"linf"`` is implemented (``"l2"`` is refused).
        version: AutoAttack version (:data:`AA_VERSIONS`); ``"standard"`` runs APGD-CE,
            APGD-T, FAB-T and Square.
        aa_attacks: the AutoAttack subset to run, only with ``version="custom"``.
    """

    kind: str = "pgd"
    eps: float = 8 / 255
    alpha: float = 2 / 255
    steps: int = 7
    random_start: bool = True
    restarts: int = 1
    clip: tuple[float, float] = (0.0, 1.0)
    norm: str = "linf"
    version: str = "standard"
    aa_attacks: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        check_choice(self.kind, ATTACK_KINDS, "kind")
        check(0 < self.eps < math.inf, "eps", "0 < eps < inf", self.eps)
        check(0 < self.alpha < math.inf, "alpha", "0 < alpha < inf", self.alpha)
        check(self.steps >= 0, "steps", "steps >= 0", self.steps)
        check(self.restarts >= 1, "restarts", "restarts >= 1", self.restarts)
        check(
            self.restarts == 1 or self.random_start,
            "restarts",
            "restarts == 1 or random_start",
            self.restarts,
        )
        check(len(self.clip) == 2, "clip", "len(clip) == 2", self.clip)
        low, high = self.clip
        check(
            math.isfinite(low) and math.isfinite(high) and low < high,
            "clip",
            "clip[0] < clip[1], both finite",
            self.clip,
        )
        check_choice(self.norm, NORMS, "norm")
        if self.norm != "linf":
            raise SpecError(
                "norm", f"norm {self.norm!r} is not implemented yet; implemented: ('linf',)"
            )
        check_choice(self.version, AA_VERSIONS, "version")
        for i, name in enumerate(self.aa_attacks):
            check_choice(name, AA_ATTACKS, f"aa_attacks[{i}]")
        if self.version == "custom":
            check(len(self.aa_attacks) > 0, "aa_attacks", "aa_attacks non-empty with version='custom'",
                  self.aa_attacks)
        else:
            check(len(self.aa_attacks) == 0, "aa_attacks",
                  "aa_attacks empty unless version='custom'", self.aa_attacks)


class AttackFn(Protocol):
    """The contract of every registered attack."""

    def __call__(
        self,
        model: Model,
        x: Tensor,
        y: Tensor,
        spec: AttackSpec | None = None,
        *,
        generator: torch.Generator | None = None,
    ) -> Tensor: ...


ATTACKS: Registry[AttackFn] = Registry("attack")


class MissingAutoAttackError(ImportError):
    """The optional ``pyautoattack`` package (official AutoAttack) is not installed."""


# ----------------------------------------------------------------------------- helpers


def _logits(model: Model, x: Tensor) -> Tensor:
    out = model(x)
    if isinstance(out, (tuple, list)):  # (logits, logits_aux) from DARTS-style networks
        out = out[0]
    return out


def _prepare(x: Tensor, y: Tensor, spec: AttackSpec | None, kind: str) -> tuple[Tensor, Tensor, AttackSpec]:
    if spec is None:
        spec = AttackSpec(kind=kind)
    if not isinstance(spec, AttackSpec):
        raise TypeError(f"spec must be an AttackSpec, got {type(spec).__name__}")
    if not torch.is_floating_point(x) or x.dim() < 2:
        raise ValueError(f"x must be a floating tensor [N, C, H, W], got dtype={x.dtype} shape={tuple(x.shape)}")
    if y.shape != x.shape[:1]:
        raise ValueError(f"y must have shape [N]={tuple(x.shape[:1])}, got {tuple(y.shape)}")
    x = x.detach()
    if x.is_inference():  # tensors made under torch.inference_mode cannot enter autograd
        x = x.clone()
    return x, y.detach(), spec


def _uniform_like(x: Tensor, bound: float, generator: torch.Generator | None) -> Tensor:
    """``U(-bound, bound)`` noise shaped like ``x``; drawn on the generator's device, then moved."""
    if generator is None:  # same draw as torchattacks: torch.empty_like(x).uniform_(-eps, eps)
        return torch.empty_like(x).uniform_(-bound, bound)
    noise = torch.empty(x.shape, dtype=x.dtype, device=generator.device)
    return noise.uniform_(-bound, bound, generator=generator).to(x.device)


def _random_start(x: Tensor, spec: AttackSpec, generator: torch.Generator | None) -> Tensor:
    """PGD's start: ``clip(x + U(-eps, eps))`` with ``spec.random_start``, else ``x``."""
    if spec.random_start:
        return (x + _uniform_like(x, spec.eps, generator)).clamp_(spec.clip[0], spec.clip[1])
    return x.clone()


def _project(x_adv: Tensor, x: Tensor, eps: float, clip: tuple[float, float]) -> Tensor:
    """``clip_{x,eps}``: into the eps-ball around ``x``, then into the clip range (in place)."""
    delta = (x_adv - x).clamp_(-eps, eps)
    return (x + delta).clamp_(clip[0], clip[1])


def _work_format(x: Tensor) -> torch.memory_format:
    """Memory format the attack runs the model in: channels_last for image batches on CPU,
    where oneDNN's convolutions (above all depthwise ones) run faster in it and propagate it
    through the network (1.33x for PGD-20 on the DARTS-like benchmark net, 2 threads); the
    caller's format elsewhere. Values are unaffected; results come back in ``x``'s format."""
    if x.dim() == 4 and x.device.type == "cpu":
        return torch.channels_last
    return _caller_format(x)


def _caller_format(x: Tensor) -> torch.memory_format:
    if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        return torch.channels_last
    return torch.contiguous_format


def _pgd_run(model: Model, x: Tensor, y: Tensor, spec: AttackSpec, start: Tensor) -> Tensor:
    """``spec.steps`` signed-gradient ascent steps from ``start`` (already in the ball)."""
    return _pgd_run_groups(lambda xs: [_logits(model, xs[0])], [x], [y], spec, [start])[0]


def _pgd_run_groups(model_groups: Callable[[list[Tensor]], Sequence[Tensor]], xs: Sequence[Tensor],
                    ys: Sequence[Tensor], spec: AttackSpec, starts: Sequence[Tensor]) -> list[Tensor]:
    """:func:`_pgd_run` on several batches whose logits one call computes: the summed loss
    has, for each batch, the gradient of that batch's own loss."""
    out_fmts = [_caller_format(x) for x in xs]
    fmts = [_work_format(x) for x in xs]
    xs = [x.contiguous(memory_format=f) for x, f in zip(xs, fmts)]
    x_advs = [s.detach().contiguous(memory_format=f) for s, f in zip(starts, fmts)]
    with torch.enable_grad():  # callers often evaluate under torch.no_grad()
        for _ in range(spec.steps):
            for xa in x_advs:
                xa.requires_grad_(True)
            logits = model_groups(x_advs)
            losses = [F.cross_entropy(lo, y) for lo, y in zip(logits, ys)]
            loss = losses[0] if len(losses) == 1 else torch.stack(losses).sum()
            grads = torch.autograd.grad(loss, x_advs)  # input gradients only: no param .grad
            # x_{t+1} = clip_{x,eps}(x_t + alpha * sign(grad)); the sign step is exact.
            x_advs = [_project(torch.add(xa.detach(), g.sign(), alpha=spec.alpha), x, spec.eps, spec.clip)
                      for xa, g, x in zip(x_advs, grads, xs)]
    return [xa.detach().contiguous(memory_format=f) for xa, f in zip(x_advs, out_fmts)]


def pgd_groups(model_groups: Callable[[list[Tensor]], Sequence[Tensor]], xs: Sequence[Tensor],
               ys: Sequence[Tensor], spec: AttackSpec | None = None, *,
               generator: torch.Generator | None = None) -> list[Tensor]:
    """:func:`pgd` on several batches at once, through a model that computes the logits of
    all of them in one call (e.g. :meth:`arnas_ray.space.Supernet.forward_groups`).

    The result equals ``[pgd(model, x, y, spec, generator=generator) for x, y in zip(xs, ys)]``
    (random starts are drawn in the same order) when ``model_groups`` computes each batch's
    logits independently of the others. One restart only.

    Raises:
        ValueError: ``spec.restarts != 1``, or ``xs`` and ``ys`` differ in length.
    """
    if len(xs) != len(ys) or not xs:
        raise ValueError(f"pgd_groups needs as many label batches as input batches, got {len(xs)} and {len(ys)}")
    prepared = [_prepare(x, y, spec, "pgd") for x, y in zip(xs, ys)]
    spec = prepared[0][2]
    if spec.restarts != 1:
        raise ValueError(f"pgd_groups runs one restart, got restarts={spec.restarts}")
    xs = [p[0] for p in prepared]
    starts = [_random_start(x, spec, generator) for x in xs]
    return _pgd_run_groups(model_groups, xs, [p[1] for p in prepared], spec, starts)


# ----------------------------------------------------------------------------- attacks


@ATTACKS.register("fgsm")
def fgsm(
    model: Model,
    x: Tensor,
    y: Tensor,
    spec: AttackSpec | None = None,
    *,
    generator: torch.Generator | None = None,
) -> Tensor:
    r"""FGSM in the paper 'Explaining and Harnessing Adversarial Examples'
    [https://arxiv.org/abs/1412.6572].

    .. math:: x_{adv} = \mathrm{clip}_{[lo, hi]}(x + \epsilon \cdot \mathrm{sign}(\nabla_x L(f(x), y)))

    Distance Measure : Linf

    Args:
        model: callable returning logits (or a tuple whose first element is the logits); its
            train/eval mode is used as set by the caller and left unchanged.
        x: clean inputs ``[N, C, H, W]`` within ``spec.clip`` (``[0, 1]`` by default).
        y: integer labels ``[N]``.
        spec: only ``eps`` and ``clip`` are used (the step is ``eps``); defaults to
            ``AttackSpec(kind="fgsm")``.
        generator: unused (FGSM is deterministic); accepted for the common contract.

    Returns:
        Detached adversarial inputs ``[N, C, H, W]``, within ``eps`` of ``x`` and within ``clip``.

    Example:
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(48, 10))
        >>> x, y = torch.rand(2, 3, 4, 4), torch.tensor([1, 2])
        >>> x_adv = fgsm(model, x, y, PRESETS["fgsm"])
        >>> x_adv.shape
        torch.Size([2, 3, 4, 4])
    """
    del generator
    x, y, spec = _prepare(x, y, spec, "fgsm")
    with torch.enable_grad():
        x_req = x.clone().requires_grad_(True)
        loss = F.cross_entropy(_logits(model, x_req), y)
        (grad,) = torch.autograd.grad(loss, x_req)
    return _project(torch.add(x, grad.sign(), alpha=spec.eps), x, spec.eps, spec.clip)


@ATTACKS.register("pgd")
def pgd(
    model: Model,
    x: Tensor,
    y: Tensor,
    spec: AttackSpec | None = None,
    *,
    generator: torch.Generator | None = None,
    x_init: Tensor | None = None,
) -> Tensor:
    r"""PGD in the paper 'Towards Deep Learning Models Resistant to Adversarial Attacks'
    [https://arxiv.org/abs/1706.06083].

    .. math::
        x_0 = \mathrm{clip}_{[lo, hi]}(x + U(-\epsilon, \epsilon)) \quad \text{(random start)}

        x_{t+1} = \mathrm{clip}_{x,\epsilon}(x_t + \alpha \cdot \mathrm{sign}(\nabla_{x_t} L(f(x_t), y)))

    where :math:`\mathrm{clip}_{x,\epsilon}` projects onto :math:`\{x' : \|x'-x\|_\infty \le
    \epsilon\} \cap [lo, hi]^d` and :math:`L` is the mean cross-entropy (as torchattacks).

    Distance Measure : Linf

    Args:
        model: callable returning logits (or a tuple whose first element is the logits); its
            train/eval mode is used as set by the caller and left unchanged (the ARNAS search
            attacks in train mode, evaluation in eval mode).
        x: clean inputs ``[N, C, H, W]`` within ``spec.clip`` (``[0, 1]`` by default).
        y: integer labels ``[N]``.
        spec: eps, alpha, steps, random_start, restarts and clip; defaults to ``AttackSpec()``
            (PGD-7, eps 8/255, alpha 2/255).
        generator: seeds the random start (it may live on another device than ``x``). Without
            one the global RNG draws ``torch.empty_like(x).uniform_(-eps, eps)``, exactly as
            torchattacks does.
        x_init: explicit starting point of the first restart (projected into the ball), in place
            of the random start; for cross-checks against other implementations.

    Returns:
        Detached adversarial inputs ``[N, C, H, W]``, within ``eps`` of ``x`` and within ``clip``.

    Example:
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(48, 10))
        >>> x, y = torch.rand(2, 3, 4, 4), torch.tensor([1, 2])
        >>> g = torch.Generator().manual_seed(0)
        >>> x_adv = pgd(model, x, y, PRESETS["pgd20"], generator=g)
        >>> bool((x_adv - x).abs().max() <= PRESETS["pgd20"].eps + 1e-6)
        True
    """
    x, y, spec = _prepare(x, y, spec, "pgd")
    if x_init is not None and x_init.shape != x.shape:
        raise ValueError(f"x_init must have the shape of x {tuple(x.shape)}, got {tuple(x_init.shape)}")

    def start(restart: int) -> Tensor:
        if restart == 0 and x_init is not None:  # bounds as tensors: exact for in-ball values
            lower, upper = x - spec.eps, x + spec.eps
            start = torch.clamp(x_init.detach().to(x), lower, upper)
            return start.clamp_(spec.clip[0], spec.clip[1])
        return _random_start(x, spec, generator)

    best = _pgd_run(model, x, y, spec, start(0))
    if spec.restarts == 1:
        return best
    with torch.no_grad():
        logits = _logits(model, best)
        best_loss = F.cross_entropy(logits, y, reduction="none")
        fooled = logits.argmax(dim=1) != y
    for restart in range(1, spec.restarts):
        if bool(fooled.all()):  # one sync per restart, never inside the step loop
            break
        x_adv = _pgd_run(model, x, y, spec, start(restart))
        with torch.no_grad():
            logits = _logits(model, x_adv)
            loss = F.cross_entropy(logits, y, reduction="none")
            wrong = logits.argmax(dim=1) != y
            # keep the first fooling perturbation; otherwise the highest loss so far
            take = ~fooled & (wrong | (loss > best_loss))  # [N]
            best = torch.where(take.view(-1, *([1] * (x.dim() - 1))), x_adv, best)
            best_loss = torch.where(take, loss, best_loss)
            fooled = fooled | wrong
    return best


class _AutoAttackModel(nn.Module):
    """What the official AutoAttack sees: logits only, on inputs rescaled to ``[0, 1]``."""

    def __init__(self, model: Model, low: float, scale: float, dtype: torch.dtype) -> None:
        super().__init__()
        self._model = [model]  # a list: do not register it as a submodule (no .train()/.to())
        self.low, self.scale, self.dtype = low, scale, dtype

    def forward(self, z: Tensor) -> Tensor:
        x = (z * self.scale + self.low).to(self.dtype)
        out = _logits(self._model[0], x.contiguous(memory_format=_work_format(x)))  # see _work_format
        return out.to(z.dtype)


def _set_n_iter(attacker: Any, n_iter: int) -> None:
    """Override the iterations of an APGD/FAB object, with APGD's derived checkpoints."""
    attacker.n_iter = n_iter
    if hasattr(attacker, "n_iter_orig"):  # APGD
        attacker.n_iter_orig = n_iter
        attacker.n_iter_2 = max(int(0.22 * n_iter), 1)
        attacker.n_iter_min = max(int(0.06 * n_iter), 1)
        attacker.size_decr = max(int(0.03 * n_iter), 1)


@contextlib.contextmanager
def frozen_parameters(params: Sequence[Tensor]) -> Iterator[None]:
    """Switch off ``requires_grad`` of ``params`` for the block and restore it afterwards:
    the parameters act as constants, so no weight-gradient graph is recorded."""
    params = list(params)
    flags = [p.requires_grad for p in params]
    try:
        for p in params:
            p.requires_grad_(False)
        yield
    finally:
        for p, flag in zip(params, flags):
            p.requires_grad_(flag)


def _frozen_params(model: Model) -> contextlib.AbstractContextManager[None]:
    """The model's parameters frozen (AutoAttack's FAB calls ``.backward()``)."""
    return frozen_parameters(list(model.parameters()) if isinstance(model, nn.Module) else [])


@ATTACKS.register("autoattack")
def autoattack(
    model: Model,
    x: Tensor,
    y: Tensor,
    spec: AttackSpec | None = None,
    *,
    generator: torch.Generator | None = None,
    version: str | None = None,
    attacks: Sequence[str] | None = None,
    seed: int | None = None,
    n_iter: int | None = None,
    n_queries: int | None = None,
    batch_size: int = 250,
) -> Tensor:
    r"""AutoAttack in the paper 'Reliable evaluation of adversarial robustness with an ensemble
    of diverse parameter-free attacks' [https://arxiv.org/abs/2003.01690], through the
    official implementation (``pip install 'arnas-ray[attacks]'``, import ``pyautoattack``).

    The standard version runs APGD-CE, APGD-T (9 target classes), FAB-T and Square (5000
    queries) in sequence, each on the points still classified correctly.

    Distance Measure : Linf

    Args:
        model: callable returning logits (or a tuple whose first element is the logits); its
            mode is left as the caller set it (evaluate in eval mode). Parameter
            ``requires_grad`` flags are switched off during the attack and restored, so no
            parameter ``.grad`` is written.
        x: clean inputs ``[N, C, H, W]`` within ``spec.clip`` (rescaled to ``[0, 1]`` for
            AutoAttack when the clip range differs).
        y: integer labels ``[N]``.
        spec: eps, clip, version and aa_attacks; defaults to ``PRESETS["aa"]``.
        generator: when ``seed`` is None, the AutoAttack seed is drawn from it (0 without one).
        version: overrides ``spec.version``.
        attacks: overrides ``spec.aa_attacks`` (implies ``version="custom"``).
        seed: the AutoAttack seed. The caller's global RNG state is restored afterwards
            (AutoAttack reseeds it).
        n_iter: overrides the APGD/FAB iterations (100 in the official versions); for tests.
        n_queries: overrides Square's query budget (5000); for tests.
        batch_size: AutoAttack's internal batch size.

    Returns:
        Detached adversarial inputs ``[N, C, H, W]``, within ``eps`` of ``x`` and within ``clip``.

    Raises:
        MissingAutoAttackError: ``pyautoattack`` is not installed (an ``ImportError``).

    Example:
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(48, 10))
        >>> x, y = torch.rand(2, 3, 4, 4), torch.tensor([1, 2])
        >>> x_adv = autoattack(model.eval(), x, y, PRESETS["aa"])  # doctest: +SKIP
    """
    x, y, spec = _prepare(x, y, spec, "autoattack")
    try:
        from pyautoattack import AutoAttack
    except ImportError as exc:
        raise MissingAutoAttackError(
            "AutoAttack needs the optional package 'pyautoattack' (official AutoAttack); "
            "install it with: pip install 'arnas-ray[attacks]'"
        ) from exc
    if attacks is not None:
        version, attacks = "custom", list(attacks)
    elif (version or spec.version) == "custom":
        attacks = list(spec.aa_attacks)
    version = version or spec.version
    check_choice(version, AA_VERSIONS, "version")
    if version == "custom":
        if not attacks:
            raise SpecError("aa_attacks", f"version='custom' needs attacks from {AA_ATTACKS}")
        for name in attacks:
            check_choice(name, AA_ATTACKS, "aa_attacks")
    else:
        attacks = None
    if seed is None:
        seed = 0 if generator is None else int(
            torch.randint(2**31 - 1, (1,), generator=generator, device=generator.device))
    if x.shape[0] == 0:
        return x.clone()

    low, high = spec.clip
    scale = high - low
    wrapped = _AutoAttackModel(model, low, scale, x.dtype)
    adversary = AutoAttack(wrapped, attacks=attacks, device=x.device, eps=spec.eps / scale,
                           norm="Linf", seed=seed, version=version)
    if n_iter is not None:
        for attacker in (adversary.apgd, adversary.apgd_targeted, adversary.fab):
            _set_n_iter(attacker, n_iter)
    if n_queries is not None:
        adversary.square.n_queries = n_queries
    z = ((x - low) / scale).float()
    cuda = [x.device] if x.device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda), _frozen_params(model):  # AutoAttack reseeds
        z_adv, _ = adversary.run_standard_evaluation(z, y, batch_size=batch_size)
    x_adv = (z_adv.detach().to(x.dtype) * scale + low)
    return _project(x_adv, x, spec.eps, spec.clip)


# ----------------------------------------------------------------------------- entry points


def attack(
    model: Model,
    x: Tensor,
    y: Tensor,
    spec: AttackSpec,
    *,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Run the attack named by ``spec.kind`` (looked up in :data:`ATTACKS`).

    Example:
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(48, 10))
        >>> x, y = torch.rand(2, 3, 4, 4), torch.tensor([1, 2])
        >>> x_adv = attack(model, x, y, PRESETS["fgsm"])
        >>> x_adv.shape
        torch.Size([2, 3, 4, 4])
    """
    return ATTACKS.get_or_raise(spec.kind)(model, x, y, spec, generator=generator)


def robust_accuracy(
    model: Model,
    x: Tensor,
    y: Tensor,
    spec: AttackSpec,
    *,
    batch_size: int = 256,
    generator: torch.Generator | None = None,
) -> float:
    """Fraction of ``x`` still classified as ``y`` after the attack, attacked in batches.

    The model is used in its current mode for both the attack and the prediction.

    Args:
        model: callable returning logits (or a tuple whose first element is the logits).
        x: inputs ``[N, C, H, W]`` within ``spec.clip``, on the model's device.
        y: labels ``[N]``.
        spec: the attack.
        batch_size: examples per attacked batch.
        generator: seeds the random starts, batch after batch.

    Returns:
        Robust accuracy in ``[0, 1]`` (``nan`` for an empty ``x``).
    """
    check(batch_size >= 1, "batch_size", "batch_size >= 1", batch_size)
    if y.shape != x.shape[:1]:
        raise ValueError(f"y must have shape [N]={tuple(x.shape[:1])}, got {tuple(y.shape)}")
    n = x.shape[0]
    if n == 0:
        return math.nan
    correct = torch.zeros((), dtype=torch.long, device=x.device)
    for i in range(0, n, batch_size):
        xb, yb = x[i : i + batch_size], y[i : i + batch_size]
        x_adv = attack(model, xb, yb, spec, generator=generator)
        with torch.no_grad():
            correct += (_logits(model, x_adv).argmax(dim=1) == yb).sum().to(correct.device)
    return correct.item() / n


PRESETS: Registry[AttackSpec] = Registry("attack preset")
PRESETS.add("fgsm", AttackSpec(kind="fgsm", steps=1, random_start=False))
PRESETS.add("pgd7", AttackSpec(kind="pgd", steps=7))  # ARNAS search and PGD-AT
PRESETS.add("pgd10", AttackSpec(kind="pgd", steps=10))
PRESETS.add("pgd20", AttackSpec(kind="pgd", steps=20))
PRESETS.add("pgd100", AttackSpec(kind="pgd", steps=100))
PRESETS.add("aa", AttackSpec(kind="autoattack", version="standard"))
