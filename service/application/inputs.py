"""Request inputs per modality (the application layer's decoding; the router asks it through ``Prepare``):
what the store keeps (examples) and what backbones take (predict).

Text passes through with its length checked. Images and audio clips are decoded and checked here, in
the request that sent them (so one bad image or WAV file is that request's 4xx, never a failed backbone
batch): examples are stored normalised (images: see :mod:`service.images`; audio: mono 16-bit WAV at
16 kHz, see :mod:`service.audio`), predict inputs become preprocessed arrays for the batcher. Pixels
and seconds of audio are charged to a per-request budget from each header, before decoding.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import anyio.to_thread

from adapters import kinds
from adapters.heads import RAW, Head

from .. import audio, images
from ..backbones.base import ImageBackbone
from ..router import Prepare, TaskRef
from ..runtime import Runtime
from .errors import Invalid, TooLarge

Raw = str | bytes  # JSON gives base64 strings; multipart and zip uploads give bytes
Input = Raw | dict[str, Any]  # what a request sends per input: answers tasks take {question, context}


def image_limits(rt: Runtime) -> images.Limits:
    return images.Limits(max_bytes=rt.settings.max_image_bytes, max_pixels=rt.settings.max_image_pixels)


def pixel_budget(rt: Runtime) -> images.PixelBudget:
    """A fresh budget of decoded pixels for one request (``GRAFT_MAX_REQUEST_PIXELS``)."""
    return images.PixelBudget(rt.settings.max_request_pixels)


def audio_limits(rt: Runtime) -> audio.Limits:
    s = rt.settings
    return audio.Limits(max_bytes=s.max_audio_bytes, max_seconds=s.max_audio_seconds, max_channels=s.max_audio_channels)


def seconds_budget(rt: Runtime) -> audio.SecondsBudget:
    """A fresh budget of decoded audio seconds for one request (``GRAFT_MAX_REQUEST_AUDIO_SECONDS``)."""
    return audio.SecondsBudget(rt.settings.max_request_audio_seconds)


def decode_clip(rt: Runtime, raw: Raw, where: str, budget: audio.SecondsBudget | None = None) -> audio.Clip:
    """One WAV input decoded (mono, its own rate), or the request's 4xx saying which input."""
    try:
        data = audio.from_base64(raw) if isinstance(raw, str) else raw
        return audio.decode(data, audio_limits(rt), budget)
    except audio.AudioError as exc:  # the same error, saying which input
        hint = " (this task's modality is 'audio')" if isinstance(raw, str) and isinstance(exc, audio.NotAudio) else ""
        raise type(exc)(f"{where} {exc}{hint}") from None


def stored_clip(rt: Runtime, raw: Raw, where: str, budget: audio.SecondsBudget | None = None) -> str:
    """One clip as the store keeps it (mono 16-bit WAV at 16 kHz, base64), or the request's 4xx. Its
    duration is charged to the request's ``budget``."""
    return audio.to_stored(decode_clip(rt, raw, where, budget))


def _decode(rt: Runtime, raw: Raw, where: str, budget: images.PixelBudget | None = None) -> Any:
    try:
        data = images.from_base64(raw) if isinstance(raw, str) else raw
        return images.decode(data, image_limits(rt), budget)
    except images.ImageError as exc:  # the same error, saying which input
        hint = (
            " (this task's modality is 'image')" if isinstance(raw, str) and isinstance(exc, images.NotAnImage) else ""
        )
        raise type(exc)(f"{where} {exc}{hint}") from None


def stored_image(
    rt: Runtime, preprocessing: images.Preprocessing, raw: Raw, where: str, budget: images.PixelBudget | None = None
) -> str:
    """One image as the store keeps it (normalised, base64 PNG), or the request's 4xx. Its pixels are
    charged to the request's ``budget``."""
    return images.to_stored(_decode(rt, raw, where, budget), preprocessing)


def check_count(rt: Runtime, n: int) -> None:
    limit = rt.settings.max_examples_per_request
    if n > limit:
        raise TooLarge(f"{n} examples in one request; the limit is {limit}. Send them in parts.")


def check_texts(rt: Runtime, texts: Sequence[str], field: str, sizes: Sequence[int] | None = None) -> None:
    """Each text within ``GRAFT_MAX_TEXT_CHARS`` (``sizes``: the characters each counts, when not its length)."""
    limit = rt.settings.max_text_chars
    for i, text in enumerate(texts):
        size = len(text) if sizes is None else sizes[i]
        if size > limit:
            raise TooLarge(f"{field}[{i}] has {size} characters; the limit is {limit}")


def check_kind_inputs(
    rt: Runtime, kind: str, values: Sequence[Any], names: Sequence[str], *, text: bool = True
) -> list[int]:
    """Each input fits the task's kind (a string; an answers task's ``{question, context}``) and, for a text
    task, its characters (an answers input: question + context) are within ``GRAFT_MAX_TEXT_CHARS``.
    Returns those character counts (none for images)."""
    task_kind = kinds.kind_of(kind)
    for value, name in zip(values, names, strict=True):
        problem = task_kind.input_problem(value)
        if problem:
            raise Invalid(f"{name}: {problem}")
    if not text:
        return []
    sizes = [task_kind.input_chars(value) for value in values]
    limit = rt.settings.max_text_chars
    for size, name in zip(sizes, names, strict=True):
        if size > limit:
            raise TooLarge(f"{name} has {size} characters; the limit is {limit}")
    return sizes


