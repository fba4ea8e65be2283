"""The application layer: Graft's use cases with no HTTP in them — create a task, add examples, ingest a
dataset, predict, export — each a function of the runtime and plain values, returning store rows or
engine results and raising domain errors that carry a ``code`` (:mod:`.errors`; the HTTP layer's one
table maps them to statuses). Below the HTTP layer (service/api/), above the engine (router, batcher,
jobs, pipeline, backbones) and beside the store. Quotas (service/quotas.py), tenancy
(service/tenancy.py) and the new-task rules (service/task_rules.py) are its rules too.
"""
