"""Sentence-embedding text backbone on torch: transformer, mean pooling, L2 normalisation.

The same pooled module is what the ONNX runtimes export (``export_spec``), and the same
tokenisation and length-sorted micro-batching feeds them (``batches``), so every runtime
embeds exactly the same token ids.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from adapters.spans.codec import window_owners
from adapters.spans.heads import Encoded

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
            weights_checksum(local)
            if local.is_dir()
            else str(getattr(self.model.config, "_commit_hash", None) or self.source)
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

    # -- per-token states (entities, answers) ---------------------------------------------------

    @torch.inference_mode()
    def token_states(
        self, texts: Sequence[str], questions: Sequence[str] | None = None, overlap: int = 64
    ) -> list[Encoded]:
        """The encoder's last hidden state of every token of each text (special tokens left out), with the
        tokens' character offsets into the caller's string. A text longer than the window is cut into
        windows sharing ``overlap`` tokens; each token keeps its state from the window where it has the most
        context. With ``questions``, each window is question + text (the question cut to half the window)
        and ``query`` holds the question's token states (n_question_tokens, dim), averaged over the
        windows. All windows of all texts run as one length-sorted, micro-batched pass."""
        if questions is not None and len(questions) != len(texts):
            raise ValueError(f"{len(questions)} questions for {len(texts)} texts")
        tok = self.tokenizer
        texts = list(texts)
        pair = questions is not None
        if questions is not None:  # a question keeps at most half the window
            cut = tok(list(questions), add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
            half = self.max_length // 2
            questions = [q if len(o) <= half else q[: o[half - 1][1]] for q, o in zip(questions, cut, strict=True)]
        windowed = tok(
            *((questions, texts) if questions is not None else (texts,)),
            truncation="only_second" if pair else True,
            max_length=self.max_length,
            stride=self.token_windows(overlap, pair)["stride"],
            return_overflowing_tokens=True,
            return_offsets_mapping=True,
        )
        owner_of = windowed["overflow_to_sample_mapping"]
        full = tok(texts, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
        sequences = windowed["input_ids"]
        hidden: list[np.ndarray] = [np.zeros(0)] * len(sequences)
        for idx in length_buckets([len(s) for s in sequences], self.micro_batch, self.length_ratio):
            feeds = self.feeds([sequences[j] for j in idx])
            tensors = {k: torch.from_numpy(v).to(self.device) for k, v in feeds.items()}
            with autocast(self.device, self.runtime):
                out = self.model(**tensors).last_hidden_state.float().cpu().numpy()
            for row, j in enumerate(idx):
                hidden[j] = out[row]
        # Windows of one text, in order: (text positions in the window, query positions, first token).
        per_text: list[list[tuple[np.ndarray, np.ndarray, int]]] = [[] for _ in texts]
        for j, sample in enumerate(owner_of):
            ids = windowed.sequence_ids(j)
            mine = np.array([p for p, s in enumerate(ids) if s == (1 if pair else 0)], dtype=np.int64)
            query = np.array([p for p, s in enumerate(ids) if pair and s == 0], dtype=np.int64)
            found = per_text[sample]
            first = 0 if not found else found[-1][2] + len(found[-1][0]) - self._overlap_of(windowed, j, found)
            found.append((mine, query, first))
        results: list[Encoded] = []
        for i, parts in enumerate(per_text):
            offsets = np.asarray(full[i], dtype=np.int64).reshape(-1, 2)
            spans = [(first, first + len(mine)) for mine, _, first in parts]
            if spans[-1][1] != len(offsets):
                raise RuntimeError(f"windows cover {spans[-1][1]} of the text's {len(offsets)} tokens")
            owners = window_owners(spans, len(offsets))
            states = np.zeros((len(offsets), self.dim), dtype=np.float32)
            queries = []
            rows = [j for j, sample in enumerate(owner_of) if sample == i]
            for k, ((mine, query, first), j) in enumerate(zip(parts, rows, strict=True)):
                keep = np.flatnonzero(owners[first : first + len(mine)] == k)
                states[first + keep] = hidden[j][mine[keep]]
                if len(query):
                    queries.append(hidden[j][query])
            query_state = np.mean(queries, axis=0).astype(np.float32) if queries else None  # same question each window
            results.append(Encoded(states, offsets, query_state))
        return results

    def token_windows(self, overlap: int = 64, pair: bool = False) -> dict[str, int]:
        """How :meth:`token_states` cuts a text into windows: ``window`` tokens at most (special tokens
        included), consecutive windows sharing ``stride`` of the text's tokens (an export's manifest)."""
        room = self.max_length - self.tokenizer.num_special_tokens_to_add(pair=pair)
        return {"window": self.max_length, "stride": min(overlap, room // 4)}

    @staticmethod
    def _overlap_of(windowed: Any, j: int, found: list[tuple[np.ndarray, np.ndarray, int]]) -> int:
        """How many text tokens window ``j`` shares with the window before it (the tokenizer's stride,
        read from the offsets so that a short last window is placed right)."""
        prev_first_offsets = windowed["offset_mapping"][j - 1]
        mine = found[-1][0]
        prev_text = [tuple(prev_first_offsets[p]) for p in mine]
        ids = windowed.sequence_ids(j)
        text_side = 1 if any(s == 1 for s in ids if s is not None) else 0
        first = next(tuple(o) for o, s in zip(windowed["offset_mapping"][j], ids, strict=True) if s == text_side)
        return len(prev_text) - prev_text.index(first) if first in prev_text else 0

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
