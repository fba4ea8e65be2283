"""Task heads: on frozen backbone embeddings (linear, prototype), on from-scratch features of the
raw inputs (baseline), or on both (hybrid).

Each head class registers itself (``@register`` in its module, see :mod:`.base`) when its module is
imported; importing this package imports them all, so the registry is full before anything reads it.
"""

from .base import (
    EMBEDDING,
    RAW,
    REGISTRY,
    TRUNK,
    Array,
    Head,
    HeadFormatError,
    MissingInputs,
    StoredHead,
    ValueHead,
    from_bytes,
    heads_for,
    ood_of,
    predict,
    read_metadata,
    register,
    require,
    to_bytes,
)
from .baseline import BaselineHead
from .detection import DetectorHead, ScratchDetectorHead
from .finetune import FinetuneHead
from .hybrid import HybridHead
from .linear import LinearHead
from .multilabel import MultiLabelHead
from .prototype import PrototypeHead
from .ridge import RidgeHead
from .speaker import SpeakerHead

# Classification heads (what training selects among, plus "finetune", trained on request); the other
# task kinds have one head each.
HEADS: dict[str, type[Head]] = heads_for("classification")
KIND_HEADS: dict[str, type[Head]] = {  # task kind -> its head
    task_kind: next(iter(heads_for(task_kind).values())) for task_kind in ("multilabel", "regression", "speakers")
}
TRANSFER_HEADS = frozenset(kind for kind, cls in HEADS.items() if cls.consumes == frozenset({EMBEDDING}))

__all__ = [
    "EMBEDDING", "HEADS", "RAW", "REGISTRY", "TRANSFER_HEADS", "TRUNK", "Array", "BaselineHead", "DetectorHead",
    "FinetuneHead", "Head", "HeadFormatError", "HybridHead", "KIND_HEADS", "LinearHead", "MissingInputs",
    "MultiLabelHead", "PrototypeHead", "RidgeHead", "ScratchDetectorHead", "SpeakerHead", "StoredHead", "ValueHead",
    "from_bytes", "heads_for", "ood_of", "predict",
    "read_metadata",
    "register", "require", "to_bytes",
]
