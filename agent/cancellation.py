"""Cancellation that Python 3.11's asyncio may lose.

On 3.11 a cancel that lands just as awaited work completes can be dropped (its ``wait_for``,
also inside aiomqtt's publish, or a session that swallows one): the awaiting task resumes
normally with ``cancelling()`` still set and would wait forever on its next queue or event.
Long-running loops call ``reraise_lost_cancel()`` after such awaits to honour it.
"""

from __future__ import annotations

import asyncio


def being_cancelled() -> bool:
    """Whether the current task has a cancel pending (delivered or lost)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def reraise_lost_cancel() -> None:
    if being_cancelled():
        raise asyncio.CancelledError
