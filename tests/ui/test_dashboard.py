"""The task dashboard at /ui in a real browser (Debian's Chromium, headless, driven by Playwright)
against a real `bentoml serve` process with a task trained on real BBC News articles.

Playwright never downloads a browser here: it drives /usr/bin/chromium (`.ci/run` installs the
`chromium` and `chromium-driver` packages). The screenshot lands in test-artifacts/.
"""

from __future__ import annotations

import base64
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright

from tests.conftest import ROOT, load_jsonl, per_label, wait_for_job
from tests.integration.test_api import predict, train

pytestmark = pytest.mark.integration

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = ROOT / "test-artifacts"
TEXT = (
    "The chancellor said interest rates and inflation would weigh on growth, as shares fell on the stock market "
    "and the pound slipped against the dollar."
)


@pytest.fixture(scope="module")
def browser() -> Iterator[BrowserContext]:
    """A fresh Chromium profile (its own --user-data-dir) for this module."""
    with tempfile.TemporaryDirectory(prefix="graft-chromium-") as profile, sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            profile,
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 900},
        )
        yield context
        context.close()


@pytest.fixture(scope="module")
def trained(server, bbc_train) -> dict:
    """A tenant with a text task trained on 8 BBC articles per label (5 labels)."""
    client = server.new_tenant("dashboard-viewer")
    rows = per_label(bbc_train, 8, seed=3)
    train(client, "news", [{"input": r["input"], "label": r["label"]} for r in rows])
    task = client.get("/v1/tasks/news").json()
    return {"client": client, "key": client.headers["authorization"].removeprefix("Bearer "), "task": task}


def open_page(context: BrowserContext | Browser, url: str) -> tuple[Page, list[str]]:
    page = context.new_page()
    problems: list[str] = []
    page.on("console", lambda msg: problems.append(f"console {msg.type}: {msg.text}") if msg.type == "error" else None)
    page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    page.goto(url)
    return page, problems


def log_in(page: Page, key: str) -> None:
    expect(page.locator("#login")).to_be_visible()
    page.fill("#api-key", key)
    page.click("#login-form button[type=submit]")


def test_ui_is_served_with_a_strict_content_security_policy(server) -> None:
    resp = httpx.get(f"{server.url}/ui", follow_redirects=True)
    assert resp.status_code == 200 and str(resp.url).endswith("/ui/")
    assert "<title>Graft dashboard</title>" in resp.text
    assert "script-src 'self'" in resp.headers["content-security-policy"]
    for name in ("app.js", "app.css"):
        assert httpx.get(f"{server.url}/ui/{name}").status_code == 200
    missing = httpx.get(f"{server.url}/ui/nope.js")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"


def test_log_in_open_a_task_see_its_plots_and_try_a_text(server, trained, browser) -> None:
    task, client = trained["task"], trained["client"]
    metrics = task["versions"][-1]["metrics"]
    cm = metrics["confusion_matrix"]
    page, problems = open_page(browser, f"{server.url}/ui")

    page.fill("#api-key", "not-a-key")
    page.click("#login-form button[type=submit]")
    expect(page.locator("#error")).to_contain_text("not accepted")
    expect(page.locator("#login")).to_be_visible()

    log_in(page, trained["key"])
    row = page.locator("#task-table tbody tr[data-task='news']")
    expect(row).to_contain_text("v1")
    row.locator("a.task-link").click()

    expect(page.locator("#task-name")).to_have_text("news")
    cells = page.locator("svg.confusion rect.cm-cell")
    k = len(cm["labels"])
    expect(cells).to_have_count(k * k)
    drawn = cells.evaluate_all("cells => cells.map(c => [c.dataset.true, c.dataset.pred, Number(c.dataset.count)])")
    expected = [[cm["labels"][i], cm["labels"][j], cm["matrix"][i][j]] for i in range(k) for j in range(k)]
    assert drawn == expected
    assert sum(count for _, _, count in drawn) == task["versions"][-1]["n_examples"] == 40
    expect(page.locator("#plot-per-label rect.pr-recall")).to_have_count(k)
    expect(page.locator("#plot-learning circle.lc-point")).to_have_count(len(metrics["learning_curve"]["points"]))
    assert page.locator("#plot-reliability rect.rel-bin").count() == sum(
        1 for b in metrics["reliability"]["bins"] if b["count"]
    )
    expect(page.locator("#plot-baselines rect.bar")).to_have_count(len(metrics["heads"]) + 1)  # + majority label
    expect(page.locator("#plot-transfer rect.bar")).to_have_count(len(metrics["transferability"]["scores"]))
    expect(page.locator("#other-metrics")).to_contain_text("calibration")  # not plotted: shown as a table
    # head auto says in words whether it tried fine-tuning (here: too few examples per label, or turned off)
    fine_tuning = page.locator("#summary tr", has_text="fine-tuning (auto)")
    expect(fine_tuning.locator("td")).to_have_text(metrics["auto_finetune"]["summary"])

    page.fill("#try-text", TEXT)
    page.click("#try-submit")
    expected_prediction = predict(client, "news", [TEXT], top_k=5)["predictions"][0]
    expect(page.locator("#predicted-label")).to_have_text(expected_prediction["label"])
    assert expected_prediction["label"] == "business"
    expect(page.locator("#prediction li")).to_have_count(5)
    expect(page.locator("#prediction li").first).to_have_attribute("data-label", "business")

    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
    assert (ARTIFACTS / "dashboard.png").stat().st_size > 10_000
    assert not [p for p in problems if "401" not in p], problems  # the wrong key's 401 is expected
    page.close()


