"""Detection's closed loop through a real server: OOD scores on predict (held-out scenes pass, natural photographs
are flagged) and in the monitoring figures, suggest over an unlabelled pool of images, and a worse retrain that
the paired comparison keeps as a candidate.

The worse retrain is a real one: the server is restarted on the same data with ``GRAFT_DETECTION_STEPS=2``, so
version 2's detectors are barely trained; on the images added since version 1 (unseen by both) version 1 wins
image by image beyond noise, and version 2 stays a candidate saying why.
"""

from __future__ import annotations

import base64
import io

import pytest
from PIL import Image

from benchmarks.detection_data import scenes
from benchmarks.ood import photo_crops
from tests.conftest import wait_for_job
from tests.integration.test_api import assert_error

pytestmark = pytest.mark.integration


def photo(array) -> str:
    out = io.BytesIO()
    Image.fromarray(array).save(out, format="PNG")
    return base64.b64encode(out.getvalue()).decode("ascii")


def test_detection_ood_suggest_and_a_worse_retrain_kept_as_candidate(server_factory, tmp_path) -> None:
    data = tmp_path / "data"
    server = server_factory(data, GRAFT_DETECTION_STEPS="100")
    client = server.new_tenant("detloop")
    train = [scene.example() for scene in scenes(32, seed=1)]
    task = {"name": "digits", "modality": "image", "kind": "detection", "examples": train}
    resp = client.post("/v1/tasks", json=task)
    assert resp.status_code == 202, resp.text
    job = wait_for_job(client, resp.json()["job"]["id"], timeout=400)
    assert job["status"] == "succeeded", job.get("error")
    v1 = client.get("/v1/tasks/digits/versions").json()["versions"][0]
    assert v1["head"] == "detector" and v1["metrics"]["ood"]["fpr"] == 0.05  # fitted on the pooled feature maps

    held = [t.jpeg_base64() for t in scenes(10, seed=7, split="test")]  # encoded as the training images
    foreign = [photo(c) for c in photo_crops(5, seed=3)]
    resp = client.post("/v1/tasks/digits/predict", json={"inputs": held + foreign})
    assert resp.status_code == 200, resp.text
    answer = resp.json()["predictions"]
    assert all({"id", "objects", "ood", "ood_score"} <= set(p) for p in answer)
    assert all(p["ood"] == (p["ood_score"] > 1.0) for p in answer)
    assert sum(p["ood"] for p in answer[:10]) <= 2, [p["ood_score"] for p in answer[:10]]
    assert sum(p["ood"] for p in answer[10:]) >= 4, [p["ood_score"] for p in answer[10:]]
    ood = client.get("/v1/tasks/digits/monitoring").json()["ood"]
    assert ood["scored"] == 15 and ood["expected_rate"] == 0.05
    assert ood["flagged"] == sum(p["ood"] for p in answer)

    pool = [t.jpeg_base64() for t in scenes(12, seed=11)]
    resp = client.post("/v1/tasks/digits/suggest", json={"inputs": pool, "k": 4})
    assert resp.status_code == 200, resp.text
    picked = resp.json()
    assert picked["version"] == 1 and len(set(picked["indices"])) == 4
    assert all(0 <= i < 12 for i in picked["indices"]) and all(0.0 <= u <= 1.0 for u in picked["scores"])
    assert_error(client.post("/v1/tasks/digits/suggest", json={"inputs": pool[:3], "k": 4}), 422, "k must be")

    server.stop()
    restarted = server_factory(data, GRAFT_DETECTION_STEPS="2")  # the same store, a barely trained retrain
    client = restarted.client(client.headers["authorization"].split()[1])
    more = [scene.example() for scene in scenes(20, seed=2, empty=0.0)]
    resp = client.post("/v1/tasks/digits/examples", json={"examples": more})
    assert resp.status_code == 202, resp.text
    job = wait_for_job(client, resp.json()["job"]["id"], timeout=400)
    assert job["status"] == "succeeded" and job["version"] == 2, job
    listing = client.get("/v1/tasks/digits/versions").json()
    assert listing["active_version"] == 1
    v2 = listing["versions"][1]
    promotion = v2["promotion"]
    assert v2["status"] == "candidate" and promotion["promoted"] is False, promotion
    assert promotion["compared_on"] == 20 and promotion["only_active_right"] > promotion["only_new_right"]
    assert "AP@0.5 per image" in promotion["reason"] and "beyond noise" in promotion["reason"], promotion
    print(f"\nOOD scores {[p['ood_score'] for p in answer]}; suggested {picked}; {promotion['reason']}")
    resp = client.post("/v1/tasks/digits/predict", json={"inputs": held[:1]})
    assert resp.json()["version"] == 1
