"""The image backbone on ONNX Runtime: fp32 parity with torch, and the CPU default runtime."""

from __future__ import annotations

import numpy as np
import pytest
import skimage.data
from PIL import Image

from service import images
from service.backbones.image import TorchImageBackbone
from service.backbones.onnx_runtime import OrtBackbone
from service.backbones.registry import BUILTIN, Registry
from service.backbones.runtimes import RuntimeConfig
from tests.conftest import load_jsonl, per_label

PHOTOS = ("chelsea", "coffee", "astronaut", "rocket", "camera")  # colour and grayscale


@pytest.fixture(scope="module")
def inputs() -> list[np.ndarray]:
    pre = TorchImageBackbone("mobilenet_v2", "mobilenet_v2").preprocessing
    photos = [pre(Image.fromarray(getattr(skimage.data, name)())) for name in PHOTOS]
    digits = images.from_stored([r["input"] for r in per_label(load_jsonl("digits.test.jsonl"), 1)], pre)
    return photos + list(digits)


def load(runtime: str, cache) -> object:
    return Registry({"mobilenet_v2": BUILTIN["mobilenet_v2"]}, "cpu", runtimes=RuntimeConfig(runtime, cache)).load(
        "mobilenet_v2"
    )


def test_onnx_fp32_matches_torch(tmp_path_factory, inputs) -> None:
    cache = tmp_path_factory.mktemp("onnx")
    torch_bb, ort_bb = load("torch", cache), load("onnx", cache)
    assert isinstance(ort_bb, OrtBackbone) and ort_bb.runtime == "onnx"
    reference = torch_bb.embed(inputs)
    assert np.abs(ort_bb.embed(inputs) - reference).max() <= 1e-4
    for i in (0, 7):  # alone, as in a batch of one
        assert np.abs(ort_bb.embed([inputs[i]])[0] - reference[i]).max() <= 1e-4
    assert ort_bb.revision == torch_bb.revision  # heads stay valid across runtimes of one checkpoint


def test_cpu_default_for_images_is_onnx_fp32(tmp_path_factory) -> None:
    """`auto` picks ORT fp32 for images on CPU: int8 lost too much accuracy (benchmarks/images.py)."""
    backbone = load("auto", tmp_path_factory.mktemp("onnx"))
    assert backbone.runtime == "onnx" and backbone.modality == "image" and backbone.dim == 1280


def test_exported_preprocessing_describes_the_crop() -> None:
    import json

    files = TorchImageBackbone("mobilenet_v2", "mobilenet_v2").preprocessing_files()
    spec = json.loads(files["preprocessing.json"])
    assert (spec["resize"], spec["crop"]) == (256, 224) and len(spec["mean"]) == 3


def test_fused_image_graph_equals_backbone_then_head(tmp_path_factory, inputs) -> None:
    """An image task's export: one graph pixel_values → probabilities, equal to the service's path."""
    import onnx
    import onnxruntime as ort

    from adapters.export import fuse
    from adapters.heads import LinearHead
    from adapters.training import encode_labels

    backbone = load("onnx", tmp_path_factory.mktemp("onnx"))
    train = per_label(load_jsonl("digits.train.jsonl"), 3, seed=3)
    arrays = images.from_stored([r["input"] for r in train], backbone.origin.preprocessing)
    classes, y = encode_labels([r["label"] for r in train])
    head = LinearHead(classes).fit(backbone.embed(list(arrays)), y)
    expected = head.predict_proba(backbone.embed(inputs))

    session = ort.InferenceSession(fuse(onnx.load(str(backbone.model_path)), head).SerializeToString())
    assert [i.name for i in session.get_inputs()] == ["pixel_values"]
    got = np.concatenate([session.run(None, feeds)[0] for _, feeds in backbone.origin.batches(inputs, 4)])
    assert np.abs(got - expected).max() <= 1e-5


def test_fused_image_hybrid_graph_reads_pixel_values_and_pixels(tmp_path_factory) -> None:
    """An image hybrid head: CNN embedding and raw pixels in one graph (pixel_values + pixels → probabilities)."""
    import onnx
    import onnxruntime as ort

    from adapters import raw_inputs
    from adapters.export import fuse
    from adapters.heads import HybridHead, from_bytes, to_bytes
    from adapters.training import encode_labels

    backbone = load("onnx", tmp_path_factory.mktemp("onnx"))
    pre = backbone.origin.preprocessing
    train = per_label(load_jsonl("digits.train.jsonl"), 3, seed=3)
    test = [r["input"] for r in load_jsonl("digits.test.jsonl")[:6]]
    classes, y = encode_labels([r["label"] for r in train])
    raw = [r["input"] for r in train]
    head = HybridHead(classes, modality="image").fit(backbone.embed(list(images.from_stored(raw, pre))), y, raw=raw)
    head = from_bytes(to_bytes(head))
    arrays = list(images.from_stored(test, pre))
    expected = head.predict_proba(backbone.embed(arrays), raw=test)

    session = ort.InferenceSession(fuse(onnx.load(str(backbone.model_path)), head).SerializeToString())
    assert [i.name for i in session.get_inputs()] == ["pixel_values", "pixels"]
    got = np.concatenate(
        [
            session.run(None, {**feeds, "pixels": raw_inputs.pixels([test[i] for i in idx], head.features.size)})[0]
            for idx, feeds in backbone.origin.batches(arrays, 4)
        ]
    )
    assert np.abs(got - expected).max() <= 1e-5 and (got.argmax(1) == expected.argmax(1)).all()
