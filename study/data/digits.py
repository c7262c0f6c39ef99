"""The embedded default data set: scikit-learn's ``load_digits`` (1,797 8×8 grey digits).

Held on the training device as uint8; upsampled on the device (the digits preset trains at 16×16).
The train/val/test split is fixed and stratified, independent of the run seed, so every
arm and seed of a study sees the same images: 1,400 train, 197 val, 200 test.
"""

from __future__ import annotations

import torch

NUM_CLASSES = 10
SPLIT_SEED = 0
NUM_VAL, NUM_TEST = 197, 200


def load_digits_tensors(device: torch.device) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """``{"train"|"val"|"test": (images uint8 (N, 1, 8, 8), labels int64 (N,))}`` on ``device``."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = torch.from_numpy((digits.images * (255.0 / 16.0)).round()).to(torch.uint8)
    labels = torch.from_numpy(digits.target).long()
    index = torch.arange(len(labels)).numpy()
    rest, test = train_test_split(
        index, test_size=NUM_TEST, stratify=digits.target, random_state=SPLIT_SEED
    )
    train, val = train_test_split(
        rest, test_size=NUM_VAL, stratify=digits.target[rest], random_state=SPLIT_SEED
    )
    return {
        split: (images[idx].unsqueeze(1).to(device), labels[idx].to(device))
        for split, idx in (("train", train), ("val", val), ("test", test))
    }
