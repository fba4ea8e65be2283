"""HTTP routes under /v1, one module per resource."""

from fastapi import APIRouter

from . import backbones, jobs, predict, tasks, tenants, versions

router = APIRouter()
for module in (tenants, tasks, jobs, predict, backbones, versions):
    router.include_router(module.router)
