"""FGSM (Goodfellow et al., 2015): one signed-gradient step of size ``eps``."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from arnas_ray.attacks._common import logits_of, prepare, project
from arnas_ray.attacks.registry import ATTACKS, Model
from arnas_ray.attacks.spec import AttackSpec

__all__ = ["fgsm"]


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
        >>> from arnas_ray.attacks import PRESETS
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(48, 10))
        >>> x, y = torch.rand(2, 3, 4, 4), torch.tensor([1, 2])
        >>> x_adv = fgsm(model, x, y, PRESETS["fgsm"])
        >>> x_adv.shape
        torch.Size([2, 3, 4, 4])
    """
    del generator
    x, y, spec = prepare(x, y, spec, "fgsm")
    with torch.enable_grad():
        x_req = x.clone().requires_grad_(True)
        loss = F.cross_entropy(logits_of(model(x_req)), y)
        (grad,) = torch.autograd.grad(loss, x_req)
    return project(torch.add(x, grad.sign(), alpha=spec.eps), x, spec.eps, spec.clip)
