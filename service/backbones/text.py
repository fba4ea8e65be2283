"""Sentence-embedding text backbone on torch: transformer, mean pooling, L2 normalisation.

The same pooled module is what the ONNX runtimes export (``export_spec``), and the same
tokenisation and length-sorted micro-batching feeds them (``batches``), so every runtime
embeds exactly the same token ids.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from .base import autocast, weights_checksum
from .onnx_export import ExportSpec

# A token covers at least one character (special tokens aside), so the first ``max_length`` tokens of a
# text lie in far fewer than ``max_length × CHARS_PER_TOKEN`` characters of ordinary text: texts are cut
# there before tokenising, and a 100,000-character input costs what a 4,096-character one does. (Only a
# text that is mostly whitespace or control characters, which tokenisers drop, could differ.)
CHARS_PER_TOKEN = 16


class SentenceEmbedder(torch.nn.Module):
    """Transformer → attention-masked mean pooling → L2 normalisation (what gets exported)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state.float()
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, p=2, dim=1)


class TorchTextBackbone:
    modality = "text"

    def __init__(
        self,
        name: str,
        name_or_path: str,
        device: str = "cpu",
        micro_batch: int = 32,
        runtime: str = "torch",
        length_ratio: float = 2.0,
    ) -> None:
        from transformers import AutoModel, AutoTokenizer

        autocast(device, runtime)  # validates the runtime name
        self.name = name
        self.source = str(name_or_path)
        self.device = device
        self.micro_batch = micro_batch
        self.length_ratio = length_ratio  # a micro-batch never mixes texts more than this far apart in length
        self.real_tokens = self.padded_tokens = 0  # positions processed so far (padding metric)
        self.runtime = runtime
        self.tokenizer = AutoTokenizer.from_pretrained(self.source)
        self.model = AutoModel.from_pretrained(self.source).to(device).eval()
        self.module = SentenceEmbedder(self.model).eval()
        self.dim = int(self.model.config.hidden_size)
        self.max_length = self._max_length()
        self.max_chars = self.max_length * CHARS_PER_TOKEN  # texts are cut here before tokenising
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
        """Token ids per text (special tokens included, truncated at ``max_length``), unpadded. Texts are
        cut to ``max_chars`` characters first: tokenising the rest would cost time and memory for
        tokens that truncation drops anyway."""
        cut = [text[: self.max_chars] for text in texts]
        return self.tokenizer(cut, truncation=True, max_length=self.max_length)["input_ids"]

    def token_lengths(self, texts: Sequence[str]) -> list[int]:
        return [len(ids) for ids in self._tokenize(texts)]

    # -- preprocessing, shared by every runtime -------------------------------------------

    def batches(self, inputs: Sequence[str], max_items: int) -> Iterator[tuple[list[int], dict[str, np.ndarray]]]:
        """Tokenise once, sort by token count and cut into micro-batches of at most ``max_items``
        texts whose lengths differ at most ``length_ratio``-fold, so short texts are never padded
        to long ones: ``(positions in inputs, {"input_ids", "attention_mask"})``, int64."""
        ids = self._tokenize(inputs)
        for idx in length_buckets([len(row) for row in ids], max_items, self.length_ratio):
            yield idx, self.feeds([ids[i] for i in idx])

    def feeds(self, ids: Sequence[Sequence[int]]) -> dict[str, np.ndarray]:
        """Token ids padded to the longest of them, with the attention mask; counts padding."""
        width = max(len(row) for row in ids)
        input_ids = np.full((len(ids), width), self.tokenizer.pad_token_id or 0, dtype=np.int64)
        mask = np.zeros((len(ids), width), dtype=np.int64)
        for row, tokens in enumerate(ids):
            input_ids[row, : len(tokens)] = tokens
            mask[row, : len(tokens)] = 1
        self.real_tokens += int(mask.sum())
        self.padded_tokens += mask.size
        return {"input_ids": input_ids, "attention_mask": mask}

    def preprocessing_files(self) -> dict[str, bytes]:
        """The tokenizer as bare `tokenizers` loads it: ``tokenizer.json`` with this backbone's
        truncation and padding switched on, plus the original config files for `transformers` users."""
        from tokenizers import Tokenizer

        tok = Tokenizer.from_str(self.tokenizer.backend_tokenizer.to_str())
        tok.enable_truncation(self.max_length)
        tok.enable_padding(pad_id=self.tokenizer.pad_token_id or 0, pad_token=self.tokenizer.pad_token or "[PAD]")
        files = {"tokenizer.json": tok.to_str().encode()}
        for extra in ("tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
            path = Path(self.source) / extra
            if path.is_file():
                files[extra] = path.read_bytes()
        return files

    # -- torch inference ---------------------------------------------------------------------

    @torch.inference_mode()
    def _embed_batch(self, feeds: dict[str, np.ndarray]) -> torch.Tensor:
        tensors = {k: torch.from_numpy(v).to(self.device) for k, v in feeds.items()}
        with autocast(self.device, self.runtime):
            return self.module(**tensors)

    def embed(self, inputs: Sequence[str]) -> np.ndarray:
        if not inputs:
            return np.zeros((0, self.dim), dtype=np.float32)
        out = np.empty((len(inputs), self.dim), dtype=np.float32)
        for idx, feeds in self.batches(inputs, self.micro_batch):
            out[idx] = self._embed_batch(feeds).float().cpu().numpy()
        return out

    # -- export ------------------------------------------------------------------------------

    def export_spec(self) -> ExportSpec:
        """The pooled module for ONNX export, on CPU in fp32 with eager attention (a separate
        copy: tracing must not touch the serving model, and eager attention is what ORT's
        transformer fusions recognise)."""
        from transformers import AutoModel

        model = AutoModel.from_pretrained(self.source, attn_implementation="eager").eval()
        # Example inputs must contain padding, so the traced graph keeps the attention mask.
        feeds = self.feeds(self._tokenize(["an example sentence to export the graph", "padding"]))
        return ExportSpec(
            module=SentenceEmbedder(model).eval(),
            example_inputs={k: torch.from_numpy(v) for k, v in feeds.items()},
            dynamic_axes={"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"}},
            fusion={"model_type": "bert", "num_heads": int(model.config.num_attention_heads), "hidden_size": self.dim},
        )


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
