"""Build the retrained network from a genotype and a config, and the metadata checkpoints carry.

A checkpoint written by the trainer holds only plain data (tensors, numbers, strings, lists,
dicts), so it loads with ``torch.load(weights_only=True)``: the genotype as its JSON string,
the :class:`RetrainConfig` as a dict, and the data shape (classes, channels, image size).
"""

from __future__ import annotations

import os
from typing import Any

import torch

from arnas_ray._config import from_dict, to_dict
from arnas_ray.checkpoint import load_checkpoint
from arnas_ray.errors import CheckpointError, SpecError
from arnas_ray.space import Genotype, Network
from arnas_ray.train.config import RetrainConfig

__all__ = ["FORMAT", "build_network", "load_model", "metadata", "network_from_state"]

#: Tag stored in every checkpoint the trainer writes.
FORMAT = "arnas-ray/retrain/1"
_REQUIRED = ("genotype", "config", "num_classes", "in_channels", "model")
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


def network_from_state(state: dict[str, Any], source: str) -> tuple[Network, RetrainConfig]:
    """Rebuild the network of a loaded checkpoint dict and load its ``model`` weights (on CPU).

    Raises:
        CheckpointError: keys are missing or the weights do not fit the described network.
    """
    missing = [k for k in _REQUIRED if k not in state]
    if missing:
        raise CheckpointError(
            f"checkpoint {source!r} is not a retrain checkpoint of arnas-ray: it lacks {missing} "
            f"(it has {sorted(state)})"
        )
    try:
        genotype = Genotype.from_json(state["genotype"])
        config = from_dict(RetrainConfig, state["config"])
    except SpecError as exc:
        raise CheckpointError(f"checkpoint {source!r} holds an invalid run description: {exc}") from None
    net = build_network(genotype, config, int(state["num_classes"]), int(state["in_channels"]))
    try:
        net.load_state_dict(state["model"])
    except (RuntimeError, TypeError, AttributeError) as exc:
        raise CheckpointError(
            f"checkpoint {source!r}: the weights do not fit the network it describes "
            f"({str(exc).splitlines()[0]})"
        ) from None
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
