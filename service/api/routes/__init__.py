"""HTTP routes under /v1, one module per resource."""

from fastapi import APIRouter

from . import backbones, datasets, export, feedback, generate, jobs, predict, suggest, tasks, tenants, versions

router = APIRouter()
for module in (tenants, tasks, datasets, jobs, predict, generate, suggest, feedback, backbones, export, versions):
    router.include_router(module.router)

# Every API route, flat (the auth gate and the body limit match requests against them before the app runs)
ROUTES = [
    route
    for module in (tenants, tasks, datasets, jobs, predict, generate, suggest, feedback, backbones, export, versions)
    for route in module.router.routes
]
