"""Waiting on c10d store keys by polling check(), with a growing pause.

Store.wait() and a blocking get() hold the store's connection for as long as
they wait; on a connection the group shares (torch 2.3 has no
Store.clone()), that would stall every other user of the store. check()
returns at once, so the waits that share the connection poll instead.
"""
import time

__all__ = ["poll_until"]

_PAUSE_MIN_S = 0.0005
_PAUSE_MAX_S = 0.02


def poll_until(ready, deadline):
    """Calls ready() until it returns true (then True) or time.monotonic()
    passes `deadline` (then False); ready() runs at least once."""
    pause = _PAUSE_MIN_S
    while True:
        if ready():
            return True
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        time.sleep(min(pause, left))
        pause = min(pause * 2, _PAUSE_MAX_S)
