"""Prompt keys that route each input to a task adapter (the seed's continual Med-VQA method).

Each task ``t`` gets a key ``k_t``; an input's query ``q`` is its pooled frozen-model features (image and
question, ``model.features``), L2-normalised. A key is learned on its task's training queries by pulling
it toward them: Adam on ``mean(1 - cos(q, k_t))``, the surrogate loss of L2P-style prompt keys. At
inference every sample is routed to the task whose key is most similar to its query, among the tasks
trained so far, so a batch of mixed inputs is answered by mixed adapters (routing per sample, not per
batch). Nothing here sees task labels at inference.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True).clamp(min=1e-12)


def learn_key(queries: np.ndarray, steps: int = 200, lr: float = 0.05, seed: int = 0) -> np.ndarray:
    """A key pulled toward a task's training queries (mean cosine distance minimised with Adam)."""
    if len(queries) == 0:
        raise ValueError("a key needs at least one training query of its task")
    q = _unit(torch.as_tensor(np.asarray(queries), dtype=torch.float32))
    generator = torch.Generator().manual_seed(seed)
    key = torch.nn.Parameter(torch.randn(q.shape[1], generator=generator))
    optimizer = torch.optim.Adam([key], lr=lr)
    for _ in range(steps):
        optimizer.zero_grad()
        loss = (1 - q @ _unit(key)).mean()
        loss.backward()
        optimizer.step()
    return _unit(key.detach()).numpy()


@dataclass
class KeyRouter:
    """Keys of the tasks learned so far, in training order, and the routing of queries among them."""

    tasks: list[str] = field(default_factory=list)
    keys: list[np.ndarray] = field(default_factory=list)

    def add(self, task: str, queries: np.ndarray, steps: int = 200, lr: float = 0.05, seed: int = 0) -> None:
        if task in self.tasks:
            raise ValueError(f"task {task!r} already has a key; tasks: {self.tasks}")
        self.tasks.append(task)
        self.keys.append(learn_key(queries, steps, lr, seed))

    def similarities(self, queries: np.ndarray) -> np.ndarray:
        """(n, tasks) cosine similarity of each query to each key."""
        q = np.asarray(queries, dtype=np.float32)
        q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
        return q @ np.stack(self.keys).T

    def route(self, queries: np.ndarray) -> list[str]:
        """The task of each query: the most similar key's."""
        if not self.keys:
            raise ValueError("no task keys yet: add a task before routing")
        return [self.tasks[i] for i in self.similarities(queries).argmax(axis=1)]


def routing_accuracy(routed: Sequence[str], truth: Sequence[str]) -> float:
    """Share of samples routed to their own task's adapter."""
    if len(routed) != len(truth):
        raise ValueError(f"{len(routed)} routes for {len(truth)} samples")
    return float(np.mean([r == t for r, t in zip(routed, truth)])) if truth else float("nan")
