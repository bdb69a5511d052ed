"""The SIGKILLed-driver resume of test_resume.py with the run directory in an S3 bucket (moto on
127.0.0.1): `sweep resume URI`. Its own module so that pytest-xdist runs it beside the local one."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from .test_resume import check_sigkilled_driver_resumes

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def test_sigkilled_driver_resumes_from_checkpoints_in_the_bucket(tmp_path: Path, ray_tmpdir: str, s3) -> None:
    check_sigkilled_driver_resumes(tmp_path, ray_tmpdir, s3.uri(f"resume-{uuid.uuid4().hex[:8]}"))
