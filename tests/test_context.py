"""The campaign context: sites and capacity as the thinker sees them, capacity events, a
ResourceCounter that follows capacity, progress and objective values in the journal."""

from __future__ import annotations

import sqlite3
import threading

import pytest
from test_dispatch import ThreadSite, cfg

from orchestrator.context import CampaignContext
from orchestrator.dispatch import Dispatcher, Method, MethodRegistry
from orchestrator.dispatch.journal import Journal
from orchestrator.queues import Queues
from orchestrator.thinker import ResourceCounter


def ident(x):
    return x


@pytest.fixture
def campaign(tmp_path):
    a, b = ThreadSite(cfg("a", capacity=2), tmp_path), ThreadSite(cfg("b", capacity=3), tmp_path)
    journal = Journal(tmp_path)
    queues = Queues(["t"])
    dispatcher = Dispatcher(
        [a, b], MethodRegistry([Method(ident)]), queues.put_result, tmp_path, journal=journal,
        down_retry=None,
    )  # fmt: skip
    queues.attach(dispatcher)
    context = CampaignContext(tmp_path, None, dispatcher, journal)
    yield context, dispatcher, (a, b), queues
    dispatcher.close()
    for site in (a, b):
        site.shutdown()


def test_sites_and_capacity_follow_down_and_drained_sites(campaign):
    context, dispatcher, (a, b), _ = campaign
    seen: list[tuple[str, int]] = []
    context.on_capacity_change(lambda kind, n: seen.append((kind, n)))
    assert [(s.name, s.kind, s.capacity, s.takes_tasks) for s in context.sites()] == [
        ("a", "cpu", 2, True),
        ("b", "cpu", 3, True),
    ]
    assert context.capacities() == {"cpu": 5} and context.total_capacity("cpu") == 5
    dispatcher.drain("b")
    assert context.capacity_changed.is_set() and context.capacity("cpu") == 2
    context.capacity_changed.clear()
    a.mark_down("test: a lost its workers")
    assert context.capacity_changed.is_set() and context.capacity("cpu") == 0
    views = {s.name: s for s in context.sites()}
    assert views["a"].up is False and views["a"].down_reason == "test: a lost its workers"
    assert views["b"].drained and not views["b"].takes_tasks
    dispatcher.drain("b", drained=False)
    assert seen == [("cpu", 2), ("cpu", 0), ("cpu", 3)]
    assert context.total_capacity("cpu") == 5  # what the campaign has at best


def test_a_following_counter_shrinks_and_grows_with_the_sites(campaign):
    context, dispatcher, (a, b), _ = campaign
    rec = ResourceCounter(5, ["simulate"])
    rec.reallocate(None, "simulate", 5)
    context.follow(rec, "cpu", pool="simulate")
    assert rec.acquire("simulate", 4, timeout=0)  # 4 tasks running, 1 slot free
    dispatcher.drain("b")  # 3 workers gone: the free slot leaves now, 2 busy ones are owed
    assert rec.total_slots == 2 and rec.available_slots("simulate") == 0
    assert rec.owed_slots == 2
    rec.release("simulate", 2)  # two tasks came back: their slots retire
    assert rec.owed_slots == 0 and rec.allocated_slots("simulate") == 2
    assert rec.available_slots("simulate") == 0

    # a policy asking for more than now exists waits, and is served when sites come back
    got = threading.Event()
    waiter = threading.Thread(target=lambda: rec.acquire("simulate", 3) and got.set())
    waiter.start()
    assert not got.wait(0.2)
    dispatcher.drain("b", drained=False)
    waiter.join(timeout=10)
    assert got.is_set() and rec.total_slots == 5
    assert rec.allocated_slots("simulate") == 5 and rec.available_slots("simulate") == 0
    b.mark_down("test: b is down")
    assert rec.total_slots == 2 and rec.owed_slots == 3


def test_progress_and_objective_values(campaign, tmp_path):
    context, dispatcher, _, _ = campaign
    assert context.progress() is None
    context.set_progress(3, 10, text="best 1.5")
    progress = context.progress()
    assert progress is not None and (progress["done"], progress["budget"]) == (3, 10)
    for value in (1.0, float("nan"), 2.5, "not a number", float("inf")):
        context.record_objective(value, task_id="t1")  # type: ignore[arg-type]
    dispatcher.journal.flush()
    db = sqlite3.connect(tmp_path / "journal.sqlite")
    assert [v for (v,) in db.execute("SELECT value FROM objective ORDER BY seq")] == [1.0, 2.5]
    db.close()
    assert context.run_dir == tmp_path and context.options is None and context.registry is None
    with pytest.raises(ValueError, match="slots_per_worker"):
        context.follow(ResourceCounter(1), "cpu", slots_per_worker=0)
