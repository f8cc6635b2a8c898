"""scikit-learn's digits (ships with the package: no download), split once with a fixed seed."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SPLIT_SEED = 0
TEST_FRACTION = 0.25
PIXEL_MAX = 16.0  # digits pixels are integers 0..16
LABELS = tuple(str(d) for d in range(10))


@dataclass(frozen=True)
class DigitsSplit:
    """Train and held-out test sets; pixels scaled to [0, 1], shape [N, 64]."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def load_digits_split() -> DigitsSplit:
    """The fixed, stratified split every model is trained and judged on."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.data / PIXEL_MAX).astype(np.float32)
    y = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=TEST_FRACTION, random_state=SPLIT_SEED, stratify=y
    )
    return DigitsSplit(x_train, y_train, x_test, y_test)
