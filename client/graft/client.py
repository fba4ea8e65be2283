"""Graft's Python client: :class:`Graft` (sync) and :class:`AsyncGraft` (asyncio), on httpx.

Both run the same operations. Each operation is written once, as a generator that yields the HTTP
calls (and pauses) it needs and receives their answers; the sync client drives it with an
``httpx.Client`` and ``time.sleep``, the async one with an ``httpx.AsyncClient`` and
``asyncio.sleep``. Answers parse into the server's own models (:mod:`graft.schemas`); error answers
raise the typed exceptions of :mod:`graft.errors`. 429 and 503 answers (and refused connections)
are retried with exponential backoff, waiting what ``Retry-After`` asks when the server sends it.

    from graft import Graft
    with Graft("http://localhost:3000", api_key) as g:
        g.create_task("news", "bbc_news.train.jsonl")          # uploads, trains, waits (progress bar)
        g.predict("news", ["Shares rose 5% after the results"]).predictions[0].label
"""

from __future__ import annotations

import asyncio
import base64
import functools
import inspect
import io
import os
import random
import time
import zipfile
from collections.abc import (
    AsyncIterator,
    Callable,
    Coroutine,
    Generator,
    Hashable,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar, cast

import httpx
from pydantic import TypeAdapter

from . import _progress, errors
from . import schemas as s

DEFAULT_URL = "http://127.0.0.1:3000"
RETRY_STATUSES = frozenset({429, 503})
DATASET_TYPES = {
    ".csv": "text/csv",
    ".jsonl": "application/jsonl",
    ".ndjson": "application/jsonl",
    ".zip": "application/zip",
}

# text, an image or WAV clip as bytes or a file path, or an answers task's {"question", "context"} (a mapping or
# QuestionContext)
Input = str | bytes | os.PathLike | Mapping[str, str] | s.QuestionContext
Example = s.ExampleIn | Mapping[str, Any] | tuple[Input, Any]  # label: any JSON value the task's kind takes

T = TypeVar("T")
P = ParamSpec("P")


@dataclass(frozen=True)
class Call:
    """One HTTP request, as both clients send it."""

    method: str
    path: str
    json: Any = None
    params: Mapping[str, Any] | None = None
    content: bytes | None = None
    content_type: str | None = None
    files: list[tuple[str, tuple[str, bytes, str]]] | None = None
    data: Mapping[str, str] | None = None
    upload: str | None = None  # show an upload bar with this label while ``content`` is sent


@dataclass(frozen=True)
class Sleep:
    seconds: float


Op = Generator[Call | Sleep, Any, T]


@functools.lru_cache(maxsize=64)
def _adapter(model: Any) -> TypeAdapter[Any]:
    return TypeAdapter(model)


# -- inputs ----------------------------------------------------------------------------------------


def is_wav(data: bytes) -> bool:
    """Whether ``data`` starts like a WAV file (RIFF, form type WAVE)."""
    return data[:4] == b"RIFF" and data[8:12] == b"WAVE"


def _encode(value: Input) -> tuple[str | dict[str, str], str]:
    """An input as the JSON API takes it, and its modality: text (and an answers task's ``{question, context}``)
    as is; bytes or a file as base64, a WAV file's modality ``audio``, any other ``image``."""
    if isinstance(value, str):
        return value, "text"
    if isinstance(value, s.QuestionContext):
        return value.model_dump(), "text"
    if isinstance(value, Mapping):
        return dict(value), "text"
    data = value if isinstance(value, bytes) else Path(value).read_bytes()
    return base64.b64encode(data).decode("ascii"), "audio" if is_wav(data) else "image"


def wav_input(path: str | os.PathLike) -> bytes:
    """A WAV file's bytes as a predict or example input (``client.predict(task, wav_input("x.wav"))``): checked
    to be a RIFF/WAVE file here, decoded and checked fully by the server."""
    data = Path(path).read_bytes()
    if not is_wav(data):
        raise ValueError(f"{path}: not a WAV file (expected a RIFF header with form type WAVE)")
    return data


def _examples(examples: Iterable[Example]) -> tuple[list[dict[str, Any]], str | None]:
    """The examples as JSON rows, and their modality when all agree (None when they are mixed)."""
    out, modalities = [], set()
    raw: Input
    for example in examples:
        if isinstance(example, s.ExampleIn):
            raw, label = example.input, example.label
        elif isinstance(example, Mapping):
            raw, label = example["input"], example["label"]
        else:
            raw, label = example
        text, modality = _encode(raw)
        modalities.add(modality)
        out.append({"input": text, "label": label})
    return out, modalities.pop() if len(modalities) == 1 else None


FILELESS_KINDS = ("multilabel", "regression")  # their labels are lists and numbers: send examples as a list


def dataset_file(path: str | os.PathLike, kind: str | None = None) -> tuple[bytes, str, str]:
    """A dataset upload (body, content type, file name): a CSV / JSON Lines / zip file as is, or a
    folder zipped in memory: in image-folder layout (``<label>/<image>``), or for a detection task (``kind``)
    its images beside one ``annotations.jsonl`` or ``labels.json``."""
    path = Path(path)
    annotated = kind == "detection"
    if path.is_dir():
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
            for file in sorted(p for p in path.rglob("*") if p.is_file()):
                relative = file.relative_to(path)
                nested = len(relative.parts) >= 2 or annotated
                if nested and not any(part.startswith(".") for part in relative.parts):
                    archive.write(file, relative.as_posix())
        return buffer.getvalue(), "application/zip", f"{path.name}.zip"
    content_type = DATASET_TYPES.get(path.suffix.lower())
    if content_type is None:
        raise ValueError(
            f"{path}: send a .csv, .jsonl or .zip file, or a folder of <label>/<image> files (detection: images "
            "beside annotations.jsonl)"
        )
    return path.read_bytes(), content_type, path.name


# -- the operations, written once ----------------------------------------------------------------------


class _Core:
    """Configuration and the operations (generators) both clients run."""

    def __init__(
        self,
        url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = 300.0,
        max_retries: int = 4,
        backoff: float = 0.5,
        max_backoff: float = 60.0,
        poll_interval: float = 0.5,
        progress: bool | None = None,
    ) -> None:
        self.url = (url or os.environ.get("GRAFT_URL") or DEFAULT_URL).rstrip("/")
        self.api_key = api_key if api_key is not None else os.environ.get("GRAFT_API_KEY")
        self.timeout, self.max_retries, self.backoff, self.max_backoff = timeout, max_retries, backoff, max_backoff
        self.poll_interval, self.progress = poll_interval, progress

    def _headers(self) -> dict[str, str]:
        headers = {"User-Agent": "graft-client/0.1"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        return headers

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, self.max_backoff)
        return min(self.backoff * 2**attempt, self.max_backoff) * random.uniform(0.5, 1.0)

    def _request(self, call: Call) -> Op[httpx.Response]:
        """Send ``call``; retry 429/503 answers and refused connections; raise typed errors."""
        for attempt in range(self.max_retries + 1):
            last = attempt == self.max_retries
            try:
                response: httpx.Response = yield call
            except errors.ConnectionFailed as exc:
                if exc.code != "connect_error" or last:
                    raise
                yield Sleep(self._delay(attempt, None))
                continue
            if response.status_code < 400:
                return response
            error = errors.from_response(response.status_code, response.content, dict(response.headers))
            if response.status_code not in RETRY_STATUSES or last:
                raise error
            yield Sleep(self._delay(attempt, error.retry_after))
        raise AssertionError("unreachable")

    def _model(self, model: type[T] | Any, call: Call) -> Op[T]:
        response = yield from self._request(call)
        return _adapter(cast(Hashable, model)).validate_json(response.content)

    def _wait_for(self, job: s.JobOut, timeout: float | None, progress: bool | None) -> Op[s.JobOut]:
        deadline = None if timeout is None else time.monotonic() + timeout
        bar = _progress.JobBar(job, self.progress if progress is None else progress)
        pause = min(0.2, self.poll_interval)
        try:
            while job.status not in ("succeeded", "failed", "superseded"):
                if deadline is not None and time.monotonic() > deadline:
                    raise TimeoutError(f"job {job.id} still {job.status} after {timeout} s")
                yield Sleep(pause)
                pause = min(pause * 1.5, self.poll_interval)
                job = yield from self._model(s.JobOut, Call("GET", f"/v1/jobs/{job.id}"))
                bar.update(job)
        finally:
            bar.close()
        if job.status == "failed":
            raise errors.JobFailed(job, f"training job {job.id} of task {job.task!r} failed: {job.error}")
        if job.status == "superseded":  # a newer job of the task trains its examples: wait for that one instead
            if job.superseded_by is None:
                raise errors.JobFailed(job, f"training job {job.id} of task {job.task!r} was superseded: {job.error}")
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            newer: s.JobOut = yield from self._model(s.JobOut, Call("GET", f"/v1/jobs/{job.superseded_by}"))
            return (yield from self._wait_for(newer, left, progress))
        return job

    def _trained(self, created: T, wait: bool, timeout: float | None, progress: bool | None) -> Op[T]:
        if not wait:
            return created
        job = yield from self._wait_for(created.job, timeout, progress)  # type: ignore[attr-defined]
        task = yield from self._get_task(created.task.name)  # type: ignore[attr-defined]
        return created.model_copy(update={"job": job, "task": task})  # type: ignore[attr-defined]

    # tenants (admin: the client's api_key is the admin token)

    def _create_tenant(self, name: str) -> Op[s.TenantCreated]:
        """Create a tenant; its API key is in the answer, once."""
        return (yield from self._model(s.TenantCreated, Call("POST", "/v1/tenants", json={"name": name})))

    def _list_tenants(self) -> Op[list[s.TenantOut]]:
        return (yield from self._model(list[s.TenantOut], Call("GET", "/v1/tenants")))

    def _set_tenant_disabled(self, tenant_id: str, disabled: bool) -> Op[s.TenantOut]:
        """Disable a tenant (its keys stop working at once; data is kept) or enable it again (admin)."""
        call = Call("PATCH", f"/v1/tenants/{tenant_id}", json={"disabled": disabled})
        return (yield from self._model(s.TenantOut, call))

    # API keys (the admin token, or the tenant's own key for its own keys)

    def _create_key(self, tenant_id: str, role: s.KeyRole = "owner") -> Op[s.ApiKeyCreated]:
        """A new API key for the tenant (rotation: issue one, move clients to it, revoke the old one).
        ``role``: ``owner`` (everything, keys included), ``write`` (tasks, no keys) or ``predict``
        (predict and read)."""
        call = Call("POST", f"/v1/tenants/{tenant_id}/keys", json={"role": role})
        return (yield from self._model(s.ApiKeyCreated, call))

    def _list_keys(self, tenant_id: str) -> Op[list[s.ApiKeyOut]]:
        return (yield from self._model(s.ApiKeyList, Call("GET", f"/v1/tenants/{tenant_id}/keys"))).keys

    def _revoke_key(self, tenant_id: str, key_id: str) -> Op[None]:
        yield from self._request(Call("DELETE", f"/v1/tenants/{tenant_id}/keys/{key_id}"))

    # tasks

    def _create_task(
        self,
        name: str,
        examples: Iterable[Example] | str | os.PathLike,
        *,
        modality: s.Modality | None = None,
        kind: s.TaskKind | None = None,
        backbone: str | None = None,
        head: s.HeadKind | None = None,
        labels: Sequence[str] | None = None,
        wait: bool = True,
        timeout: float | None = None,
        progress: bool | None = None,
    ) -> Op[s.TaskCreated]:
        """Create a task from labeled examples — ``[(input, label)]``, ``[{"input", "label"}]`` or
        :class:`~graft.schemas.ExampleIn` — or from a dataset path (CSV, JSON Lines, zip, or a folder of
        ``<label>/<image or .wav>``, which also extends an existing task). Image and WAV inputs are bytes or
        file paths (the modality follows: WAV files make an audio task). ``kind``: ``classification`` (default;
        one label string), ``multilabel`` (a list of label strings per example), ``regression`` (a number per
        example), ``speakers`` (audio: a speaker name per clip), ``entities`` / ``answers`` / ``detection``
        (structured labels) or ``generation``. Dataset files make classification, speakers, generation, entities,
        answers or detection tasks (the structured kinds from JSON Lines rows whose ``label`` is the kind's JSON
        label; detection also from a zip or folder of images beside ``annotations.jsonl``).
        With ``wait`` (default), blocks until training ends (progress bar) and returns the final job
        and task; raises :class:`~graft.errors.JobFailed` if training fails."""
        if isinstance(examples, str | os.PathLike):
            if kind in FILELESS_KINDS:
                raise ValueError(f"dataset files do not make {kind} tasks; send {kind} examples as a list")
            body, content_type, filename = dataset_file(examples, kind)
            named = {"modality": modality, "backbone": backbone, "head": head, "kind": kind}
            params = {k: v for k, v in named.items() if v}
            call = Call(
                "POST",
                f"/v1/tasks/{name}/dataset",
                params=params,
                content=body,
                content_type=content_type,
                upload=f"uploading {filename}",
            )
            created: s.TaskCreated = yield from self._model(s.DatasetAccepted, call)
        else:
            rows, found = _examples(examples)
            body_json: dict[str, Any] = {
                "name": name,
                "modality": modality or found or "text",
                "examples": rows,
            }
            body_json.update({k: v for k, v in {"kind": kind, "backbone": backbone, "head": head}.items() if v})
            if labels is not None:
                body_json["labels"] = list(labels)
            created = yield from self._model(s.TaskCreated, Call("POST", "/v1/tasks", json=body_json))
        return (yield from self._trained(created, wait, timeout, progress))

    def _add_examples(
        self,
        name: str,
        examples: Iterable[Example],
        *,
        wait: bool = True,
        timeout: float | None = None,
        progress: bool | None = None,
    ) -> Op[s.TaskCreated]:
        """Add examples to a task: trains its next version on all of them (``wait`` as in create_task)."""
        rows, _ = _examples(examples)
        call = Call("POST", f"/v1/tasks/{name}/examples", json={"examples": rows})
        created: s.TaskCreated = yield from self._model(s.TaskCreated, call)
        return (yield from self._trained(created, wait, timeout, progress))

    def _list_tasks(self) -> Op[list[s.TaskOut]]:
        return (yield from self._model(s.TaskList, Call("GET", "/v1/tasks"))).tasks

    def _get_task(self, name: str) -> Op[s.TaskDetail]:
        """A task with its labels, examples per label and versions."""
        return (yield from self._model(s.TaskDetail, Call("GET", f"/v1/tasks/{name}")))

    def _delete(self, name: str) -> Op[None]:
        """Delete a task, its versions and its stored examples."""
        yield from self._request(Call("DELETE", f"/v1/tasks/{name}"))

    # jobs

    def _job(self, job_id: str) -> Op[s.JobOut]:
        return (yield from self._model(s.JobOut, Call("GET", f"/v1/jobs/{job_id}")))

    def _wait(self, job_id: str, *, timeout: float | None = None, progress: bool | None = None) -> Op[s.JobOut]:
        """Wait for a job to end; raise :class:`~graft.errors.JobFailed` if it failed."""
        job = yield from self._job(job_id)
        return (yield from self._wait_for(job, timeout, progress))

    # predict

    def _predict(
        self,
        task: str,
        inputs: Input | Sequence[Input],
        *,
        top_k: int | None = None,
        score_threshold: float | None = None,
        max_objects: int | None = None,
    ) -> Op[s.PredictResponse]:
        """Predict one input or a list: texts (and answers inputs) go as JSON; images and WAV clips (bytes or
        file paths) as multipart files. ``score_threshold`` and ``max_objects``: detection tasks' options."""
        given = {"top_k": top_k, "score_threshold": score_threshold, "max_objects": max_objects}
        options = {k: v for k, v in given.items() if v is not None}
        single = isinstance(inputs, str | bytes | os.PathLike | Mapping | s.QuestionContext)
        items: list[Input] = [cast(Input, inputs)] if single else list(cast(Sequence[Input], inputs))
        if all(isinstance(x, str | Mapping | s.QuestionContext) for x in items):  # JSON: texts, {question, context}
            body: dict[str, Any] = {"inputs": [_encode(x)[0] for x in items]} | options
            return (yield from self._model(s.PredictResponse, Call("POST", f"/v1/tasks/{task}/predict", json=body)))
        if any(isinstance(x, str) for x in items):
            raise ValueError("predict takes texts (str) or files (bytes or paths), not both in one call")
        files = []
        for i, item in enumerate(cast(list[bytes | os.PathLike], items)):
            data = item if isinstance(item, bytes) else Path(item).read_bytes()
            filename = f"input-{i}" if isinstance(item, bytes) else Path(item).name
            files.append(("file", (filename, data, "audio/wav" if is_wav(data) else "application/octet-stream")))
        fields = {k: str(v) for k, v in options.items()} or None
        call = Call("POST", f"/v1/tasks/{task}/predict/files", files=files, data=fields)
        return (yield from self._model(s.PredictResponse, call))

    # generation

    def _generate(
        self,
        task: str,
        inputs: str | Sequence[str],
        *,
        max_tokens: int = 64,
        temperature: float = 0.0,
        top_p: float = 1.0,
        stop: Sequence[str] = (),
        seed: int | None = None,
    ) -> Op[s.GenerateResponse]:
        """Complete prompts with a generation task's active adapter (greedy by default): one
        ``{text, tokens, finish_reason}`` per prompt. :meth:`Graft.generate_stream` streams them token by token."""
        body = _generate_body(inputs, max_tokens, temperature, top_p, stop, seed, stream=False)
        return (yield from self._model(s.GenerateResponse, Call("POST", f"/v1/tasks/{task}/generate", json=body)))

    # active learning

    def _suggest(self, task: str, inputs: Sequence[Input], *, k: int | None = None) -> Op[s.SuggestResponse]:
        """Of an unlabelled pool (texts, or images as bytes or paths), the ``k`` inputs worth labelling next:
        ``indices`` into ``inputs``, best first, with each one's uncertainty."""
        body: dict[str, Any] = {"inputs": [_encode(x)[0] for x in inputs]} | ({"k": k} if k is not None else {})
        return (yield from self._model(s.SuggestResponse, Call("POST", f"/v1/tasks/{task}/suggest", json=body)))

    # feedback and monitoring

    def _feedback(self, task: str, items: Sequence[dict[str, Any]]) -> Op[s.FeedbackAccepted]:
        """Send true labels: each item ``{"id": prediction.id, "label": ...}`` or ``{"input": ..., "label": ...}``
        (an image input as bytes or a path is sent base64-encoded)."""
        body = [{k: (_encode(v)[0] if k == "input" else v) for k, v in item.items()} for item in items]
        call = Call("POST", f"/v1/tasks/{task}/feedback", json={"items": body})
        return (yield from self._model(s.FeedbackAccepted, call))

    def _monitoring(self, task: str) -> Op[s.MonitoringOut]:
        """Accuracy on feedback (active version and per version), the recent OOD flag rate and its drift windows,
        the shadow version's figures and the retrain policy."""
        return (yield from self._model(s.MonitoringOut, Call("GET", f"/v1/tasks/{task}/monitoring")))

    def _promote_feedback(self, task: str) -> Op[s.FeedbackPromoted]:
        """Copy the labelled feedback inputs not yet used into the task's examples (``source: feedback``) and
        queue a training job for them."""
        return (yield from self._model(s.FeedbackPromoted, Call("POST", f"/v1/tasks/{task}/feedback/promote")))

    def _set_retrain_policy(self, task: str, after_feedback: int | None) -> Op[s.TaskOut]:
        """Retrain after ``after_feedback`` new labelled feedback inputs (0: never; None: the service default)."""
        call = Call("PATCH", f"/v1/tasks/{task}", json={"retrain_after_feedback": after_feedback})
        return (yield from self._model(s.TaskOut, call))

    def _shadow(self, task: str, version: int, share: float) -> Op[s.TaskOut]:
        """Serve ``version`` in shadow on ``share`` of the predict requests (recorded, not returned)."""
        call = Call("POST", f"/v1/tasks/{task}/versions/{version}/shadow", json={"share": share})
        return (yield from self._model(s.TaskOut, call))

    def _stop_shadow(self, task: str, version: int) -> Op[None]:
        """Stop serving ``version`` in shadow."""
        yield from self._request(Call("DELETE", f"/v1/tasks/{task}/versions/{version}/shadow"))

    # versions

    def _versions(self, task: str) -> Op[s.VersionList]:
        """The task's versions with their metrics and status (active, previous, candidate)."""
        return (yield from self._model(s.VersionList, Call("GET", f"/v1/tasks/{task}/versions")))

    def _promote(self, task: str, version: int) -> Op[s.VersionList]:
        """Serve ``version`` from now on."""
        return (
            yield from self._model(s.VersionList, Call("POST", f"/v1/tasks/{task}/promote", json={"version": version}))
        )

    def _rollback(self, task: str) -> Op[s.VersionList]:
        """Serve the version that was active before the current one."""
        return (yield from self._model(s.VersionList, Call("POST", f"/v1/tasks/{task}/rollback")))

    def _export(
        self, task: str, path: str | os.PathLike, *, version: int | None = None, format: str | None = None
    ) -> Op[Path]:
        """Write the task's export to ``path``: a zip with ``graft-export.json``. ``format`` ``onnx`` (model.onnx
        and its preprocessing files) or ``peft`` (a generation task's LoRA adapter: adapter_config.json and
        adapter_model.safetensors for ``peft.PeftModel.from_pretrained``); default: the task kind's format."""
        params: dict[str, Any] = ({"format": format} if format else {}) | ({"version": version} if version else {})
        response = yield from self._request(Call("GET", f"/v1/tasks/{task}/export", params=params))
        out = Path(path)
        out.write_bytes(response.content)
        return out

    def _backbones(self) -> Op[list[s.BackboneOut]]:
        return (yield from self._model(s.BackboneList, Call("GET", "/v1/backbones"))).backbones


# -- the two drivers -----------------------------------------------------------------------------------


Streamed = s.GenerateToken | s.GenerateResponse  # a streamed generate answer: token events, then the whole answer


def _generate_body(
    inputs: str | Sequence[str],
    max_tokens: int,
    temperature: float,
    top_p: float,
    stop: Sequence[str],
    seed: int | None,
    *,
    stream: bool,
) -> dict[str, Any]:
    prompts = [inputs] if isinstance(inputs, str) else list(inputs)
    body: dict[str, Any] = {"inputs": prompts, "max_tokens": max_tokens, "temperature": temperature, "top_p": top_p}
    body |= {"stop": list(stop)} if stop else {}
    body |= {"seed": seed} if seed is not None else {}
    return body | ({"stream": True} if stream else {})


class _Events:
    """Server-Sent Events of a streamed generate answer, fed line by line: ``token`` events become
    :class:`~graft.schemas.GenerateToken`, the final ``done`` event the whole
    :class:`~graft.schemas.GenerateResponse`."""

    def __init__(self) -> None:
        self.event: str | None = None

    def line(self, line: str) -> Streamed | None:
        if line.startswith("event:"):
            self.event = line.removeprefix("event:").strip()
        elif line.startswith("data:"):
            data = line.removeprefix("data:").strip()
            if self.event == "token":
                return s.GenerateToken.model_validate_json(data)
            if self.event == "done":
                return s.GenerateResponse.model_validate_json(data)
        return None


def _stream_error(response: httpx.Response) -> errors.GraftError:
    return errors.from_response(response.status_code, response.content, dict(response.headers))


def _transport_error(exc: httpx.TransportError, url: str) -> errors.ConnectionFailed:
    code = "connect_error" if isinstance(exc, httpx.ConnectError) else "transport_error"
    return errors.ConnectionFailed(f"{url}: {exc.__class__.__name__}: {exc}", code=code)


def _rename(run: Callable[..., Any], op: Callable[..., Any], returns: str) -> None:
    """The public name, and the operation's result type as the method's return annotation (for help())."""
    run.__name__ = run.__qualname__ = op.__name__.lstrip("_")
    signature = inspect.signature(op)
    result = str(signature.return_annotation)
    if result.startswith("Op[") and result.endswith("]"):
        signature = signature.replace(return_annotation=returns.format(result[3:-1]))
    run.__signature__ = signature  # type: ignore[attr-defined]


def _sync(op: Callable[Concatenate[Any, P], Op[T]]) -> Callable[Concatenate[Graft, P], T]:
    @functools.wraps(op)
    def run(self: Graft, *args: P.args, **kwargs: P.kwargs) -> T:
        return self._run(op(self, *args, **kwargs))

    _rename(run, op, "{}")
    return run


def _async(op: Callable[Concatenate[Any, P], Op[T]]) -> Callable[Concatenate[AsyncGraft, P], Coroutine[Any, Any, T]]:
    @functools.wraps(op)
    async def run(self: AsyncGraft, *args: P.args, **kwargs: P.kwargs) -> T:
        return await self._run(op(self, *args, **kwargs))

    _rename(run, op, "Awaitable[{}]")
    return run


class Graft(_Core):
    """Synchronous client. ``Graft(url, api_key)``; url and key default to ``GRAFT_URL`` and
    ``GRAFT_API_KEY``. Use it as a context manager, or call :meth:`close`."""

    def __init__(
        self,
        url: str | None = None,
        api_key: str | None = None,
        *,
        transport: httpx.BaseTransport | None = None,
        **options: Any,
    ) -> None:
        super().__init__(url, api_key, **options)
        self._http = httpx.Client(base_url=self.url, headers=self._headers(), timeout=self.timeout, transport=transport)

    def _send(self, call: Call) -> httpx.Response:
        headers, content = {}, call.content
        if call.content is not None:
            headers = {
                "Content-Type": call.content_type or "application/octet-stream",
                "Content-Length": str(len(call.content)),
            }
            if call.upload:
                content = _progress.chunks(call.content, call.upload, self.progress)  # type: ignore[assignment]
        try:
            return self._http.request(
                call.method,
                call.path,
                json=call.json,
                params=call.params,
                content=content,
                files=call.files,
                data=call.data,
                headers=headers,
            )
        except httpx.TransportError as exc:
            raise _transport_error(exc, self.url) from exc

    def _run(self, op: Op[T]) -> T:
        try:
            step = next(op)
            while True:
                if isinstance(step, Sleep):
                    time.sleep(step.seconds)
                    step = op.send(None)
                    continue
                try:
                    response = self._send(step)
                except errors.ConnectionFailed as exc:
                    step = op.throw(exc)
                else:
                    step = op.send(response)
        except StopIteration as done:
            return done.value
        finally:
            op.close()

    def close(self) -> None:
        self._http.close()

    def generate_stream(
        self,
        task: str,
        inputs: str | Sequence[str],
        *,
        max_tokens: int = 64,
        temperature: float = 0.0,
        top_p: float = 1.0,
        stop: Sequence[str] = (),
        seed: int | None = None,
    ) -> Iterator[Streamed]:
        """:meth:`generate`, streamed: a :class:`~graft.schemas.GenerateToken` per generated token (``index``
        says which prompt), then the whole :class:`~graft.schemas.GenerateResponse`. Leaving the loop early
        (``break``, an exception) closes the connection, and the server stops decoding those prompts."""
        body = _generate_body(inputs, max_tokens, temperature, top_p, stop, seed, stream=True)
        try:
            with self._http.stream("POST", f"/v1/tasks/{task}/generate", json=body) as response:
                if response.status_code >= 400:
                    response.read()
                    raise _stream_error(response)
                events = _Events()
                for line in response.iter_lines():
                    item = events.line(line)
                    if item is not None:
                        yield item
        except httpx.TransportError as exc:
            raise _transport_error(exc, self.url) from exc

    def __enter__(self) -> Graft:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    create_tenant = _sync(_Core._create_tenant)
    list_tenants = _sync(_Core._list_tenants)
    set_tenant_disabled = _sync(_Core._set_tenant_disabled)
    create_key = _sync(_Core._create_key)
    list_keys = _sync(_Core._list_keys)
    revoke_key = _sync(_Core._revoke_key)
    create_task = _sync(_Core._create_task)
    add_examples = _sync(_Core._add_examples)
    list_tasks = _sync(_Core._list_tasks)
    get_task = _sync(_Core._get_task)
    delete = _sync(_Core._delete)
    job = _sync(_Core._job)
    wait = _sync(_Core._wait)
    predict = _sync(_Core._predict)
    generate = _sync(_Core._generate)
    suggest = _sync(_Core._suggest)
    feedback = _sync(_Core._feedback)
    monitoring = _sync(_Core._monitoring)
    promote_feedback = _sync(_Core._promote_feedback)
    set_retrain_policy = _sync(_Core._set_retrain_policy)
    shadow = _sync(_Core._shadow)
    stop_shadow = _sync(_Core._stop_shadow)
    versions = _sync(_Core._versions)
    promote = _sync(_Core._promote)
    rollback = _sync(_Core._rollback)
    export = _sync(_Core._export)
    backbones = _sync(_Core._backbones)


class AsyncGraft(_Core):
    """Asyncio client: the same methods as :class:`Graft`, as coroutines. ``async with AsyncGraft(...)``."""

    def __init__(
        self,
        url: str | None = None,
        api_key: str | None = None,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        **options: Any,
    ) -> None:
        super().__init__(url, api_key, **options)
        self._http = httpx.AsyncClient(
            base_url=self.url, headers=self._headers(), timeout=self.timeout, transport=transport
        )

    async def _send(self, call: Call) -> httpx.Response:
        headers: dict[str, str] = {}
        content: bytes | AsyncIterator[bytes] | None = call.content
        if call.content is not None:
            headers = {
                "Content-Type": call.content_type or "application/octet-stream",
                "Content-Length": str(len(call.content)),
            }
            if call.upload:
                content = _progress.achunks(call.content, call.upload, self.progress)
        try:
            return await self._http.request(
                call.method,
                call.path,
                json=call.json,
                params=call.params,
                content=content,
                files=call.files,
                data=call.data,
                headers=headers,
            )
        except httpx.TransportError as exc:
            raise _transport_error(exc, self.url) from exc

    async def _run(self, op: Op[T]) -> T:
        try:
            step = next(op)
            while True:
                if isinstance(step, Sleep):
                    await asyncio.sleep(step.seconds)
                    step = op.send(None)
                    continue
                try:
                    response = await self._send(step)
                except errors.ConnectionFailed as exc:
                    step = op.throw(exc)
                else:
                    step = op.send(response)
        except StopIteration as done:
            return done.value
        finally:
            op.close()

    async def close(self) -> None:
        await self._http.aclose()

    async def generate_stream(
        self,
        task: str,
        inputs: str | Sequence[str],
        *,
        max_tokens: int = 64,
        temperature: float = 0.0,
        top_p: float = 1.0,
        stop: Sequence[str] = (),
        seed: int | None = None,
    ) -> AsyncIterator[Streamed]:
        """:meth:`Graft.generate_stream` as an async iterator (``async for``)."""
        body = _generate_body(inputs, max_tokens, temperature, top_p, stop, seed, stream=True)
        try:
            async with self._http.stream("POST", f"/v1/tasks/{task}/generate", json=body) as response:
                if response.status_code >= 400:
                    await response.aread()
                    raise _stream_error(response)
                events = _Events()
                async for line in response.aiter_lines():
                    item = events.line(line)
                    if item is not None:
                        yield item
        except httpx.TransportError as exc:
            raise _transport_error(exc, self.url) from exc

    async def __aenter__(self) -> AsyncGraft:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    create_tenant = _async(_Core._create_tenant)
    list_tenants = _async(_Core._list_tenants)
    set_tenant_disabled = _async(_Core._set_tenant_disabled)
    create_key = _async(_Core._create_key)
    list_keys = _async(_Core._list_keys)
    revoke_key = _async(_Core._revoke_key)
    create_task = _async(_Core._create_task)
    add_examples = _async(_Core._add_examples)
    list_tasks = _async(_Core._list_tasks)
    get_task = _async(_Core._get_task)
    delete = _async(_Core._delete)
    job = _async(_Core._job)
    wait = _async(_Core._wait)
    predict = _async(_Core._predict)
    generate = _async(_Core._generate)
    suggest = _async(_Core._suggest)
    feedback = _async(_Core._feedback)
    monitoring = _async(_Core._monitoring)
    promote_feedback = _async(_Core._promote_feedback)
    set_retrain_policy = _async(_Core._set_retrain_policy)
    shadow = _async(_Core._shadow)
    stop_shadow = _async(_Core._stop_shadow)
    versions = _async(_Core._versions)
    promote = _async(_Core._promote)
    rollback = _async(_Core._rollback)
    export = _async(_Core._export)
    backbones = _async(_Core._backbones)
