"""Regenerate ``arnas_ray/data/digits.npz`` from scikit-learn's copy of the UCI digits.

The package embeds the 1,797 8x8 images so that ``load_dataset("digits")`` needs neither
scikit-learn nor a download at run time. This script is how the file was made; run it again
only to check or rebuild it::

    .venv/bin/python scripts/make_digits_npz.py [--out arnas_ray/data/digits.npz]

The file holds ``images`` (uint8 [1797, 8, 8], grey levels 0..16) and ``labels``
(uint8 [1797], digits 0..9), in scikit-learn's order, compressed.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = Path(__file__).resolve().parents[1] / "arnas_ray" / "data" / "digits.npz"
    parser.add_argument("--out", type=Path, default=default, help="output .npz path")
    args = parser.parse_args()

    bunch = load_digits()
    images = np.asarray(bunch.images)  # [1797, 8, 8] float64 holding integers 0..16
    labels = np.asarray(bunch.target)  # [1797] int
    if not np.array_equal(images, np.round(images)) or images.min() < 0 or images.max() > 16:
        raise ValueError("scikit-learn digits are expected to be integers in 0..16")
    np.savez_compressed(args.out, images=images.astype(np.uint8), labels=labels.astype(np.uint8))
    print(f"wrote {args.out}: images {images.shape}, labels {labels.shape}")  # noqa: T201


if __name__ == "__main__":
    main()
