"""Sides of a paper comparison and the scale mapping, read from the params runs record."""

import pandas as pd
import pytest

from analysis import roles


def test_norm_kind_reads_model_norm_and_falls_back_on_the_registered_name():
    frame = pd.DataFrame({roles.MODEL: ["nf_resnet_small", "nf_resnet_small", "bn_resnet50", "nf_resnet_small_nows",
                                        "nfnet_f0"],
                          roles.NORM: ["bn", "nf_plain", None, None, float("nan")]})
    assert roles.norm_kind(frame).tolist() == ["bn", "nf_plain", "bn", "nf_plain", "nf"]
    assert roles.model_family(frame).tolist() == [roles.BN, roles.NF, roles.BN, roles.NF, roles.NF]
    assert roles.norm_kind(frame.drop(columns=roles.NORM)).tolist() == ["nf", "nf", "bn", "nf_plain", "nf"]


def test_agc_family_splits_nf_by_clipping_and_keeps_bn_whole():
    frame = pd.DataFrame({roles.MODEL: ["m"] * 4, roles.NORM: ["bn", "bn", "nf", "nf"],
                          roles.CLIPPING: [None, 0.01, None, 0.01]})
    assert roles.agc_family(frame).tolist() == [roles.BN, roles.BN, roles.NF, roles.NF_AGC]


def test_classifier_clipping_is_an_empty_exclude_list():
    frame = pd.DataFrame({roles.AGC_EXCLUDE: [[], ["classifier.weight"], None]})
    assert roles.classifier_clipping(frame).tolist() == [roles.CLIPPED, roles.NOT_CLIPPED, roles.NOT_CLIPPED]


@pytest.mark.parametrize("batch, cap, real", [(4096, 128, 128), (64, 128, 64), (256, None, 256)])
def test_real_batch_is_the_paper_batch_capped(batch, cap, real):
    assert roles.real_batch(batch, cap) == real


def test_peak_lr_is_lr_per_256_images_times_the_paper_batch():
    assert roles.peak_lr(0.1, 4096) == pytest.approx(1.6)
    assert roles.peak_lr(0.1, 128) == pytest.approx(0.05)


def test_mapping_caption_says_what_ran():
    frame = pd.DataFrame({roles.BATCH: [256, 4096, 4096], roles.DEVICE_BATCH: [128, 128, 128],
                          roles.LR: [0.1, 0.1, 0.1], roles.STEPS: [300, 300, 300]})
    assert roles.mapping_caption(frame) == "paper batch → real batch 256 → 128, 4096 → 128; peak lr 0.1, 1.6; 300 steps"
    unmapped = pd.DataFrame({roles.BATCH: [128], roles.DEVICE_BATCH: [None], roles.STEPS: [None]})
    assert roles.mapping_caption(unmapped) is None


def test_best_option_selects_on_the_mean_per_group():
    frame = pd.DataFrame({roles.BATCH: [256] * 4 + [4096] * 4, roles.CLIPPING: [0.01, 0.01, 0.16, 0.16] * 2,
                          "val/top1": [0.8, 0.9, 0.95, 0.97, 0.96, 0.94, 0.1, 0.2]})
    best = roles.best_option(frame, roles.CLIPPING, "val/top1", by=[roles.BATCH])
    chosen = best.groupby(roles.BATCH)[roles.CLIPPING].first().to_dict()
    assert chosen == {256: 0.16, 4096: 0.01}
    assert best["selected_mean"].tolist() == pytest.approx([0.96, 0.96, 0.95, 0.95])
