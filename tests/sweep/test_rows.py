"""The one-line error of a failed trial, as its table row keeps it."""

from __future__ import annotations

from arnas_ray.sweep.rows import error_line

TRACEBACK = """Traceback (most recent call last):
  File "/x/arnas_ray/sweep/_trial.py", line 10, in setup
    raise TrialSetupError(msg)
arnas_ray.sweep._trial.TrialSetupError: data set root '/data/cifar10' (cifar10) does not exist on node vm
"""


def test_traceback_gives_its_last_exception_without_the_module():
    assert error_line(TRACEBACK) == "TrialSetupError: data set root '/data/cifar10' (cifar10) does not exist on node vm"
    nested = ("Traceback (most recent call last):\n  File \"a.py\", line 1\nValueError: first\n\n"
              "During handling of the above exception, another exception occurred:\n\n"
              "zipfile.BadZipFile: File is not a zip file")
    assert error_line(nested) == "BadZipFile: File is not a zip file"


def test_messages_with_dots_keep_them():
    assert error_line("ValueError: a.b: c.d") == "ValueError: a.b: c.d"
    assert error_line(RuntimeError("net.cell.0: bad")) == "RuntimeError: net.cell.0: bad"
    assert error_line(None) is None