def test_another_tenant_sees_none_of_it(server, trained, browser) -> None:
    other = server.new_tenant("dashboard-other")
    page, problems = open_page(browser, f"{server.url}/ui/#/tasks/news")
    log_in(page, other.headers["authorization"].removeprefix("Bearer "))
    expect(page.locator("#error")).to_contain_text("news")  # the API's 404 message, shown as it is
    page.goto(f"{server.url}/ui/#/")
    expect(page.locator("#no-tasks")).to_be_visible()
    expect(page.locator("#task-table tbody tr")).to_have_count(0)
    page.close()


def test_monitoring_shows_feedback_accuracy_and_the_drift_windows(server, trained, bbc_train, browser) -> None:
    """In-domain and foreign inputs are predicted and one answer gets feedback: the task page's monitoring
    section shows the feedback and draws one bar per drift window that scored inputs, as the API reports them."""
    client = trained["client"]
    texts = [r["input"] for r in bbc_train[-6:]]
    foreign = ["def add(a, b):\n    return a + b  # sum two numbers", "SELECT id, name FROM users WHERE age > 30;"]
    answers = predict(client, "news", texts + foreign)["predictions"]
    feedback = client.post(
        "/v1/tasks/news/feedback", json={"items": [{"id": answers[0]["id"], "label": bbc_train[-1]["label"]}]}
    )
    assert feedback.status_code == 200, feedback.text

    page, problems = open_page(browser, f"{server.url}/ui/#/tasks/news")
    log_in(page, trained["key"])
    expect(page.locator("#monitoring")).to_be_visible()
    monitoring = client.get("/v1/tasks/news/monitoring").json()
    assert monitoring["feedback"]["count"] >= 1 and monitoring["ood"]["scored"] >= len(texts) + len(foreign)
    expect(page.locator("#monitoring-summary")).to_contain_text(f"{monitoring['feedback']['count']} labels")
    scored = [w for w in monitoring["drift"]["windows"] if w["scored"]]
    bars = page.locator("#plot-drift rect.drift-window")
    expect(bars).to_have_count(len(scored))
    drawn = bars.evaluate_all("bars => bars.map(b => [Number(b.dataset.flagged), Number(b.dataset.scored)])")
    assert drawn == [[w["flagged"], w["scored"]] for w in scored]
    assert not problems, problems
    page.close()


