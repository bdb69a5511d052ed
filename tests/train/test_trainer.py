"""retrain(): exact resume, checkpoint errors, divergence, model selection on val only."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.utils.data import Dataset

from arnas_ray.checkpoint import load_checkpoint
from arnas_ray.data import DataSplits, load_dataset
from arnas_ray.errors import CheckpointError, DivergenceError
from arnas_ray.space import GENOTYPES, Genotype
from arnas_ray.train import load_model, retrain
from arnas_ray.train import trainer as trainer_mod
from arnas_ray.train.losses import LossOutput

from .conftest import tiny_config


class _Stop(Exception):
    pass


def _stop_after(epoch: int):
    def callback(record: dict[str, Any]) -> None:
        if record["epoch"] == epoch:
            raise _Stop

    return callback


def test_resume_gives_the_same_weights_as_an_uninterrupted_run(tiny_data: DataSplits,
                                                                tmp_path: Path) -> None:
    # Drop path (global RNG) is on from epoch 2, so resuming after it needs the saved RNG state;
    # the random crops and random starts come from per-epoch seeds.
    cfg = tiny_config(epochs=3, drop_path_prob=0.6, craft_mode="train", steps_per_epoch=1)
    full = retrain("ARNAS", cfg, tiny_data, "cpu", out_dir=tmp_path / "full")
    with pytest.raises(_Stop):
        retrain("ARNAS", cfg, tiny_data, "cpu", out_dir=tmp_path / "cut", callback=_stop_after(2))
    assert load_checkpoint(tmp_path / "cut" / "checkpoint.pt")["epoch"] == 2
    epochs_run: list[int] = []
    resumed = retrain("ARNAS", cfg, tiny_data, "cpu", out_dir=tmp_path / "cut",
                      callback=lambda r: epochs_run.append(r["epoch"]))
    assert epochs_run == [3]  # it continued, it did not start over
    a = load_checkpoint(tmp_path / "full" / "checkpoint.pt")
    b = load_checkpoint(tmp_path / "cut" / "checkpoint.pt")
    assert a["model"].keys() == b["model"].keys()
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert torch.equal(sa["momentum_buffer"], sb["momentum_buffer"])
    for ra, rb in zip(full.history, resumed.history):
        assert ra["train_loss"] == rb["train_loss"] and ra["val_pgd_acc"] == rb["val_pgd_acc"]
    assert full.best_epoch == resumed.best_epoch
    best_a = load_checkpoint(tmp_path / "full" / "best.pt")["model"]
    best_b = load_checkpoint(tmp_path / "cut" / "best.pt")["model"]
    assert all(torch.equal(best_a[k], best_b[k]) for k in best_a)
    lines = (tmp_path / "cut" / "history.jsonl").read_text().splitlines()
    assert len(lines) == 3
    assert Genotype.from_json((tmp_path / "cut" / "genotype.json").read_text()) == GENOTYPES["ARNAS"]


def test_files_load_weights_only_and_rebuild_the_model(tiny_data: DataSplits,
                                                       tmp_path: Path) -> None:
    cfg = tiny_config(epochs=1, method="natural")
    res = retrain("ARNAS", cfg, tiny_data, "cpu", out_dir=tmp_path)
    net, info = load_model(tmp_path / "best.pt", "cpu", return_info=True)
    assert not net.training and info["epoch"] == res.best_epoch == 1
    assert info["image_size"] == 8 and info["num_classes"] == 4
    x = torch.rand(3, 3, 8, 8)
    res.model.eval()
    assert torch.equal(net(x), res.model(x))
    assert res.params == sum(p.numel() for n, p in net.named_parameters() if "auxiliary" not in n)
    raw = torch.load(tmp_path / "checkpoint.pt", weights_only=True)  # plain data only
    assert isinstance(raw["genotype"], str) and isinstance(raw["config"], dict)


def test_truncated_checkpoint_gives_a_clear_error(tiny_data: DataSplits, tmp_path: Path) -> None:
    cfg = tiny_config(epochs=1, method="natural")
    retrain("ARNAS", cfg, tiny_data, "cpu", out_dir=tmp_path)
    path = tmp_path / "checkpoint.pt"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="checkpoint.pt") as info:
        retrain("ARNAS", cfg, tiny_data, "cpu", out_dir=tmp_path)
    assert "truncated or corrupt" in str(info.value)
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_model(path)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_model(tmp_path / "missing.pt")


def test_resume_refuses_a_checkpoint_of_another_run(tiny_data: DataSplits, tmp_path: Path) -> None:
    retrain("ARNAS", tiny_config(epochs=1, method="natural"), tiny_data, "cpu", out_dir=tmp_path)
    with pytest.raises(CheckpointError, match="lr=0.1.*lr=0.05"):
        retrain("ARNAS", tiny_config(epochs=1, method="natural", lr=0.05), tiny_data, "cpu",
                out_dir=tmp_path)
    other = load_dataset("synthetic", image_size=8, num_classes=3, num_train=60, num_test=12)
    with pytest.raises(CheckpointError, match="num_classes=4.*num_classes=3"):
        retrain("ARNAS", tiny_config(epochs=1, method="natural"), other, "cpu", out_dir=tmp_path)
    # resume=False starts over instead
    retrain("ARNAS", tiny_config(epochs=1, method="natural", lr=0.05), tiny_data, "cpu",
            out_dir=tmp_path, resume=False)
    assert load_checkpoint(tmp_path / "checkpoint.pt")["config"]["lr"] == 0.05


def test_nan_loss_raises_divergence_and_keeps_the_last_checkpoint(
        tiny_data: DataSplits, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {"n": 0}
    real = trainer_mod.training_loss

    def poisoned(*args: Any, **kwargs: Any) -> LossOutput:
        out = real(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 4:  # epoch 2, step 2 (2 steps per epoch)
            out.loss = out.loss * float("nan")
        return out

    monkeypatch.setattr(trainer_mod, "training_loss", poisoned)
    cfg = tiny_config(method="natural")
    with pytest.raises(DivergenceError) as info:
        retrain("ARNAS", cfg, tiny_data, "cpu", out_dir=tmp_path)
    assert (info.value.epoch, info.value.step) == (2, 2)
    assert "epoch 2, step 2" in str(info.value) and "checkpoint.pt" in str(info.value)
    state = load_checkpoint(tmp_path / "checkpoint.pt")
    assert state["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
    load_model(tmp_path / "checkpoint.pt")  # still loads


def test_huge_learning_rate_diverges_with_epoch_and_step(tiny_data: DataSplits) -> None:
    cfg = tiny_config(method="natural", lr=1e30, grad_clip=0.0, epochs=1, steps_per_epoch=4,
                      auxiliary=False)
    with pytest.raises(DivergenceError, match=r"epoch 1, step \d") as info:
        retrain("ARNAS", cfg, tiny_data, "cpu")
    assert info.value.epoch == 1 and 2 <= info.value.step <= 4
    assert "no checkpoint" in str(info.value)


class _Poison(Dataset):
    def __len__(self) -> int:
        raise AssertionError("the test split was read during training")

    def __getitem__(self, index: int) -> Any:
        raise AssertionError("the test split was read during training")


def test_model_selection_uses_val_never_test(tiny_data: DataSplits,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    data = dataclasses.replace(tiny_data, test=_Poison())
    seen: list[Any] = []
    scripted = iter([{"nat": 0.9, "pgd": 0.2}, {"nat": 0.5, "pgd": 0.6}, {"nat": 0.4, "pgd": 0.3}])

    def spy(model: Any, loader: Any, device: Any, specs: Any, **kw: Any) -> dict[str, float]:
        seen.append(loader.dataset)
        return next(scripted)

    monkeypatch.setattr(trainer_mod, "accuracies", spy)
    res = retrain("ARNAS", tiny_config(method="natural", epochs=3, steps_per_epoch=1), data, "cpu")
    assert all(d is tiny_data.val or getattr(d, "dataset", None) is tiny_data.val for d in seen)
    assert len(seen) == 3
    assert res.best_epoch == 2 and res.best_metric == 0.6  # select_on="pgd"
    assert [r["val_pgd_acc"] for r in res.history] == [0.2, 0.6, 0.3]

    scripted = iter([{"nat": 0.9, "pgd": 0.2}, {"nat": 0.5, "pgd": 0.6}, {"nat": 0.4, "pgd": 0.3}])
    res = retrain("ARNAS", tiny_config(method="natural", epochs=3, steps_per_epoch=1,
                                       select_on="natural"), data, "cpu")
    assert res.best_epoch == 1 and res.best_metric == 0.9


def test_trades_run_records_history_and_callback(tiny_data: DataSplits) -> None:
    records: list[dict[str, Any]] = []
    res = retrain(GENOTYPES["ARNAS"], tiny_config(method="trades", epochs=1), tiny_data, "cpu",
                  callback=records.append)
    keys = {"epoch", "train_loss", "val_nat_acc", "val_pgd_acc", "lr", "wall_s", "images_per_s"}
    assert len(records) == 1 and keys <= set(records[0])
    assert records[0]["steps"] == 2 and records[0]["images_per_s"] > 0
    assert res.best_path is None and res.final == res.history[-1]


def _stopped_after_one_epoch(data: DataSplits, out: Path, cfg: Any) -> dict[str, Any]:
    """Run one of two epochs into ``out``; the checkpoint it leaves, loaded."""
    with pytest.raises(_Stop):
        retrain("ARNAS", cfg, data, "cpu", out_dir=out, callback=_stop_after(1))
    return load_checkpoint(out / "checkpoint.pt")


def test_old_checkpoints_with_a_scheduler_entry_still_resume(tiny_data: DataSplits,
                                                             tmp_path: Path) -> None:
    """The never-read ``scheduler`` entry is no longer written; a file that has it resumes."""
    cfg = tiny_config(method="natural")
    state = _stopped_after_one_epoch(tiny_data, tmp_path, cfg)
    assert "scheduler" not in state
    state["scheduler"] = {"schedule": "step", "epoch": 1, "lr": 0.1}  # as older versions wrote
    torch.save(state, tmp_path / "checkpoint.pt")
    epochs_run: list[int] = []
    retrain("ARNAS", cfg, tiny_data, "cpu", out_dir=tmp_path,
            callback=lambda r: epochs_run.append(r["epoch"]))
    assert epochs_run == [2]


def test_resume_refuses_another_genotype_or_width_naming_the_field(tiny_data: DataSplits,
                                                                   tmp_path: Path) -> None:
    retrain("ARNAS", tiny_config(epochs=1, method="natural"), tiny_data, "cpu", out_dir=tmp_path)
    with pytest.raises(CheckpointError) as info:
        retrain("DARTS_V2", tiny_config(epochs=1, method="natural", placement="darts"),
                tiny_data, "cpu", out_dir=tmp_path)
    msg = str(info.value)
    assert msg.startswith(f"{tmp_path / 'checkpoint.pt'}: the checkpoint was written with genotype=")
    assert "placement" in msg and "resume=False" in msg and "\n" not in msg
    with pytest.raises(CheckpointError, match=r"channels=4, but this run has channels=6"):
        retrain("ARNAS", tiny_config(epochs=1, method="natural", channels=6), tiny_data, "cpu",
                out_dir=tmp_path)


def test_a_damaged_history_in_the_checkpoint_is_refused(tiny_data: DataSplits,
                                                       tmp_path: Path) -> None:
    cfg = tiny_config(method="natural")
    state = _stopped_after_one_epoch(tiny_data, tmp_path, cfg)
    state["history"] = []  # one epoch done, no record of it
    torch.save(state, tmp_path / "checkpoint.pt")
    with pytest.raises(CheckpointError, match="cannot resume from it.*1 with 0 history records"):
        retrain("ARNAS", cfg, tiny_data, "cpu", out_dir=tmp_path)


def test_epoch_streams_are_seeded_by_stream_seed(tiny_data: DataSplits,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """The data order, the attacks and the validation of epoch e use their own streams."""
    from arnas_ray._loop import stream_seed

    asked: list[tuple[int, int, str]] = []

    def spy(seed: int, epoch: int, stream: str) -> int:
        asked.append((seed, epoch, stream))
        return stream_seed(seed, epoch, stream)

    monkeypatch.setattr(trainer_mod, "stream_seed", spy)
    retrain("ARNAS", tiny_config(method="natural", seed=7), tiny_data, "cpu")
    assert sorted(asked) == sorted((7, e, s) for e in (0, 1)
                                   for s in ("train-data", "train-attack", "val-attack"))
