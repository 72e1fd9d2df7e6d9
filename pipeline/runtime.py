"""Process-wide settings for the entry points (the doit tasks and the console script), not for library use."""

from __future__ import annotations

import gc


def tune_gc() -> None:
    """Collect cycles far less often: a build makes hundreds of thousands of short-lived acyclic objects.

    With the default thresholds the cyclic collector rescans the whole, growing heap again and again, and a
    10,000-node cluster took 13x the time of a 1,000-node one instead of 10x (benchmarks/bench_spec.py).
    """
    gc.set_threshold(100_000, 50, 100)
