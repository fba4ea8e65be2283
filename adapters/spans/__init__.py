"""Token-level text tasks: entities (BIO tagging) and answers (extractive question answering).

``codec`` maps character spans to BIO tags over a tokenizer's offsets and back (and the windows over
long texts); ``heads`` the encoder's heads and the no-transfer baselines, registered and stored as
safetensors + JSON; ``metrics`` entity P/R/F1 and SQuAD's exact match and token F1; ``training`` CV
selection against the baseline and the "no answer" threshold.
"""

from .codec import Span, SpanError, check_spans, decode_bio, encode_bio, tag_names
from .heads import ANSWERS, ENTITIES, SPAN_HEADS, Answer, Encoded, from_bytes, heads_for, to_bytes
from .metrics import answer_scores, entity_scores, exact_match, token_f1
from .training import SpanFit, fit_answers, fit_entities

__all__ = [
    "ANSWERS", "ENTITIES", "SPAN_HEADS", "Answer", "Encoded", "Span", "SpanError", "SpanFit", "answer_scores",
    "check_spans", "decode_bio", "encode_bio", "entity_scores", "exact_match", "fit_answers", "fit_entities",
    "from_bytes", "heads_for", "tag_names", "to_bytes", "token_f1",
]
