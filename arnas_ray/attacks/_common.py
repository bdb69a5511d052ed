"""Machinery every attack shares: the model contract, input checks, projection, memory format."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from arnas_ray.attacks.registry import Model
from arnas_ray.attacks.spec import AttackSpec

__all__ = [
    "caller_format",
    "check_labels",
    "frozen_model",
    "frozen_parameters",
    "logits_of",
    "prepare",
    "project",
    "random_start",
    "uniform_like",
    "work_format",
]

def logits_of(output: Any) -> Tensor:
    """The logits ``[N, K]`` in a model's output.

    DARTS-style networks with an auxiliary head return ``(logits, logits_aux)`` in training
    mode; every other model returns the logits. This is the one place that unwraps them.

    Example:
        >>> import torch
        >>> logits = torch.zeros(2, 10)
        >>> logits_of((logits, torch.ones(2, 10))) is logits_of(logits) is logits
        True
    """
    if isinstance(output, (tuple, list)):
        return output[0]
    return output


def prepare(x: Tensor, y: Tensor, spec: AttackSpec | None, kind: str
            ) -> tuple[Tensor, Tensor, AttackSpec]:
    """Check the inputs, default the spec to ``AttackSpec(kind=kind)``; detached copies."""
    if spec is None:
        spec = AttackSpec(kind=kind)
    if not isinstance(spec, AttackSpec):
        raise TypeError(f"spec must be an AttackSpec, got {type(spec).__name__}")
    if not torch.is_floating_point(x) or x.dim() < 2:
        raise ValueError(f"x must be a floating tensor [N, C, H, W], got dtype={x.dtype} "
                         f"shape={tuple(x.shape)}")
    check_labels(x, y)
    x = x.detach()
    if x.is_inference():  # tensors made under torch.inference_mode cannot enter autograd
        x = x.clone()
    return x, y.detach(), spec


def check_labels(x: Tensor, y: Tensor) -> None:
    """``y`` holds one label per example of ``x``."""
    if y.shape != x.shape[:1]:
        raise ValueError(f"y must have shape [N]={tuple(x.shape[:1])}, got {tuple(y.shape)}")


def uniform_like(x: Tensor, bound: float, generator: torch.Generator | None) -> Tensor:
    """``U(-bound, bound)`` noise shaped like ``x``; drawn on the generator's device, then moved."""
    if generator is None:  # same draw as torchattacks: torch.empty_like(x).uniform_(-eps, eps)
        return torch.empty_like(x).uniform_(-bound, bound)
    noise = torch.empty(x.shape, dtype=x.dtype, device=generator.device)
    return noise.uniform_(-bound, bound, generator=generator).to(x.device)


def random_start(x: Tensor, spec: AttackSpec, generator: torch.Generator | None) -> Tensor:
    """PGD's start: ``clip(x + U(-eps, eps))`` with ``spec.random_start``, else ``x``."""
    if spec.random_start:
        return (x + uniform_like(x, spec.eps, generator)).clamp_(spec.clip[0], spec.clip[1])
    return x.clone()


def project(x_adv: Tensor, x: Tensor, eps: float, clip: tuple[float, float]) -> Tensor:
    """``clip_{x,eps}``: into the eps-ball around ``x``, then into the clip range (in place)."""
    delta = (x_adv - x).clamp_(-eps, eps)
    return (x + delta).clamp_(clip[0], clip[1])


def work_format(x: Tensor) -> torch.memory_format:
    """Memory format the attack runs the model in: channels_last for image batches on CPU,
    where oneDNN's convolutions (above all depthwise ones) run faster in it and propagate it
    through the network (1.33x for PGD-20 on the DARTS-like benchmark net, 2 threads); the
    caller's format elsewhere. Values are unaffected; results come back in ``x``'s format."""
    if x.dim() == 4 and x.device.type == "cpu":
        return torch.channels_last
    return caller_format(x)


def caller_format(x: Tensor) -> torch.memory_format:
    """The memory format ``x`` is in (channels_last or contiguous)."""
    if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        return torch.channels_last
    return torch.contiguous_format


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


def frozen_model(model: Model) -> contextlib.AbstractContextManager[None]:
    """The model's parameters frozen (AutoAttack's FAB calls ``.backward()``)."""
    return frozen_parameters(list(model.parameters()) if isinstance(model, nn.Module) else [])
