"""The paper's results, one entry each: what the paper reports, the claims we judge on our
runs, the figure that redraws it, what it needs besides the runs, and what it recommends
for a search.

Keyed by a study's ``paper:`` key. :mod:`analysis.report` loops over an entry: it judges
each :class:`Claim` with its rule (:mod:`analysis.rules`) on the frame the claim names,
draws each :class:`PaperFigure` whose columns are there, and prints the paper's numbers
beside ours. Data a result needs besides its runs is declared in ``needs`` (e.g.
:class:`SignalPropagation`, which only the framework can compute: analysis never builds
models); the caller passes it as ``inputs``. :mod:`analysis.search_report` puts a search's
best values beside the entry's :class:`SearchRecommendation`.

The paper is Brock, De, Smith, Simonyan 2021, "High-Performance Large-Scale Image
Recognition Without Normalization" (arXiv 2102.06171); [I] is its predecessor, Brock, De,
Smith 2021, "Characterizing signal propagation to close the performance gap in unnormalized
ResNets" (arXiv 2101.08692).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, ClassVar, NamedTuple

import pandas as pd
from matplotlib.figure import Figure

from analysis import figures, roles, rules
from analysis.rules import INCONCLUSIVE, RuleContext, Verdict
from study.errors import ConfigError

RUNS = "runs"
"""The data most claims and figures read: the study's result runs (:func:`analysis.runs.results`)."""


class ReferenceModel(NamedTuple):
    """A model measured beside the study's own: ``model.name`` and ``model.norm`` as in a
    config, and the white-noise input it gets."""

    name: str
    norm: str | None
    channels: int
    pixels: int


@dataclass(frozen=True)
class SignalPropagation:
    """[I] Fig. 1's statistics at initialisation, which the caller computes (``nfstudy report``
    does, with ``study.models.signal_propagation``): one forward pass of white noise
    (``batch`` × channels × pixels²) through each model of the study and each of ``models``,
    freshly built with seed 0 and, for NF models, SkipInit off so the α-scaled growth shows.

    The rows: ``model`` (the registered name), ``norm`` (its ``model.norm``, None when the
    config named the model directly), ``block``, ``stage``, ``avg_channel_squared_mean``,
    ``avg_channel_variance``, ``residual_variance``.
    """

    name: ClassVar[str] = "signal-propagation"
    models: tuple[ReferenceModel, ...] = ()
    batch: int = 64


@dataclass(frozen=True)
class Claim:
    """One claim of the paper and the rule that judges it on the frame ``data`` names."""

    id: str
    statement: str
    paper_numbers: str | None
    rule_text: str
    rule: Callable[[pd.DataFrame, RuleContext], Verdict]
    data: str = RUNS
    about_the_floor: bool = False
    """The claim is about AGC's ε floor itself, so floor-bound runs are its evidence, not
    left out (:func:`analysis.rules.judge_runs`)."""

    def judge(self, frame: pd.DataFrame | None, context: RuleContext) -> Verdict:
        """Apply the rule to the claim's data: result runs or another input of the result
        (None when the caller gave none)."""
        if frame is None:
            return Verdict(INCONCLUSIVE, reason=f"no {self.data} data given")
        if frame.empty:
            return Verdict(INCONCLUSIVE, reason="no results yet")
        if self.data != RUNS or self.about_the_floor:
            return self.rule(frame, context)
        return rules.judge_runs(self.rule, frame, context)


@dataclass(frozen=True)
class PaperFigure:
    """A figure of the paper redrawn from our data, saved as ``file``.png/.svg when the
    frame ``data`` names has every column in ``columns``."""

    file: str
    columns: tuple[str, ...]
    draw: Callable[[pd.DataFrame, RuleContext], Figure]
    data: str = RUNS
    caption: str | None = None
    """None: the paper result's title."""


