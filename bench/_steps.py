"""The timed training step that the bench scripts share: the step `zoo run` takes (loss through
the gradient mode, backward, clipping as the recipe asks, the optimizer), timed one by one."""

from __future__ import annotations

import time

import torch


def timed_steps(model, mode, data, loss_fn, optimizer, clip, steps: int) -> tuple[list[float], torch.Tensor]:
    """Milliseconds of each of ``steps`` training steps on ``data``, and the last loss."""
    times, loss = [], None
    for _ in range(steps):
        started = time.perf_counter()
        loss, _ = mode.loss(model, data, loss_fn)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), float(clip), foreach=True)
        optimizer.step()
        times.append((time.perf_counter() - started) * 1e3)
    return times, loss
