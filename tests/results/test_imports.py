"""arnas_ray.results imports neither torch nor ray, and exports a sorted public surface."""

from __future__ import annotations

import importlib
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

MODULES = ("table", "schema", "rundir", "run", "pareto", "hypervolume", "plots", "cells", "report", "ablation",
           "stats", "fidelity")


def test_import_without_torch_and_ray(tmp_path: Path) -> None:
    code = textwrap.dedent(
        f"""
        import importlib.abc, sys

        class Absent(importlib.abc.MetaPathFinder):  # as on a machine without them
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("torch", "ray", "torchvision"):
                    raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
                return None

        sys.meta_path.insert(0, Absent())
        import arnas_ray.results as results
        for name in {MODULES!r}:
            __import__("arnas_ray.results." + name)
        df = results.normalize_rows([{{"sweep_id": "s", "stage": "search", "trial_id": "t",
                                       "status": "finished", "nat_acc": 0.5, "pgd_acc": 0.2}}])
        results.write_table(df, {str(tmp_path / "r.parquet")!r})
        assert results.hypervolume([[0.5, 0.2]], ("max", "max")) == 0.1
        loaded = [m for m in sys.modules if m.split(".")[0] in ("torch", "ray", "torchvision")]
        assert not loaded, loaded
        print("ok")
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"


@pytest.mark.parametrize("name", ("", *MODULES))
def test_all_is_sorted_and_complete(name: str) -> None:
    module = importlib.import_module("arnas_ray.results" + (f".{name}" if name else ""))
    assert module.__all__ == sorted(module.__all__)
    missing = [n for n in module.__all__ if not hasattr(module, n)]
    assert not missing
