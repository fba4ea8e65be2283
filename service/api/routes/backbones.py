"""The backbones this process serves."""

from __future__ import annotations

from fastapi import APIRouter

from graft import schemas as s

from .deps import (
    ERRORS,
    RuntimeDep,
    TenantDep,
)

router = APIRouter(prefix="/v1")


@router.get("/backbones", response_model=s.BackboneList, responses=ERRORS)
def list_backbones(rt: RuntimeDep, _: TenantDep) -> s.BackboneList:
    defaults = {rt.default_backbone(m) for m in ("text", "image", "audio")}
    return s.BackboneList(
        backbones=[
            s.BackboneOut(
                name=bb.name,
                modality=bb.modality,
                dim=bb.dim,
                runtime=bb.runtime,
                revision=bb.revision,
                device=bb.device,
                default=bb.name in defaults,
            )
            for bb in rt.backbones.loaded.values()
        ]
    )
