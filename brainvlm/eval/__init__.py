"""Evaluation: batched resumable generation, answer parsing, metrics, bootstrap intervals, scoring, result
tables and figures. Scoring imports no model code: any system's predictions are scored without loading a model."""
