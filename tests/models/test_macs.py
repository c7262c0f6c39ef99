"""count_macs (study/models/macs.py) against hand counts and the paper's FLOPs."""

import pytest
import torch
from torch import nn

from study.models import count_macs

# Brock et al. 2021 (arXiv 2102.06171): MACs ("FLOPs") at the test resolution.
PAPER_MACS = {0: (256, 12.38e9), 1: (320, 35.54e9), 2: (352, 62.59e9), 3: (416, 114.76e9),
              4: (512, 215.24e9), 5: (544, 289.76e9), 6: (576, 377.28e9)}


def test_hand_counted_network():
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1),  # 8×4×4 outputs, 3·9 each
        nn.Conv2d(8, 8, 3, padding=1, groups=2),  # 8×4×4 outputs, 4·9 each
        nn.Flatten(),
        nn.Linear(8 * 4 * 4, 10),
    )
    before = [p.clone() for p in model.parameters()]
    expected = 8 * 16 * 27 + 8 * 16 * 36 + 128 * 10
    assert count_macs(model, 8) == expected
    assert count_macs(model, (8, 8), in_chans=3) == expected
    assert model.training and all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


@pytest.mark.parametrize("n", range(7))
def test_nfnet_macs_match_the_paper(n, meta_model):
    size, paper = PAPER_MACS[n]
    assert count_macs(meta_model(f"nfnet_f{n}"), size) == pytest.approx(paper, rel=0.005)
