"""The Ray service layer: sweep specs, Tune trainables, the search -> retrain pipeline.

This is the only package (with the CLI) that imports ``ray``.
"""

from arnas_ray.sweep.lock import RunLock
from arnas_ray.sweep.pipeline import RunResult, resume_sweep, run_dir_for, run_sweep
from arnas_ray.sweep.spec import SweepSpec, TrialPoint, load_spec

__all__ = ["RunLock", "RunResult", "SweepSpec", "TrialPoint", "load_spec", "resume_sweep", "run_dir_for", "run_sweep"]
