"""The failure vocabulary: one enumeration of reasons, one record from worker to thinker."""

from __future__ import annotations

import copyreg
import io
import pickle
import re
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from orchestrator.apps import failures
from orchestrator.apps.failures import FailureReason, FailureRecord, parse_reason
from orchestrator.apps.runtime import TaskTimeout, run_task
from orchestrator.apps.sim import common
from orchestrator.dispatch.journal import Journal, input_key
from orchestrator.dispatch.methods import TRANSIENT_REASONS, Method
from orchestrator.exceptions import ConfigError
from orchestrator.models import INTERRUPTED, SITE_FAILURE, TIMEOUT, FailureInfo, Result, Timestamps
from orchestrator.sites.base import Outcome

REPO = Path(__file__).resolve().parents[1]
RECORD_KEYS = {"exception_type", "message", "traceback", "where", "reason", "details"}


def double(x: int) -> int:
    return 2 * x


class _Raises(Exception):
    """An exception carrying a ``reason`` attribute, as campaign code may raise."""

    def __init__(self, reason: Any):
        super().__init__(f"failed with {reason!r}")
        self.reason = reason
        self.details = {"why": "a test"}


def _fail(reason: Any) -> None:
    raise _Raises(reason)


# --- the enumeration --------------------------------------------------------------------------


def test_every_reason_raised_in_the_code_is_a_member() -> None:
    from orchestrator.apps.proxies import DataMovementError, ProxyPutFailed, ProxyResolveFailed

    used = {
        *common.REASONS,
        TaskTimeout.reason,
        DataMovementError.reason,
        ProxyResolveFailed.reason,
        ProxyPutFailed.reason,
        "bad_input",  # orchestrator.apps.ml.features.InvalidSmilesError (imports torch)
        SITE_FAILURE,
        TIMEOUT,
        INTERRUPTED,
        *TRANSIENT_REASONS,
    }
    values = {r.value for r in FailureReason}
    assert {str(r) for r in used} <= values
    assert {"no_site", "cancelled"} <= values
    assert "walltime" not in values and "lost" not in values  # merged into timeout/site_failure


def test_members_are_their_strings_with_a_description_and_a_retry_default() -> None:
    for reason in FailureReason:
        assert isinstance(reason, str) and reason == reason.value and str(reason) == reason.value
        assert (
            reason.description and "\n" not in reason.description and "|" not in reason.description
        )
        assert isinstance(reason.retried, bool)
    assert {r for r in FailureReason if r.retried} == {"site_failure", "timeout"}
    assert TRANSIENT_REASONS == {"site_failure", "timeout"}
    assert FailureReason.NO_SITE.retried is False and FailureReason.CANCELLED.retried is False
    assert SITE_FAILURE is FailureReason.SITE_FAILURE and TIMEOUT is FailureReason.TIMEOUT
    assert common.WALLTIME is common.TIMEOUT is FailureReason.TIMEOUT


def test_retired_and_unknown_names() -> None:
    assert FailureReason("walltime") is FailureReason.TIMEOUT
    assert parse_reason("walltime") is FailureReason.TIMEOUT
    assert parse_reason("not_converged") is FailureReason.NOT_CONVERGED
    assert parse_reason("preempted") == "preempted"
    assert type(parse_reason("preempted")) is str
    assert parse_reason(None) is None and parse_reason("") is None
    with pytest.raises(ValueError):
        FailureReason("preempted")


