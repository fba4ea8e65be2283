"""``graft``: Graft from the shell.

    graft tenants create NAME | list | disable ID | enable ID    (admin token: GRAFT_ADMIN_TOKEN)
    graft keys create TENANT_ID [--role owner|write|predict] | list TENANT_ID | revoke TENANT_ID KEY_ID
    graft tasks create NAME --data file.csv|file.jsonl|images_dir/|file.zip
    graft tasks list | show NAME | delete NAME | versions NAME | promote NAME N | rollback NAME
    graft predict TASK "some text" | image.png ... | clip.wav ... | --file inputs.jsonl | --file clip.wav
        [--question Q: answers tasks, after the texts]
    graft generate TASK "prompt" ... [--max-tokens N] [--temperature T] [--top-p P] [--stop S] [--seed N] [--stream]
    graft export TASK -o model.zip [--format onnx|peft] [--version N]
    graft backbones

Settings: ``--url``/``GRAFT_URL``, ``--api-key``/``GRAFT_API_KEY``, ``--admin-token``/``GRAFT_ADMIN_TOKEN``,
else the keys ``url``, ``api_key``, ``admin_token`` of the TOML file ``GRAFT_CONFIG`` (default
``~/.config/graft/config.toml``). Human tables by default; ``--json`` prints the server's answer as JSON
(errors too, as ``{"error": {...}}``). Exit codes: see :data:`EXIT_CODES`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tomllib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast, get_args

from pydantic import BaseModel

from . import errors
from . import schemas as s
from .client import DEFAULT_URL, Graft

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_AUTH, EXIT_NOT_FOUND, EXIT_REJECTED, EXIT_SERVER, EXIT_JOB_FAILED = range(8)
EXIT_CODES = {
    EXIT_OK: "success",
    EXIT_ERROR: "any other error (e.g. waiting for a job timed out)",
    EXIT_USAGE: "usage error: bad arguments, unreadable local file",
    EXIT_AUTH: "missing, invalid or disabled API key / admin token (HTTP 401, 403)",
    EXIT_NOT_FOUND: "no such task, job or version (HTTP 404)",
    EXIT_REJECTED: "the server rejected the request (other 4xx: validation, conflict, too large, quota, ...)",
    EXIT_SERVER: "server unavailable or failing: 5xx, 429/503 after retries, connection refused",
    EXIT_JOB_FAILED: "the training job failed",
}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp"}
AUDIO_SUFFIXES = {".wav", ".wave"}
MEDIA_SUFFIXES = IMAGE_SUFFIXES | AUDIO_SUFFIXES
PREDICT_BATCH = 64


class UsageError(Exception):
    pass


# -- settings ------------------------------------------------------------------------------------


def config_file() -> dict[str, Any]:
    default = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "graft" / "config.toml"
    path = Path(os.environ.get("GRAFT_CONFIG") or default)
    if not path.is_file():
        return {}
    try:
        return tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise UsageError(f"config file {path}: {exc}") from None


def setting(args: argparse.Namespace, name: str, env: str) -> str | None:
    return getattr(args, name, None) or os.environ.get(env) or config_file().get(name)


def client(args: argparse.Namespace, admin: bool | None = False) -> Graft:
    """A client with the API key, the admin token (``admin``), or either (None: the key if there is one)."""
    api_key, token = setting(args, "api_key", "GRAFT_API_KEY"), setting(args, "admin_token", "GRAFT_ADMIN_TOKEN")
    key = token if admin else api_key if admin is False else api_key or token
    if not key:
        what = {
            True: "an admin token (--admin-token or GRAFT_ADMIN_TOKEN)",
            False: "an API key (--api-key or GRAFT_API_KEY)",
            None: "an API key or the admin token",
        }[admin]
        raise errors.Unauthorized(f"this command needs {what}, or set it in the config file", code="unauthorized")
    url = setting(args, "url", "GRAFT_URL") or DEFAULT_URL
    return Graft(
        url, key, progress=False if getattr(args, "quiet", False) else None, max_retries=getattr(args, "retries", 4)
    )


# -- output --------------------------------------------------------------------------------------


def jsonable(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, list):
        return [jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    cells = [[("" if row.get(c) is None else str(row.get(c))) for c in columns] for row in rows]
    widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(line.rstrip() for line in lines)


def short(text: str, n: int = 48) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


def when(value: Any) -> str:
    return value.strftime("%Y-%m-%d %H:%M") if value else ""


def emit(args: argparse.Namespace, result: Any, human: Callable[[Any], str]) -> None:
    if args.json:
        print(json.dumps(jsonable(result), indent=2))
    else:
        print(human(result))


# -- commands ------------------------------------------------------------------------------------


def tasks_table(tasks: Sequence[s.TaskOut]) -> str:
    rows = [
        {
            "name": t.name,
            "modality": t.modality,
            "kind": t.kind,
            "backbone": t.backbone,
            "head": t.head,
            "version": t.active_version,
            "updated": when(t.updated_at),
        }
        for t in tasks
    ]
    return table(rows, ["name", "modality", "kind", "backbone", "head", "version", "updated"]) if rows else "no tasks"


def versions_table(vl: s.VersionList) -> str:
    rows = [
        {
            "version": v.version,
            "status": v.status,
            "head": v.head,
            "backbone": v.backbone,
            "examples": v.n_examples,
            "accuracy": None if v.accuracy is None else f"{v.accuracy:.3f}",
            "created": when(v.created_at),
        }
        for v in vl.versions
    ]
    return (
        table(rows, ["version", "status", "head", "backbone", "examples", "accuracy", "created"])
        if rows
        else "no versions"
    )


def task_detail(t: s.TaskDetail) -> str:
    lines = [
        f"{k}: {v}"
        for k, v in (
            ("name", t.name),
            ("modality", t.modality),
            ("kind", t.kind),
            ("backbone", t.backbone),
            ("head", t.head),
            ("active version", t.active_version),
            ("labels", ", ".join(t.labels)),
        )
    ]
    lines.append("examples: " + ", ".join(f"{k}={v}" for k, v in sorted(t.examples_per_label.items())))
    return "\n".join(lines)


def cmd_tenants_create(args: argparse.Namespace) -> Any:
    with client(args, admin=True) as g:
        created = g.create_tenant(args.name)
    emit(args, created, lambda c: f"created tenant {c.name} ({c.id})\napi key (shown once): {c.api_key}")


def cmd_tenants_list(args: argparse.Namespace) -> Any:
    with client(args, admin=True) as g:
        tenants = g.list_tenants()
    emit(
        args,
        tenants,
        lambda ts: table(
            [{"name": t.name, "id": t.id, "disabled": t.disabled, "created": when(t.created_at)} for t in ts],
            ["name", "id", "disabled", "created"],
        ),
    )


def cmd_tenants_disable(args: argparse.Namespace) -> Any:
    with client(args, admin=True) as g:
        tenant = g.set_tenant_disabled(args.tenant_id, args.disabled)
    emit(args, tenant, lambda t: f"tenant {t.name} ({t.id}) {'disabled' if t.disabled else 'enabled'}")


def cmd_keys_create(args: argparse.Namespace) -> Any:
    with client(args, admin=None) as g:
        created = g.create_key(args.tenant_id, args.role)
    emit(args, created, lambda k: f"key {k.id} ({k.prefix}…, role {k.role})\napi key (shown once): {k.api_key}")


def cmd_keys_list(args: argparse.Namespace) -> Any:
    with client(args, admin=None) as g:
        keys = g.list_keys(args.tenant_id)
    emit(
        args,
        keys,
        lambda ks: table(
            [
                {
                    "id": k.id,
                    "prefix": k.prefix,
                    "role": k.role,
                    "created": when(k.created_at),
                    "revoked": when(k.revoked_at),
                }
                for k in ks
            ],
            ["id", "prefix", "role", "created", "revoked"],
        ),
    )


def cmd_keys_revoke(args: argparse.Namespace) -> Any:
    with client(args, admin=None) as g:
        g.revoke_key(args.tenant_id, args.key_id)
    emit(args, {"revoked": args.key_id}, lambda _: f"revoked key {args.key_id}")


def cmd_tasks_create(args: argparse.Namespace) -> Any:
    if not Path(args.data).exists():
        raise UsageError(f"--data {args.data}: no such file or folder")
    with client(args) as g:
        created = g.create_task(
            args.name,
            Path(args.data),
            modality=args.modality,
            kind=args.kind,
            backbone=args.backbone,
            head=args.head,
            wait=not args.no_wait,
            timeout=args.timeout,
        )

    def human(c: s.TaskCreated) -> str:
        extra = [f"warning: {w}" for w in getattr(c, "warnings", [])]
        state = f"version {c.job.version} trained" if c.job.status == "succeeded" else f"job {c.job.id} {c.job.status}"
        return "\n".join([f"task {c.task.name}: {state}", *extra])

    emit(args, created, human)


def cmd_tasks_list(args: argparse.Namespace) -> Any:
    with client(args) as g:
        emit(args, g.list_tasks(), tasks_table)


def cmd_tasks_show(args: argparse.Namespace) -> Any:
    with client(args) as g:
        emit(args, g.get_task(args.name), task_detail)


def cmd_tasks_delete(args: argparse.Namespace) -> Any:
    with client(args) as g:
        g.delete(args.name)
    emit(args, {"deleted": args.name}, lambda _: f"deleted task {args.name}")


def cmd_tasks_versions(args: argparse.Namespace) -> Any:
    with client(args) as g:
        emit(args, g.versions(args.name), versions_table)


def cmd_tasks_promote(args: argparse.Namespace) -> Any:
    with client(args) as g:
        emit(args, g.promote(args.name, args.version), versions_table)


def cmd_tasks_rollback(args: argparse.Namespace) -> Any:
    with client(args) as g:
        emit(args, g.rollback(args.name), versions_table)


def predict_inputs(args: argparse.Namespace) -> list[str | Path | dict[str, str]]:
    inputs: list[str | Path | dict[str, str]] = []
    question = getattr(args, "question", None)
    for item in args.inputs:
        path = Path(item)
        if question is not None:
            inputs.append({"question": question, "context": item})  # an answers task's input
        elif path.suffix.lower() not in MEDIA_SUFFIXES or (any(c.isspace() for c in item) and not path.is_file()):
            inputs.append(item)  # a text
        elif path.is_file():
            inputs.append(path)
        else:
            raise UsageError(f"{item}: no such {'audio' if path.suffix.lower() in AUDIO_SUFFIXES else 'image'} file")
    if args.file and Path(args.file).suffix.lower() in MEDIA_SUFFIXES:  # one image or WAV file
        if not Path(args.file).is_file():
            raise UsageError(f"--file {args.file}: no such file")
        inputs.append(Path(args.file))
    elif args.file:
        try:
            lines = Path(args.file).read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise UsageError(f"--file {args.file}: {exc.strerror}") from None
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError:
                raise UsageError(f"--file {args.file}, line {n}: not JSON") from None
            value = row.get("input") if isinstance(row, dict) else row
            if isinstance(value, dict) and set(value) == {"question", "context"}:
                inputs.append(value)  # an answers task's input
                continue
            if not isinstance(value, str):
                raise UsageError(
                    f"--file {args.file}, line {n}: want a JSON string or an object with an 'input' string "
                    "(or, for answers tasks, an 'input' object {question, context})"
                )
            inputs.append(value)
    if not inputs:
        raise UsageError("nothing to predict: give texts, image or WAV files, or --file inputs.jsonl")
    return inputs


def prediction_row(p: s.AnyPredictionOut) -> dict[str, str]:
    """One prediction's table columns, by the task's kind (plus ``ood`` when the version scores it)."""
    ood = {} if p.ood is None or p.ood_score is None else {"ood": f"{'yes' if p.ood else 'no'} ({p.ood_score:.2f})"}
    if isinstance(p, s.SpeakerPredictionOut):
        return {
            "speaker": p.speaker or "(unknown)",
            "similarity": f"{p.score:.3f} (threshold {p.threshold:.3f})",
            **ood,
        }
    if isinstance(p, s.EntitiesPredictionOut):
        found = ", ".join(f"{e.text!r} {e.label} [{e.start}:{e.end}] {e.score:.2f}" for e in p.entities)
        return {"entities": found or "(none)"}
    if isinstance(p, s.DetectionPredictionOut):
        found = ", ".join(f"{o.label} [{', '.join(f'{v:g}' for v in o.box)}] {o.score:.2f}" for o in p.objects)
        return {"objects": found or "(none)"}
    if isinstance(p, s.AnswerPredictionOut):
        shown = "(no answer)" if p.answer is None else f"{p.answer!r} [{p.start}:{p.end}]"
        return {"answer": shown, "score": f"{p.score:.3f}"}
    if isinstance(p, s.RegressionPredictionOut):
        return {"value": f"{p.value:.4g}", **ood}
    if isinstance(p, s.MultiLabelPredictionOut):
        return {
            "labels": ", ".join(p.labels) or "(none)",
            "probabilities": ", ".join(f"{x.label}={x.probability:.2f}" for x in p.scores[:3]),
            **ood,
        }
    return {"label": p.label, "score": f"{p.score:.3f}", **ood}


def cmd_predict(args: argparse.Namespace) -> Any:
    inputs = predict_inputs(args)
    texts = [x for x in inputs if not isinstance(x, Path)]
    if texts and len(texts) != len(inputs):
        raise UsageError("give texts or files (images, WAV clips), not both")
    answers = []
    with client(args) as g:
        for start in range(0, len(inputs), PREDICT_BATCH):
            part = inputs[start : start + PREDICT_BATCH]
            options = {"score_threshold": args.score_threshold, "max_objects": args.max_objects}
            answers.append(g.predict(args.task, part, top_k=args.top_k, **options))
    result = s.PredictResponse(
        task=answers[-1].task,
        version=answers[-1].version,
        predictions=cast(s.Predictions, [p for a in answers for p in a.predictions]),
    )

    def human(r: s.PredictResponse) -> str:
        rows: Sequence[s.AnyPredictionOut] = r.predictions
        shown = [
            x.name if isinstance(x, Path) else short(x) if isinstance(x, str) else short(x["context"]) for x in inputs
        ]
        return table(
            [{"input": i, **prediction_row(p)} for i, p in zip(shown, rows, strict=True)],
            ["input", *prediction_row(r.predictions[0])],
        )

    emit(args, result, human)


def cmd_generate(args: argparse.Namespace) -> Any:
    if not args.prompts:
        raise UsageError("nothing to generate: give one or more prompts")
    params: dict[str, Any] = {
        "max_tokens": args.max_tokens,
        "temperature": args.temperature,
        "top_p": args.top_p,
        "stop": args.stop or (),
        "seed": args.seed,
    }
    with client(args) as g:
        if args.stream:
            if len(args.prompts) != 1 or args.json:
                raise UsageError("--stream prints one prompt's tokens as they come: give one prompt, without --json")
            for item in g.generate_stream(args.task, args.prompts[0], **params):
                if isinstance(item, s.GenerateToken):
                    print(item.text, end="", flush=True)
                else:
                    print(f"\n[{item.outputs[0].finish_reason}, {item.outputs[0].tokens} tokens]", file=sys.stderr)
            print()
            return
        result = g.generate(args.task, args.prompts, **params)

    def human(r: s.GenerateResponse) -> str:
        rows = [
            {"prompt": short(p), "text": o.text, "tokens": o.tokens, "finish": o.finish_reason}
            for p, o in zip(args.prompts, r.outputs, strict=True)
        ]
        return table(rows, ["prompt", "text", "tokens", "finish"])

    emit(args, result, human)


def cmd_suggest(args: argparse.Namespace) -> Any:
    inputs = predict_inputs(args)
    with client(args) as g:
        result = g.suggest(args.task, inputs, k=args.k)

    def human(r: s.SuggestResponse) -> str:
        shown = [
            x.name if isinstance(x, Path) else short(x) if isinstance(x, str) else short(x["context"]) for x in inputs
        ]
        rows = [
            {"index": str(i), "uncertainty": f"{score:.3f}", "input": shown[i]}
            for i, score in zip(r.indices, r.scores, strict=True)
        ]
        return table(rows, ["index", "uncertainty", "input"])

    emit(args, result, human)


def cmd_export(args: argparse.Namespace) -> Any:
    with client(args) as g:
        out = g.export(args.task, args.output, version=args.version, format=args.format)
    emit(
        args,
        {"task": args.task, "path": str(out), "bytes": out.stat().st_size},
        lambda r: f"wrote {r['path']} ({r['bytes']:,} bytes)",
    )


def cmd_backbones(args: argparse.Namespace) -> Any:
    with client(args) as g:
        emit(
            args,
            g.backbones(),
            lambda bs: table([b.model_dump() for b in bs], ["name", "modality", "dim", "runtime", "device", "default"]),
        )


# -- parser --------------------------------------------------------------------------------------


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # usage errors exit EXIT_USAGE (argparse's own default is 2 too)
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", default=argparse.SUPPRESS, help=f"server URL (GRAFT_URL; default {DEFAULT_URL})")
    common.add_argument("--api-key", default=argparse.SUPPRESS, help="tenant API key (GRAFT_API_KEY)")
    common.add_argument("--admin-token", default=argparse.SUPPRESS, help="admin token, for tenants (GRAFT_ADMIN_TOKEN)")
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print JSON, for scripts")
    common.add_argument(
        "--retries",
        type=int,
        default=argparse.SUPPRESS,
        help="retries of 429/503 answers and refused connections (default 4)",
    )
    common.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help="no progress bars")
    codes = "\n".join(f"  {code}  {what}" for code, what in EXIT_CODES.items())
    top = Parser(
        prog="graft",
        description="Graft from the shell.",
        parents=[common],
        epilog=f"exit codes:\n{codes}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    groups = top.add_subparsers(dest="command", required=True, parser_class=Parser)

    def leaf(sub: Any, name: str, func: Callable[[argparse.Namespace], Any], help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, parents=[common], help=help, description=help)
        p.set_defaults(func=func)
        return p

    tenants = groups.add_parser("tenants", help="tenants (admin)").add_subparsers(
        dest="action", required=True, parser_class=Parser
    )
    leaf(tenants, "create", cmd_tenants_create, "create a tenant and print its API key").add_argument("name")
    leaf(tenants, "list", cmd_tenants_list, "list tenants")
    for action, disabled in (("disable", True), ("enable", False)):
        p = leaf(
            tenants,
            action,
            cmd_tenants_disable,
            f"{action} a tenant (its keys {'stop' if disabled else 'start'} working)",
        )
        p.add_argument("tenant_id")
        p.set_defaults(disabled=disabled)

    keys = groups.add_parser("keys", help="a tenant's API keys (its own key, or the admin token)").add_subparsers(
        dest="action", required=True, parser_class=Parser
    )
    create_key = leaf(keys, "create", cmd_keys_create, "issue a new API key (rotation, or a narrower key)")
    create_key.add_argument("tenant_id")
    create_key.add_argument(
        "--role",
        choices=["owner", "write", "predict"],
        default="owner",
        help="owner: everything, keys included; write: tasks, no keys; predict: predict and read (default owner)",
    )
    leaf(keys, "list", cmd_keys_list, "list a tenant's keys").add_argument("tenant_id")
    revoke = leaf(keys, "revoke", cmd_keys_revoke, "revoke a key")
    revoke.add_argument("tenant_id")
    revoke.add_argument("key_id")

    tasks = groups.add_parser("tasks", help="tasks").add_subparsers(dest="action", required=True, parser_class=Parser)
    create = leaf(tasks, "create", cmd_tasks_create, "create (or extend) a task from a dataset and train it")
    create.add_argument("name")
    create.add_argument(
        "--data",
        required=True,
        help="file.csv, file.jsonl (input,label), file.zip or a folder <label>/<image or .wav clip> "
        "(detection: images beside annotations.jsonl)",
    )
    create.add_argument("--modality", choices=list(get_args(s.Modality)))
    create.add_argument(
        "--kind",
        choices=list(get_args(s.TaskKind)),
        help="a new task's kind (default classification); entities, answers and detection take JSON Lines rows "
        "whose label is the kind's JSON label, detection also a zip of images + annotations.jsonl",
    )
    create.add_argument("--backbone")
    create.add_argument("--head", choices=list(get_args(s.HeadKind)))
    create.add_argument("--no-wait", action="store_true", help="return once the training job is queued")
    create.add_argument("--timeout", type=float, help="give up waiting after this many seconds")
    leaf(tasks, "list", cmd_tasks_list, "list tasks")
    leaf(tasks, "show", cmd_tasks_show, "a task's labels, examples and active version").add_argument("name")
    leaf(tasks, "delete", cmd_tasks_delete, "delete a task and its data").add_argument("name")
    leaf(tasks, "versions", cmd_tasks_versions, "a task's versions and their metrics").add_argument("name")
    promote = leaf(tasks, "promote", cmd_tasks_promote, "serve a given version")
    promote.add_argument("name")
    promote.add_argument("version", type=int)
    leaf(tasks, "rollback", cmd_tasks_rollback, "serve the previously active version again").add_argument("name")

    predict = leaf(groups, "predict", cmd_predict, "predict texts, images or audio clips")
    predict.add_argument("task")
    predict.add_argument("inputs", nargs="*", help="texts, or image files (.png, .jpg, .webp) or WAV files (.wav)")
    predict.add_argument(
        "--file", help='one image or WAV file, or JSON Lines: one JSON string or {"input": ...} per line'
    )
    predict.add_argument("--top-k", type=int)
    predict.add_argument("--score-threshold", type=float, help="detection tasks: lowest object score (default 0.3)")
    predict.add_argument("--max-objects", type=int, help="detection tasks: most objects per image (default 100)")
    predict.add_argument("--question", help="answers tasks: ask this question of each text (the contexts)")

    generate = leaf(groups, "generate", cmd_generate, "complete prompts with a generation task's adapter")
    generate.add_argument("task")
    generate.add_argument("prompts", nargs="*", help="one or more prompts")
    generate.add_argument("--max-tokens", type=int, default=64, help="most new tokens per prompt (default 64)")
    generate.add_argument("--temperature", type=float, default=0.0, help="0 (default): greedy")
    generate.add_argument("--top-p", type=float, default=1.0)
    generate.add_argument("--stop", action="append", help="a stop string (repeat for several)")
    generate.add_argument("--seed", type=int)
    generate.add_argument("--stream", action="store_true", help="print the tokens as they are generated")

    suggest = leaf(groups, "suggest", cmd_suggest, "which inputs of an unlabelled pool to label next")
    suggest.add_argument("task")
    suggest.add_argument("inputs", nargs="*", help="the pool: texts, or image files (.png, .jpg, .webp)")
    suggest.add_argument("--file", help='JSON Lines: one JSON string or {"input": ...} per line')
    suggest.add_argument("-k", type=int, help=f"how many to suggest (default {s.SUGGEST_K}, at most the pool)")

    export = leaf(groups, "export", cmd_export, "download a task's export (zip: ONNX graph, or a PEFT LoRA adapter)")
    export.add_argument("task")
    export.add_argument("-o", "--output", required=True, help="where to write the zip")
    export.add_argument("--version", type=int, help="default: the active version")
    export.add_argument(
        "--format",
        choices=["onnx", "peft"],
        help="onnx (heads) or peft (a generation task's LoRA adapter); default: the task kind's format",
    )

    leaf(groups, "backbones", cmd_backbones, "the backbones the server runs")
    return top


def exit_code(exc: errors.GraftError) -> int:
    if isinstance(exc, errors.JobFailed):
        return EXIT_JOB_FAILED
    if isinstance(exc, errors.QuotaExceeded):
        return EXIT_REJECTED
    if isinstance(exc, errors.Unauthorized | errors.Forbidden):
        return EXIT_AUTH
    if isinstance(exc, errors.NotFound):
        return EXIT_NOT_FOUND
    if isinstance(exc, errors.ServerError | errors.RateLimited | errors.ConnectionFailed):
        return EXIT_SERVER
    if exc.status is not None and 400 <= exc.status < 500:
        return EXIT_REJECTED
    return EXIT_ERROR


def fail(args: argparse.Namespace, code: int, error: str, message: str, status: int | None = None) -> int:
    if getattr(args, "json", False):
        print(json.dumps({"error": {"code": error, "message": message, "status": status, "exit_code": code}}))
    print(f"graft: error: {error}: {message}", file=sys.stderr)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    args.json = getattr(args, "json", False)
    try:
        args.func(args)
    except UsageError as exc:
        return fail(args, EXIT_USAGE, "usage", str(exc))
    except errors.GraftError as exc:
        return fail(args, exit_code(exc), exc.code, exc.message, exc.status)
    except TimeoutError as exc:  # before OSError, its base class
        return fail(args, EXIT_ERROR, "timeout", str(exc))
    except (OSError, ValueError) as exc:
        return fail(args, EXIT_USAGE, "usage", str(exc))
    except KeyboardInterrupt:
        return 130
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
