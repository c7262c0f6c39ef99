"""Adaptive replication through its one entry point, claim_status: add a round of paired
seeds, ask again, stop when every claim is resolved (simulated per-seed outcomes, no training)."""

from pathlib import Path

import numpy as np
import pandas as pd

from analysis.confseq import confidence_sequence
from analysis.sequential import claim_status


def _unit_vs_layer(seeds: int, effect: float = 0.02, rng_seed: int = 3) -> pd.DataFrame:
    """unit and layer arms at λ 0.01 and 0.04, one run per seed and cell; unit is ``effect`` better."""
    rng = np.random.default_rng(rng_seed)
    rows = []
    for seed in range(seeds):
        shared = rng.normal(0, 0.01)
        for mode, p in (("unit", 0.95 + effect), ("layer", 0.95)):
            for clipping in (0.01, 0.04):
                accuracy = rng.binomial(397, min(p + shared + rng.normal(0, 0.007), 1.0)) / 397
                rows.append({"arm": mode, "agc.mode": mode, "agc.clipping": clipping, "seed": seed,
                             "outcome": "completed", "val/top1": accuracy, "test/top1": accuracy})
    return pd.DataFrame(rows)


def test_seeds_are_added_until_the_claim_is_resolved():
    study = _unit_vs_layer(40)
    per_seed = (study[study["arm"] == "unit"].groupby("seed")["test/top1"].mean()
                - study[study["arm"] == "layer"].groupby("seed")["test/top1"].mean()).to_numpy()
    expected = next(n for n in range(3, 41) if confidence_sequence(per_seed[:n].mean(), per_seed[:n].std(ddof=1), n)[0] > 0)
    seeds = 3
    while True:
        (status,) = claim_status(study[study["seed"] < seeds], "unit-vs-layer", grid_keys=("agc.clipping",))
        assert status.claim == "unit-beats-layer" and status.pairs == seeds
        if status.resolved:
            break
        assert not status.blocked and status.projected_pairs is not None
        assert [cell.text() for cell in status.needs] == [
            "layer agc.clipping=0.01", "layer agc.clipping=0.04", "unit agc.clipping=0.01", "unit agc.clipping=0.04"]
        seeds += 1
    assert seeds == expected == 9  # six rounds past the planned three
    assert status.verdict.verdict == "supported" and status.needs == () and status.text() == "resolved"
    assert status.seeds == tuple(range(seeds))


def test_the_projection_says_how_many_pairs_an_open_claim_needs():
    (status,) = claim_status(_unit_vs_layer(3), "unit-vs-layer", grid_keys=("agc.clipping",))
    assert not status.resolved
    assert status.text() == f"not resolved (≈ {status.projected_pairs} pairs would resolve it if the mean and spread held)"


def test_claims_more_seeds_cannot_resolve_are_blocked():
    one_batch = pd.DataFrame([{"arm": "", "agc.clipping": lam, "data.batch_size": 4096, "seed": seed,
                               "outcome": "completed", "val/top1": 0.9, "test/top1": 0.9}
                              for lam in (0.01, 0.16) for seed in range(3)])
    statuses = {s.claim: s for s in claim_status(one_batch, "fig2b", grid_keys=("agc.clipping", "data.batch_size"))}
    falls = statuses["fig2b-best-lambda-falls"]
    assert not falls.resolved and falls.blocked == "one batch size ran: the claim compares batch sizes"
    assert falls.needs == () and falls.text().startswith("not resolvable by more seeds")
    (spp, _) = [s for s in claim_status(one_batch, "spp")]
    assert spp.blocked == "no signal-propagation data given"


def test_the_readme_snippet(store_filler, capsys):
    """README, "Reading a report": where every claim stands, from the runs nfstudy recorded."""
    from study import paths

    paths.home().mkdir(parents=True)
    study = _unit_vs_layer(3)
    store_filler(paths.tracking_uri(), "unit-vs-layer", [
        {"arm": row["arm"], "params": {"agc.mode": row["agc.mode"], "agc.clipping": row["agc.clipping"], "seed": row["seed"]},
         "metrics": {"val/top1": row["val/top1"], "test/top1": row["test/top1"]}} for _, row in study.iterrows()])
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    snippet = readme.split("```python\nfrom analysis.runs import load_runs, results\n")[1].split("```")[0]
    exec("from analysis.runs import load_runs, results\n" + snippet, {})
    (line,) = capsys.readouterr().out.splitlines()
    assert line.startswith("unit-beats-layer False 3 ['layer agc.clipping=0.01', 'layer agc.clipping=0.04', "
                           "'unit agc.clipping=0.01', 'unit agc.clipping=0.04'] not resolved (≈ ")
