"""Ranges on recipe values: `Annotated[int, Range(1)]` on a config field or a factory option makes
`vqt validate` (and every command that reads a recipe) refuse values outside it in one line.

    from typing import Annotated
    from vqtoolkit.ranges import Range

    def my_encoder(in_channels, latent_dim, hidden: Annotated[int, Range(1)] = 64,
                   dropout: Annotated[float, Range(0, 1, high_open=True)] = 0.0): ...
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Range:
    low: float | None = None
    high: float | None = None
    low_open: bool = False  # low < value, not low <= value
    high_open: bool = False  # value < high, not value <= high

    def holds(self, value) -> bool:
        if isinstance(value, float) and math.isnan(value):
            return False
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            return False
        return self.high is None or (value < self.high or (not self.high_open and value == self.high))

    def describe(self) -> str:
        low, high = _show(self.low), _show(self.high)
        if self.low is not None and self.high is not None:
            opening, closing = "(" if self.low_open else "[", ")" if self.high_open else "]"
            return f"in {opening}{low}, {high}{closing}"
        if self.low is not None:
            return f"{'>' if self.low_open else '>='} {low}"
        if self.high is not None:
            return f"{'<' if self.high_open else '<='} {high}"
        return "a number, not NaN"


def _show(bound: float | None) -> str:
    if bound is None:
        return ""
    return str(int(bound)) if float(bound).is_integer() else f"{bound:g}"


POSITIVE = Range(0, low_open=True)
AT_LEAST_ONE = Range(1)
NOT_NEGATIVE = Range(0)
# structural sizes: an absurd count of layers or channels would build (or loop) for ever before the
# memory estimate could refuse it
WIDTH = Range(1, 2**20)  # channels, dimensions, codebook sizes
COUNT = Range(0, 4096)  # blocks, layers, stages
FRACTION = Range(0, 1)
BETA = Range(0, 1, high_open=True)  # Adam's betas and EMA decays: [0, 1)