@dataclass(frozen=True)
class SearchRecommendation:
    """What the paper recommends for a config key a search may vary, by paper batch size."""

    key: str
    symbol: str
    value: float
    batches: tuple[int, int]
    """The paper batch sizes the recommendation is for (inclusive)."""
    grid: tuple[float, ...]
    """The values the paper tried."""
    studied_batches: tuple[int, int]
    finding: str
    setting: str
    source: str

    def text(self) -> str:
        """E.g. ``λ = 0.01 for batch 1024–4096``."""
        return f"{self.symbol} = {self.value:g} for batch {self.batches[0]}–{self.batches[1]}"

    def at(self, batch) -> str:
        """What the paper recommends at a paper batch size (``-`` when the batch is unknown)."""
        if batch is None:
            return "-"
        if self.batches[0] <= batch <= self.batches[1]:
            return f"{self.value:g}"
        if batch < self.batches[0]:
            return f"larger than {self.value:g} (grid up to {max(self.grid):g}; {self.finding})"
        return f"at most {self.value:g} (beyond the paper's batches)"

    def summary(self) -> str:
        """The recommendation as a report's paragraph opens it."""
        grid = ", ".join(f"{v:g}" for v in self.grid)
        low, high = self.studied_batches
        return (f"{self.source}: the paper's {self.symbol} grid {{{grid}}} at batch {low}–{high} ({self.setting}) "
                f"finds that {self.finding} and recommends {self.text()}.")


@dataclass(frozen=True)
class PaperResult:
    """A figure or table of the paper: what it is, its numbers, its claims, its figures,
    what it needs besides the runs, and its recommendation for a search."""

    key: str
    title: str
    source: str
    numbers: tuple[tuple[str, str], ...]
    claims: tuple[Claim, ...]
    figures: tuple[PaperFigure, ...] = ()
    needs: tuple[SignalPropagation, ...] = ()
    search: SearchRecommendation | None = None

    def __post_init__(self):
        known = {RUNS, *(need.name for need in self.needs)}
        unknown = {item.data for item in (*self.claims, *self.figures)} - known
        if unknown:  # a table entry that reads data nobody is asked to compute
            raise ValueError(f"paper result {self.key!r}: {sorted(unknown)} not in its needs")


# -- the entries ------------------------------------------------------------------------------

BEST_LAMBDA = SearchRecommendation(
    key=roles.CLIPPING, symbol="λ", value=0.01, batches=(1024, 4096), grid=(0.01, 0.02, 0.04, 0.08, 0.16),
    studied_batches=(256, 4096), finding="larger batches need smaller λ",
    setting="NF-ResNet-50/-200, ImageNet, 90 epochs", source="Brock et al. 2021, §4.1 and Fig. 2b")
"""The paper's recommended clipping threshold (§4.1, Fig. 2b)."""

SPP = SignalPropagation(models=(ReferenceModel("nf_resnet50", roles.NF_NORM, 3, 64),
                                ReferenceModel("nf_resnet50", roles.BN_NORM, 3, 64)))
"""[I] Fig. 1 for the study's models and the ImageNet-scale NF-ResNet-50 and its BN twin."""
_SPP_COLUMNS = (roles.SPP_MODEL, "block", "stage", "avg_channel_squared_mean", "avg_channel_variance",
                "residual_variance")
_SPP_TITLE = "[I] Fig. 1: signal propagation at initialisation"
_SPP_FIGURE = PaperFigure("signal-propagation", _SPP_COLUMNS, lambda frame, context: figures.signal_propagation(frame),
                          data=SPP.name, caption=_SPP_TITLE)
_SPP_CLAIMS = (
    Claim("spp-bn-resets", "In a BN-ResNet the variance grows within a stage and resets at "
          "each transition.", None,
          "Supported if the average channel variance never falls from block to block within "
          "a stage and drops at every transition; not supported if it falls in every stage "
          "or never drops at a transition; otherwise inconclusive.", rules.spp_bn_resets, data=SPP.name),
    Claim("spp-nf-no-mean-shift", "Scaled WS removes the mean shift: the average channel "
          "squared mean stays small in NF-ResNets.", None,
          "Supported if, at every NF block, the average squared channel mean is below 10% of "
          "the average channel variance; not supported if it exceeds the variance somewhere; "
          "otherwise inconclusive.", rules.spp_nf_no_mean_shift, data=SPP.name),
)

