"""Detection ``head: "finetune"``: the task's own copies of the CNN's top stride-16 blocks trained with the detector
head on the frozen states below them (computed once per image), on the packaged MobileNetV2 and composited scenes
of real digits (benchmarks/detection_data.py). Kept small: few images, few steps (a shared 2-core machine).

Checks: the cached lower states give exactly the feature maps of a fresh pass (both CNNs); the fine-tune learns (its
held-out mAP above an untrained model's on the same images) and reports itself next to the frozen detector and the
scratch baseline on the same held-out images; the warning fires when it does not beat the frozen detector; the blob
is safetensors of bounded size and, bound to the backbone again, detects what the trained head did; the map lane
serves a fine-tuned request and a frozen one from one shared pass, each as if alone; the ONNX graph (CNN below the
blocks, the task's blocks, the head) equals the torch path on bare ONNX Runtime."""

from __future__ import annotations

import base64
import copy

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from adapters.boxes import evaluate
from adapters.export import DETECTIONS, PIXEL_VALUES, detection_graph
from adapters.heads.base import to_bytes
from adapters.heads.detection import (
    TUNED_MAX_BYTES,
    CenterNet,
    ExportForm,
    TunedDetectorHead,
    TunedNet,
    decode_grid,
    tuned_maps,
)
from adapters.kinds import KINDS, DetectionTuning, head_from_bytes
from benchmarks.detection_data import scenes
from service import images
from service.backbones.image import TorchImageBackbone, load_network
from service.batching import FromLower, MapBatcher

KIND = KINDS["detection"]
NAMES = ["0", "1", "7"]


@pytest.fixture(scope="module")
def data() -> dict:
    torch.manual_seed(0)
    backbone = TorchImageBackbone("mobilenet_v2", "mobilenet_v2")
    found = scenes(16, seed=3)
    placed = [
        images.placed(
            images.decode(base64.b64decode(s.png_base64()), images.STORED_LIMITS), backbone.preprocessing, 256
        )
        for s in found
    ]
    stored = [KIND.encode_example(s.png_base64(), s.objects) for s in found]
    pixels = [p.pixels for p in placed]
    return {
        "backbone": backbone,
        "placed": placed,
        "stored": stored,
        "maps": backbone.feature_maps(pixels),
        "lower": backbone.feature_states(pixels, 2),
    }


@pytest.fixture(scope="module")
def tuned(data) -> dict:
    backbone = data["backbone"]
    tuning = DetectionTuning(blocks=backbone.top_blocks(2), fine_channels=backbone.fine_channels, max_epochs=2)
    result = KIND.fit_maps(
        None, data["placed"], data["stored"], head="finetune", folds=3, seed=0, steps=40, lower=data["lower"],
        tuning=tuning,
    )
    return {"result": result, "tuning": tuning}


@pytest.mark.parametrize("architecture", ["mobilenet_v2", "efficientnet_lite0"])
def test_the_cached_lower_states_give_the_feature_maps_of_a_fresh_pass(architecture: str) -> None:
    network = load_network(architecture).eval()
    x = torch.randn(2, 3, 256, 256)
    with torch.inference_mode():
        maps = network.maps(x)
        lower = network.lower(x, 2)
        again = tuned_maps(lower, network.top_blocks(2), network.fine_channels)
    assert lower.shape[1] > network.fine_channels and lower.shape[-1] == 16
    assert torch.allclose(maps, again, atol=1e-5)
    with pytest.raises(ValueError, match="k must be between"):
        network.top_blocks(len(network.coarse_blocks()))


def test_the_backbones_cached_states_equal_its_maps(data) -> None:
    backbone = data["backbone"]
    assert data["lower"].shape == (16, 32 + 96, 16, 16)
    assert np.allclose(backbone.maps_from_states(data["lower"], 2), data["maps"], atol=1e-5)


def test_finetune_learns_and_is_reported_beside_the_frozen_head(data, tuned) -> None:
    result, tuning = tuned["result"], tuned["tuning"]
    m = result.metrics
    assert m["head"] == "finetune" and m["evaluation"] == "holdout" and m["selection"] == "pinned"
    assert set(m["heads"]) == {"finetune", "detector", "scratch-detector"}
    assert m["map_50"] == m["heads"]["finetune"]["map_50"]
    ft = m["finetune"]
    assert ft["blocks"] == 2 and ft["held_out"] == 3 and ft["history"][0]["epoch"] == 0
    assert ft["history"][0]["map_50"] == pytest.approx(m["heads"]["detector"]["map_50"], abs=1e-4)  # epoch 0: frozen
    assert (m["heads"]["finetune"]["map_50"] <= m["heads"]["detector"]["map_50"]) == any(
        "did not beat the frozen detector" in w for w in m["warnings"]
    )

    # it learns: the held-out images, scored as the version's metrics were, against an untrained model
    order = np.random.default_rng(0).permutation(16)
    held = np.sort(order[:3])
    truth = KIND.truth(data["placed"], data["stored"], NAMES)
    untrained = TunedNet(copy.deepcopy(tuning.blocks), CenterNet(128, 3, 32, stem=False).eval(), 32)
    found = [KIND.suppressed(f, 100) for f in untrained.detect(data["lower"][held], 0.01)]
    assert evaluate([truth[i] for i in held], found, NAMES)["map_50"] < 0.2
    assert m["heads"]["finetune"]["map_50"] > 0.4