def test_image_task_try_it_uploads_a_file(server, browser, tmp_path: Path) -> None:
    """An image task (real 8×8 digits, 4 per label): the try-it box takes a file and sends it as multipart."""
    client = server.new_tenant("dashboard-images")
    rows = per_label(load_jsonl("digits.train.jsonl"), 4, seed=5)
    resp = client.post("/v1/tasks", json={"name": "digits", "modality": "image", "examples": rows})
    assert resp.status_code == 202, resp.text
    assert wait_for_job(client, resp.json()["job"]["id"])["status"] == "succeeded"
    digit = next(r for r in load_jsonl("digits.test.jsonl") if r["label"] == "3")
    image = tmp_path / "three.png"
    image.write_bytes(base64.b64decode(digit["input"]))
    with image.open("rb") as fh:
        expected = client.post(
            "/v1/tasks/digits/predict/files", files={"file": ("three.png", fh, "image/png")}, data={"top_k": "5"}
        )
    assert expected.status_code == 200, expected.text

    page, problems = open_page(browser, f"{server.url}/ui/#/tasks/digits")
    log_in(page, client.headers["authorization"].removeprefix("Bearer "))
    expect(page.locator("svg.confusion rect.cm-cell")).to_have_count(100)
    expect(page.locator("#try-text")).to_be_hidden()
    page.set_input_files("#try-file", str(image))
    expect(page.locator("#try-preview")).to_be_visible()
    page.click("#try-submit")
    top = expected.json()["predictions"][0]
    expect(page.locator("#predicted-label")).to_have_text(top["label"])
    expect(page.locator("#prediction li")).to_have_count(5)
    shown = page.locator("#prediction li").evaluate_all("items => items.map(li => li.dataset.label)")
    assert shown == list(top["scores"]), "most probable first, as the API ranks them"
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "dashboard-image.png"), full_page=True)
    assert not problems, problems
    page.close()


def test_many_labels_list_the_top_confusions_instead_of_a_matrix(server, bbc_train, browser) -> None:
    """41 labels (2 article openings each, labelled arbitrarily): too many to draw, so the page lists the
    most frequent confusions, worked out from the same metrics."""
    client = server.new_tenant("dashboard-many")
    examples = [{"input": r["input"][:200], "label": f"topic-{i // 2:02d}"} for i, r in enumerate(bbc_train[:82])]
    train(client, "many", examples)
    cm = client.get("/v1/tasks/many").json()["versions"][-1]["metrics"]["confusion_matrix"]
    assert len(cm["labels"]) == 41 and sum(map(sum, cm["matrix"])) == 82
    off_diagonal = sum(1 for i, row in enumerate(cm["matrix"]) for j, count in enumerate(row) if i != j and count)
    assert off_diagonal > 0

    page, problems = open_page(browser, f"{server.url}/ui/#/tasks/many")
    log_in(page, client.headers["authorization"].removeprefix("Bearer "))
    expect(page.locator("#plot-confusion")).to_contain_text("41 labels: too many to draw")
    expect(page.locator("#plot-confusion tr.confusion-pair")).to_have_count(min(20, off_diagonal))
    expect(page.locator("svg.confusion")).to_have_count(0)
    assert not problems, problems
    page.close()


def test_a_version_without_cross_validation_hides_the_cv_plots(server, bbc_train, browser) -> None:
    """One example per label: nothing to cross-validate, so no CV figures; the warning and the
    transferability (computed anyway) are shown."""
    client = server.new_tenant("dashboard-tiny")
    train(client, "tiny", [{"input": r["input"][:300], "label": r["label"]} for r in per_label(bbc_train, 1)])
    page, problems = open_page(browser, f"{server.url}/ui/#/tasks/tiny")
    log_in(page, client.headers["authorization"].removeprefix("Bearer "))
    expect(page.locator("#warnings li")).to_contain_text("single example")
    expect(page.locator("#plot-transfer")).to_be_visible()
    for figure in ("confusion", "per-label", "learning", "reliability", "baselines"):
        expect(page.locator(f"#plot-{figure}")).to_be_hidden()
    expect(page.locator("#summary")).to_contain_text("train")
    assert not problems, problems
    page.close()


