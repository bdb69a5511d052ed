"""Build the retrained network from a genotype and a config, and the metadata checkpoints carry.

A checkpoint written by the trainer holds only plain data (tensors, numbers, strings, lists,
dicts), so it loads with ``torch.load(weights_only=True)``: the genotype as its JSON string,
the :class:`RetrainConfig` as a dict, and the data shape (classes, channels, image size).
"""

from __future__ import annotations

import functools
import os
from typing import Any

import torch
from torch import Tensor

from arnas_ray._config import from_dict, to_dict
from arnas_ray.checkpoint import load_checkpoint
from arnas_ray.errors import CheckpointError, SpecError
from arnas_ray.space import Genotype, Network
from arnas_ray.train.config import RetrainConfig

__all__ = ["FORMAT", "build_network", "load_model", "metadata", "network_from_state"]

#: Tag stored in every checkpoint the trainer writes.
FORMAT = "arnas-ray/retrain/1"
_REQUIRED = ("genotype", "config", "num_classes", "in_channels", "image_size", "dataset",
             "model")
_INFO = ("format", "genotype", "config", "num_classes", "in_channels", "image_size", "dataset",
         "epoch", "metric")


def build_network(genotype: Genotype, config: RetrainConfig, num_classes: int,
                  in_channels: int = 3) -> Network:
    """The discrete :class:`Network` of ``genotype`` at ``config``'s layout, width and depth."""
    return Network(genotype, config.layout(), config.channels, num_classes, config.cells,
                   auxiliary=config.auxiliary, drop_path_prob=0.0, in_channels=in_channels)


def metadata(genotype: Genotype, config: RetrainConfig, *, num_classes: int, in_channels: int,
             image_size: int, dataset: str) -> dict[str, Any]:
    """The plain-data description of a run that every checkpoint of it carries."""
    return {
        "format": FORMAT,
        "genotype": genotype.to_json(),
        "config": to_dict(config),
        "num_classes": int(num_classes),
        "in_channels": int(in_channels),
        "image_size": int(image_size),
        "dataset": str(dataset),
    }


def _positive_int(state: dict[str, Any], key: str, source: str) -> int:
    value = state[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise CheckpointError(f"{source}: {key}={_short(value)} in the checkpoint; expected an "
                              f"integer >= 1")
    return value


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _description(state: dict[str, Any], source: str) -> tuple[Genotype, RetrainConfig]:
    """The run description a checkpoint carries, checked (no network is built yet)."""
    missing = [k for k in _REQUIRED if k not in state]
    if missing:
        raise CheckpointError(
            f"{source}: not a retrain checkpoint of arnas-ray: it lacks {missing} (it has "
            f"{_short(sorted(map(str, state)))}); expected best.pt or checkpoint.pt of retrain")
    for key in ("num_classes", "in_channels", "image_size"):
        _positive_int(state, key, source)
    if not isinstance(state["dataset"], str) or not isinstance(state["model"], dict):
        raise CheckpointError(f"{source}: dataset and model must be a name and a dict of "
                              "tensors; expected a checkpoint written by retrain")
    try:
        genotype = Genotype.from_json(state["genotype"])
        config = from_dict(RetrainConfig, state["config"])
    except SpecError as exc:
        raise CheckpointError(f"{source}: holds an invalid run description ({exc}); expected a "
                              "checkpoint written by retrain") from None
    if config.cells > len(state["model"]):  # every cell holds tensors: a cheap size bound
        raise CheckpointError(f"{source}: describes {config.cells} cells but holds "
                              f"{len(state['model'])} tensors; expected a checkpoint written by "
                              "retrain")
    return genotype, config


@functools.lru_cache(maxsize=8)
def _expected_shapes(genotype: Genotype, config: RetrainConfig, num_classes: int,
                     in_channels: int) -> dict[str, tuple[int, ...]]:
    """Names and shapes of the described network's weights, built on the meta device (no
    memory, whatever width the file claims); cached, as best.pt and checkpoint.pt of one run
    describe the same network."""
    with torch.device("meta"):
        net = build_network(genotype, config, num_classes, in_channels)
    return {k: tuple(v.shape) for k, v in net.state_dict().items()}


def _check_shapes(state: dict[str, Tensor], expected: dict[str, tuple[int, ...]],
                  source: str) -> None:
    """The weights' names and shapes equal those of the described network."""
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [k for k in expected if k in state and (
        not isinstance(state[k], Tensor) or tuple(state[k].shape) != expected[k])]
    if not (missing or unexpected or wrong):
        return
    first = ""
    if wrong:
        got = state[wrong[0]]
        got_shape = list(got.shape) if isinstance(got, Tensor) else type(got).__name__
        first = f"; {wrong[0]!r} is {got_shape}, the network needs {list(expected[wrong[0]])}"
    raise CheckpointError(
        f"{source}: the weights do not fit the network it describes ({len(missing)} missing, "
        f"{len(unexpected)} unexpected, {len(wrong)} of another shape{first}); expected the "
        "weights of that genotype at that width and depth")


def network_from_state(state: dict[str, Any], source: str) -> tuple[Network, RetrainConfig]:
    """Rebuild the network of a loaded checkpoint dict and load its ``model`` weights (on CPU).

    The description is checked first and the weights' names and shapes are compared with
    those of the network built on the meta device, so a damaged or foreign file never
    allocates more than its own tensors.

    Raises:
        CheckpointError: keys are missing, the description is invalid, or the weights do not
            fit the described network; the message starts with ``source``.
    """
    genotype, config = _description(state, source)
    num_classes, in_channels = int(state["num_classes"]), int(state["in_channels"])
    _check_shapes(state["model"], _expected_shapes(genotype, config, num_classes, in_channels),
                  source)
    net = build_network(genotype, config, num_classes, in_channels)
    try:
        net.load_state_dict(state["model"])
    except (RuntimeError, TypeError, AttributeError) as exc:
        raise CheckpointError(f"{source}: the weights do not fit the network it describes "
                              f"({str(exc).splitlines()[0]})") from None
    return net, config


def load_model(checkpoint_path: str | os.PathLike[str], device: torch.device | str = "cpu", *,
               return_info: bool = False) -> Any:
    """Rebuild a :class:`Network` from a checkpoint the trainer wrote, in eval mode.

    ``best.pt`` holds the weights selected on the val split; ``checkpoint.pt`` the weights
    after the last finished epoch.

    Args:
        checkpoint_path: ``best.pt`` or ``checkpoint.pt`` of a retrain run.
        device: where the network is put.
        return_info: also return the run description: ``genotype`` (JSON string), ``config``
            (dict), ``num_classes``, ``in_channels``, ``image_size``, ``dataset``, ``epoch``.

    Returns:
        The network, on ``device``, in eval mode (``net.genotype``/``net.layout`` describe it);
        with ``return_info``, the pair ``(network, info)``.

    Raises:
        CheckpointError: the file is missing, truncated, unsafe, or not a retrain checkpoint.

    Example:
        >>> net = load_model("runs/arnas/best.pt")  # doctest: +SKIP
    """
    state = load_checkpoint(checkpoint_path)
    net, _ = network_from_state(state, str(checkpoint_path))
    net = net.to(device).eval()
    if not return_info:
        return net
    return net, {k: state[k] for k in _INFO if k in state}
