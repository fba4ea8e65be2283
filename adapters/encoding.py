"""Label encoding shared by the heads and the fitting code: the lowest layer of the core, importing
nothing of ``adapters`` (so a head module can use it without importing ``adapters.training``)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def encode_labels(labels: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """The sorted distinct labels and each label's index among them."""
    classes = sorted(set(labels))
    index = {label: i for i, label in enumerate(classes)}
    return classes, np.array([index[label] for label in labels], dtype=np.int64)
