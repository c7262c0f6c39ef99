"""Seeds derived from a run seed and a position in training (epoch, step, image).

Every random draw of the input pipeline comes from a seed derived here, never from a
generator that lives across steps, so an epoch replays exactly after a checkpoint and every
DDP rank derives the same draws for the same global batch whatever slice it loads.
"""

from __future__ import annotations

import numpy as np


def derive_seed(*keys: int) -> int:
    """A 32-bit seed that mixes ``keys`` (e.g. ``(seed, epoch, step)``).

    NumPy's ``SeedSequence`` hashes the keys, so ``(s, e + 1)`` does not replay ``(s + 1, e)``;
    32 bits because torch's CPU generator (mt19937) ignores the upper half of a seed.

    Example:
        >>> torch.Generator().manual_seed(derive_seed(seed, epoch))
    """
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(1)[0])
