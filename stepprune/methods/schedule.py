"""Training-schedule helpers shared by the trainable methods (the trainer sets ``total_steps`` in their config)."""

from __future__ import annotations


def linear_ramp(start: float, end: float, step: int, total_steps: int | None, owner: str) -> float:
    """``start`` -> ``end`` linearly over ``total_steps`` optimizer steps, then ``end``.

    progress = min(step / total_steps, 1), as VisionSelector's trainer computes its regularisation weight
    (``min(global_step / max_steps, 1.0)``).

    Raises:
        ValueError: naming ``owner`` when ``total_steps`` is not set.
    """
    if total_steps is None:
        raise ValueError(f"{owner}: total_steps is not set: the trainer must set it to the number of optimizer "
                         "steps of the run before training (the schedules use it)")
    return start + (end - start) * min(max(step, 0) / total_steps, 1.0)