def test_the_failure_module_imports_only_the_standard_library() -> None:
    code = (
        "import sys; import orchestrator.apps.failures, orchestrator.apps.runtime; "
        "print(sorted(m for m in sys.modules if m.startswith('orchestrator')))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    loaded = set(eval(done.stdout))
    assert loaded == {
        "orchestrator",
        "orchestrator.apps",
        "orchestrator.apps.failures",
        "orchestrator.apps.mpi",  # the launch line of a task's resources: stdlib only too
        "orchestrator.apps.runtime",
    }


def test_readme_table_is_the_enumeration() -> None:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    header = "| reason | meaning | retried by default |"
    assert text.count(header) == 1, "the README has one table of failure reasons"
    lines = text[text.index(header) :].splitlines()
    assert re.fullmatch(r"\|(-+\|){3}", lines[1].replace(" ", ""))
    rows = []
    for line in lines[2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        assert len(cells) == 3, line
        name = re.fullmatch(r"`([a-z_]+)`", cells[0])
        assert name is not None and cells[2] in ("yes", "no"), line
        rows.append((name.group(1), cells[1], cells[2] == "yes"))
    assert rows == [(r.value, r.description, r.retried) for r in FailureReason]


# --- the record from worker to thinker ----------------------------------------------------------


@pytest.mark.parametrize(
    ("raised", "expected"),
    [
        ("not_converged", "not_converged"),
        (FailureReason.CODE_ERROR, "code_error"),
        ("walltime", "timeout"),  # a campaign's exception still using the retired name
        ("preempted", "preempted"),  # a reason orch does not know is kept
        (OSError("not a reason"), None),  # URLError-style: an object is no reason
        ("", None),
    ],
)
def test_run_task_returns_one_plain_record(raised: Any, expected: str | None) -> None:
    record = run_task(_fail, (raised,), {})
    assert record["ok"] is False
    failure = record["failure"]
    assert set(failure) == RECORD_KEYS
    assert failure["where"] == "task" and failure["details"] == {"why": "a test"}
    assert failure["exception_type"] == f"{__name__}._Raises"
    assert failure["reason"] == expected
    assert failure["reason"] is None or type(failure["reason"]) is str
    assert _plain(failure) == failure


def _plain(value: Any) -> Any:
    """Unpickle ``value``'s pickle refusing every class: it holds plain data only, which any
    orch version (or none) can read."""

    class NoClasses(pickle.Unpickler):
        def find_class(self, module: str, name: str) -> Any:
            raise AssertionError(f"the pickle needs {module}.{name}")

    return NoClasses(io.BytesIO(pickle.dumps(value))).load()


def test_timeout_record_round_trips_to_the_thinker() -> None:
    record = run_task(time.sleep, (30,), {}, {"walltime": 0.2})
    outcome = Outcome.from_worker(record, input_size=None, value_size=None)
    assert outcome.failure is not None and outcome.failure["reason"] == "timeout"
    info = FailureInfo(**outcome.failure)
    assert info.reason is FailureReason.TIMEOUT and info.where == "task"
    assert info.details == {"walltime": 0.2}
    assert Method(double).should_retry(info.reason)


def test_outcome_reads_a_record_from_an_older_worker() -> None:
    old = {
        "ok": False,
        "failure": {
            "exception_type": "orchestrator.apps.sim.common.SimulationError",
            "message": "xtb: exceeded its wall time",
            "traceback": "...",
            "reason": "walltime",
            "details": {"code": "xtb"},
            "added_later": 1,
        },
        "host": "h",
        "pid": 1,
    }
    outcome = Outcome.from_worker(old, input_size=10, value_size=None)
    assert outcome.failure == {
        "exception_type": "orchestrator.apps.sim.common.SimulationError",
        "message": "xtb: exceeded its wall time",
        "traceback": "...",
        "where": "task",
        "reason": "timeout",
        "details": {"code": "xtb"},
    }
    bare = Outcome.from_worker({"ok": False, "failure": {"message": "m"}}, None, None)
    assert bare.failure is not None and set(bare.failure) == RECORD_KEYS
    assert FailureInfo(**bare.failure).reason is None


def test_site_failures_carry_the_same_record() -> None:
    lost = Outcome.site_failure("WorkerLost", "workers lost")
    assert lost.failure is not None and set(lost.failure) == RECORD_KEYS
    assert lost.failure["where"] == "site" and lost.failure["reason"] == "site_failure"
    no_site = Outcome.site_failure("NoSite", "none came back", reason=FailureReason.NO_SITE)
    assert no_site.failure is not None
    info = FailureInfo(**no_site.failure)
    assert info.reason is FailureReason.NO_SITE and info.where == "site"
    assert info.record() == no_site.failure


def test_failure_info_keeps_unknown_reasons_and_refuses_bad_where() -> None:
    known = FailureInfo(exception_type="E", message="m", reason="walltime")
    future = FailureInfo(exception_type="E", message="m", reason="preempted")
    assert known.reason is FailureReason.TIMEOUT
    assert future.reason == "preempted" and not isinstance(future.reason, FailureReason)
    assert '"reason":"timeout"' in known.model_dump_json()
    assert FailureInfo.model_validate_json(future.model_dump_json()).reason == "preempted"
    with pytest.raises(ValueError):
        FailureInfo(exception_type="E", message="m", where="elsewhere")


def test_simulation_errors_pickle_their_reason_as_plain_text() -> None:
    error = common.SimulationError("walltime", "killed", code="xtb")
    assert error.reason is FailureReason.TIMEOUT
    data = pickle.dumps(error)
    assert b"FailureReason" not in data and b"orchestrator.apps.failures" not in data
    assert pickle.loads(data).reason is FailureReason.TIMEOUT


# --- journals of older (and newer) orch versions -------------------------------------------------


class _Pickled:
    """Pickles as ``cls`` with exactly ``state``: the bytes another orch version wrote."""

    def __init__(self, cls: type, state: dict[str, Any]):
        self.cls, self.state = cls, state

    @property  # type: ignore[misc]
    def __class__(self) -> type:  # pickle checks that __newobj__'s class is the object's
        return self.cls

    def __reduce_ex__(self, protocol: Any) -> tuple[Any, ...]:
        return (copyreg.__newobj__, (self.cls,), self.state)


def _model_state(values: dict[str, Any]) -> dict[str, Any]:
    return {
        "__dict__": values,
        "__pydantic_extra__": None,
        "__pydantic_fields_set__": set(values),
        "__pydantic_private__": None,
    }


def _old_result_blob(task_id: str, reason: str) -> bytes:
    """A failed Result as an older orch journaled it: plain-string reason, fewer fields."""
    info = _Pickled(
        FailureInfo,
        _model_state(
            {"exception_type": "SimulationError", "message": "xtb: killed", "reason": reason}
        ),
    )
    timestamps = Timestamps(created=1.0)
    values = {
        "task_id": task_id,
        "method": "m",
        "topic": "t",
        "args": (1,),
        "kwargs": {},
        "value": None,
        "success": False,
        "failure_info": info,
        "site": "local-cpu",
        "timestamps": timestamps,
    }
    return pickle.dumps(_Pickled(Result, _model_state(values)), protocol=5)


def test_old_and_future_reasons_in_a_journal_still_resume(tmp_path: Path) -> None:
    keys = {}
    journal = Journal(tmp_path)
    for task_id, arg in (("old", 1), ("future", 2)):
        keys[task_id] = input_key("m", (arg,), {})
        raised = FailureInfo(exception_type="SimulationError", message="x", reason="code_error")
        journal.finished(
            Result(
                task_id=task_id,
                method="m",
                topic="t",
                success=False,
                failure_info=raised,
                timestamps=Timestamps(created=1.0),
            ),
            keys[task_id],
        )
    journal.close()
    with sqlite3.connect(tmp_path / "journal.sqlite") as db:
        for task_id, reason in (("old", "walltime"), ("future", "preempted")):
            db.execute(
                "UPDATE results SET result = ? WHERE task_id = ?",
                (_old_result_blob(task_id, reason), task_id),
            )

    resumed = Journal(tmp_path, resume=True)
    old, future = resumed.replay(keys["old"]), resumed.replay(keys["future"])
    assert old is not None and future is not None, "a journaled result failed to load"
    assert old.failure_info is not None and future.failure_info is not None
    assert old.failure_info.reason is FailureReason.TIMEOUT
    assert old.failure_info.where == "task" and old.failure_info.details is None
    assert old.moves == [] and old.replayed is False  # fields newer than that orch
    assert future.failure_info.reason == "preempted"
    assert len(resumed.completed_results()) == 2
    resumed.close()


def test_new_journal_blobs_hold_the_reason_as_plain_text(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    key = input_key("m", (3,), {})
    info = FailureInfo(exception_type="E", message="m", reason=FailureReason.NOT_CONVERGED)
    journal.finished(
        Result(
            task_id="t1",
            method="m",
            topic="t",
            success=False,
            failure_info=info,
            timestamps=Timestamps(created=1.0),
        ),
        key,
    )
    journal.close()
    with sqlite3.connect(tmp_path / "journal.sqlite") as db:
        (blob,) = db.execute("SELECT result FROM results WHERE task_id = 't1'").fetchone()
    assert b"FailureReason" not in blob and b"orchestrator.apps.failures" not in blob
    loaded = pickle.loads(blob)
    assert loaded.failure_info.reason is FailureReason.NOT_CONVERGED


# --- retry_on ---------------------------------------------------------------------------------


def test_default_retry_on_comes_from_the_enumeration() -> None:
    method = Method(double)
    assert method.retry_on == failures.RETRIED_BY_DEFAULT
    assert method.should_retry("site_failure") and method.should_retry("timeout")
    assert method.should_retry("walltime")  # what an older worker reports
    assert not method.should_retry("not_converged") and not method.should_retry(None)
    assert not method.should_retry("no_site") and not method.should_retry("cancelled")


def test_retry_on_accepts_members_names_and_any() -> None:
    method = Method(double, retry_on={"site_failure", FailureReason.NOT_CONVERGED, "walltime"})
    assert method.retry_on == {"site_failure", "not_converged", "timeout"}
    assert all(isinstance(r, FailureReason) for r in method.retry_on)
    assert method.should_retry("not_converged") and not method.should_retry("code_error")
    assert Method(double, retry_on="any").should_retry("preempted")


def test_unknown_retry_on_reason_is_a_one_line_config_error() -> None:
    with pytest.raises(ConfigError) as info:
        Method(double, retry_on={"site_failure", "not_convergd"})
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("method double: retry_on names unknown failure reason(s) ")
    assert "'not_convergd'" in message and "'site_failure'" not in message.split(";")[0]
    assert all(r.value in message.split(";")[1] for r in FailureReason)
    with pytest.raises(ConfigError, match="retry_on must be 'any' or a set"):
        Method(double, retry_on="timeout")  # type: ignore[arg-type]


def test_failure_record_type_names_the_record_keys() -> None:
    assert set(FailureRecord.__annotations__) == RECORD_KEYS
