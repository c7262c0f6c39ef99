import json
from types import SimpleNamespace

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from analysis.reference import SPP, reference
from analysis.report import build_index, build_report
from analysis.rules import INCONCLUSIVE
from study.errors import ConfigError

SECTIONS = ["## Study", "## Design", "## Results", "## Figures", "## Paper claims", "## Scale", "## MLflow runs"]


def _unit_vs_layer():
    spec = SimpleNamespace(name="unit-vs-layer", description="Unit-wise against layer-wise AGC", paper="unit-vs-layer",
                           arms={"unit": {"agc.mode": "unit"}, "layer": {"agc.mode": "layer"}}, grid={},
                           seeds=[0, 1, 2], metric="val/top1", baseline="layer", figures=[])
    runs = [{"arm": mode, "params": {"agc.mode": mode, "agc.clipping": 0.04, "model.name": "nf_resnet_small",
                                     "seed": seed},
             "metrics": {"val/top1": accuracy + 0.01 * seed, "test/top1": accuracy + 0.01 * seed}}
            for mode, accuracy in (("unit", 0.95), ("layer", 0.90)) for seed in (0, 1, 2)]
    return spec, runs


@pytest.fixture(scope="module")
def reports(tmp_path_factory, store_filler, clip_threshold_study):
    root = tmp_path_factory.mktemp("reports")
    uri = f"sqlite:///{root}/mlflow.db"
    built = {}
    for spec, runs in (clip_threshold_study, _unit_vs_layer()):
        ids = store_filler(uri, spec.name, runs)
        built[spec.name] = (build_report(spec, uri, root / spec.name, f"nfstudy report {spec.name}"), ids)
    return uri, root, built


def test_report_has_every_section_and_the_rule_text(reports):
    _, _, built = reports
    paths, _ = built["clip-threshold"]
    text = paths["markdown"].read_text()
    for section in SECTIONS:
        assert section in text
    for claim in reference("fig2b").claims:
        assert claim.rule_text in text and claim.statement in text
    assert "nfstudy report clip-threshold" in text
    assert "Student-t" in text and "paper batch → real batch 256 → 128" in text
    assert "| 0.16 | 4096 | 10.0 [7.5, 12.5] % |" in text
    assert [v["verdict"] for v in paths["verdicts"]] == ["supported", "supported"]


def test_report_figures_and_self_contained_html(reports):
    _, _, built = reports
    paths, _ = built["clip-threshold"]
    names = sorted(p.name for p in paths["figures"])
    assert names == ["figure-1.png", "figure-1.svg", "paper-fig2b.png", "paper-fig2b.svg"]
    html = paths["html"].read_text()
    assert html.count('src="data:image/png;base64,') == 2 and 'src="figure' not in html
    assert 'class="verdict supported"' in html


def test_report_paired_delta_against_baseline(reports):
    _, _, built = reports
    paths, ids = built["unit-vs-layer"]
    text = paths["markdown"].read_text()
    assert "## Paired Δ against `layer`" in text
    assert "| unit | test/top1 | +5.0 [+5.0, +5.0] % | 3 | 0 |" in text
    assert paths["verdicts"] == [{"claim": "unit-beats-layer", "verdict": "supported"}]
    assert all(run_id in text for run_id in ids["children"])


def test_report_logged_on_the_parent_run(reports):
    uri, _, built = reports
    _, ids = built["unit-vs-layer"]
    logged = {a.path for a in MlflowClient(uri).list_artifacts(ids["parent"], "report")}
    assert {"report/report.md", "report/report.html", "report/summary.json"} <= logged


def test_report_without_runs_says_so(reports, tmp_path):
    uri, _, _ = reports
    spec = SimpleNamespace(name="empty", description="", paper="table6", arms={}, grid={}, seeds=[0],
                           metric="val/top1", baseline=None, figures=[])
    paths = build_report(spec, uri, tmp_path, "nfstudy report empty")
    assert "No runs yet" in paths["markdown"].read_text()
    assert {v["verdict"] for v in paths["verdicts"]} == {"inconclusive at this scale"}


def test_index_lists_studies_with_verdicts(reports):
    _, root, _ = reports
    index = build_index(root, ["clip-threshold", "unit-vs-layer", "sam"])
    html = index.read_text()
    assert 'href="clip-threshold/report.html"' in html and "unit-beats-layer: supported" in html
    assert "no report yet" in (root / "index.md").read_text()
    assert json.loads((root / "unit-vs-layer" / "summary.json").read_text())["n_results"] == 6


