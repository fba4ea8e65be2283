"""Task heads: on frozen backbone embeddings (linear, prototype), on from-scratch features of the
raw inputs (baseline), or on both (hybrid)."""

from .base import EMBEDDING, RAW, TRUNK, Head, HeadFormatError, MissingInputs, from_bytes, read_metadata, require, to_bytes
from .baseline import BaselineHead
from .finetune import FinetuneHead
from .hybrid import HybridHead
from .linear import LinearHead
from .prototype import PrototypeHead

HEADS: dict[str, type] = {cls.kind: cls for cls in (LinearHead, PrototypeHead, BaselineHead, HybridHead, FinetuneHead)}
TRANSFER_HEADS = frozenset(kind for kind, cls in HEADS.items() if cls.consumes == frozenset({EMBEDDING}))

__all__ = [
    "EMBEDDING", "HEADS", "RAW", "TRANSFER_HEADS", "TRUNK", "BaselineHead", "FinetuneHead", "Head", "HeadFormatError", "HybridHead", "LinearHead",
    "MissingInputs", "PrototypeHead", "from_bytes", "read_metadata", "require", "to_bytes",
]
