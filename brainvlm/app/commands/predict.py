"""``brainvlm predict``: resumable generation for a task's split with its trained adapter."""

from __future__ import annotations

import argparse
from pathlib import Path

from brainvlm.app.commands.common import fail

HELP = "generate answers for a task's split with its trained adapter (resumable)"


def parser() -> argparse.ArgumentParser:
    """Arguments of ``brainvlm predict``."""
    out = argparse.ArgumentParser(prog="brainvlm predict",
                                  description="brainvlm predict --run-dir R --task T [--split test]: "
                                              "resumable generation with a trained adapter.")
    out.add_argument("--run-dir", required=True, help="run folder (reports/<run>)")
    out.add_argument("--task", required=True, help="a task of the brain study, e.g. sex")
    out.add_argument("--split", default="test", help="train | val | test")
    out.add_argument("--name", default=None, help="adapter folder under models/ (default: the task)")
    out.add_argument("--out", default=None, help="predictions JSONL (default: predictions/07_<task>_<split>.jsonl)")
    out.add_argument("--limit", type=int, default=None, help="only the first N samples")
    out.add_argument("--batch-size", type=int, default=16)
    out.add_argument("--max-new-tokens", type=int, default=24)
    out.add_argument("--do-sample", action="store_true", help="sample instead of greedy decoding")
    out.add_argument("--temperature", type=float, default=1.0)
    out.add_argument("--top-p", type=float, default=1.0)
    out.add_argument("--seed", type=int, default=0)
    out.add_argument("--restart", action="store_true",
                     help="start over when --out came from another adapter, samples or config (default: error)")
    out.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's choice)")
    out.add_argument("--no-progress", action="store_true")
    return out


def main(argv: list[str]) -> int:
    """``brainvlm predict --run-dir R --task T [--split test]``: resumable generation with a trained adapter."""
    args = parser().parse_args(argv)
    if args.threads > 0:
        import torch

        torch.set_num_threads(args.threads)
    from brainvlm.eval.generate import GenerationConfig
    from brainvlm.studies.brain import predict_task

    config = GenerationConfig(args.batch_size, args.max_new_tokens, args.do_sample, args.temperature,
                              args.top_p, args.seed)
    try:
        table = predict_task(Path(args.run_dir), args.task, args.split, config, args.name,
                             Path(args.out) if args.out else None, args.limit,
                             "restart" if args.restart else "error", progress=not args.no_progress)
    except (KeyError, ValueError, FileNotFoundError) as exc:
        return fail("predict", exc)
    answered = int(table["prediction"].notna().sum())
    print(f"{args.task}/{args.split}: {answered} of {len(table)} samples answered")
    return 0
