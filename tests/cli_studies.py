"""The small study the CLI tests run: two arms (plain, AGC) at the smoke scale, two steps."""

from __future__ import annotations


def tiny(seeds: str = "[0]", grid: str = "", steps: int = 2) -> str:
    """The study file's text; ``grid``: a ``grid:`` block's lines, if any."""
    return (f"name: tiny\nbase: presets/smoke.yaml\nfixed: {{train.steps: {steps}}}\n"
            f"arms:\n  plain: {{}}\n  agc: {{agc.clipping: 0.01}}\n{grid}seeds: {seeds}\n")
