"""Task heads: on frozen backbone embeddings (linear, prototype), on from-scratch features of the
raw inputs (baseline), or on both (hybrid)."""

from .base import (
    EMBEDDING,
    RAW,
    TRUNK,
    Head,
    HeadFormatError,
    MissingInputs,
    from_bytes,
    read_metadata,
    require,
    to_bytes,
)
from .baseline import BaselineHead
from .finetune import FinetuneHead
from .hybrid import HybridHead
from .linear import LinearHead
from .multilabel import MultiLabelHead
from .prototype import PrototypeHead
from .ridge import RidgeHead

# Classification heads (what training selects among, plus "finetune", trained on request); the other
# task kinds have one head each.
HEADS: dict[str, type[Head]] = {cls.kind: cls for cls in (LinearHead, PrototypeHead, BaselineHead, HybridHead, FinetuneHead)}
KIND_HEADS: dict[str, type[Head]] = {"multilabel": MultiLabelHead, "regression": RidgeHead}  # task kind -> head
TRANSFER_HEADS = frozenset(kind for kind, cls in HEADS.items() if cls.consumes == frozenset({EMBEDDING}))

__all__ = [
    "EMBEDDING", "HEADS", "RAW", "TRANSFER_HEADS", "TRUNK", "BaselineHead", "FinetuneHead", "Head", "HeadFormatError",
    "HybridHead", "KIND_HEADS", "LinearHead", "MissingInputs", "MultiLabelHead", "PrototypeHead", "RidgeHead", "from_bytes",
    "read_metadata", "require", "to_bytes",
]
