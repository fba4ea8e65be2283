"""A detection head's ONNX graph (the CNN up to its feature maps + the head, adapters/export.py) on bare ONNX
Runtime: equal to the torch path the service serves, and decoded by the manifest's recipe to the same boxes."""

from __future__ import annotations

import base64

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from adapters.export import DETECTIONS, PIXEL_VALUES, detection_graph
from adapters.heads.detection import DetectorHead, ExportForm, ScratchDetectorHead, decode_grid
from adapters.kinds import KINDS
from benchmarks.detection_data import scenes
from service import images
from service.backbones.image import TorchImageBackbone

KIND = KINDS["detection"]


@pytest.fixture(scope="module")
def fitted() -> dict:
    backbone = TorchImageBackbone("mobilenet_v2", "mobilenet_v2")
    data = scenes(12, seed=5)
    placed = [
        images.placed(
            images.decode(base64.b64decode(s.png_base64()), images.STORED_LIMITS), backbone.preprocessing, 256
        )
        for s in data
    ]
    stored = [KIND.encode_example(s.png_base64(), s.objects) for s in data]
    maps = backbone.feature_maps([p.pixels for p in placed])
    names = ["0", "1", "7"]
    truth = KIND.truth(placed, stored, names)
    detector = DetectorHead(names, size=256, channels=maps.shape[1]).fit(maps, truth, steps=30, seed=0)
    pixels = np.stack([p.pixels for p in placed])
    scratch = ScratchDetectorHead(names, size=256, channels=64).fit(pixels, truth, steps=10, seed=0)
    return {"backbone": backbone, "placed": placed, "maps": maps, "detector": detector, "scratch": scratch}


@pytest.mark.parametrize("which", ["detector", "scratch"])
def test_detection_graph_on_onnx_runtime_equals_the_served_torch_path(fitted, which: str) -> None:
    backbone, head = fitted["backbone"], fitted[which]
    network = backbone.detection_network() if which == "detector" else None
    model = detection_graph(head, network, 256)
    onnx.checker.check_model(model)
    assert [i.name for i in model.graph.input] == [PIXEL_VALUES] and [o.name for o in model.graph.output] == [
        DETECTIONS
    ]
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    pixels = np.stack([p.pixels for p in fitted["placed"]])
    pre = backbone.preprocessing
    values = pre.pixel_values(list(pixels))  # ImageNet mean/std: the backbone's and the scratch head's alike
    got = session.run([DETECTIONS], {PIXEL_VALUES: values})[0]
    with torch.no_grad():
        reference = ExportForm(head, network).eval()(torch.from_numpy(values)).numpy()
    assert got.shape == (len(pixels), 3 + 4, 16, 16)
    assert np.abs(got - reference).max() <= 1e-4
    # decoded by the manifest's recipe, the graph's output gives the boxes the served head finds
    served = head.detect(fitted["maps"] if which == "detector" else pixels, 0.05)
    decoded = decode_grid(got, 3, 0.05)
    for a, b in zip(served, decoded, strict=True):
        strong, kept = a.scores > 0.1, b.scores > 0.1  # ties near the cut-off may differ: compare the clear peaks
        assert strong.sum() == kept.sum()
        rows_a = np.column_stack([a.labels[strong], a.boxes[strong]])
        rows_b = np.column_stack([b.labels[kept], b.boxes[kept]])
        order_a, order_b = np.lexsort(np.round(rows_a, 1).T[::-1]), np.lexsort(np.round(rows_b, 1).T[::-1])
        assert np.allclose(rows_a[order_a], rows_b[order_b], atol=1e-2)  # equal scores may come in any order
