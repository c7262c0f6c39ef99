"""Trials read from real Optuna storages (SQLite and a journal file) as ``nfstudy search``
leaves them; reading never creates a storage and never prints a password."""

import optuna
import pytest
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from analysis.trials import TRIAL_COLUMNS, load_trials, open_storage, shown_url
from study.errors import TrackingError

DONE, PRUNED = TrialState.COMPLETE, TrialState.PRUNED


@pytest.fixture(params=["sqlite", "journal"])
def storage_url(request, tmp_path):
    """A storage URL of each kind; the writer opens it as Optuna users do."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/optuna.db"
        return url, url
    path = tmp_path / "optuna.journal"
    return str(path), JournalStorage(JournalFileBackend(str(path)))


def test_load_trials_reads_the_studies_of_one_search(storage_url, search_filler):
    url, writer = storage_url
    search_filler(writer, "lam", "nfstudy-search:lam:aaaa", 1024, [
        ({"agc.clipping": 0.01}, 0.95, DONE, "completed"),
        ({"agc.clipping": 0.9}, 0.30, PRUNED, "pruned"),
    ])
    search_filler(writer, "lam", "renamed-by-hand", 4096, [({"agc.clipping": 0.5}, 0.1, DONE, "diverged")])
    search_filler(writer, "other", "nfstudy-search:other:bbbb", 1024, [({"agc.clipping": 0.1}, 0.9, DONE, "completed")])
    optuna.create_study(study_name="nfstudy-search:lam:no-attr", storage=writer)  # not marked: not read

    trials, studies = load_trials("lam", url)
    assert sorted(studies) == ["nfstudy-search:lam:aaaa", "renamed-by-hand"]
    assert studies["renamed-by-hand"]["direction"] == "maximize"
    assert list(trials.columns[:len(TRIAL_COLUMNS)]) == TRIAL_COLUMNS
    by_study = trials.set_index(["optuna_study", "number"])
    pruned = by_study.loc[("nfstudy-search:lam:aaaa", 1)]
    assert pruned["state"] == "PRUNED" and pruned["last_value"] == 0.30 and pruned["pruned_epoch"] == 0
    assert by_study.loc[("renamed-by-hand", 0)]["batch"] == 4096
    assert by_study.loc[("renamed-by-hand", 0)]["outcome"] == "diverged"
    assert set(trials["data.device_batch_size"]) == {128} and set(trials["optim.lr"]) == {0.1}


@pytest.mark.parametrize("name", ["optuna.db", "optuna.journal"])
def test_a_missing_storage_means_no_trials_and_is_not_created(tmp_path, name):
    url = f"sqlite:///{tmp_path}/{name}" if name.endswith(".db") else str(tmp_path / name)
    trials, studies = load_trials("lam", url)
    assert trials.empty and list(trials.columns) == TRIAL_COLUMNS and studies == {}
    assert not (tmp_path / name).exists()


def test_an_unreachable_storage_is_one_line_without_its_password():
    with pytest.raises(TrackingError) as raised:
        open_storage("postgresql://nfstudy:s3cret@127.0.0.1:1/optuna")
    message = str(raised.value)
    assert "s3cret" not in message and "nfstudy:***@127.0.0.1:1" in message and "\n" not in message
    assert "refused" in message.lower()  # the cause, not the generic commit error Optuna wraps it in


def test_shown_url_hides_only_the_password():
    assert shown_url("postgresql://user:pw@db.example:5432/optuna") == "postgresql://user:***@db.example:5432/optuna"
    assert shown_url("sqlite:////home/me/.nfstudy/optuna.db") == "sqlite:////home/me/.nfstudy/optuna.db"
    assert shown_url("/shared/optuna.journal") == "/shared/optuna.journal"