def _bn_vs_nf(name: str = "twins"):
    spec = SimpleNamespace(name=name, description="BN against NF", paper="table6",
                           arms={"bn": {"model.norm": "bn"}, "nf": {"model.norm": "nf"}}, grid={},
                           seeds=[0, 1, 2], metric="val/top1", baseline="bn", figures=[])
    runs = [{"arm": norm, "params": {"model.name": "nf_resnet_small", "model.norm": norm, "agc.clipping": None,
                                     "seed": seed},
             "metrics": {"val/top1": 0.9 + 0.01 * seed, "test/top1": 0.9 + 0.01 * seed + 0.001 * (norm == "nf"),
                         "time/step_ms": (15.0 if norm == "bn" else 10.0) + seed}}
            for norm in ("bn", "nf") for seed in (0, 1, 2)]
    return spec, runs


def _spp_rows():
    return pd.DataFrame([{"model": model, "norm": norm, "block": block, "stage": block // 2,
                          "avg_channel_squared_mean": 0.01, "avg_channel_variance": 1.0 + (block % 2),
                          "residual_variance": 1.0}
                         for model, norm in (("bn_resnet_small", "bn"), ("nf_resnet_small", "nf")) for block in range(4)])


def test_a_paper_result_gets_the_inputs_it_needs(tmp_path, store_filler):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    spec, runs = _bn_vs_nf()
    store_filler(uri, spec.name, runs)
    given = build_report(spec, uri, tmp_path / "given", "nfstudy report twins", inputs={SPP.name: _spp_rows()})
    assert given["verdicts"] == [{"claim": "nf-matches-bn", "verdict": "supported"},
                                 {"claim": "bn-slower", "verdict": "supported"},
                                 {"claim": "spp-bn-resets", "verdict": "supported"},
                                 {"claim": "spp-nf-no-mean-shift", "verdict": "supported"}]
    assert {p.name for p in given["figures"]} >= {"paper-table6.png", "signal-propagation.png"}
    assert "![[I] Fig. 1: signal propagation at initialisation](signal-propagation.png)" in given["markdown"].read_text()

    missing = build_report(spec, uri, tmp_path / "missing", "nfstudy report twins")
    assert [v["verdict"] for v in missing["verdicts"]][2:] == [INCONCLUSIVE, INCONCLUSIVE]
    assert "*Why not decided:* no signal-propagation data given." in missing["markdown"].read_text()
    assert "signal-propagation.png" not in {p.name for p in missing["figures"]}


def test_an_unknown_paper_key_writes_nothing(tmp_path, tracking_uri):
    spec = SimpleNamespace(name="x", description="", paper="fig9", arms={}, grid={}, seeds=[0], metric="val/top1",
                           baseline=None, figures=[])
    with pytest.raises(ConfigError, match="allowed: fig2b"):
        build_report(spec, tracking_uri, tmp_path / "out", "nfstudy report x")
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_nfstudy_report_measures_the_signal_propagation_table6_needs(study_file, capsys):
    """``nfstudy report NAME`` computes what the paper result needs (signal propagation of the
    study's models and the ResNet-50 twins, a few seconds each) even before any run."""
    from study import paths
    from study.cli import main

    path = study_file("name: twins\npaper: table6\nbase: presets/smoke.yaml\n"
                      "arms:\n  bn: {model.norm: bn}\n  nf: {model.norm: nf}\n")
    assert main(["report", str(path)]) == 0
    folder = paths.reports_dir("twins")
    summary = json.loads((folder / "summary.json").read_text())
    assert {v["claim"]: v["verdict"] for v in summary["verdicts"]} == {
        "nf-matches-bn": INCONCLUSIVE, "bn-slower": INCONCLUSIVE,  # no runs yet
        "spp-bn-resets": "supported", "spp-nf-no-mean-shift": "supported"}
    assert (folder / "signal-propagation.png").is_file() and not (folder / "paper-table6.png").exists()


def test_nfstudy_report_of_an_unknown_paper_key_exits_2_and_writes_nothing(study_file, capsys):
    from study import paths
    from study.cli import main

    path = study_file("name: badpaper\npaper: fig9\nbase: presets/smoke.yaml\n")
    assert main(["report", str(path)]) == 2
    assert "paper: got 'fig9'; allowed: fig2b" in capsys.readouterr().err
    assert not (paths.home() / "reports").exists()
