"""A LoRA adapter as a PEFT adapter directory: what ``PeftModel.from_pretrained(base, directory)`` loads.

peft's ``save_pretrained`` writes two files, and so does this module, from :class:`LoraWeights` alone (no
model is loaded):

- ``adapter_config.json``: a ``LoraConfig`` (rank ``r``, ``lora_alpha``, ``target_modules``,
  ``base_model_name_or_path``, ``task_type`` ``CAUSAL_LM``, ``inference_mode`` true, ...) written by
  peft's own ``LoraConfig.save_pretrained`` (public API), so its fields are those of the installed peft;
- ``adapter_model.safetensors``: the tensors under the names peft's ``get_peft_model_state_dict`` gives them
  (``base_model.model.<module>.lora_A.weight`` / ``.lora_B.weight``, e.g.
  ``base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight`` on a Llama model), metadata
  ``{"format": "pt"}`` as peft writes it.

:func:`peft_bundle` puts them in a zip, flat (unzipped, the folder is the adapter directory), with a short
model card (``README.md``, as peft writes one) and the caller's manifest (``graft-export.json``).
tests/adapters/test_generation_export.py checks both files against what ``save_pretrained`` writes.
"""

from __future__ import annotations

import io
import json
import tempfile
import zipfile
from pathlib import Path
from typing import Any

from .lora import LoraWeights

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
MODEL_CARD = "README.md"
MANIFEST_FILE = "graft-export.json"
TASK_TYPE = "CAUSAL_LM"


def target_modules(weights: LoraWeights) -> list[str]:
    """The adapted modules' last names (``q_proj``, ...): peft's ``target_modules`` for these weights."""
    return sorted({m.rpartition(".")[2] for m in weights.modules})


def lora_config(
    weights: LoraWeights, base_model_name_or_path: str | None, *, dropout: float = 0.0, revision: str | None = None
) -> Any:
    """The peft ``LoraConfig`` these weights are an adapter of (inference mode, as ``save_pretrained`` leaves it)."""
    from peft import LoraConfig

    alpha = weights.alpha
    return LoraConfig(
        r=weights.rank,
        lora_alpha=int(alpha) if float(alpha).is_integer() else alpha,  # type: ignore[arg-type]
        lora_dropout=dropout,
        target_modules=target_modules(weights),
        bias="none",
        task_type=TASK_TYPE,
        base_model_name_or_path=base_model_name_or_path,
        revision=revision,
        inference_mode=True,
    )


def adapter_config_json(config: Any) -> bytes:
    """``adapter_config.json`` exactly as peft writes it (``LoraConfig.save_pretrained``)."""
    with tempfile.TemporaryDirectory(prefix="graft-peft-") as tmp:
        config.save_pretrained(tmp)
        return (Path(tmp) / ADAPTER_CONFIG).read_bytes()


def adapter_weights(weights: LoraWeights) -> bytes:
    """``adapter_model.safetensors``: the tensors under peft's state-dict names."""
    from safetensors.torch import save

    tensors = {name: t.detach().to("cpu").contiguous() for name, t in weights.peft_state_dict().items()}
    return save(tensors, metadata={"format": "pt"})


def adapter_files(
    weights: LoraWeights, base_model_name_or_path: str | None, *, dropout: float = 0.0, revision: str | None = None
) -> dict[str, bytes]:
    """The PEFT adapter directory's two files, by name."""
    weights.check()
    config = lora_config(weights, base_model_name_or_path, dropout=dropout, revision=revision)
    return {ADAPTER_CONFIG: adapter_config_json(config), ADAPTER_WEIGHTS: adapter_weights(weights)}


def model_card(base_model_name_or_path: str | None, title: str) -> bytes:
    """A minimal model card (the front matter the Hugging Face Hub reads for a PEFT adapter)."""
    lines = ["---"]
    if base_model_name_or_path:
        lines.append(f"base_model: {json.dumps(base_model_name_or_path)}")
    lines += ["library_name: peft", "pipeline_tag: text-generation", "tags:", "- lora", "- graft", "---", ""]
    lines += [
        f"# {title}",
        "",
        "A LoRA adapter exported by Graft. Load it with `peft.PeftModel.from_pretrained(base_model, this_directory)`"
        f" on the base model `{MANIFEST_FILE}` names (`base_model`), and render prompts as it says (`prompt`).",
        "",
    ]
    return "\n".join(lines).encode()


def peft_bundle(
    weights: LoraWeights,
    base_model_name_or_path: str | None,
    manifest: dict[str, Any],
    *,
    title: str = "Graft LoRA adapter",
    dropout: float = 0.0,
    revision: str | None = None,
) -> bytes:
    """A zip: the PEFT adapter directory's files (weights stored: they barely compress), a model card and
    ``graft-export.json``, all at the top level."""
    files = adapter_files(weights, base_model_name_or_path, dropout=dropout, revision=revision)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        zf.writestr(ADAPTER_WEIGHTS, files[ADAPTER_WEIGHTS], compress_type=zipfile.ZIP_STORED)
        zf.writestr(ADAPTER_CONFIG, files[ADAPTER_CONFIG], compress_type=zipfile.ZIP_DEFLATED)
        zf.writestr(MODEL_CARD, model_card(base_model_name_or_path, title), compress_type=zipfile.ZIP_DEFLATED)
        zf.writestr(
            MANIFEST_FILE, json.dumps(manifest, indent=2, ensure_ascii=False), compress_type=zipfile.ZIP_DEFLATED
        )
    return out.getvalue()
