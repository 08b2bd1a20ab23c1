"""Campaign loading, topic discovery and option parsing (no engine needed)."""

from __future__ import annotations

import pytest

from orchestrator.campaigns.demo import DemoCampaign, DemoOptions
from orchestrator.config.campaign import parse_options
from orchestrator.dispatch import Method, MethodRegistry
from orchestrator.exceptions import ConfigError
from orchestrator.runner import campaign_methods, campaign_topics, load_campaign
from orchestrator.thinker import BaseThinker, agent, result_processor


def f(x):
    return x


class WithTopics(BaseThinker):
    methods = [Method(f, name="simulate"), f]
    topics = ["generate"]

    @result_processor(topic="scores")
    def consume(self, result):
        pass

    @agent
    def idle(self):
        pass


def test_topics_are_methods_processors_and_declared():
    methods = campaign_methods(WithTopics)
    assert sorted(m.name for m in methods) == ["f", "simulate"]
    assert campaign_topics(WithTopics, methods) == {"simulate", "f", "generate", "scores"}


def test_plain_functions_become_cpu_methods():
    (method,) = [m for m in campaign_methods(WithTopics) if m.name == "f"]
    assert method.kind == "cpu" and method.slots == 1


def test_campaign_without_methods_is_rejected():
    class Empty(BaseThinker):
        pass

    with pytest.raises(ConfigError, match="declares no methods; set a class attribute"):
        campaign_methods(Empty)


def test_duplicate_method_names_are_rejected():
    with pytest.raises(ConfigError, match="registered twice"):
        MethodRegistry([Method(f), Method(f)])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kind": "tpu"}, "kind 'tpu' is not 'cpu' or 'gpu'"),
        ({"slots": 0}, "slots must be >= 1"),
        ({"name": "not valid"}, "must be a Python identifier"),
        ({"max_retries": -1}, "max_retries must be >= 0"),
    ],
)
def test_bad_method_declarations(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        Method(f, **kwargs)


def test_load_builtin_and_module_references():
    assert load_campaign("demo") == (DemoCampaign, [])
    assert load_campaign("orchestrator.campaigns.demo:DemoCampaign")[0] is DemoCampaign


def test_load_file_reference_adds_worker_path(tmp_path):
    path = tmp_path / "my_camp_mod.py"
    path.write_text(
        "from orchestrator.thinker import BaseThinker\n"
        "class C(BaseThinker):\n    methods = [print]\n"
    )
    cls, paths = load_campaign(f"{path}:C")
    assert cls.__name__ == "C" and paths == [str(tmp_path)]


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ("nosuch", "not a built-in campaign"),
        ("no_such_module_xyz:C", "cannot import no_such_module_xyz"),
        ("orchestrator.campaigns.demo:Missing", "has no attribute 'Missing'"),
        ("orchestrator.campaigns.demo:DemoOptions", "is not a BaseThinker subclass"),
    ],
)
def test_bad_campaign_references(ref, message):
    with pytest.raises(ConfigError, match=message):
        load_campaign(ref)


def test_campaign_file_that_raises_on_import(tmp_path):
    path = tmp_path / "raises_on_import.py"
    path.write_text("raise RuntimeError('nope')\n")
    with pytest.raises(ConfigError, match="raised RuntimeError: nope"):
        load_campaign(f"{path}:C")


def test_options_are_coerced_and_validated():
    options = parse_options(DemoCampaign, ["n_simulations=10", "batch-size=4"])
    assert options == DemoOptions(n_simulations=10, batch_size=4)
    with pytest.raises(ConfigError, match="option parallel: .*greater than or equal to 1"):
        parse_options(DemoCampaign, ["parallel=0"])
    with pytest.raises(ConfigError, match="takes no options"):
        parse_options(WithTopics, ["a=1"])
    assert parse_options(WithTopics, []) is None
