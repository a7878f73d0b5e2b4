"""The learning-rate schedule of SimCLR: linear warm-up, then cosine decay to 0.

Computed from the step alone, so that a resumed or re-planned run lands on the same curve; used
by pretraining (``train/``) and fine-tuning (``eval/finetune.py``).
"""

from __future__ import annotations

import math


def learning_rate_at(step: int, *, total_steps: int, warmup_steps: int, peak: float) -> float:
    """Linear warm-up to ``peak`` over ``warmup_steps``, then cosine decay to 0 at the end.

    Args:
        step: The step about to be taken, from 0.
        total_steps: Steps in the whole run.
        warmup_steps: Steps of linear warm-up.
        peak: The learning rate at the end of warm-up.

    Returns:
        The learning rate for this step.
    """
    if warmup_steps > 0 and step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    decay_steps = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    return peak * 0.5 * (1.0 + math.cos(math.pi * progress))
