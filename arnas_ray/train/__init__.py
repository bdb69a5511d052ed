"""Adversarial retraining (PGD-AT, TRADES) and the robust evaluation suite.

Example:
    >>> from arnas_ray.data import load_dataset
    >>> from arnas_ray.train import RetrainConfig, evaluate, retrain
    >>> cfg = RetrainConfig(channels=8, cells=5, epochs=2, cutout=0)  # doctest: +SKIP
    >>> data = load_dataset("digits", cutout=cfg.cutout)  # doctest: +SKIP
    >>> res = retrain("ARNAS", cfg, data, "cpu", out_dir="runs/arnas")  # doctest: +SKIP
    >>> evaluate(res.model, data, "cpu", attacks=("natural", "pgd20")).to_json()  # doctest: +SKIP
"""

from arnas_ray.train._model import load_model
from arnas_ray.train.config import METHODS, RetrainConfig
from arnas_ray.train.evaluate import EVAL_ATTACKS, EVAL_SPECS, EvalResult, evaluate, sanity_warnings
from arnas_ray.train.losses import (
    CRAFT_MODES,
    LOSSES,
    LossOutput,
    LossSpec,
    natural_loss,
    pgd_at_loss,
    trades_loss,
)
from arnas_ray.train.trainer import RetrainResult, learning_rate, retrain

__all__ = [
    "CRAFT_MODES",
    "EVAL_ATTACKS",
    "EVAL_SPECS",
    "LOSSES",
    "METHODS",
    "EvalResult",
    "LossOutput",
    "LossSpec",
    "RetrainConfig",
    "RetrainResult",
    "evaluate",
    "learning_rate",
    "load_model",
    "natural_loss",
    "pgd_at_loss",
    "retrain",
    "sanity_warnings",
    "trades_loss",
]
