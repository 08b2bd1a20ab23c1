"""The journal (SQLite WAL) and the results files' recovery, without sites."""

from __future__ import annotations

import hashlib
import json
import pickle
import signal
import sqlite3
import subprocess
import sys
import time

from orchestrator.apps.runtime import run_task
from orchestrator.dispatch.journal import RESULT_LOG_NAME, Journal, input_key, is_run_dir
from orchestrator.dispatch.results import ResultsWriter
from orchestrator.models import FailureInfo, Result, Timestamps


def result(task_id: str, value=None, *, failure: FailureInfo | None = None) -> Result:
    return Result(
        task_id=task_id,
        method="m",
        topic="t",
        args=(1,),
        value=value,
        success=failure is None,
        failure_info=failure,
        timestamps=Timestamps(created=time.time()),
    )


def test_input_key_depends_on_method_and_inputs_not_kwarg_order():
    assert input_key("m", (1, 2.5), {"a": 1, "b": [2]}) == input_key(
        "m", (1, 2.5), {"b": [2], "a": 1}
    )
    assert input_key("m", (1,), {}) != input_key("n", (1,), {})
    assert input_key("m", (1,), {}) != input_key("m", (2,), {})
    assert input_key("m", (lambda: 0,), {}) is None  # cannot be pickled: never replayed


def test_replay_hands_each_result_out_once_in_order(tmp_path):
    journal = Journal(tmp_path)
    key = input_key("m", (1,), {})
    journal.created("a", "m", "t", key, time.time())
    journal.finished(result("a", 10), key)
    journal.finished(result("b", 11), key)
    journal.close()
    assert is_run_dir(tmp_path)

    resumed = Journal(tmp_path, resume=True)
    first, second = resumed.replay(key), resumed.replay(key)
    assert (first.task_id, first.value) == ("a", 10)
    assert (second.task_id, second.value) == ("b", 11)
    assert resumed.replay(key) is None and resumed.replay(None) is None
    assert resumed.replayed == 2
    assert [r.task_id for r in resumed.completed_results(skip={"a"})] == ["b"]
    assert Journal(tmp_path).replay(key) is None  # not resuming: nothing is replayed


def test_site_failures_are_not_replayed_task_failures_are(tmp_path):
    journal = Journal(tmp_path)
    site_key, task_key = input_key("m", (1,), {}), input_key("m", (2,), {})
    lost = FailureInfo(exception_type="Lost", message="x", where="site", reason="site_failure")
    raised = FailureInfo(exception_type="KeyError", message="k", where="task")
    journal.finished(result("s", failure=lost), site_key)
    journal.finished(result("k", failure=raised), task_key)
    journal.close()
    resumed = Journal(tmp_path, resume=True)
    assert resumed.replay(site_key) is None
    assert resumed.replay(task_key).failure_info.exception_type == "KeyError"
    summary = resumed.summary()
    assert (summary.results, summary.memoizable) == (2, 1)


def test_journal_is_wal_and_meta_round_trips(tmp_path):
    journal = Journal(tmp_path)
    journal.set_meta({"campaign": "demo", "options": {"n": 3}})
    journal.event("a", "sent", "local-cpu")
    journal.flush()  # state changes are committed in batches
    assert journal.meta() == {"campaign": "demo", "options": {"n": 3}}
    with sqlite3.connect(tmp_path / "journal.sqlite") as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("SELECT state, site FROM events").fetchall() == [("sent", "local-cpu")]
    journal.close()


def test_results_writer_drops_a_partial_last_line_and_writes_each_task_once(tmp_path):
    folder = tmp_path / "results"
    folder.mkdir()
    good = result("done-1", 1).to_json()
    (folder / "t.jsonl").write_text(good + "\n" + '{"task_id": "cut-sh')
    writer = ResultsWriter(folder)
    assert writer.written == {"done-1"}
    writer.write(result("done-1", 1))  # already there: not written again
    writer.write(result("new-2", 2))
    writer.write(result("new-2", 2))
    writer.close()
    lines = (folder / "t.jsonl").read_text().splitlines()
    assert [json.loads(line)["task_id"] for line in lines] == ["done-1", "new-2"]


def test_worker_side_walltime_stops_the_call():
    record = run_task(time.sleep, (30,), {}, {"walltime": 0.2})
    assert record["ok"] is False
    assert record["failure"]["reason"] == "timeout"
    assert record["failure"]["details"] == {"walltime": 0.2}
    assert run_task(time.sleep, (0,), {}, {"walltime": 5})["ok"] is True


