"""Word features for the no-transfer baselines: words with their character offsets, word shapes, and
the feature dicts a token classifier reads (the word, its shape, affixes, neighbours; for answers, its
overlap with the question).

They live in ``adapters/span_decode.py``, the decoder shipped in a task's export zip, so that an exported
word baseline computes its features with the very functions the service runs (docs/spans.md#export).
"""

from __future__ import annotations

from ..span_decode import (
    STOP,
    WH_WORDS,
    WORD,
    answer_features,
    question_features,
    shape,
    tagger_features,
    word_rows,
    words,
)

__all__ = [
    "STOP", "WH_WORDS", "WORD", "answer_features", "question_features", "shape", "tagger_features", "word_rows",
    "words",
]
