"""HTTP routes under /v1, one module per resource."""

from fastapi import APIRouter

from . import backbones, datasets, export, jobs, predict, tasks, tenants, versions

router = APIRouter()
for module in (tenants, tasks, datasets, jobs, predict, backbones, export, versions):
    router.include_router(module.router)
