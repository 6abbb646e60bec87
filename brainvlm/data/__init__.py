"""Data: phenotype tables and cohorts, synthetic defaults, splits, sample builders, adapters from other formats,
the canonical schema and its validator, volumes, views and their cache. Imports nothing of model, train or eval."""
