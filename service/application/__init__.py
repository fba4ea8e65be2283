"""The application layer: Graft's use cases with no HTTP in them — create a task, add examples, ingest a
dataset, predict, export, administer tenants and keys — each a function of the runtime and plain values,
returning store rows or engine results and raising domain errors that carry a ``code`` (:mod:`.errors`;
the HTTP layer's one table maps them to statuses). Below the HTTP layer (service/api/), above the engine
(router, batcher, jobs, pipeline, backbones) and beside the store. Its rules: per-tenant quotas
(:mod:`.quotas`) and what a new task may be (:mod:`.task_rules`).
"""