def test_results_journaled_by_an_older_orch_unpickle_with_new_fields_defaulted():
    import pickle

    from orchestrator.models import Result, Timestamps

    result = Result(task_id="t", method="m", topic="t", timestamps=Timestamps(created=0.0))
    state = result.__getstate__()
    for name in ("image", "image_digest", "remote_task_id"):  # fields added after stop 9
        del state["__dict__"][name]
    old = Result.__new__(Result)
    old.__setstate__(state)
    assert old.image is None and old.remote_task_id is None
    again = pickle.loads(pickle.dumps(old))
    assert again.to_json() == result.to_json()


_KILLED_WRITER = """
import os, signal, sys, time
from pathlib import Path
from orchestrator.dispatch.journal import Journal, input_key
from orchestrator.models import Result, Timestamps

journal = Journal(Path(sys.argv[1]))
delivered = []
for i in range(5):
    r = Result(task_id=f"t{i}", method="m", topic="t", args=(i,), value=i * i, success=True,
               timestamps=Timestamps(created=time.time()))
    journal.finished(r, input_key("m", (i,), {}), then=lambda i=i: delivered.append(i))
assert delivered == [0, 1, 2, 3, 4], delivered  # handed over at once, in order
print("delivered", flush=True)
os.kill(os.getpid(), signal.SIGKILL)  # before the batch period: the database has none of them
"""


def test_results_handed_over_before_a_kill_are_read_back_on_resume(tmp_path):
    script = tmp_path / "writer.py"
    script.write_text(_KILLED_WRITER)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    proc = subprocess.run(
        [sys.executable, str(script), str(run_dir)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == -signal.SIGKILL and "delivered" in proc.stdout, proc.stderr
    with sqlite3.connect(run_dir / "journal.sqlite") as db:
        in_db = db.execute("SELECT COUNT(*) FROM results").fetchone()[0]
    assert (run_dir / RESULT_LOG_NAME).stat().st_size > 0
    # A record cut short by the crash (here: half a frame appended) is dropped, not fatal
    with open(run_dir / RESULT_LOG_NAME, "ab") as log:
        log.write(b"\x40\x00\x00\x00\x01")
    journal = Journal(run_dir, resume=True)
    values = [journal.replay(input_key("m", (i,), {})) for i in range(5)]
    assert [v.value for v in values if v is not None] == [0, 1, 4, 9, 16], in_db
    assert not (run_dir / RESULT_LOG_NAME).exists()  # everything it held is in the database
    with sqlite3.connect(run_dir / "journal.sqlite") as db:
        states = db.execute("SELECT state, COUNT(*) FROM events GROUP BY state").fetchall()
    assert dict(states) == {"done": 5}
    journal.close()
    # Opening it again reads nothing twice
    Journal(run_dir).close()
    with sqlite3.connect(run_dir / "journal.sqlite") as db:
        assert db.execute("SELECT COUNT(*) FROM events").fetchone()[0] == 5


def test_a_result_in_both_log_and_database_is_not_written_twice(tmp_path):
    journal = Journal(tmp_path)
    seen = []
    journal.finished(result("a", 1), "k", then=lambda: seen.append("a"))
    journal.flush()  # now in the database too
    log = (tmp_path / RESULT_LOG_NAME).read_bytes()
    journal.close()
    (tmp_path / RESULT_LOG_NAME).write_bytes(log)  # as if killed after the commit
    Journal(tmp_path).close()
    with sqlite3.connect(tmp_path / "journal.sqlite") as db:
        assert db.execute("SELECT COUNT(*) FROM results").fetchone()[0] == 1
        assert db.execute("SELECT COUNT(*) FROM events").fetchone()[0] == 1
    assert seen == ["a"]


def test_input_key_is_the_digest_of_the_pickle_earlier_journals_hold():
    # streamed into the hash, the key must not change: journals of older runs still resume
    big = bytes(range(256)) * 5000
    for call in [("m", (big, 1), {"k": [big[:10]] * 3}), ("m", (), {}), ("n", ("x",), {"a": 2})]:
        method, args, kwargs = call
        data = pickle.dumps((method, tuple(args), sorted(kwargs.items())), protocol=5)
        assert input_key(method, args, kwargs) == hashlib.blake2b(data, digest_size=20).hexdigest()