@pytest.mark.parametrize("kind", ["multilabel", "regression"])
def test_other_task_kinds_get_their_metrics_as_a_table_and_a_try_it(server, bbc_train, browser, kind: str) -> None:
    """The plots are for classification: a multilabel or regression version hides them, lists its own
    metrics in the table, and "try it" shows its kind of answer."""
    from tests.integration.test_task_kinds import bbc_tags, digit_share

    client = server.new_tenant(f"dashboard-{kind}")
    rows = per_label(bbc_train, 6, seed=11)
    label = (
        (lambda r: bbc_tags(r["input"], r["label"])) if kind == "multilabel" else (lambda r: digit_share(r["input"]))
    )
    examples = [{"input": r["input"][:600], "label": label(r)} for r in rows]
    resp = client.post("/v1/tasks", json={"name": kind, "kind": kind, "examples": examples})
    assert resp.status_code == 202, resp.text
    assert wait_for_job(client, resp.json()["job"]["id"])["status"] == "succeeded"
    expected = predict(client, kind, [TEXT], top_k=5)["predictions"][0]  # as the page asks

    page, problems = open_page(browser, f"{server.url}/ui/#/tasks/{kind}")
    log_in(page, client.headers["authorization"].removeprefix("Bearer "))
    expect(page.locator("#task-meta")).to_contain_text(kind)
    for figure in ("confusion", "per-label", "learning", "reliability", "baselines"):
        expect(page.locator(f"#plot-{figure}")).to_be_hidden()
    expect(page.locator("#other-metrics")).to_contain_text("micro_f1" if kind == "multilabel" else "mae")
    page.fill("#try-text", TEXT)
    page.click("#try-submit")
    if kind == "multilabel":
        expect(page.locator("#predicted-label")).to_have_text(", ".join(expected["labels"]) or "no label")
        expect(page.locator("#prediction li")).to_have_count(len(expected["scores"]))
    else:
        expect(page.locator("#predicted-label")).to_have_text(f"{expected['value']:.4f}")
    assert not problems, problems
    page.close()


def test_a_speakers_task_shows_its_figures_and_tries_a_wav_file(server, browser, tmp_path) -> None:
    """An audio task (speaker identification, clips synthesised with eSpeak NG): the closed-set confusion
    matrix and per-speaker scores are drawn, and "try it" sends a WAV file and shows the named speaker."""
    import shutil

    if shutil.which("espeak-ng") is None:
        pytest.skip("the clips are synthesised with eSpeak NG: apt-get install espeak-ng")
    from benchmarks.audio_data import speaker_clips

    client = server.new_tenant("dashboard-speakers")
    clips = speaker_clips(3, 3, seed=2)
    examples = [{"input": base64.b64encode(wav).decode(), "label": who} for wav, who in clips]
    resp = client.post(
        "/v1/tasks", json={"name": "voices", "modality": "audio", "kind": "speakers", "examples": examples}
    )
    assert resp.status_code == 202, resp.text
    assert wait_for_job(client, resp.json()["job"]["id"])["status"] == "succeeded"
    probe = tmp_path / "probe.wav"
    probe.write_bytes(clips[0][0])
    expected = client.post(
        "/v1/tasks/voices/predict/files", files=[("file", ("probe.wav", clips[0][0]))], data={"top_k": "5"}
    ).json()["predictions"][0]

    page, problems = open_page(browser, f"{server.url}/ui/#/tasks/voices")
    log_in(page, client.headers["authorization"].removeprefix("Bearer "))
    expect(page.locator("#task-meta")).to_contain_text("speakers · audio task")
    expect(page.locator("svg.confusion rect.cm-cell")).to_have_count(9)
    expect(page.locator("#plot-per-label rect.pr-recall")).to_have_count(3)
    expect(page.locator("#try-text")).to_be_hidden()
    page.set_input_files("#try-file", str(probe))
    page.click("#try-submit")
    expect(page.locator("#predicted-label")).to_have_text(expected["speaker"] or "unknown speaker")
    expect(page.locator("#prediction li")).to_have_count(3)
    assert not problems, problems
    page.close()


