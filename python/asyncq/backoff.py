"""Retry backoff policies."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Exponential"]


@dataclass(frozen=True)
class Exponential:
    """Exponential backoff with jitter, computed in the Rust core.

    The delay before retry ``n`` (1-based) is ``min(cap, base * 2 ** (n - 1))`` scaled by a
    random factor in ``[1 - jitter, 1]``, so many failing jobs do not retry in lockstep.

    Attributes:
        base: Delay before the first retry, in seconds.
        cap: Longest delay, in seconds.
        jitter: Fraction of the delay that is randomised, 0 (none) to 1.
    """

    base: float = 1.0
    cap: float = 300.0
    jitter: float = 0.5

    def __post_init__(self) -> None:
        if self.base < 0 or self.cap < 0:
            raise ValueError("backoff base and cap must be >= 0")
        if not 0.0 <= self.jitter <= 1.0:
            raise ValueError("backoff jitter must be between 0 and 1")

    def as_tuple(self) -> tuple[float, float, float]:
        """Return ``(base, cap, jitter)`` as the core expects it."""
        return (self.base, self.cap, self.jitter)
