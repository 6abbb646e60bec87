"""Training: ``fit`` over one or more stages, batching, checkpoints and exact resume, several processes."""
