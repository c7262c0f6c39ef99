"""The table of paper results: every entry is complete, reads only data it declares, and
carries the paper's recommendation that the search report prints."""

import pandas as pd
import pytest

from analysis import roles
from analysis.reference import (
    BEST_LAMBDA,
    REFERENCES,
    RUNS,
    SPP,
    Claim,
    PaperResult,
    reference,
    search_recommendation,
)
from analysis.rules import RuleContext
from study.errors import ConfigError


@pytest.mark.parametrize("key", sorted(REFERENCES))
def test_every_paper_result_has_judged_claims_and_a_figure(key):
    result = reference(key)
    assert result.key == key and result.claims and result.figures and result.numbers
    for claim in result.claims:
        assert claim.rule_text.lower().startswith(("supported", "at the", "the best")) and "otherwise" in claim.rule_text
        assert claim.data in {RUNS, *(need.name for need in result.needs)}
    assert len({claim.id for claim in result.claims}) == len(result.claims)


def test_the_registered_studies_name_known_paper_results():
    from study.config.study_file import list_studies, load_study

    papers = {load_study(name).paper for name in list_studies()} - {None}
    assert papers and papers <= set(REFERENCES)


def test_unknown_paper_key_is_a_config_error():
    with pytest.raises(ConfigError, match="fig2b"):
        reference("fig9")


def test_an_entry_that_reads_undeclared_data_is_refused():
    claim = Claim("c", "statement", None, "supported if …; otherwise inconclusive.", lambda frame, context: None,
                  data=SPP.name)
    with pytest.raises(ValueError, match="signal-propagation"):
        PaperResult("x", "title", "source", (), (claim,))


def test_table6_needs_signal_propagation_of_the_resnet50_twins():
    result = reference("table6")
    assert result.needs == (SPP,)
    assert {(m.name, m.norm) for m in SPP.models} == {("nf_resnet50", "nf"), ("nf_resnet50", "bn")}
    assert [figure.data for figure in result.figures] == [RUNS, SPP.name]
    assert [c.id for c in result.claims if c.data == SPP.name] == ["spp-bn-resets", "spp-nf-no-mean-shift"]


def test_a_figure_is_drawn_from_the_context_it_is_given():
    frame = pd.DataFrame([{roles.AGC_MODE: mode, roles.BATCH: batch, roles.TEST_METRIC: 0.9, "seed": 0,
                           "outcome": "completed"} for mode in ("unit", "layer") for batch in (256, 4096)])
    figure = reference("unit-vs-layer").figures[0]
    pooled = figure.draw(frame, RuleContext())
    by_batch = figure.draw(frame, RuleContext(grid_keys=(roles.BATCH,)))
    assert pooled.axes[0].get_legend() is None  # one bar per mode, no hue
    assert len(by_batch.axes[0].get_legend().get_texts()) == 2  # one bar group per batch size


@pytest.mark.parametrize("batch, expected", [(1024, "0.01"), (4096, "0.01"), (256, "larger than 0.01"),
                                             (16384, "at most 0.01"), (None, "-")])
def test_the_lambda_recommendation_follows_the_paper(batch, expected):
    assert BEST_LAMBDA.at(batch).startswith(expected)


def test_the_recommendation_text_and_the_fig2b_numbers_come_from_one_place():
    assert BEST_LAMBDA.text() == "λ = 0.01 for batch 1024–4096"
    numbers = dict(reference("fig2b").numbers)
    assert numbers["λ grid"] == "0.01, 0.02, 0.04, 0.08, 0.16"
    assert numbers["best λ"].startswith(BEST_LAMBDA.text())
    assert "{0.01, 0.02, 0.04, 0.08, 0.16} at batch 256–4096" in BEST_LAMBDA.summary()


def test_a_search_finds_the_recommendation_for_its_key():
    assert search_recommendation(None, [roles.CLIPPING]) is BEST_LAMBDA
    assert search_recommendation("fig2b", [roles.CLIPPING, roles.BATCH]) is BEST_LAMBDA
    assert search_recommendation(None, ["optim.lr"]) is None
    assert search_recommendation("table6", [roles.CLIPPING]) is None  # its own paper result recommends nothing