_TWO_SIDED_TEXT = ("supported if the paired 95% CI of Δ({a} − {b}) on test/top1 lies above 0; "
                   "not supported if it lies below 0; otherwise inconclusive.")
_NO_WORSE_TEXT = ("supported if the paired 95% CI of Δ({a} − {b}) on test/top1 lies above −1 point "
                  "(within 1 point or better); not supported if it lies below −1 point; "
                  "otherwise inconclusive.")

REFERENCES: dict[str, PaperResult] = {
    "fig2b": PaperResult(
        "fig2b", "Fig. 2b: top-1 against the clipping threshold λ, one curve per batch size",
        "Brock et al. 2021, §4 and Fig. 2b (NF-ResNet-50, ImageNet, 90 epochs)",
        (("λ grid", ", ".join(f"{v:g}" for v in BEST_LAMBDA.grid)), ("batch sizes", "256 … 4096"),
         ("best λ", f"{BEST_LAMBDA.text()}; larger λ only at small batch")),
        (
            Claim("fig2b-large-lambda", "At large batch sizes a large λ destabilises training: the "
                  "largest λ diverges or loses clearly against the best λ.",
                  "Fig. 2b (plot only): λ = 0.16 collapses at batch 4096",
                  "At the largest batch size: supported if at least half of the largest λ's runs "
                  "diverged, or the paired 95% CI of Δ(largest λ − best λ) on test/top1 lies below 0 "
                  "with a mean loss of at least 5 points (best λ selected on val/top1); not supported "
                  "if no run diverged and the CI lies above −5 points; otherwise inconclusive.",
                  rules.fig2b_large_lambda),
            Claim("fig2b-best-lambda-falls", "Larger batches need a smaller clipping threshold.",
                  f"λ = {BEST_LAMBDA.value:g} is best for batch {BEST_LAMBDA.batches[0]}–{BEST_LAMBDA.batches[1]}",
                  "Supported if the best λ (highest mean val/top1 over seeds) never rises as batch "
                  "size grows and is smaller at the largest batch than at the smallest; not "
                  "supported if it is larger at the largest batch; otherwise inconclusive.",
                  rules.fig2b_best_lambda_falls),
        ),
        figures=(PaperFigure("paper-fig2b", (roles.CLIPPING, roles.BATCH, roles.TEST_METRIC),
                             lambda frame, context: figures.fig2b_clip_threshold(frame)),),
        search=BEST_LAMBDA,
    ),
    "clip-budget": PaperResult(
        "clip-budget", "Fig. 2b at paper batch 256 against the step budget: AGC's ε floor",
        "Brock et al. 2021, §4 and Fig. 2b (NF-ResNet-50, ImageNet, 90 epochs ≈ 10⁵ steps); ε = 10⁻³ as in "
        "the official nfnets/agc_optax.py",
        (("λ at batch 256", "every λ of 0.01 … 0.16 trains (Fig. 2b: the curves differ only at large batch)"),
         ("budget", "90 epochs: the gains leave the ε floor within a few hundred of ~10⁵ steps")),
        (
            Claim("small-lambda-penalty-shrinks", "The small-λ penalty of a short budget is AGC's ε floor, not "
                  "the clipping the paper studies: it shrinks as the step budget grows.",
                  "none at batch 256 (Fig. 2b)",
                  "At the largest step budget: supported if the paired 95% CI of Δ(smallest λ − largest λ) "
                  "on test/top1 lies above −1 point (the penalty is gone) while at the smallest budget it lies "
                  "below −1 point (there was one); not supported if at the largest budget it still lies below "
                  "−1 point; otherwise inconclusive. The report gives Δ at every budget, the first budget "
                  "without a penalty and the small λ's reachable SkipInit gain at each; floor-bound runs count "
                  "here, they are what the claim is about.",
                  rules.budget_penalty_shrinks, about_the_floor=True),
        ),
        figures=(PaperFigure("paper-clip-budget", (roles.CLIPPING, roles.STEPS, roles.TEST_METRIC),
                             lambda frame, context: figures.clip_budget(frame)),),
    ),
    "fig2a": PaperResult(
        "fig2a", "Fig. 2a: top-1 against batch size for BN-ResNet, NF-ResNet and NF-ResNet + AGC",
        "Brock et al. 2021, §4 and Fig. 2a (ResNet-50 family, ImageNet, 90 epochs)",
        (("batch sizes", "256 … 4096"), ("AGC", "best λ per batch size")),
        (
            Claim("fig2a-nf-degrades", "Without clipping, NF-ResNets lose accuracy against BN at "
                  "large batch sizes.", "Fig. 2a (plot only)",
                  "At the largest batch size with both: supported if the paired 95% CI of Δ(NF − BN) "
                  "on test/top1 lies below 0; not supported if it lies above −1 point; otherwise "
                  "inconclusive.", rules.fig2a_nf_degrades),
            Claim("fig2a-agc-recovers", "With AGC (best λ per batch size) NF-ResNets match BN at every "
                  "batch size.", "Fig. 2a (plot only): NF+AGC tracks BN up to batch 4096",
                  "The best λ per batch size is selected on val/top1 and reported on test/top1 (the "
                  "held-out split, so the selection does not inflate it). Supported if at every batch "
                  "size the paired 95% CI of Δ(NF+AGC − BN) lies above −1 point, at two batch sizes or more; "
                  "not supported if at some batch size it lies below −1 point; otherwise inconclusive (one "
                  "batch size cannot show 'every').",
                  rules.fig2a_agc_recovers),
        ),
        figures=(PaperFigure("paper-fig2a", (roles.MODEL, roles.BATCH, roles.TEST_METRIC),
                             lambda frame, context: figures.fig2a_batch_scaling(
                                 frame, select_metric=context.select_metric)),),
    ),
    "unit-vs-layer": PaperResult(
        "unit-vs-layer", "§4: unit-wise against layer-wise AGC",
        "Brock et al. 2021, §4 (statement, no table)", (("paper numbers", "none given"),),
        (Claim("unit-beats-layer", "Unit-wise clipping works better than layer-wise clipping.", None,
               _TWO_SIDED_TEXT.format(a="unit", b="layer"), rules.unit_beats_layer),),
        figures=(PaperFigure("paper-unit-vs-layer", (roles.AGC_MODE, roles.TEST_METRIC),
                             lambda frame, context: figures.unit_vs_layer(
                                 frame, hue=roles.BATCH if roles.BATCH in context.grid_keys else None)),),
    ),
    "clip-final-layer": PaperResult(
        "clip-final-layer", "§4.1: clipping the final linear layer",
        "Brock et al. 2021, §4.1 (ablation, batch 4096, lr 1.6)",
        (("paper finding", "never clipping the classifier is always better; all four stages must "
          "be clipped"),),
        (Claim("do-not-clip-classifier", "Not clipping the final linear layer is better than clipping it.",
               "qualitative: 'always better'",
               _TWO_SIDED_TEXT.format(a="classifier not clipped", b="classifier clipped")
               + " A run clips the classifier when its agc.exclude is an empty list.",
               rules.do_not_clip_classifier),),
        figures=(PaperFigure("paper-clip-final-layer", (roles.AGC_EXCLUDE, roles.TEST_METRIC),
                             lambda frame, context: figures.final_layer(frame)),),
    ),
    "table6": PaperResult(
        "table6", "Table 6 / §6.1: NF-ResNets against their BatchNorm twins",
        "Brock et al. 2021, Table 6 (ImageNet top-1; step time on TPUv3)",
        (("top-1 NF F0…F3", "83.6, 84.7, 85.1, 85.7 %"), ("top-1 BN twin F0…F3", "83.4, 84.4, 85.1, 85.5 %"),
         ("step ms NF F0…F3", "73.3, 158.5, 295.8, 532.2"), ("step ms BN F0…F3", "111.7, 258.0, 396.3, 617.7"),
         ("BN / NF step time", "1.52×, 1.63×, 1.34×, 1.16× (20–40% slower is the paper's summary)")),
        (
            Claim("nf-matches-bn", "NFNets match or beat their BN twins in accuracy.",
                  "F0…F3: NF − BN = +0.2, +0.3, 0.0, +0.2 points",
                  _NO_WORSE_TEXT.format(a="NF", b="BN"), rules.nf_matches_bn),
            Claim("bn-slower", "The BN twin is slower per training step.", "BN 20–40% slower per step",
                  "Supported if the paired 95% CI of Δ(BN − NF) of time/step_ms lies above 0; not "
                  "supported if it lies below 0; otherwise inconclusive. CPU timings of tiny models "
                  "say little about accelerators.", rules.bn_slower),
            *_SPP_CLAIMS,
        ),
        figures=(PaperFigure("paper-table6", (roles.MODEL, roles.STEP_MS, roles.TEST_METRIC),
                             lambda frame, context: figures.bn_vs_nf(frame)), _SPP_FIGURE),
        needs=(SPP,),
    ),
    "table3-sam": PaperResult(
        "table3-sam", "Table 3 / App. A.4: SAM with the ascent on 20% of the batch",
        "Brock et al. 2021, Table 3 and App. A.4",
        (("top-1 F0…F5", "83.6, 84.7, 85.1, 85.7, 85.9, 86.0 %"), ("top-1 with SAM", "F5 86.3 %, F6 86.5 %"),
         ("F5 step time", "1398.5 ms → 1958.0 ms with 20%-SAM (1.40×); full SAM ≈ 2×")),
        (
            Claim("sam-fraction-accuracy", "The ascent on 20% of the batch keeps SAM's accuracy.",
                  "same accuracy as full SAM (statement)", _NO_WORSE_TEXT.format(a="fraction", b="full"),
                  rules.sam_fraction_accuracy),
            Claim("sam-fraction-cost", "The 20% ascent is cheaper than full SAM (+20–40% instead of ≈2×).",
                  "F5: 1.40× the step time of no SAM",
                  "Supported if the paired 95% CI of Δ(full − fraction) of time/step_ms lies above 0; "
                  "not supported if it lies below 0; otherwise inconclusive.", rules.sam_fraction_cost),
        ),
        figures=(PaperFigure("paper-table3-sam", (roles.SAM_MODE, roles.STEP_MS, roles.TEST_METRIC),
                             lambda frame, context: figures.sam_cost(frame)),),
    ),
    "spp": PaperResult(
        "spp", _SPP_TITLE, "Brock, De, Smith 2021 ([I]), Fig. 1", (("paper numbers", "plots only"),),
        _SPP_CLAIMS, figures=(_SPP_FIGURE,), needs=(SPP,),
    ),
}


def reference(paper_key: str) -> PaperResult:
    """The paper result a study's ``paper:`` key names.

    Raises:
        ConfigError: the key is unknown (the message lists the known keys).
    """
    if paper_key not in REFERENCES:
        raise ConfigError(f"paper: got {paper_key!r}; allowed: {', '.join(REFERENCES)}")
    return REFERENCES[paper_key]


def search_recommendation(paper_key: str | None, searched: list[str]) -> SearchRecommendation | None:
    """What the paper recommends for a search: the recommendation of the study's own paper
    result, else of the first paper result that recommends a value for a searched key."""
    candidates = [reference(paper_key)] if paper_key else list(REFERENCES.values())
    return next((r.search for r in candidates if r.search is not None and r.search.key in searched), None)
