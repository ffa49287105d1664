"""Input rate limiting: audio may arrive at most a little faster than real time."""

import time


class TokenBucket:
    """Bytes allowed per second with a burst allowance; `take` says whether a frame fits."""

    def __init__(self, rate: float, burst_s: float = 1.0) -> None:
        self.rate = rate
        self.capacity = rate * burst_s
        self._tokens = self.capacity
        self._at = time.monotonic()

    def take(self, amount: int) -> bool:
        """Spend `amount` tokens if available."""
        now = time.monotonic()
        self._tokens = min(self.capacity, self._tokens + (now - self._at) * self.rate)
        self._at = now
        if amount > self._tokens:
            return False
        self._tokens -= amount
        return True
