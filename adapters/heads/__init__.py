"""Task heads trained on frozen backbone embeddings."""

from .base import Head, HeadFormatError, from_bytes, read_metadata, to_bytes
from .linear import LinearHead
from .prototype import PrototypeHead

HEADS: dict[str, type] = {cls.kind: cls for cls in (LinearHead, PrototypeHead)}

__all__ = ["HEADS", "Head", "HeadFormatError", "LinearHead", "PrototypeHead", "from_bytes", "read_metadata", "to_bytes"]
