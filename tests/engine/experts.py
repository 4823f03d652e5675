"""Which MoE expert ran at which timestep: forward hooks on both experts, for tests of the expert boundary."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def experts_called(pipe) -> Iterator[list[tuple[str, float]]]:
    """Yields a list that fills with ("high" | "low", timestep) for every expert forward while the block runs."""
    calls: list[tuple[str, float]] = []
    hooks = [
        module.register_forward_pre_hook(lambda m, a, name=name: calls.append((name, float(pipe.current_timestep))))
        for name, module in (("high", pipe.transformer), ("low", pipe.transformer_2))
    ]
    try:
        yield calls
    finally:
        for hook in hooks:
            hook.remove()
