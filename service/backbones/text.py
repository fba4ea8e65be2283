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

    def __init__(
        self, name: str, name_or_path: str, device: str = "cpu", micro_batch: int = 32, length_ratio: float = 2.0
    ) -> None:
        from transformers import AutoModel, AutoTokenizer

        self.name = name
        self.source = str(name_or_path)
        self.device = device
        self.micro_batch = micro_batch
        self.length_ratio = length_ratio  # a micro-batch never mixes texts more than this far apart in length
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

    def _tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids per text (special tokens included, truncated at ``max_length``), unpadded."""
        return self.tokenizer(list(texts), truncation=True, max_length=self.max_length)["input_ids"]

    def token_lengths(self, texts: Sequence[str]) -> list[int]:
        return [len(ids) for ids in self._tokenize(texts)]

    @torch.inference_mode()
    def _forward(self, ids: Sequence[Sequence[int]]) -> torch.Tensor:
        """Embeddings of already tokenised texts, padded to the longest of them."""
        width = max(len(row) for row in ids)
        input_ids = np.full((len(ids), width), self.tokenizer.pad_token_id or 0, dtype=np.int64)
        attention = np.zeros((len(ids), width), dtype=np.int64)
        for i, row in enumerate(ids):
            input_ids[i, : len(row)] = row
            attention[i, : len(row)] = 1
        self.real_tokens += int(attention.sum())
        self.padded_tokens += attention.size
        mask = torch.from_numpy(attention).to(self.device)
        hidden = self.model(input_ids=torch.from_numpy(input_ids).to(self.device), attention_mask=mask).last_hidden_state
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, p=2, dim=1)

    def _embed_batch(self, texts: Sequence[str]) -> torch.Tensor:
        return self._forward(self._tokenize(texts))

    def embed(self, inputs: Sequence[str]) -> np.ndarray:
        """Tokenise once, sort by token count and cut into micro-batches of at most ``micro_batch``
        texts whose lengths differ at most ``length_ratio``-fold, so short texts are never padded
        to long ones (a few 256-token texts among 30-token ones get a micro-batch of their own)."""
        if not inputs:
            return np.zeros((0, self.dim), dtype=np.float32)
        ids = self._tokenize(inputs)
        out = np.empty((len(inputs), self.dim), dtype=np.float32)
        for idx in length_buckets([len(row) for row in ids], self.micro_batch, self.length_ratio):
            out[idx] = self._forward([ids[i] for i in idx]).float().cpu().numpy()
        return out


def length_buckets(lengths: Sequence[int], max_rows: int, max_ratio: float) -> list[list[int]]:
    """Indices grouped in ascending length: a group closes before it would exceed ``max_rows`` rows
    or hold a text more than ``max_ratio`` times longer than its shortest (padding < 1 - 1/ratio)."""
    groups: list[list[int]] = []
    group: list[int] = []
    for i in np.argsort(lengths, kind="stable").tolist():
        if group and (len(group) >= max_rows or lengths[i] > max_ratio * lengths[group[0]]):
            groups.append(group)
            group = []
        group.append(i)
    if group:
        groups.append(group)
    return groups
