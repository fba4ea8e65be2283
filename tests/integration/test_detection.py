"""Detection end to end, through a real server: scenes composited from the real handwritten digits of the shared
data (benchmarks/detection_data.py: digits upscaled ×4 to ×8 onto random canvases, boxes known), trained by the
real job runner on the packaged MobileNetV2's feature maps, predicted through the map lane.

Checks: the version reports mAP@0.5 and mAP@0.5:0.95 per label next to the from-scratch baseline; held-out
scenes (digits of the test split) are found with the right label (IoU >= 0.5); boxes come back in the caller's
pixels (the same scene sent at twice its size, which the server normalises down, gets boxes twice as large); the
request options bound the answer; bad boxes are a 422 that names them; the client parses the answer; the ONNX
export on bare ONNX Runtime, prepared and decoded as its manifest says, gives the boxes predict gave.
"""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image

from adapters.boxes import batched_nms, iou
from adapters.heads.detection import decode_grid
from benchmarks.detection_data import Scene, scenes
from graft import Graft
from graft import schemas as s
from tests.conftest import wait_for_job
from tests.integration.test_api import assert_error

pytestmark = pytest.mark.integration


def hits(truth: list[dict], found: list[dict]) -> int:
    """True boxes matched (greedily) by a found box of the same label with IoU >= 0.5."""
    used: set[int] = set()
    n = 0
    for t in truth:
        for j, f in enumerate(found):
            if j not in used and f["label"] == t["label"] and iou(np.array(f["box"]), np.array(t["box"]))[0, 0] >= 0.5:
                used.add(j)
                n += 1
                break
    return n


