"""HTTP routes under /v1, one module per resource."""

from fastapi import APIRouter

from . import backbones, datasets, export, jobs, predict, tasks, tenants

router = APIRouter()
for module in (tenants, tasks, datasets, jobs, predict, backbones, export):
    router.include_router(module.router)
