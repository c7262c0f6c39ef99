"""The queue (study/run/queue.py), the worker loop (study/run/worker.py) and the coordinator
(study/run/coordinator.py) on real stores: Optuna journal files and SQLite MLflow under the
test's own $NFSTUDY_HOME, real processes for the races."""

from __future__ import annotations

import multiprocessing
import os
import time
from dataclasses import replace

import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from study.cli import main
from study.errors import ConfigError, TrackingError
from study.record.tags import QUEUE_TRIAL
from study.record.tracking import Tracking
from study.run.queue import EndKind, Job, RunQueue
from study.run.worker import recover_lost, run_worker


def job(config_hash: str, **changes) -> Job:
    base = Job(config_hash=config_hash, config={"seed": 0}, study="s", arm="", run_name=f"run-{config_hash}",
               point={}, experiment_id="0", parent_id="p")
    return replace(base, **changes)


def _enqueue_in_child(home: str, hashes: list[str], barrier) -> None:
    os.environ["NFSTUDY_HOME"] = home
    queue = RunQueue("s", create=True)
    barrier.wait()
    queue.enqueue([job(h) for h in hashes])


def _pop_all_in_child(home: str, out, barrier) -> None:
    os.environ["NFSTUDY_HOME"] = home
    queue = RunQueue("s")
    barrier.wait()
    while (claim := queue.pop()) is not None:
        out.put(claim.job.config_hash)