def test_detection_task_trains_predicts_boxes_in_the_callers_pixels_and_refuses_bad_boxes(server_factory) -> None:
    server = server_factory(GRAFT_DETECTION_STEPS="120")
    client = server.new_tenant("detection")
    train = [scene.example() for scene in scenes(40, seed=1)]
    assert any(e["label"] == [] for e in train)  # images without objects are examples too
    resp = client.post(
        "/v1/tasks", json={"name": "digits", "modality": "image", "kind": "detection", "examples": train}
    )
    assert resp.status_code == 202, resp.text
    job = wait_for_job(client, resp.json()["job"]["id"], timeout=400)
    assert job["status"] == "succeeded", job.get("error")

    versions = client.get("/v1/tasks/digits/versions").json()["versions"]
    m = next(v for v in versions if v["status"] == "active")["metrics"]
    assert m["kind"] == "detection" and m["evaluation"] == "cv" and m["head"] == "detector", m
    assert set(m["heads"]) == {"detector", "scratch-detector"} and m["baseline"]["head"] == "scratch-detector"
    assert set(m["per_label"]) == {"0", "1", "7"}
    assert 0.5 < m["map_50"] <= 1.0 and 0 < m["map"] < m["map_50"]
    assert m["map_50"] > m["baseline"]["map_50"]  # the transfer head beats learning from these few pixels
    print(f"\nCV mAP@0.5 {m['map_50']:.3f} mAP {m['map']:.3f}; baseline {m['baseline']}")

    test = scenes(12, seed=7, split="test", empty=0.0)
    resp = client.post("/v1/tasks/digits/predict", json={"inputs": [t.png_base64() for t in test]})
    assert resp.status_code == 200, resp.text
    predictions = resp.json()["predictions"]
    found = gold = 0
    for scene, p in zip(test, predictions, strict=True):
        for o in p["objects"]:
            assert set(o) == {"box", "label", "score"} and 0.3 <= o["score"] <= 1
            x0, y0, x1, y1 = o["box"]
            assert 0 <= x0 < x1 <= scene.image.width and 0 <= y0 < y1 <= scene.image.height
        found, gold = found + hits(scene.objects, p["objects"]), gold + len(scene.objects)
    print(f"held out: {found}/{gold} digits found (IoU >= 0.5, right label)")
    assert found / gold > 0.5, (found, gold)

    # the same scenes at twice their size (normalised down by the server): boxes in the caller's pixels, twice
    # as large; the letterbox maps back exactly up to the resampling
    big = [Scene(t.image.resize((t.image.width * 2, t.image.height * 2), Image.Resampling.BILINEAR), []) for t in test]
    resp = client.post("/v1/tasks/digits/predict", json={"inputs": [b.png_base64() for b in big[:4]]})
    assert resp.status_code == 200, resp.text
    for small, large in zip(predictions[:4], resp.json()["predictions"], strict=True):
        for o in small["objects"]:
            twice = [b["box"] for b in large["objects"] if iou(np.array(b["box"]) / 2, np.array(o["box"]))[0, 0] > 0.7]
            assert twice, (o, large)

    resp = client.post(
        "/v1/tasks/digits/predict",
        json={"inputs": [test[0].png_base64()], "max_objects": 1, "score_threshold": 0.05},
    )
    assert resp.status_code == 200 and len(resp.json()["predictions"][0]["objects"]) <= 1
    strict = client.post(
        "/v1/tasks/digits/predict", json={"inputs": [t.png_base64() for t in test[:4]], "score_threshold": 0.95}
    ).json()["predictions"]
    assert all(o["score"] >= 0.95 for p in strict for o in p["objects"])
    assert_error(client.post("/v1/tasks/digits/predict", json={"inputs": ["x"], "max_objects": 0}), 422)

    key = client.headers["Authorization"].split()[1]
    with Graft(server.url, key) as g:  # the client's typed answer, as multipart files with the options
        typed = g.predict("digits", [t.png_base64() for t in test[:2]], score_threshold=0.3).predictions
        files = g.predict("digits", [_png(test[0])], max_objects=2).predictions
    assert all(isinstance(p, s.DetectionPredictionOut) for p in typed)
    assert [p.model_dump(exclude={"id"}) for p in typed] == [
        {k: v for k, v in p.items() if k not in ("id",)} for p in predictions[:2]
    ]
    assert isinstance(files[0], s.DetectionPredictionOut) and len(files[0].objects) <= 2

    image = test[0].png_base64()
    bad = [
        ({"box": [10, 10, 5, 20], "label": "0"}, "label[0].box [10, 10, 5, 20]: need x1 > x0 and y1 > y0"),
        ({"box": [0, 0, 10], "label": "0"}, "label[0].box must be [x0, y0, x1, y1]"),
        ({"box": [0, 0, 10, 10]}, "label[0] must have exactly box and label; missing ['label']"),
        ({"box": [0, 0, 10, 5000], "label": "0"}, "extends past the image"),
    ]
    for obj, fragment in bad:
        resp = client.post("/v1/tasks/digits/examples", json={"examples": [{"input": image, "label": [obj]}]})
        assert assert_error(resp, 422, fragment)["code"] == "validation_error"

    resp = client.post("/v1/tasks/digits/suggest", json={"inputs": [t.png_base64() for t in test[:3]], "k": 1})
    assert resp.status_code == 200 and len(resp.json()["indices"]) == 1, resp.text  # more: test_detection_loop.py

    # the ONNX export on bare ONNX Runtime, prepared and decoded by the manifest's recipe, answers what predict did
    assert_export_answers_as_predict(client, "digits", test[:4], predictions[:4])


def assert_export_answers_as_predict(client, task: str, test: list[Scene], predictions: list[dict]) -> None:
    """The task's ONNX export on bare ONNX Runtime, each scene prepared and decoded by the manifest's recipe (PIL
    and numpy only), gives the labels and boxes ``predictions`` (predict's answers for ``test``) hold."""
    resp = client.get(f"/v1/tasks/{task}/export")
    assert resp.status_code == 200, resp.text
    with zipfile.ZipFile(io.BytesIO(resp.content)) as zf:
        manifest = json.loads(zf.read("graft-export.json"))
        spec = json.loads(zf.read("preprocessing.json"))
        session = ort.InferenceSession(zf.read("model.onnx"), providers=["CPUExecutionProvider"])
    det = manifest["detection"]
    assert manifest["kind"] == "detection" and manifest["model"]["output"] == "detections"
    assert manifest["labels"] == ["0", "1", "7"] and det["canvas"] == 256 and det["stride"] == 16
    for scene, served in zip(test, predictions, strict=True):
        image = scene.image.convert("RGB")
        assert min(image.size) <= 256  # Graft's normalisation leaves it as it is
        scale = det["canvas"] / max(image.size)
        inner = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        canvas = Image.new("RGB", (det["canvas"],) * 2, tuple(round(255 * m) for m in spec["mean"]))
        canvas.paste(image.resize(inner, Image.Resampling.BILINEAR), (0, 0))
        x = (np.asarray(canvas, np.float32) / 255 - np.array(spec["mean"], np.float32)) / np.array(
            spec["std"], np.float32
        )
        (grid,) = session.run(["detections"], {"pixel_values": x.transpose(2, 0, 1)[None].astype(np.float32)})
        (found,) = decode_grid(grid, len(manifest["labels"]), det["score_threshold"])
        keep = batched_nms(found.boxes, found.scores, found.labels, det["nms_iou"])[: det["max_objects"]]
        boxes = found.boxes[keep] / scale
        boxes[:, 0::2] = boxes[:, 0::2].clip(0, image.width)
        boxes[:, 1::2] = boxes[:, 1::2].clip(0, image.height)
        assert [manifest["labels"][i] for i in found.labels[keep]] == [o["label"] for o in served["objects"]]
        assert np.allclose(
            boxes.reshape(-1, 4), np.array([o["box"] for o in served["objects"]]).reshape(-1, 4), atol=0.05
        )


