"""Ray Tune function trainables: one search trial and one retrain trial.

Both report every epoch to Tune with a checkpoint (a directory holding the trial's own
checkpoint file) and restore from ``tune.get_checkpoint()`` when Tune retries them, so a trial
whose node died continues from its last epoch. Devices come from Ray's assignment: a trial
with a GPU share runs on CUDA (its memory capped to its share), a CPU trial sets torch's
threads to its CPU share. A non-finite loss ends only that trial: it reports
``status = failed`` with the reason and returns (retrying a deterministic divergence would
only repeat it); an out-of-memory error is retried once. Every epoch's report carries the
genotype derived then and its network's size, so a trial a scheduler stops keeps them.
"""

from __future__ import annotations

import os
import shutil
import time
from typing import Any

from ray import tune

from arnas_ray.space import Genotype
from arnas_ray.sweep._trial import check_data_root, run_guarded, setup_device, where, workdir
from arnas_ray.sweep.faults import Faults
from arnas_ray.sweep.spec import SweepSpec, TrialPoint

__all__ = ["point_from_config", "retrain_trainable", "search_trainable"]


def point_from_config(config: dict[str, Any], spec: SweepSpec) -> TrialPoint:
    """The trial point of a Tune config: explicit (grid, random) or sampled by Optuna."""
    if "point" in config:
        return TrialPoint.from_dict(config["point"])
    from arnas_ray.sweep.sampling import optuna_point

    return optuna_point(spec, config)


def _network_cost(genotype_json: str, config: Any, data: Any) -> dict[str, int]:
    """Parameters and MACs of the network derived at this epoch (as the search reports at its end)."""
    from arnas_ray.space import Network, count_macs, count_params

    net = Network(Genotype.from_json(genotype_json), config.layout(), config.width(), data.num_classes,
                  config.cells, in_channels=data.channels)
    return {"params": count_params(net), "flops": count_macs(net, data.image_size, data.channels)}


def search_trainable(config: dict[str, Any]) -> None:
    """One ARNAS search (``run_search``) as a Tune trial."""
    from arnas_ray.search import run_search

    spec = SweepSpec.from_dict(config["spec"])
    point = point_from_config(config, spec)
    faults = Faults.from_dict(config.get("faults"))
    faults.check(point.key)
    check_data_root(spec)
    device = setup_device(spec.resources.cpu, spec.resources.gpu)
    started = time.time()
    work = workdir(point.key)
    here = where(device)
    search_cfg = faults.search_config(point.key, spec.search_config(point))

    def run() -> None:
        data = spec.dataset.load(seed=point.seed)
        final: list[dict[str, Any]] = []

        def report(metrics: dict[str, Any]) -> None:
            cost = _network_cost(metrics["genotype"], search_cfg, data) if metrics.get("genotype") else {}
            out = {**metrics, **cost, "trial_key": point.key, "status": "running", **here,
                   "num_classes": data.num_classes, "in_channels": data.channels}
            if metrics.get("epoch") == search_cfg.epochs:  # the last epoch is the trial's end: a
                # scheduler deciding on this report cannot turn a finished trial into a stopped one
                out.update(status="finished", wall_s=time.time() - started, channels=search_cfg.width())
                final.append(out)
            tune.report(out, checkpoint=tune.Checkpoint.from_directory(str(work)))
            faults.after_epoch(int(metrics.get("epoch", 0)))

        result = run_search(search_cfg, data, device, callback=report, checkpoint_dir=work)
        if not final:  # restored after its last epoch: report the end once more
            tune.report({
                "trial_key": point.key, "status": "finished", "epoch": result.epochs,
                "nat_acc": result.nat_acc, "pgd_acc": result.pgd_acc, "genotype": result.genotype.to_json(),
                "params": result.params, "flops": result.macs, "wall_s": time.time() - started,
                "channels": search_cfg.width(), "num_classes": data.num_classes, "in_channels": data.channels,
                **here,
            }, checkpoint=tune.Checkpoint.from_directory(str(work)))

    try:
        run_guarded(point.key, run, device, here, started)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def retrain_trainable(config: dict[str, Any]) -> None:
    """Adversarial retraining of one selected genotype, then the full robust evaluation."""
    from arnas_ray.train import evaluate, retrain

    spec = SweepSpec.from_dict(config["spec"])
    point = config["point"]
    key = point["key"]
    res_spec = spec.retrain_resources or spec.resources
    check_data_root(spec)
    device = setup_device(res_spec.cpu, res_spec.gpu)
    started = time.time()
    work = workdir(key)
    here = where(device)
    genotype = Genotype.from_json(point["genotype"])
    rcfg = spec.retrain_config(tuple(point["placement"]), tuple(point["channel_ratios"]), int(point["seed"]))

    def run() -> None:
        data = spec.dataset.load(cutout=rcfg.cutout, seed=rcfg.seed)

        def report(metrics: dict[str, Any]) -> None:
            tune.report({**metrics, "trial_key": key, "status": "running", **here},
                        checkpoint=tune.Checkpoint.from_directory(str(work)))

        result = retrain(genotype, rcfg, data, device, out_dir=work, callback=report)
        ev = spec.evaluation
        er = evaluate(result.model, data, device, attacks=ev.attacks, aa_subset=ev.aa_subset, limit=ev.limit,
                      batch_size=ev.batch_size, eps=rcfg.attack.eps, seed=rcfg.seed)
        tune.report({
            "trial_key": key, "status": "finished", "epoch": len(result.history),
            "nat_acc": er.nat_acc, "fgsm_acc": er.fgsm_acc, "pgd20_acc": er.pgd20_acc,
            "pgd100_acc": er.pgd100_acc, "aa_acc": er.aa_acc, "eval_warnings": "; ".join(er.warnings),
            "genotype": genotype.to_json(), "params": result.params, "flops": result.macs,
            "best_epoch": result.best_epoch, "wall_s": time.time() - started, "channels": rcfg.channels, **here,
        }, checkpoint=tune.Checkpoint.from_directory(str(work)))

    try:
        run_guarded(key, run, device, here, started)
    finally:
        shutil.rmtree(work, ignore_errors=True)


os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")
