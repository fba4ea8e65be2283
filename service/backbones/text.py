"""Sentence-embedding text backbone on torch: transformer, mean pooling, L2 normalisation."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from .base import weights_checksum


class TorchTextBackbone:
    modality = "text"
    runtime = "torch"

    def __init__(self, name: str, name_or_path: str, device: str = "cpu", micro_batch: int = 32) -> None:
        from transformers import AutoModel, AutoTokenizer

        self.name = name
        self.source = str(name_or_path)
        self.device = device
        self.micro_batch = micro_batch
        self.real_tokens = self.padded_tokens = 0  # positions processed so far (padding metric)
        self.tokenizer = AutoTokenizer.from_pretrained(self.source)
        self.model = AutoModel.from_pretrained(self.source).to(device).eval()
        self.dim = int(self.model.config.hidden_size)
        self.max_length = self._max_length()
        local = Path(self.source)
        self.revision = (
            weights_checksum(local) if local.is_dir() else str(getattr(self.model.config, "_commit_hash", None) or self.source)
        )

    def _max_length(self) -> int:
        """sentence-transformers' max_seq_length when the model ships one, else the model's limit."""
        limit = int(getattr(self.model.config, "max_position_embeddings", 512))
        st_config = Path(self.source) / "sentence_bert_config.json"
        if st_config.is_file():
            limit = min(limit, int(json.loads(st_config.read_text()).get("max_seq_length", limit)))
        tok_limit = getattr(self.tokenizer, "model_max_length", limit) or limit
        return int(min(limit, tok_limit))

    def token_lengths(self, texts: Sequence[str]) -> list[int]:
        encoded = self.tokenizer(list(texts), truncation=True, max_length=self.max_length, add_special_tokens=True)
        return [len(ids) for ids in encoded["input_ids"]]

    @torch.inference_mode()
    def _embed_batch(self, texts: Sequence[str]) -> torch.Tensor:
        batch = self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        ).to(self.device)
        self.real_tokens += int(batch["attention_mask"].sum())
        self.padded_tokens += int(batch["attention_mask"].numel())
        hidden = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, p=2, dim=1)

    def embed(self, inputs: Sequence[str]) -> np.ndarray:
        """Embed in micro-batches of similar length, so short texts are not padded to long ones."""
        if not inputs:
            return np.zeros((0, self.dim), dtype=np.float32)
        order = np.argsort([len(t) for t in inputs], kind="stable")
        out = np.empty((len(inputs), self.dim), dtype=np.float32)
        for start in range(0, len(order), self.micro_batch):
            idx = order[start : start + self.micro_batch]
            out[idx] = self._embed_batch([inputs[i] for i in idx]).float().cpu().numpy()
        return out
