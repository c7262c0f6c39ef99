import pandas as pd
import pytest
from matplotlib.container import BarContainer, ErrorbarContainer

from analysis import figures


def _frame():
    rows = []
    for batch in (256, 4096):
        for clipping in (0.01, 0.04, 0.16):
            for seed in (0, 1, 2):
                diverged = batch == 4096 and clipping == 0.16
                rows.append({"agc.clipping": clipping, "data.batch_size": batch, "data.device_batch_size": 128,
                             "optim.lr": 0.1 * batch / 256, "train.steps": 300, "seed": seed,
                             "model.name": "nf_resnet_small", "agc.mode": "unit",
                             "val/top1": 0.1 if diverged else 0.9 + 0.01 * seed, "test/top1": 0.1 if diverged else 0.9,
                             "time/step_ms": 10.0 + seed, "outcome": "diverged" if diverged else "completed"})
    return pd.DataFrame(rows)


def test_line_draws_one_series_and_band_per_hue_and_marks_divergence():
    figure = figures.line(_frame(), "agc.clipping", "val/top1", hue="data.batch_size", logx=True)
    ax = figure.axes[0]
    assert len(ax.lines) == 2  # one mean line per batch size
    assert len(ax.collections) == 3  # two CI bands and one scatter of diverged runs
    assert ax.get_xscale() == "log"
    assert "diverged" in [text.get_text() for text in ax.get_legend().get_texts()]
    assert "256 → 128" in figure._supxlabel.get_text() and "300 steps" in figure._supxlabel.get_text()


def test_save_figure_writes_png_and_svg(tmp_path):
    paths = figures.save_figure(figures.line(_frame(), "agc.clipping", "test/top1"), tmp_path / "sub" / "fig")
    assert [p.name for p in paths] == ["fig.png", "fig.svg"]
    assert paths[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert paths[1].read_text().lstrip().startswith("<?xml")


def test_bar_draws_one_bar_group_per_hue():
    ax = figures.bar(_frame(), "agc.clipping", "test/top1", hue="data.batch_size").axes[0]
    bars = [c for c in ax.containers if isinstance(c, BarContainer)]
    assert len(bars) == 2 and all(len(b) == 3 for b in bars)


def test_fig2a_draws_bn_nf_and_best_agc():
    frame = _frame()
    bn = frame[frame["agc.clipping"] == 0.01].assign(**{"model.name": "bn_resnet_small", "agc.clipping": None})
    nf = frame[frame["agc.clipping"] == 0.01].assign(**{"agc.clipping": None})
    ax = figures.fig2a_batch_scaling(pd.concat([frame, bn, nf], ignore_index=True)).axes[0]
    labels = [line.get_label() for line in ax.lines]
    assert labels == ["model = BN-ResNet", "model = NF-ResNet", "model = NF-ResNet + AGC"]
    assert ax.get_xscale() == "log"


def test_bn_vs_nf_has_accuracy_and_step_time_panels():
    frame = _frame()
    both = pd.concat([frame, frame.assign(**{"model.name": "bn_resnet_small", "time/step_ms": 20.0})])
    figure = figures.bn_vs_nf(both)
    assert [ax.get_ylabel() for ax in figure.axes] == ["test top-1 (test/top1)", "training step time, ms (time/step_ms)"]
    assert all(len([c for c in ax.containers if isinstance(c, BarContainer)][0]) == 2 for ax in figure.axes)


def test_sam_cost_one_point_per_mode():
    frame = pd.concat([_frame().assign(**{"sam.mode": mode, "time/step_ms": ms})
                       for mode, ms in (("off", 10.0), ("full", 20.0), ("fraction", 13.0))])
    ax = figures.sam_cost(frame).axes[0]
    points = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
    assert len(points) == 3
    assert sorted(p.lines[0].get_xdata()[0] for p in points) == pytest.approx([1.0, 1.3, 2.0])


def test_signal_propagation_three_panels_one_line_per_model():
    spp = pd.DataFrame([{"model": m, "block": b, "stage": b // 2, "avg_channel_squared_mean": 0.1, "avg_channel_variance": 1 + b,
                         "residual_variance": 1.0} for m in ("bn", "nf") for b in range(4)])
    figure = figures.signal_propagation(spp)
    assert len(figure.axes) == 3 and all(len(ax.lines) == 2 + 1 for ax in figure.axes)  # + one transition line