@pytest.mark.parametrize("kind", ["entities", "answers"])
def test_span_kinds_show_entity_f1_or_exact_match_and_try_their_answers(server, browser, kind: str) -> None:
    """Entities and answers versions list entity F1 / exact match next to the baseline, hide the
    classification plots, and "try it" shows the entities found or the answer (answers: the question on
    the first line, the context below)."""
    from benchmarks.spansets import answer_rows, entity_rows

    client = server.new_tenant(f"dashboard-{kind}")
    rows = entity_rows(30, half=0, seed=8) if kind == "entities" else answer_rows(20, half=0, seed=8)
    resp = client.post("/v1/tasks", json={"name": kind, "kind": kind, "examples": rows})
    assert resp.status_code == 202, resp.text
    assert wait_for_job(client, resp.json()["job"]["id"])["status"] == "succeeded"
    test = (entity_rows if kind == "entities" else answer_rows)(1, half=1, seed=9)[0]["input"]
    expected = predict(client, kind, [test])["predictions"][0]

    page, problems = open_page(browser, f"{server.url}/ui/#/tasks/{kind}")
    log_in(page, client.headers["authorization"].removeprefix("Bearer "))
    expect(page.locator("#task-meta")).to_contain_text(kind)
    for figure in ("confusion", "per-label", "learning", "reliability", "baselines"):
        expect(page.locator(f"#plot-{figure}")).to_be_hidden()
    expect(page.locator("#summary")).to_contain_text("entity F1" if kind == "entities" else "exact match")
    expect(page.locator("#summary")).to_contain_text("baseline word-")
    page.fill("#try-text", test if kind == "entities" else f"{test['question']}\n{test['context']}")
    page.click("#try-submit")
    if kind == "entities":
        n = len(expected["entities"])
        expect(page.locator("#predicted-label")).to_have_text(f"{n} entities" if n else "no entity")
        expect(page.locator("#prediction li")).to_have_count(n)
    else:
        expect(page.locator("#predicted-label")).to_have_text(expected["answer"] or "no answer")
    assert not problems, problems
    page.close()


def test_a_detection_task_shows_map_and_draws_the_boxes_it_finds(server_factory, browser, tmp_path) -> None:
    """A detection task (digits composited onto canvases, benchmarks/detection_data.py): the version lists mAP next
    to the baseline, and "try it" draws each object's box over the image in the image's own pixels."""
    from benchmarks.detection_data import scenes

    srv = server_factory(GRAFT_DETECTION_STEPS="80")
    client = srv.new_tenant("dashboard-detection")
    examples = [scene.example() for scene in scenes(24, seed=4)]
    resp = client.post("/v1/tasks", json={"name": "digits", "modality": "image", "kind": "detection",
                                          "examples": examples})
    assert resp.status_code == 202, resp.text
    assert wait_for_job(client, resp.json()["job"]["id"])["status"] == "succeeded"
    probe = scenes(1, seed=11, split="test", empty=0.0)[0]
    path = tmp_path / "scene.png"
    probe.image.save(path)
    expected = client.post("/v1/tasks/digits/predict/files", files=[("file", ("scene.png", path.read_bytes()))])
    objects = expected.json()["predictions"][0]["objects"]
    assert objects, expected.text

    page, problems = open_page(browser, f"{srv.url}/ui/#/tasks/digits")
    log_in(page, client.headers["authorization"].removeprefix("Bearer "))
    expect(page.locator("#task-meta")).to_contain_text("detection · image task")
    expect(page.locator("#summary")).to_contain_text("mAP@0.5")
    expect(page.locator("#summary")).to_contain_text("baseline scratch-detector")
    page.set_input_files("#try-file", str(path))
    expect(page.locator("#try-preview")).to_be_visible()
    page.click("#try-submit")
    expect(page.locator("#predicted-label")).to_have_text(f"{len(objects)} object{'s' if len(objects) > 1 else ''}")
    boxes = page.locator("svg.detections rect.det-box")
    expect(boxes).to_have_count(len(objects))
    view = page.locator("svg.detections").get_attribute("viewBox")
    assert view == f"0 0 {probe.image.width} {probe.image.height}"  # the boxes' coordinates are the image's pixels
    drawn = boxes.evaluate_all("rs => rs.map(r => ['x', 'y', 'width', 'height'].map(k => +r.getAttribute(k)))")
    assert drawn == [[o["box"][0], o["box"][1], o["box"][2] - o["box"][0], o["box"][3] - o["box"][1]] for o in objects]
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "dashboard-detection.png"), full_page=True)
    assert not problems, problems
    page.close()
