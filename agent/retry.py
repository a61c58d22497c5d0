"""The one backoff helper: MQTT reconnects, cast recovery and page/pipeline retries use it."""

from __future__ import annotations

import random


class Backoff:
    """Exponential delays with jitter, so a fleet does not retry in lockstep.

    ``next()`` returns a delay drawn from the upper half of ``min_s * 2**attempt`` (capped at
    ``max_s``); ``reset()`` starts over after a success.
    """

    def __init__(self, min_s: float, max_s: float) -> None:
        self._min_s, self._max_s = min_s, max(max_s, min_s)
        self._attempt = 0

    @property
    def attempts(self) -> int:
        """Delays handed out since the last reset."""
        return self._attempt

    def next(self) -> float:
        ceiling = min(self._max_s, self._min_s * 2**self._attempt)
        self._attempt += 1
        return random.uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        self._attempt = 0
