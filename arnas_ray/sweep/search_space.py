"""The search stage's Tune setup from the spec: param space, search algorithm, scheduler,
budget, stop criterion and trackers."""

from __future__ import annotations

from typing import Any

from ray import tune

from arnas_ray.sweep.controls import logger_specs
from arnas_ray.sweep.spec import SweepSpec

__all__ = ["make_loggers", "make_scheduler", "search_param_space", "search_stop", "search_tune_config"]


def search_param_space(spec: SweepSpec) -> dict[str, Any]:
    """The param space of the search trials: explicit points (grid, random) or Optuna's space."""
    base: dict[str, Any] = {"spec": spec.to_dict()}
    if spec.search_algorithm != "optuna":
        return {**base, "point": tune.grid_search([p.to_dict() for p in spec.points()])}
    from arnas_ray.sweep.sampling import optuna_param_space

    return {**base, **optuna_param_space(spec)}


def make_scheduler(spec: SweepSpec) -> Any | None:
    """ASHA or median stopping over the search epochs (``time_attr`` = the epoch), or None."""
    s = spec.scheduler
    if s.kind == "none":
        return None
    max_t = spec.stop.epochs or spec.search.epochs  # a trial's last epoch reports its end (finished)
    if s.kind == "asha":
        from ray.tune.schedulers import ASHAScheduler

        return ASHAScheduler(time_attr="epoch", metric=s.metric, mode=s.mode, max_t=max_t,
                             grace_period=s.grace_period, reduction_factor=s.reduction_factor)
    from ray.tune.schedulers import MedianStoppingRule

    return MedianStoppingRule(time_attr="epoch", metric=s.metric, mode=s.mode, grace_period=s.grace_period,
                              min_samples_required=2)


def _optuna(spec: SweepSpec) -> Any:
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    from arnas_ray.sweep.sampling import optuna_points_to_evaluate

    sampler = optuna.samplers.NSGAIISampler(population_size=spec.optuna.population_size, seed=spec.sampler.seed)
    names = list(spec.selection.objectives)
    return OptunaSearch(metric=names, mode=[spec.selection.objectives[n] for n in names], sampler=sampler,
                        points_to_evaluate=optuna_points_to_evaluate(spec) or None)


def search_tune_config(spec: SweepSpec) -> tune.TuneConfig:
    """Concurrency, the time budget, the scheduler and, for Optuna, NSGA-II over the selection's
    objectives (both reported) with ``num_samples`` trials."""
    kwargs: dict[str, Any] = {"max_concurrent_trials": spec.max_concurrent, "reuse_actors": True,
                              "scheduler": make_scheduler(spec), "time_budget_s": spec.budget.time_s}
    if spec.search_algorithm == "optuna":
        kwargs.update(search_alg=_optuna(spec), num_samples=spec.num_trials())
    return tune.TuneConfig(**kwargs)


def search_stop(spec: SweepSpec) -> dict[str, Any] | None:
    """Tune's per-trial stop criterion (``stop.epochs``)."""
    return {"epoch": spec.stop.epochs} if spec.stop.epochs is not None else None


def make_loggers(spec: SweepSpec) -> list[Any]:
    """Ray Tune's tracker callbacks for ``spec.loggers`` (none unless listed)."""
    out: list[Any] = []
    for logger_spec in logger_specs(spec.loggers):
        options = dict(logger_spec.options or {})
        if logger_spec.kind == "tensorboard":
            from ray.tune.logger import TBXLoggerCallback

            out.append(TBXLoggerCallback())
        elif logger_spec.kind == "mlflow":
            from ray.air.integrations.mlflow import MLflowLoggerCallback

            options.setdefault("experiment_name", spec.name)
            out.append(MLflowLoggerCallback(**options))
        else:
            from ray.air.integrations.wandb import WandbLoggerCallback

            options.setdefault("project", spec.name)
            out.append(WandbLoggerCallback(**options))
    return out