def _race(count: int, target, *args) -> None:
    """``target(*args, barrier)`` in ``count`` forked processes that start together; each must exit 0."""
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(count)
    procs = [context.Process(target=target, args=(*args, barrier)) for _ in range(count)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(60)
        assert proc.exitcode == 0


def test_enqueue_from_four_coordinators_at_once_adds_each_config_once(nfstudy_home):
    RunQueue("s", create=True)
    hashes = [f"h{i}" for i in range(6)]
    _race(4, _enqueue_in_child, str(nfstudy_home), hashes)
    trials = RunQueue("s").trials()
    assert sorted(t.user_attrs["config_hash"] for t in trials) == hashes
    assert {t.state for t in trials} == {TrialState.WAITING}


def test_concurrent_pops_claim_every_trial_exactly_once(nfstudy_home):
    queue = RunQueue("s", create=True)
    hashes = [f"h{i}" for i in range(12)]
    queue.enqueue([job(h) for h in hashes])
    out = multiprocessing.get_context("fork").SimpleQueue()
    _race(3, _pop_all_in_child, str(nfstudy_home), out)
    claimed = []
    while not out.empty():
        claimed.append(out.get())
    assert sorted(claimed) == sorted(hashes)
    assert {t.state for t in RunQueue("s").trials()} == {TrialState.RUNNING}


def test_an_empty_queue_pops_nothing_and_samples_nothing(nfstudy_home):
    queue = RunQueue("s", create=True)
    assert queue.pop() is None
    assert queue.trials() == []


def test_enqueue_skips_configs_waiting_or_running_and_requeues_failed_ones(nfstudy_home):
    queue = RunQueue("s", create=True)
    assert queue.enqueue([job("a"), job("b")]) == 2
    claim = queue.pop()
    assert queue.enqueue([job("a"), job("b")]) == 0
    queue.fail(claim.trial_id, EndKind.FAILED, "it raised")
    assert queue.enqueue([job("a"), job("b")]) == 1


def test_two_plans_of_one_study_share_the_queue_without_cancelling_each_other(nfstudy_home):
    queue = RunQueue("s", create=True)
    queue.enqueue([job("a"), job("b")], plan="smoke")
    queue.enqueue([job("b"), job("c")], plan="digits")  # b is queued once, for both plans
    assert [t.user_attrs["config_hash"] for t in queue.trials()] == ["a", "b", "c"]
    assert queue.plan_hashes("digits") == {"b", "c"}
    claims = [queue.pop(queue.plan_hashes("digits")) for _ in range(3)]
    assert [c.job.config_hash for c in claims if c] == ["b", "c"]  # the other plan's "a" stays WAITING
    assert [t.user_attrs["config_hash"] for t in queue.trials([TrialState.WAITING])] == ["a"]


def test_a_waiting_config_queued_again_for_another_tracking_store_is_replaced(nfstudy_home):
    queue = RunQueue("s", create=True)
    queue.enqueue([job("a", experiment_id="1")])
    assert queue.enqueue([job("a", experiment_id="7")]) == 1
    old, new = queue.trials()
    assert old.state == TrialState.FAIL and old.user_attrs["ended"] == "superseded"
    assert new.state == TrialState.WAITING and new.user_attrs["experiment_id"] == "7"


def test_a_worker_needs_an_existing_queue(nfstudy_home):
    with pytest.raises(TrackingError, match="no queue"):
        RunQueue("nothing-here")
    assert main(["worker", "--study", "nothing-here"]) == 2


def test_unsupported_storage_is_rejected(nfstudy_home):
    with pytest.raises(ConfigError, match="--storage 'mysql://x/y'"):
        RunQueue("s", "mysql://x/y", create=True)


def _claim_and_die(home: str) -> None:
    os.environ["NFSTUDY_HOME"] = home
    RunQueue("s").pop()
    os._exit(0)  # dies holding a RUNNING trial, like kill -9


def test_a_dead_workers_trial_is_failed_its_run_killed_and_its_config_requeued(nfstudy_home):
    tracking = Tracking()
    experiment_id, parent_id = tracking.ensure_study("s")
    queue = RunQueue("s", create=True)
    queue.enqueue([job("a", experiment_id=experiment_id, parent_id=parent_id)])
    proc = multiprocessing.get_context("fork").Process(target=_claim_and_die, args=(str(nfstudy_home),))
    proc.start()
    proc.join(60)
    (trial,) = queue.trials([TrialState.RUNNING])
    child = tracking.start_child(experiment_id, parent_id, "s", "", "run-a", "a", {},
                                 tags={QUEUE_TRIAL: queue.tag(trial._trial_id)})
    assert recover_lost(queue, tracking) == 1
    assert recover_lost(queue, tracking) == 0
    assert MlflowClient(tracking.uri).get_run(child.run_id).info.status == "KILLED"
    states = [(t.state, t.user_attrs["attempt"], t.user_attrs.get("ended")) for t in queue.trials()]
    assert states == [(TrialState.FAIL, 1, "lost"), (TrialState.WAITING, 2, None)]


def test_a_config_finished_in_mlflow_is_not_trained_again(nfstudy_home):
    tracking = Tracking()
    experiment_id, parent_id = tracking.ensure_study("s")
    done = tracking.start_child(experiment_id, parent_id, "s", "", "run-a", "a", {})
    done.finish({"outcome": "completed", "val/top1": 0.5})
    queue = RunQueue("s", create=True)
    queue.enqueue([job("a", experiment_id=experiment_id, parent_id=parent_id)])
    events = []
    summary = run_worker(queue, tracking, on_event=lambda event, j, result: events.append((event, j.config_hash)))
    assert events == [("skipped", "a")]
    assert summary.skipped == 1 and summary.runs == 1
    assert [t.state for t in queue.trials()] == [TrialState.COMPLETE]
    assert len(MlflowClient(tracking.uri).search_runs([experiment_id], "tags.`nfstudy.role` = 'child'")) == 1


@pytest.mark.slow
def test_run_twice_trains_each_config_once_through_the_queue(study_file, nfstudy_home, capsys):
    path = study_file("name: twice\nbase: presets/smoke.yaml\ngrid:\n  agc.clipping: [0.01, 0.02]\nseeds: [0]\n")
    assert main(["run", str(path)]) == 0
    assert main(["run", str(path)]) == 0
    assert "2 done, 0 to run" in capsys.readouterr().out
    client = MlflowClient(f"sqlite:///{nfstudy_home / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("twice").experiment_id],
                              "tags.`nfstudy.role` = 'child'")
    assert sorted(r.info.status for r in runs) == ["FINISHED", "FINISHED"]
    trials = RunQueue("twice").trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2
    assert {t.user_attrs["mlflow_run_id"] for t in trials} == {r.info.run_id for r in runs}
    assert (nfstudy_home / "queue.journal").is_file()


def test_a_torn_last_journal_line_is_cut_before_the_next_append(nfstudy_home):
    queue = RunQueue("s", create=True)
    queue.enqueue([job("a")])
    journal = nfstudy_home / "queue.journal"
    with open(journal, "ab") as f:
        f.write(b'{"op_code": 5, "worker_id": "torn-by-a-crash", "trial_id": 0, "st')  # a crash mid-append
    other = RunQueue("s")  # another process's view: reading stops at the torn line
    assert other.enqueue([job("b")]) == 1  # appending first cuts the torn line off
    assert [t.user_attrs["config_hash"] for t in RunQueue("s").trials()] == ["a", "b"]
    assert journal.read_bytes().endswith(b"\n") and b"torn-by-a-crash" not in journal.read_bytes()


def _requeue_then_die(home: str) -> None:
    """Dies (like kill -9) after putting a lost trial's config back, before failing it."""
    os.environ["NFSTUDY_HOME"] = home
    queue = RunQueue("s")
    (trial,) = queue.trials([TrialState.RUNNING])
    with queue.lock():
        queue._enqueue_locked([replace(Job.from_trial(trial), attempt=2)], replacing=trial._trial_id)
    os._exit(0)


def test_a_kill_between_requeue_and_fail_loses_nothing_and_queues_nothing_twice(nfstudy_home):
    tracking = Tracking()
    experiment_id, parent_id = tracking.ensure_study("s")
    queue = RunQueue("s", create=True)
    queue.enqueue([job("a", experiment_id=experiment_id, parent_id=parent_id)])
    for target in (_claim_and_die, _requeue_then_die):
        proc = multiprocessing.get_context("fork").Process(target=target, args=(str(nfstudy_home),))
        proc.start()
        proc.join(60)
    assert [t.state for t in queue.trials()] == [TrialState.RUNNING, TrialState.WAITING]
    assert recover_lost(queue, tracking) == 1  # the dead worker's trial: failed, its config not queued again
    states = [(t.state, t.user_attrs["attempt"]) for t in queue.trials()]
    assert states == [(TrialState.FAIL, 1), (TrialState.WAITING, 2)]


@pytest.fixture(params=["journal", "sqlite", pytest.param("postgresql", marks=pytest.mark.slow)])
def storage(request, nfstudy_home):
    """The queue's storage of each kind, as a user names it."""
    if request.param == "journal":
        yield str(nfstudy_home / "queue.journal")
    elif request.param == "sqlite":
        yield f"sqlite:///{nfstudy_home / 'queue.db'}"
    else:
        from servers import postgres_server

        with postgres_server() as pg:
            yield pg.create_database("queue")


def test_a_stale_trial_of_another_host_is_found_at_the_first_look_by_its_owners_bound(storage):
    from study.record.tags import OWNER_ATTR
    from study.run import liveness

    queue = RunQueue("s", storage, create=True)
    queue.enqueue([job("a"), job("b")])
    first, second = queue.pop(), queue.pop()
    elsewhere = {"host": "machine-b", "pid": 1, "name": "b", "stale_after_s": 1.0}
    for claim in (first, second):
        queue.storage.set_trial_system_attr(claim.trial_id, OWNER_ATTR, elsewhere)
    time.sleep(2.5)  # SQLite's clock has one-second steps
    queue.beat(second.trial_id)
    observer = RunQueue("s", storage)  # never saw either alive; its own heartbeat setting is not used
    assert liveness.HEARTBEAT_S == 10 and [t._trial_id for t in observer.lost()] == [first.trial_id]


def test_an_outage_longer_than_the_bound_ends_in_one_line_naming_the_store(nfstudy_home, monkeypatch):
    from servers import free_port

    monkeypatch.setenv("NFSTUDY_OUTAGE_S", "2")
    url = f"postgresql://alice:s3cret@127.0.0.1:{free_port()}/nfstudy"  # nothing listens there
    started = time.monotonic()
    with pytest.raises(TrackingError) as raised:
        RunQueue("s", url)
    message = str(raised.value)
    assert 2 <= time.monotonic() - started < 30  # retried for the bound, then gave up
    assert message.startswith("--storage 'postgresql://alice:***@127.0.0.1:") and "unreachable for" in message
    assert "$NFSTUDY_OUTAGE_S=2" in message and "s3cret" not in message and "\n" not in message
