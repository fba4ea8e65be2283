"""Generation: per-tenant LoRA adapters on one small causal LM, many adapters decoded in one batch.

- :mod:`.weights`: the packaged model (SmolLM2-135M-Instruct, GGUF) and ``from_pretrained`` loading.
- :mod:`.prompts`: prompts and completions as token ids (the chat template), the errors.
- :mod:`.training`: :func:`fit_lora`, a LoRA adapter (peft) on (prompt, completion) examples, with the
  held-out comparison against the base model (negative-transfer guard).
- :mod:`.lora`: :class:`LoraWeights`, an adapter as plain tensors (safetensors, never pickle).
- :mod:`.multi`: :class:`MultiLora`, many adapters in slots on one base model, applied per row.
- :mod:`.decoding`: :class:`BatchDecoder`, a step function over a batch with a KV cache, left padding,
  sampling, stop strings and sequences joining between steps.

The service wires these as a task kind (docs/generation.md says what is served and what is not yet).
"""

from .decoding import BatchDecoder, Completion, DecodeLimits, SamplingParams, StepEvent
from .lora import LoraWeights
from .multi import MultiLora
from .prompts import GenerationDataError, GenerationLimitError, completion_ids, prompt_ids
from .training import Example, LoraFit, LoraTrainConfig, fit_lora
from .weights import ModelNotInstalled, load_causal_lm, smollm2_dir

__all__ = [
    "BatchDecoder",
    "Completion",
    "DecodeLimits",
    "Example",
    "GenerationDataError",
    "GenerationLimitError",
    "LoraFit",
    "LoraTrainConfig",
    "LoraWeights",
    "ModelNotInstalled",
    "MultiLora",
    "SamplingParams",
    "StepEvent",
    "completion_ids",
    "fit_lora",
    "load_causal_lm",
    "prompt_ids",
    "smollm2_dir",
]
