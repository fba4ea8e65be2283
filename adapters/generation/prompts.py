"""Turning prompts and completions into token ids, the same way for training and for decoding.

A prompt is one user turn. With a tokenizer that has a chat template (SmolLM2-Instruct's is ChatML, with a
default system turn the template adds itself), the prompt is rendered as that turn followed by the assistant
header (``add_generation_prompt``), and a completion is the assistant's text followed by the end-of-turn
token (the tokenizer's EOS, ``<|im_end|>`` for SmolLM2), so a trained adapter learns to stop. Without a chat
template, the prompt's own tokens are used as they are (with the tokenizer's BOS if it adds one). The
completion is tokenised on its own, never merged across the boundary: what training sees after the prompt is
exactly what decoding produces after it.
"""

from __future__ import annotations

from typing import Any, ClassVar

from ..training import TrainingDataError


class GenerationDataError(TrainingDataError):
    """Examples that cannot train an adapter: too many, too few, empty or too long (the message says which)."""

    code: ClassVar[str] = "validation_error"


class GenerationLimitError(ValueError):
    """A decoding request over a limit: prompt too long, too many tokens asked for, bad sampling values."""

    code: ClassVar[str] = "validation_error"


def has_chat_template(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def prompt_ids(tokenizer: Any, prompt: str) -> list[int]:
    """The prompt's token ids, ending where the model's answer starts."""
    if has_chat_template(tokenizer):
        out = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=True, return_dict=True
        )
        return [int(i) for i in out["input_ids"]]
    return [int(i) for i in tokenizer(prompt)["input_ids"]]


def completion_ids(tokenizer: Any, completion: str) -> list[int]:
    """The completion's token ids, closed by the end-of-turn (EOS) token."""
    ids = [int(i) for i in tokenizer(completion, add_special_tokens=False)["input_ids"]]
    if tokenizer.eos_token_id is not None:
        ids.append(int(tokenizer.eos_token_id))
    return ids


def stop_ids(tokenizer: Any, model: Any) -> set[int]:
    """Token ids that end a sequence: the tokenizer's EOS and the model's generation config's."""
    out = {int(tokenizer.eos_token_id)} if tokenizer.eos_token_id is not None else set()
    config = getattr(model, "generation_config", None)
    eos = getattr(config, "eos_token_id", None)
    if isinstance(eos, int):
        out.add(eos)
    elif isinstance(eos, list | tuple):
        out.update(int(e) for e in eos)
    return out
