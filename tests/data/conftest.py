"""Fixtures for the data tests."""

from __future__ import annotations

import pytest
from torchvision.datasets import CIFAR10, CIFAR100, SVHN


@pytest.fixture
def accept_unofficial_files(monkeypatch: pytest.MonkeyPatch) -> None:
    """Let torchvision read the tiny test files, whose md5 sums cannot match the official ones.

    torchvision's ``check_integrity(path, md5)`` accepts any existing file when ``md5`` is None,
    so the checksums in the class attributes are set to None for this test only. The library
    itself keeps the official checks (``test_vision.py`` tests that they refuse these files).
    """
    for cls in (CIFAR10, CIFAR100):
        monkeypatch.setattr(cls, "train_list", [[f, None] for f, _ in cls.train_list])
        monkeypatch.setattr(cls, "test_list", [[f, None] for f, _ in cls.test_list])
        monkeypatch.setattr(cls, "meta", {**cls.meta, "md5": None})
    monkeypatch.setattr(
        SVHN, "split_list", {k: [url, f, None] for k, (url, f, _) in SVHN.split_list.items()}
    )