def test_the_blob_is_bounded_safetensors_and_binds_back(data, tuned) -> None:
    head = tuned["result"].head
    blob = to_bytes(head)
    assert len(blob) < TUNED_MAX_BYTES and blob[8:9] == b"{"  # a safetensors header, not a pickle
    restored = head_from_bytes(blob)
    assert isinstance(restored, TunedDetectorHead) and not restored.bound
    with pytest.raises(RuntimeError, match="bound"):
        restored.detect(data["lower"][:1])
    restored.bind(data["backbone"])
    for a, b in zip(head.detect(data["lower"][:4]), restored.detect(data["lower"][:4]), strict=True):
        assert np.allclose(a.boxes, b.boxes, atol=1e-4) and np.array_equal(a.labels, b.labels)
    if tuned["result"].metrics["finetune"]["best_epoch"] > 0:  # the blocks are the task's own, not the backbone's
        frozen = data["backbone"].top_blocks(2).state_dict()
        assert any(not torch.equal(v, frozen[k]) for k, v in head.bound_blocks.state_dict().items())


def test_the_warning_fires_when_finetuning_does_not_beat_the_frozen_head(data) -> None:
    backbone = data["backbone"]
    tuning = DetectionTuning(blocks=backbone.top_blocks(2), fine_channels=backbone.fine_channels, max_epochs=0)
    m = KIND.fit_maps(
        None, data["placed"], data["stored"], head="finetune", folds=3, seed=1, steps=10, lower=data["lower"],
        tuning=tuning,
    ).metrics
    assert m["finetune"]["best_epoch"] == 0 and not m["finetune"]["refitted"]
    assert any("Fine-tuning did not beat the frozen detector" in w and "changed nothing" in w for w in m["warnings"])


def test_the_map_lane_serves_tuned_and_frozen_requests_from_one_pass(data) -> None:
    backbone, placed, lower, maps = data["backbone"], data["placed"], data["lower"], data["maps"]
    lane = MapBatcher(backbone, max_batch=64, max_delay_s=0.05)
    try:
        got_states = lane.submit_maps(placed[:3], apply=FromLower(lambda _, s: list(s), 2), tenant="a")
        got_maps = lane.submit_maps(placed[3:6], apply=lambda _, m: list(m), tenant="b")
        states, plain = np.stack(got_states.result()), np.stack(got_maps.result())
        assert np.allclose(states, lower[:3], atol=1e-5) and np.allclose(plain, maps[3:6], atol=1e-5)
        assert np.allclose(lane.states_sync(placed[:2], 2), lower[:2], atol=1e-5)
    finally:
        lane.close()


def test_the_tuned_onnx_graph_equals_the_torch_path_on_bare_onnx_runtime(data, tuned) -> None:
    backbone, head = data["backbone"], tuned["result"].head
    network = backbone.detection_network()
    model = detection_graph(head, network, 256)
    onnx.checker.check_model(model)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    values = backbone.preprocessing.pixel_values([p.pixels for p in data["placed"][:4]])
    got = session.run([DETECTIONS], {PIXEL_VALUES: values})[0]
    with torch.no_grad():
        reference = ExportForm(head, network).eval()(torch.from_numpy(values)).numpy()
    assert got.shape == (4, 3 + 4, 16, 16) and np.abs(got - reference).max() <= 1e-4
    served, decoded = head.detect(data["lower"][:4], 0.05), decode_grid(got, 3, 0.05)
    for a, b in zip(served, decoded, strict=True):
        strong, kept = a.scores > 0.1, b.scores > 0.1
        assert strong.sum() == kept.sum()
        rows_a = np.column_stack([a.labels[strong], a.boxes[strong]])
        rows_b = np.column_stack([b.labels[kept], b.boxes[kept]])
        order_a, order_b = np.lexsort(np.round(rows_a, 1).T[::-1]), np.lexsort(np.round(rows_b, 1).T[::-1])
        assert np.allclose(rows_a[order_a], rows_b[order_b], atol=1e-2)
