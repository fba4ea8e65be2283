"""Dataset uploads for kinds whose labels are structures, through a real server: an entities task created from
a JSON Lines file (``?kind=entities``; spans from benchmarks/spansets.py) and extended by a second one, a
detection task created by the client from a zip of images beside ``annotations.jsonl`` (scenes from
benchmarks/detection_data.py); both train with the real job runner and predict. A bad row is a 422 naming its
line, with nothing stored; CSV is refused for these kinds."""

from __future__ import annotations

import base64
import io
import json
import zipfile

import pytest

from benchmarks.detection_data import scenes
from benchmarks.spansets import entity_rows
from graft import Graft
from tests.conftest import wait_for_job
from tests.integration.test_api import assert_error

pytestmark = pytest.mark.integration

JSONL = {"Content-Type": "application/jsonl"}


def lines(rows: list[dict]) -> bytes:
    return "\n".join(json.dumps(row) for row in rows).encode()


def test_entities_jsonl_and_detection_zip_uploads_train_and_predict(server_factory, tmp_path) -> None:
    server = server_factory(GRAFT_DETECTION_STEPS="40")
    client = server.new_tenant("structured-uploads")

    train = entity_rows(40, half=0, seed=3)
    bad = [*train[:2], {"input": train[2]["input"], "label": [{"start": 0, "end": 10_000, "label": "PER"}]}]
    resp = client.post("/v1/tasks/ner/dataset?kind=entities", content=lines(bad), headers=JSONL)
    assert_error(resp, 422, "JSON Lines line 3: label:")
    assert client.get("/v1/tasks/ner").status_code == 404  # nothing stored
    csv = b"input,label\nAda went home,PER\n"
    resp = client.post("/v1/tasks/ner/dataset?kind=entities", content=csv, headers={"Content-Type": "text/csv"})
    assert_error(resp, 422, "send JSON Lines")

    resp = client.post("/v1/tasks/ner/dataset?kind=entities&head=tagger", content=lines(train[:30]), headers=JSONL)
    assert resp.status_code == 202, resp.text
    body = resp.json()
    assert body["created"] is True and body["examples"] == 30 and body["task"]["kind"] == "entities"
    resp = client.post("/v1/tasks/ner/dataset", content=lines(train[30:]), headers=JSONL)  # extends it
    assert resp.status_code == 202 and resp.json()["created"] is False, resp.text
    assert wait_for_job(client, resp.json()["job"]["id"], timeout=400)["status"] == "succeeded"
    assert sum(client.get("/v1/tasks/ner").json()["examples_per_label"].values()) > 0
    versions = client.get("/v1/tasks/ner/versions").json()["versions"]
    assert next(v for v in versions if v["status"] == "active")["n_examples"] == 40
    assert_error(client.post("/v1/tasks/ner/dataset?kind=detection", content=lines(train), headers=JSONL), 422)

    texts = [row["input"] for row in train[:3]] + [row["input"] for row in entity_rows(3, half=1, seed=4)]
    resp = client.post("/v1/tasks/ner/predict", json={"inputs": texts})
    assert resp.status_code == 200, resp.text
    predictions = resp.json()["predictions"]
    for text, p in zip(texts, predictions, strict=True):
        for entity in p["entities"]:
            assert text[entity["start"] : entity["end"]] == entity["text"]
    assert sum(len(p["entities"]) for p in predictions) > 0, predictions  # the uploaded spans were learnt

    # detection: a zip of images + annotations.jsonl, through the client
    train_scenes = scenes(16, seed=1)
    path = tmp_path / "digits.zip"
    with zipfile.ZipFile(path, "w") as archive:
        rows = []
        for i, scene in enumerate(train_scenes):
            archive.writestr(f"digits/img{i:02d}.jpg", base64.b64decode(scene.jpeg_base64()))
            rows.append({"file": f"img{i:02d}.jpg", "label": scene.objects})
        archive.writestr("digits/annotations.jsonl", lines(rows))
    bad_zip = io.BytesIO()
    with zipfile.ZipFile(bad_zip, "w") as archive:
        archive.writestr("a.jpg", base64.b64decode(train_scenes[0].jpeg_base64()))
        archive.writestr(
            "annotations.jsonl", lines([{"file": "a.jpg", "label": [{"box": [0, 0, 9999, 5], "label": "0"}]}])
        )
    headers = {"Content-Type": "application/zip"}
    resp = client.post("/v1/tasks/boxes/dataset?kind=detection", content=bad_zip.getvalue(), headers=headers)
    assert_error(resp, 422, "zip member 'a.jpg': label[0].box")
    key = client.headers["Authorization"].split()[1]
    with Graft(server.url, key, progress=False) as g:
        created = g.create_task("boxes", path, kind="detection", wait=True, timeout=500)
        assert created.job.status == "succeeded" and created.task.kind == "detection", created
        test = scenes(2, seed=7, split="test", empty=0.0)
        predictions = g.predict("boxes", [t.png_base64() for t in test]).predictions
    assert len(predictions) == 2
    for scene, p in zip(test, predictions, strict=True):
        for o in p.objects:
            x0, y0, x1, y1 = o.box
            assert 0 <= x0 < x1 <= scene.image.width and 0 <= y0 < y1 <= scene.image.height