def _png(scene: Scene) -> bytes:
    import base64

    return base64.b64decode(scene.png_base64())


def test_a_finetuned_detection_task_trains_its_own_top_blocks_and_serves_them(server_factory) -> None:
    """``head: "finetune"``: the version reports the fine-tune's held-out mAP beside the frozen detector's and the
    baseline's on the same images; predict finds held-out digits, in the caller's pixels, through the map lane; the
    export (CNN below the blocks + the task's blocks + head) answers as predict does."""
    server = server_factory(GRAFT_DETECTION_STEPS="40", GRAFT_FINETUNE_MAX_EPOCHS="2")
    client = server.new_tenant("detection-finetune")
    train = [scene.example() for scene in scenes(20, seed=1)]
    resp = client.post(
        "/v1/tasks",
        json={"name": "tuned", "modality": "image", "kind": "detection", "head": "finetune", "examples": train},
    )
    assert resp.status_code == 202, resp.text
    job = wait_for_job(client, resp.json()["job"]["id"], timeout=600)
    assert job["status"] == "succeeded", job.get("error")
    m = next(v for v in client.get("/v1/tasks/tuned/versions").json()["versions"] if v["status"] == "active")["metrics"]
    assert m["head"] == "finetune" and m["evaluation"] == "holdout" and m["selection"] == "pinned", m
    assert set(m["heads"]) == {"finetune", "detector", "scratch-detector"}
    assert m["finetune"]["blocks"] == 2 and m["finetune"]["held_out"] == 4 and m["finetune"]["bytes"] < 2**21
    beat = m["heads"]["finetune"]["map_50"] > m["heads"]["detector"]["map_50"]
    assert beat != any("did not beat the frozen detector" in w for w in m["warnings"]), m
    print(f"\nheld-out mAP@0.5: {({h: v['map_50'] for h, v in m['heads'].items()})}; {m['finetune']['history']}")

    test = scenes(8, seed=7, split="test", empty=0.0)
    resp = client.post("/v1/tasks/tuned/predict", json={"inputs": [t.png_base64() for t in test]})
    assert resp.status_code == 200, resp.text
    predictions = resp.json()["predictions"]
    found = gold = 0
    for scene, p in zip(test, predictions, strict=True):
        for o in p["objects"]:
            x0, y0, x1, y1 = o["box"]
            assert 0 <= x0 < x1 <= scene.image.width and 0 <= y0 < y1 <= scene.image.height
        found, gold = found + hits(scene.objects, p["objects"]), gold + len(scene.objects)
    print(f"held out: {found}/{gold} digits found (IoU >= 0.5, right label)")
    assert found / gold > 0.3, (found, gold)

    big = [Scene(t.image.resize((t.image.width * 2, t.image.height * 2), Image.Resampling.BILINEAR), []) for t in test]
    resp = client.post("/v1/tasks/tuned/predict", json={"inputs": [b.png_base64() for b in big[:3]]})
    assert resp.status_code == 200, resp.text
    for small, large in zip(predictions[:3], resp.json()["predictions"], strict=True):
        for o in small["objects"]:
            twice = [b["box"] for b in large["objects"] if iou(np.array(b["box"]) / 2, np.array(o["box"]))[0, 0] > 0.7]
            assert twice, (o, large)

    assert_export_answers_as_predict(client, "tuned", test[:3], predictions[:3])