def stored_examples(
    rt: Runtime,
    modality: str,
    backbone: str,
    inputs: Sequence[Raw],
    labels: Sequence[str],
    names: Sequence[str],
    sizes: Sequence[int] | None = None,
) -> list[tuple[str, str]]:
    """Examples as the store keeps them: text as sent, images as normalised base64 PNG, audio as base64 WAV
    (mono, 16-bit, 16 kHz).
    ``names`` say where each input came from, for error messages (``examples[3].input``, a zip path)."""
    check_count(rt, len(inputs))
    if modality == "image":
        preprocessing = cast(ImageBackbone, rt.backbones.get(backbone)).preprocessing
        budget = pixel_budget(rt)  # one image decoded at a time; all of them within the request's budget
        return [
            (stored_image(rt, preprocessing, raw, name, budget), label)
            for raw, label, name in zip(inputs, labels, names, strict=True)
        ]
    if modality == "audio":
        seconds = seconds_budget(rt)
        return [
            (stored_clip(rt, raw, name, seconds), label) for raw, label, name in zip(inputs, labels, names, strict=True)
        ]
    check_texts(rt, inputs, "examples", sizes)  # type: ignore[arg-type]
    return list(zip(inputs, labels, strict=True))  # type: ignore[arg-type]


def _prepared_images(
    rt: Runtime, backbone: str, inputs: Sequence[Raw], names: Sequence[str], want_raw: bool
) -> tuple[list[Any], list[str] | None]:
    """Decoded images cropped for ``backbone``, and — for heads that read raw pixels — each image
    in the normalised form the store keeps, so such heads see at predict what they saw in training.
    One image is decoded at a time (only its crop is kept), within the request's pixel budget."""
    preprocessing = cast(ImageBackbone, rt.backbones.get(backbone)).preprocessing
    budget = pixel_budget(rt)
    cropped: list[Any] = []
    stored: list[str] | None = [] if want_raw else None
    for raw, name in zip(inputs, names, strict=True):
        image = _decode(rt, raw, name, budget)
        cropped.append(preprocessing(image))
        if stored is not None:
            stored.append(images.to_stored(image, preprocessing))
        del image
    return cropped, stored


def _placed_images(rt: Runtime, backbone: str, inputs: Sequence[Raw], names: Sequence[str]) -> list[Any]:
    """Detection inputs: each image decoded (within the request's pixel budget) and letterboxed onto the
    detection canvas, with what maps boxes back to its pixels (adapters/kinds/detection.py ``Placed``)."""
    preprocessing = cast(ImageBackbone, rt.backbones.get(backbone)).preprocessing
    budget = pixel_budget(rt)
    out: list[Any] = []
    for raw, name in zip(inputs, names, strict=True):
        image = _decode(rt, raw, name, budget)
        out.append(images.placed(image, preprocessing, kinds.DETECTION_SIZE))
        del image
    return out


def _prepared_audio(
    rt: Runtime, backbone: str, inputs: Sequence[Raw], names: Sequence[str], want_raw: bool
) -> tuple[list[Any], list[str] | None]:
    """Decoded clips at ``backbone``'s sample rate and — for heads that read raw audio (the MFCC baseline)
    — each clip in the stored form, so such heads see at predict what they saw in training. Within the
    request's budget of seconds, charged from each header before decoding."""
    rate = int(getattr(rt.backbones.get(backbone), "sample_rate", audio.STORED_RATE))
    budget = seconds_budget(rt)
    clips: list[Any] = []
    stored: list[str] | None = [] if want_raw else None
    for raw, name in zip(inputs, names, strict=True):
        clip = decode_clip(rt, raw, name, budget)
        clips.append(clip.at(rate))
        if stored is not None:
            stored.append(audio.to_stored(clip))
        del clip
    return clips, stored


async def prepare_inputs(
    rt: Runtime, task: TaskRef, backbone: str, head: Head, inputs: Sequence[Input], names: Sequence[str]
) -> tuple[Sequence[Any], Sequence[Any] | None]:
    """A predict request's inputs as ``backbone`` takes them and, for heads that read raw inputs, their raw
    form: text is checked and passes through; images and audio are decoded off the event loop (one bad input is
    this request's 4xx, never a failed backbone batch)."""
    return await predict_inputs(rt, inputs, names)(task, backbone, RAW in getattr(head, "consumes", ()))


def predict_inputs(rt: Runtime, inputs: Sequence[Input], names: Sequence[str]) -> Prepare:
    """How a predict request's inputs become what the task's backbone (and head) take: text is
    checked and passes through; images and audio are decoded off the event loop (one bad input is this
    request's 4xx, never a failed backbone batch)."""

    async def prepare(task: TaskRef, backbone: str, want_raw: bool) -> tuple[Sequence[Any], Sequence[Any] | None]:
        if task.modality == "image":
            check_kind_inputs(rt, task.kind, inputs, names, text=False)
            images_in = cast(Sequence[Raw], inputs)  # input_problem: strings or bytes only
            if kinds.kind_of(task.kind).reads_feature_maps:  # detection: letterboxed canvases
                placed = await anyio.to_thread.run_sync(_placed_images, rt, backbone, images_in, names)
                return placed, None
            return await anyio.to_thread.run_sync(_prepared_images, rt, backbone, images_in, names, want_raw)
        if task.modality == "audio":
            check_kind_inputs(rt, task.kind, inputs, names, text=False)
            clips_in = cast(Sequence[Raw], inputs)
            return await anyio.to_thread.run_sync(_prepared_audio, rt, backbone, clips_in, names, want_raw)
        if any(isinstance(raw, bytes) for raw in inputs):
            raise Invalid(f'task {task.name!r} is a text task: send JSON {{"inputs": [texts]}} to /predict')
        check_kind_inputs(rt, task.kind, inputs, names)  # strings; an answers task's {question, context}
        return inputs, inputs

    return prepare
