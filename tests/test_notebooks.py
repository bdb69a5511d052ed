"""The analysis notebooks run end to end against a run directory of a tiny real sweep.

The sweep (2 strategies x 2 seeds on 8x8 digits, a couple of steps each, then
a tiny retraining of the front) runs once per module on a local 2-CPU Ray instance; each
notebook is executed with nbclient in a Python kernel after its parameter cell is pointed at
the run directory. Any cell error fails the test.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
NAMES = ("pareto_analysis.ipynb", "ablations.ipynb")
KERNEL = "python3"  # jupyter_client starts the native kernel with this interpreter


def _tiny_spec(storage: Path) -> dict[str, Any]:
    return {
        "name": "nb-tiny",
        "storage": str(storage),
        "dataset": {"name": "digits", "image_size": 8, "limit": 200},
        "search": {"channels": 4, "cells": 3, "epochs": 1, "batch_size": 16, "steps_per_epoch": 1,
                   "eval_samples": 16, "order": "first", "attack": {"kind": "pgd", "steps": 1},
                   "eval_attack_steps": 1},
        "grid": {"placement": ["arnas"], "channel_ratios": [[1, 2, 2]],
                 "strategy": ["mgda", "fixed"], "seed": [2, 3]},
        "resources": {"cpu": 1, "gpu": 0},
        "selection": {"top_k": 2},
        "retrain": {"channels": 4, "cells": 3, "epochs": 1, "batch_size": 16, "steps_per_epoch": 1,
                    "cutout": 0, "val_samples": 16, "auxiliary": False,
                    "attack": {"kind": "pgd", "steps": 1}, "eval_attack": {"kind": "pgd", "steps": 1}},
        "evaluation": {"attacks": ["natural", "fgsm", "pgd20"], "limit": 16},
    }


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A run directory produced by a real (tiny) sweep: search, selection, retrain, report."""
    ray = pytest.importorskip("ray")
    from arnas_ray.sweep import SweepSpec, run_sweep

    mp = pytest.MonkeyPatch()
    mp.setenv("ARNAS_RAY_CELL_BACKEND", "matplotlib")  # same drawings with or without graphviz
    storage = tmp_path_factory.mktemp("runs")
    if ray.is_initialized():  # pragma: no cover - another module leaked its instance
        ray.shutdown()
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        result = run_sweep(SweepSpec.from_dict(_tiny_spec(storage)))
    finally:
        ray.shutdown()
    table = result.table
    search = table[table["stage"] == "search"]
    assert len(search) == 4 and set(search["status"]) == {"finished"}
    assert set(search["strategy"]) == {"mgda", "fixed"} and set(search["seed"]) == {2, 3}
    assert (table["stage"] == "retrain").any()
    try:
        yield result.run_dir
    finally:
        mp.undo()


def _with_run_dir(nb: Any, run_dir: Path) -> Any:
    """Point the notebook's parameter cell (tag ``parameters``) at ``run_dir``."""
    cells = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(cells) == 1, "a notebook has exactly one parameter cell"
    source, n = re.subn(r"^RUN_DIR = .*$", f"RUN_DIR = {str(run_dir)!r}", cells[0].source,
                        flags=re.MULTILINE)
    assert n == 1, "the parameter cell sets RUN_DIR"
    cells[0].source = source
    return nb


@pytest.mark.parametrize("name", NAMES)
def test_notebook_is_stored_without_outputs(name: str):
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, name


@pytest.mark.parametrize("name", NAMES)
def test_notebook_uses_only_public_results_api(name: str):
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    imports = re.findall(r"^\s*(?:from|import)\s+([\w.]+)", code, flags=re.MULTILINE)
    arnas = {m for m in imports if m.startswith("arnas_ray")}
    assert arnas == {"arnas_ray.results"}, arnas
    import arnas_ray.results as results

    for block in re.findall(r"from arnas_ray\.results import \(?([^)]*?)\)?\n\n", code + "\n\n",
                            flags=re.DOTALL):
        names = {n.strip() for n in block.replace("\n", ",").split(",") if n.strip()}
        assert names <= set(results.__all__), names - set(results.__all__)


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_notebook_executes(name: str, run_dir: Path, tmp_path: Path):
    nb = _with_run_dir(nbformat.read(NOTEBOOKS / name, as_version=4), run_dir)
    client = nbclient.NotebookClient(nb, kernel_name=KERNEL, timeout=300,
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError on the first failing cell
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    images = [o for o in outputs if o.output_type in ("display_data", "execute_result")
              and ({"image/png", "image/svg+xml"} & set(o.get("data", {})))]
    assert images, f"{name} drew nothing"
    text = "\n".join(str(o.get("data", {}).get("text/plain", "")) + o.get("text", "")
                     for o in outputs)
    if name == "ablations.ipynb":
        assert "fixed" in text and "mgda" in text  # the strategy comparison has both arms
    else:
        assert "retrain_" in text  # the winners' genotypes are listed
