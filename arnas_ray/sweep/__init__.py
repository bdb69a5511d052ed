"""The Ray service layer: sweep specs, Tune trainables, the search -> retrain pipeline.

This is the only package (with the CLI) that imports ``ray``.
"""

from arnas_ray.sweep.lease import Lease
from arnas_ray.sweep.pipeline import RunResult, resume_sweep, run_dir_for, run_sweep
from arnas_ray.sweep.selection import select_for_retrain
from arnas_ray.sweep.spec import SweepSpec, TrialPoint, load_spec

__all__ = ["Lease", "RunResult", "SweepSpec", "TrialPoint", "load_spec", "resume_sweep", "run_dir_for",
           "run_sweep", "select_for_retrain"]
