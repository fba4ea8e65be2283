"""The engine: what runs models for the use cases above it — heads of stored versions (:mod:`.head_store`)
and the per-pass head step (:mod:`.heads_step`); the backbones, batcher, router, jobs and training
pipeline sit beside it in service/ (docs/architecture.md, "Layers")."""
