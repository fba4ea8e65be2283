"""Heads register themselves (adapters/heads/base.py ``register``); ``from_bytes`` reads any registered
kind back, with no list of heads to edit and no import cycle to dodge."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from typing import Any, ClassVar

import numpy as np
import pytest

from adapters import heads
from adapters.heads import EMBEDDING, REGISTRY, from_bytes, heads_for, register, to_bytes


class ConstantHead:
    """A head defined outside adapters/heads: registering it is all it takes to store and read it back."""

    kind: ClassVar[str] = "test-constant"
    consumes: ClassVar[frozenset[str]] = frozenset({EMBEDDING})
    exportable: ClassVar[bool] = False

    def __init__(self, labels: list[str], proba: np.ndarray | None = None) -> None:
        self.labels = labels
        self.proba = np.full(len(labels), 1 / len(labels), dtype=np.float32) if proba is None else proba

    def params(self) -> dict[str, Any]:
        return {"note": "constant"}

    def tensors(self) -> dict[str, np.ndarray]:
        return {"proba": self.proba}

    @classmethod
    def restore(cls, labels: list[str], params: dict[str, Any], tensors: dict[str, np.ndarray]) -> ConstantHead:
        assert params == {"note": "constant"}
        return cls(labels, tensors["proba"])


@pytest.fixture
def constant_head() -> Iterator[type[ConstantHead]]:
    register("classification", rank=99)(ConstantHead)
    try:
        yield ConstantHead
    finally:
        del REGISTRY[ConstantHead.kind]


def test_every_head_module_registers_its_head() -> None:
    by_task_kind = {kind: (r.task_kind, r.cls.__name__) for kind, r in REGISTRY.items()}
    assert by_task_kind == {
        "linear": ("classification", "LinearHead"),
        "prototype": ("classification", "PrototypeHead"),
        "baseline": ("classification", "BaselineHead"),
        "hybrid": ("classification", "HybridHead"),
        "finetune": ("classification", "FinetuneHead"),
        "multilabel": ("multilabel", "MultiLabelHead"),
        "ridge": ("regression", "RidgeHead"),
        "speaker": ("speakers", "SpeakerHead"),
        "detector": ("detection", "DetectorHead"),
        "scratch-detector": ("detection", "ScratchDetectorHead"),
        "finetune-detector": ("detection", "TunedDetectorHead"),
    }
    assert list(heads.HEADS) == ["linear", "prototype", "baseline", "hybrid", "finetune"]  # rank order
    assert heads.KIND_HEADS == {
        "multilabel": heads.MultiLabelHead, "regression": heads.RidgeHead, "speakers": heads.SpeakerHead
    }
    assert list(heads_for("regression")) == ["ridge"] and heads_for("audio-captions") == {}


def test_a_registered_head_round_trips_without_editing_the_package(constant_head: type[ConstantHead]) -> None:
    head = constant_head(["a", "b", "c"], np.array([0.2, 0.3, 0.5], dtype=np.float32))
    restored = from_bytes(to_bytes(head, backbone="minilm"))
    assert type(restored) is constant_head and restored.labels == ["a", "b", "c"]
    assert np.array_equal(restored.proba, head.proba) and restored.backbone == "minilm"
    assert list(heads_for("classification"))[-1] == "test-constant"


def test_unregistered_kinds_and_duplicate_kinds_are_refused(constant_head: type[ConstantHead]) -> None:
    blob = to_bytes(constant_head(["a", "b"]))
    del REGISTRY[constant_head.kind]
    with pytest.raises(heads.HeadFormatError, match="unknown head kind 'test-constant'"):
        from_bytes(blob)
    register()(constant_head)  # registering the same class again is harmless

    class Impostor(ConstantHead):
        kind: ClassVar[str] = "linear"

    with pytest.raises(ValueError, match="'linear' is already registered by LinearHead"):
        register()(Impostor)
    assert REGISTRY["linear"].cls is heads.LinearHead


@pytest.mark.parametrize("first", ["adapters.heads.base", "adapters.heads.finetune", "adapters.training"])
def test_any_entry_point_fills_the_registry(first: str) -> None:
    """Importing any part of the core first (a fresh interpreter) gives the full registry: the package
    imports every head module, and finetune no longer imports the fitting code (the old cycle)."""
    code = f"import {first}; from adapters.heads.base import REGISTRY; print(sorted(REGISTRY))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True).stdout
    assert out.strip() == str(
        sorted(
            ["baseline", "finetune", "hybrid", "linear", "multilabel", "prototype", "ridge", "speaker"]
            + ["detector", "scratch-detector", "finetune-detector"]
        )
    )
