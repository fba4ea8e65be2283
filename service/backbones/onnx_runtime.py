"""Backbones on ONNX Runtime: one session per backbone, shared by every tenant and task.

CPU: intra-op threads from the container's CPU quota, thread spinning off (torch lives in
the same process and spinning threads would steal its cores), full graph optimisation.
CUDA (needs ``onnxruntime-gpu``): ``CUDAExecutionProvider`` with IO binding, so the output
is written on the device and copied back once per call.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, cast

import numpy as np

from .base import ImageBackbone, cpu_quota
from .onnx_export import Exportable


class OrtUnavailable(RuntimeError):
    """The requested execution provider cannot run here."""


def session_options(threads: int = 0) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or cpu_quota()
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    options.log_severity_level = 3  # errors only: ORT's warnings are not ours to act on
    return options


def device_index(device: str) -> int:
    _, _, index = device.partition(":")
    return int(index or 0)


def providers(device: str) -> list[Any]:
    import onnxruntime as ort

    if not device.startswith("cuda"):
        return ["CPUExecutionProvider"]
    if hasattr(ort, "preload_dlls"):  # CUDA/cuDNN from pip's nvidia-* packages, when the system has none
        ort.preload_dlls()
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        raise OrtUnavailable(
            f"device {device!r} needs onnxruntime-gpu (CUDAExecutionProvider); this onnxruntime has "
            f"{ort.get_available_providers()}. Install onnxruntime-gpu or choose a torch runtime."
        )
    return [("CUDAExecutionProvider", {"device_id": device_index(device)}), "CPUExecutionProvider"]


def create_session(model: Path, device: str = "cpu", threads: int = 0) -> Any:
    import onnxruntime as ort

    wanted = providers(device)
    session = ort.InferenceSession(str(model), session_options(threads), providers=wanted)
    if device.startswith("cuda") and session.get_providers()[0] != "CUDAExecutionProvider":
        # ORT falls back to CPU silently when the CUDA libraries fail to load.
        raise OrtUnavailable(f"CUDAExecutionProvider did not load (session runs on {session.get_providers()})")
    return session


class OrtBackbone:
    """An :class:`Exportable` backbone's graph on ONNX Runtime; preprocessing stays the backbone's own."""

    def __init__(
        self,
        source: Exportable,
        model: Path,
        variant: str,
        device: str = "cpu",
        threads: int = 0,
        micro_batch: int = 32,
    ) -> None:
        if variant == "onnx-fp16" and not device.startswith("cuda"):
            raise OrtUnavailable("onnx-fp16 runs on CUDA only; on CPU use onnx or onnx-int8")
        self.origin = source
        self.name, self.modality, self.dim, self.revision = source.name, source.modality, source.dim, source.revision
        self.runtime = variant
        self.device = device
        self.model_path = model
        # int8 quantises activations with one scale per call: batching inputs together would make
        # each result depend on the others in the batch (up to 0.03 per element was measured).
        # One input per call keeps results batch-independent, so tenants never affect each other.
        self.per_call = 1 if variant == "onnx-int8" else micro_batch
        self._cuda = device.startswith("cuda")
        threads = threads or cpu_quota()
        # Calls of one input are small: splitting each across threads costs more in wake-ups than it
        # gains (spinning is off), so they run side by side on `threads` callers, one thread each.
        self.parallel_calls = threads if self.per_call == 1 and not self._cuda else 1
        self.session = create_session(model, device, 1 if self.parallel_calls > 1 else threads)
        self.output = self.session.get_outputs()[0].name
        self._pool = ThreadPoolExecutor(self.parallel_calls, f"ort-{self.name}") if self.parallel_calls > 1 else None

    def _run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        if not self._cuda:
            return self.session.run([self.output], feeds)[0]
        binding = self.session.io_binding()
        for name, array in feeds.items():
            binding.bind_cpu_input(name, array)
        binding.bind_output(self.output, "cuda", device_index(self.device))
        self.session.run_with_iobinding(binding)
        out = binding.copy_outputs_to_cpu()[0]
        if self.runtime == "onnx-fp16":  # normalised in fp16: norms are off by ~2e-4; restore the contract
            out /= np.linalg.norm(out, axis=1, keepdims=True)
        return out

    def embed(self, inputs: Sequence[Any]) -> np.ndarray:
        out = np.empty((len(inputs), self.dim), dtype=np.float32)
        batches = list(self.origin.batches(inputs, self.per_call)) if len(inputs) else []
        if self._pool is None or len(batches) < 2:
            results: Iterator[np.ndarray] = map(self._run, (feeds for _, feeds in batches))
        else:
            results = self._pool.map(self._run, (feeds for _, feeds in batches))
        for (idx, _), vectors in zip(batches, results, strict=True):
            out[idx] = vectors
        return out

    def preprocessing_files(self) -> dict[str, bytes]:
        return self.origin.preprocessing_files()

    @property
    def preprocessing(self) -> Any:
        """The image preprocessing of the backbone this graph was exported from (image backbones)."""
        return cast(ImageBackbone, self.origin).preprocessing  # image origins only

    @property
    def real_tokens(self) -> int | None:
        """Token positions counted by the preprocessing backbone (padding metric), if it counts them."""
        return getattr(self.origin, "real_tokens", None)

    @property
    def padded_tokens(self) -> int | None:
        return getattr(self.origin, "padded_tokens", None)
