"""The Globus Compute endpoint files ``orch deploy`` writes, checked with the endpoint's own code.

Nothing here starts an endpoint, an engine or a worker: the rendered config is loaded into
``globus_compute_endpoint``'s ``UserEndpointConfig`` (which builds the engine and provider
objects) and the engine's own ``containerized_launch_cmd`` is called after setting the run
directory its ``start()`` would set.
"""

from __future__ import annotations

import inspect
import json
import os
import shlex
import string
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from globus_compute_endpoint.endpoint.config.utils import load_config_yaml

from orchestrator.config.sites import SiteConfig
from orchestrator.containers import endpoint as ep
from orchestrator.exceptions import ConfigError

pytestmark = pytest.mark.container

ENDPOINT_ID = "2f1e3c4d-5b6a-4789-8abc-def012345678"
IMAGE = "/images/orch/ml.sif"
GCE_BIN = Path(sys.executable).parent / "globus-compute-endpoint"
RUN_DIR = "/home/someone/.globus_compute/site-a/user/run"


def site(container: dict[str, Any] | None = None, **fields: Any) -> SiteConfig:
    """A globus site; the interchange address is given so no address lookup happens."""
    data: dict[str, Any] = {
        "name": "site-a",
        "kind": "cpu",
        "backend": "globus",
        "capacity": 3,
        "endpoint_id": ENDPOINT_ID,
        "user_endpoint_config": {"address": "127.0.0.1"},
    }
    if container is not None:
        data["container"] = container
    data.update(fields)
    return SiteConfig.model_validate(data)


def written(config: SiteConfig, tmp_path: Path) -> Path:
    folder = tmp_path / config.name
    ep.write_endpoint_files(config, folder)
    return folder


def load(rendered: str) -> Any:
    """The rendered text as the user endpoint loads it."""
    return load_config_yaml(rendered)


def launch_argv(engine: Any, run_dir: str = RUN_DIR) -> list[str]:
    """The worker pool's launch command as the engine's start() composes it."""
    engine.run_dir = run_dir  # what start(run_dir=...) sets before wrapping the command
    return shlex.split(engine.containerized_launch_cmd())


def format_fields(text: str) -> list[str]:
    return [name for _, name, _, _ in string.Formatter().parse(text) if name]


# --- workers mode -------------------------------------------------------------------------------


def test_workers_mode_cpu_site_renders_a_custom_apptainer_wrapper(tmp_path: Path) -> None:
    config = site({"image": IMAGE})
    folder = written(config, tmp_path)
    rendered = ep.check_endpoint_files(folder)
    user = load(rendered)
    engine = user.engine
    assert type(engine).__name__ == "GlobusComputeEngine"
    assert engine.container_type == "custom"
    options = engine.container_cmd_options
    assert "{EXECUTOR_LAUNCH_CMD}" in options and IMAGE in options
    words = shlex.split(options)
    assert words[:3] == ["apptainer", "exec", "--cleanenv"]
    assert "--nv" not in words
    assert words[words.index("--bind") + 1] == "{EXECUTOR_RUNDIR}"
    assert words[words.index("--pwd") + 1] == "{EXECUTOR_RUNDIR}"
    assert words[-2:] == [IMAGE, "{EXECUTOR_LAUNCH_CMD}"]
    provider = engine.executor.provider
    assert type(provider).__name__ == "LocalProvider"
    assert provider.worker_init == ""
    assert engine.max_workers_per_node == config.capacity
    assert user.idle_heartbeats_soft == 10


def test_engine_launch_command_runs_the_worker_pool_inside_the_image(tmp_path: Path) -> None:
    config = site({"image": IMAGE, "binds": ["/scratch/me"]})
    engine = load(ep.check_endpoint_files(written(config, tmp_path))).engine
    bare = engine.executor.launch_cmd
    argv = launch_argv(engine)
    assert argv[:3] == ["apptainer", "exec", "--cleanenv"]
    assert argv[argv.index("--pwd") + 1] == RUN_DIR
    binds = [argv[i + 1] for i, word in enumerate(argv) if word == "--bind"]
    assert binds == [RUN_DIR, "/scratch/me"]
    image_at = argv.index(IMAGE)
    assert argv[image_at + 1 :] == shlex.split(bare)
    assert argv[image_at + 1 : image_at + 3] == ["globus-compute-endpoint", "python-exec"]
    # Parsl str.format()s the launch command later: the wrapper must add no fields.
    assert format_fields(" ".join(argv)) == format_fields(bare)


def test_gpu_site_passes_nv_and_pins_accelerators(tmp_path: Path) -> None:
    config = site({"image": IMAGE}, kind="gpu", capacity=8, accelerators=["0", "1"])
    user = load(ep.check_endpoint_files(written(config, tmp_path)))
    engine = user.engine
    words = shlex.split(engine.container_cmd_options)
    assert words[:4] == ["apptainer", "exec", "--cleanenv", "--nv"]
    assert engine.executor.available_accelerators == ["0", "1"]
    assert "--nv" in launch_argv(engine)


def test_gpu_false_on_a_gpu_site_drops_nv(tmp_path: Path) -> None:
    config = site({"image": IMAGE, "gpu": False}, kind="gpu")
    engine = load(ep.check_endpoint_files(written(config, tmp_path))).engine
    assert "--nv" not in shlex.split(engine.container_cmd_options)


def test_cpu_site_with_gpu_true_passes_nv(tmp_path: Path) -> None:
    config = site({"image": IMAGE, "gpu": True})
    engine = load(ep.check_endpoint_files(written(config, tmp_path))).engine
    assert "--nv" in shlex.split(engine.container_cmd_options)


def test_singularity_runtime(tmp_path: Path) -> None:
    config = site({"image": IMAGE, "runtime": "singularity"})
    engine = load(ep.check_endpoint_files(written(config, tmp_path))).engine
    assert launch_argv(engine)[:3] == ["singularity", "exec", "--cleanenv"]


def test_site_binds_and_env_reach_the_wrapper(tmp_path: Path) -> None:
    config = site(
        {
            "image": IMAGE,
            "binds": ["/scratch/me", "/data/shared:/data:ro"],
            "env": {"OMP_NUM_THREADS": 4, "OMP_PROC_BIND": "close"},
        }
    )
    argv = launch_argv(load(ep.check_endpoint_files(written(config, tmp_path))).engine)
    binds = [argv[i + 1] for i, word in enumerate(argv) if word == "--bind"]
    assert binds == [RUN_DIR, "/scratch/me", "/data/shared:/data:ro"]
    env = [argv[i + 1] for i, word in enumerate(argv) if word == "--env"]
    assert env == ["PYTHONNOUSERSITE=1", "OMP_NUM_THREADS=4", "OMP_PROC_BIND=close"]


def test_site_with_a_recipe(tmp_path: Path) -> None:
    from orchestrator.config.containers import containers_dir

    if not (containers_dir() / "sim.def").is_file():
        pytest.skip(f"no sim.def in {containers_dir()} yet")
    config = site({"image": "/proj/images/sim.sif", "recipe": "sim.def", "mode": "exec"})
    engine = load(ep.check_endpoint_files(written(config, tmp_path))).engine
    assert engine.container_type is None  # exec mode: the recipe changes nothing here


def test_pulled_image_keeps_the_site_side_path(tmp_path: Path) -> None:
    default = site({"image": "oras://ghcr.io/org/ml:1.0"})
    words = shlex.split(
        load(ep.check_endpoint_files(written(default, tmp_path))).engine.container_cmd_options
    )
    # '~' is the site user's home: the batch script's shell expands it there.
    assert "~/.orch/images/site-a.sif" in words
    given = site({"image": "oras://ghcr.io/org/ml:1.0", "path": "/proj/images/ml.sif"})
    text = ep.endpoint_files(given)[ep.TEMPLATE_FILE]
    assert "/proj/images/ml.sif {EXECUTOR_LAUNCH_CMD}" in text


def test_container_false_turns_the_wrapper_off(tmp_path: Path) -> None:
    config = site({"image": IMAGE})
    folder = written(config, tmp_path)
    assert ep.DEPLOY_USER_CONFIG == {"container": False}
    values = ep.deploy_user_config(config)
    assert values == {"address": "127.0.0.1", "container": False}
    rendered = ep.check_endpoint_files(folder, values)
    assert "container_cmd_options" not in rendered
    engine = load(rendered).engine
    assert engine.container_type is None
    assert engine.executor.launch_cmd.startswith("globus-compute-endpoint python-exec")
    on = load(ep.check_endpoint_files(folder, {**values, "container": True})).engine
    assert on.container_type == "custom"


def test_probe_is_sent_with_the_tasks_values(tmp_path: Path) -> None:
    config = site({"image": IMAGE}, user_endpoint_config={"address": "127.0.0.1", "max_blocks": 2})
    probe = ep.probe_user_config(config)
    # The very values the site's tasks are sent with: the same user endpoint, container on.
    assert probe == dict(config.user_endpoint_config)
    assert "container" not in probe
    engine = load(ep.check_endpoint_files(written(config, tmp_path), probe)).engine
    assert engine.container_type == "custom"


# --- exec mode, no container --------------------------------------------------------------------


@pytest.mark.parametrize("container", [True, False])
def test_exec_mode_has_no_wrapper(tmp_path: Path, container: bool) -> None:
    config = site({"image": IMAGE, "mode": "exec", "binds": ["/scratch/me"]}, kind="gpu")
    files = ep.endpoint_files(config)
    assert "container_cmd_options" not in files[ep.TEMPLATE_FILE]
    assert "container_type" not in files[ep.TEMPLATE_FILE]
    rendered = ep.check_endpoint_files(written(config, tmp_path), {"container": container})
    engine = load(rendered).engine
    assert engine.container_type is None
    assert rendered == ep.check_endpoint_files(tmp_path / config.name)


def test_site_without_container_section(tmp_path: Path) -> None:
    config = site(None)
    engine = load(ep.check_endpoint_files(written(config, tmp_path))).engine
    assert engine.container_type is None


# --- provider settings from the site --------------------------------------------------------------

TRICKY_INIT = "module load apptainer/1.3\nexport TAG='{{ not jinja }}' A=\"b\\\\c\" # ü {% x %}"


def slurm_site() -> SiteConfig:
    return site(
        {"image": IMAGE},
        capacity=16,
        user_endpoint_config={
            "provider": "SlurmProvider",
            "launcher": "SrunLauncher",
            "account": "chem-proj",
            "partition": "gpu",
            "walltime": "01:30:00",
            "nodes_per_block": 2,
            "max_blocks": 4,
            "max_workers_per_node": 4,
            "worker_init": TRICKY_INIT,
            "scheduler_options": "#SBATCH --constraint=a100",
            "interface": "lo",
        },
    )


def test_provider_settings_come_from_the_site(tmp_path: Path) -> None:
    config = slurm_site()
    rendered = ep.check_endpoint_files(written(config, tmp_path))
    assert yaml.safe_load(rendered)["engine"]["provider"]["worker_init"] == TRICKY_INIT
    engine = load(rendered).engine
    provider = engine.executor.provider
    assert type(provider).__name__ == "SlurmProvider"
    assert type(provider.launcher).__name__ == "SrunLauncher"
    assert provider.account == "chem-proj"
    assert provider.partition == "gpu"
    assert provider.walltime == "01:30:00"
    assert provider.nodes_per_block == 2
    assert provider.max_blocks == 4
    assert provider.worker_init.rstrip("\n") == TRICKY_INIT  # SlurmProvider appends "\n"
    assert "--constraint=a100" in provider.scheduler_options
    assert engine.max_workers_per_node == 4  # given, so not the capacity
    assert engine.executor.address == "127.0.0.1"  # address_by_interface("lo")


def test_defaults_equal_what_the_site_sends(tmp_path: Path) -> None:
    """Rendering with no values and with the site's values (through the endpoint's own
    JSON-quoting of submitted strings) gives the same config."""
    config = slurm_site()
    folder = written(config, tmp_path)
    assert ep.check_endpoint_files(folder) == ep.check_endpoint_files(
        folder, dict(config.user_endpoint_config)
    )


def test_submitted_values_override_the_defaults(tmp_path: Path) -> None:
    folder = written(slurm_site(), tmp_path)
    values = {"max_blocks": 9, "worker_init": "source /opt/env.sh", "qos": "debug"}
    rendered = ep.check_endpoint_files(folder, values)
    data = yaml.safe_load(rendered)
    assert data["engine"]["provider"]["max_blocks"] == 9
    assert data["engine"]["provider"]["worker_init"] == "source /opt/env.sh"
    assert data["engine"]["provider"]["qos"] == "debug"


def test_a_provider_setting_the_provider_lacks_is_one_line(tmp_path: Path) -> None:
    folder = written(site({"image": IMAGE}), tmp_path)
    with pytest.raises(ConfigError) as info:
        ep.check_endpoint_files(folder, {"account": "chem"})  # LocalProvider has no account
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{folder / ep.TEMPLATE_FILE} (rendered): ")
    assert "account" in message


# --- the schema -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "field", "words"),
    [
        ({"max_blocks": "two"}, "max_blocks", "not of type 'integer'"),
        ({"container": "no"}, "container", "not of type 'boolean'"),
        ({"nodes_per_block": 0}, "nodes_per_block", "less than the minimum"),
        ({"walltime": "1h"}, "walltime", "does not match"),
        ({"max_block": 2}, "", "'max_block' was unexpected"),
        ({"available_accelerators": [0]}, "available_accelerators.0", "not of type 'string'"),
    ],
)
def test_schema_rejects_bad_values_in_one_line(
    tmp_path: Path, values: dict[str, Any], field: str, words: str
) -> None:
    folder = written(site({"image": IMAGE}), tmp_path)
    with pytest.raises(ConfigError) as info:
        ep.check_endpoint_files(folder, values)
    message = str(info.value)
    assert "\n" not in message
    where = f"user_endpoint_config.{field}" if field else "user_endpoint_config"
    assert message.startswith(f"{folder / ep.SCHEMA_FILE}: {where}: ")
    assert words in message


def test_reserved_variable_is_one_line(tmp_path: Path) -> None:
    folder = written(site({"image": IMAGE}), tmp_path)
    with pytest.raises(ConfigError, match="'_GC' is a reserved word") as info:
        ep.check_endpoint_files(folder, {"_GC": 1})
    assert "\n" not in str(info.value)


def test_schema_file_is_valid_and_documents_the_defaults() -> None:
    import jsonschema

    schema = json.loads(ep.endpoint_files(slurm_site())[ep.SCHEMA_FILE])
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["additionalProperties"] is False
    props = schema["properties"]
    assert props["container"] == props["container"] | {"type": "boolean", "default": True}
    assert props["worker_init"]["default"] == TRICKY_INIT
    assert props["max_workers_per_node"]["default"] == 4
    assert "default" not in props["qos"]


# --- the site's own settings refused ------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"user_endpoint_config": {"nodes": 2}}, "user_endpoint_config: Additional properties"),
        ({"user_endpoint_config": {"max_blocks": "2"}}, "user_endpoint_config.max_blocks: '2'"),
        ({"user_endpoint_config": {"container": False}}, "user_endpoint_config.container: set"),
    ],
)
def test_site_values_that_do_not_fit_the_template(fields: dict[str, Any], words: str) -> None:
    config = site({"image": IMAGE}, **fields)
    with pytest.raises(ConfigError) as info:
        ep.endpoint_files(config)
    message = str(info.value)
    assert "\n" not in message and message.startswith("site 'site-a': ")
    assert words in message


def test_local_site_has_no_endpoint_files() -> None:
    config = SiteConfig.model_validate(
        {"name": "laptop", "kind": "cpu", "backend": "local", "capacity": 2}
    )
    with pytest.raises(ConfigError, match="backend: globus"):
        ep.endpoint_files(config)


@pytest.mark.parametrize(
    ("env", "words"),
    [({"TAG": "{x}"}, "'{' or '}'"), ({"GREETING": "hello world"}, "whitespace")],
)
def test_workers_mode_refuses_what_the_launch_command_cannot_carry(
    env: dict[str, str], words: str
) -> None:
    with pytest.raises(ConfigError, match=words) as info:
        ep.endpoint_files(site({"image": IMAGE, "env": env}))
    assert "\n" not in str(info.value)
    # Exec mode passes the spec with each task: no launch command to carry them.
    assert ep.endpoint_files(site({"image": IMAGE, "env": env, "mode": "exec"}))


# --- files and the checks on them ---------------------------------------------------------------


def test_files_are_written_to_a_folder(tmp_path: Path) -> None:
    config = site({"image": IMAGE})
    folder = tmp_path / "deploy" / "site-a"
    paths = ep.write_endpoint_files(config, folder)
    files = ep.endpoint_files(config)
    assert [p.name for p in paths] == [ep.CONFIG_FILE, ep.TEMPLATE_FILE, ep.SCHEMA_FILE]
    assert {p.name: p.read_text() for p in paths} == files
    manager = yaml.safe_load(files[ep.CONFIG_FILE])
    assert manager == {"display_name": "orch site site-a (cpu)"}
    assert type(load_config_yaml(files[ep.CONFIG_FILE])).__name__ == "CoreEndpointConfig"


def test_check_reports_broken_files_in_one_line(tmp_path: Path) -> None:
    folder = written(site({"image": IMAGE}), tmp_path)
    template = folder / ep.TEMPLATE_FILE
    text = template.read_text()

    template.write_text(text + "{% if %}\n")
    with pytest.raises(ConfigError, match=rf"^{template}:\d+: ") as info:
        ep.check_endpoint_files(folder)
    assert "\n" not in str(info.value)

    template.write_text(text + "extra: {{ undefined_thing }}\n")
    with pytest.raises(ConfigError, match="undefined_thing") as info:
        ep.check_endpoint_files(folder)
    assert str(info.value).startswith(f"{template}: UndefinedError: ")

    template.write_text(text)
    (folder / ep.SCHEMA_FILE).unlink()
    with pytest.raises(ConfigError, match=rf"^{folder / ep.SCHEMA_FILE}: missing"):
        ep.check_endpoint_files(folder)

    config_file = folder / ep.CONFIG_FILE
    config_file.write_text("engine:\n  type: ThreadPoolEngine\n")
    with pytest.raises(ConfigError, match=rf"^{config_file}: has an engine block"):
        ep.check_endpoint_files(folder)
    config_file.write_text("display_name: [unclosed\n")
    with pytest.raises(ConfigError, match=rf"^{config_file}: Invalid config syntax") as info:
        ep.check_endpoint_files(folder)
    assert "\n" not in str(info.value)
    config_file.unlink()
    with pytest.raises(ConfigError, match=rf"^{config_file}: cannot read it"):
        ep.check_endpoint_files(folder)


# --- the endpoint's own command line ----------------------------------------------------------


def cli(args: list[str], tmp_path: Path, stdin: str | None = None) -> subprocess.CompletedProcess:
    if not GCE_BIN.exists():
        pytest.skip(f"{GCE_BIN} is not installed")
    env = {**os.environ, "GLOBUS_COMPUTE_USER_DIR": str(tmp_path / "gc-home")}
    env["PATH"] = f"{GCE_BIN.parent}{os.pathsep}{env.get('PATH', '')}"
    try:
        done = subprocess.run(
            [str(GCE_BIN), *args],
            input=stdin,
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
            check=False,
        )
    except subprocess.TimeoutExpired:
        pytest.skip(f"`globus-compute-endpoint {args[0]}` did not finish offline in 120 s")
    if done.returncode != 0 and any(
        word in done.stderr for word in ("ConnectionError", "NetworkError", "Max retries")
    ):
        pytest.skip(f"`globus-compute-endpoint {args[0]}` needs the network here")
    return done


def test_cli_render_user_config_agrees(tmp_path: Path) -> None:
    config = slurm_site()
    folder = written(config, tmp_path)
    values = {"max_blocks": 2, "worker_init": "module load apptainer"}
    options = tmp_path / "options.json"
    options.write_text(json.dumps(values))
    args = ["render-user-config", "-t", str(folder / ep.TEMPLATE_FILE)]
    args += ["-s", str(folder / ep.SCHEMA_FILE), "-o", str(options)]
    done = cli(args, tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ep.check_endpoint_files(folder, values).strip()

    options.write_text(json.dumps({"max_blocks": "two"}))
    refused = cli(args, tmp_path)
    assert refused.returncode != 0
    assert "'two' is not of type 'integer'" in refused.stderr


def test_cli_configure_installs_the_files(tmp_path: Path) -> None:
    config = site({"image": IMAGE, "binds": ["/scratch/me"]}, kind="gpu")
    folder = written(config, tmp_path)
    args = ["configure", "site-a", "--multi-user", "false"]
    args += ["--core-config", str(folder / ep.CONFIG_FILE)]
    args += ["--template-config", str(folder / ep.TEMPLATE_FILE)]
    args += ["--schema-config", str(folder / ep.SCHEMA_FILE)]
    done = cli(args, tmp_path)
    assert done.returncode == 0, done.stderr
    installed = tmp_path / "gc-home" / "site-a"
    assert (installed / ep.TEMPLATE_FILE).read_text() == (folder / ep.TEMPLATE_FILE).read_text()
    rendered = cli(["render-user-config", "-e", "site-a", "-o", "-"], tmp_path, "{}")
    assert rendered.returncode == 0, rendered.stderr
    # The installed endpoint renders what orch's own check renders.
    assert rendered.stdout.strip() == ep.check_endpoint_files(installed).strip()
    assert "--nv" in load(rendered.stdout).engine.container_cmd_options


# --- what orch relies on in the endpoint package ----------------------------------------------


def test_endpoint_package_api_orch_relies_on() -> None:
    """Fails when an upgrade of globus-compute-endpoint moves what endpoint.py uses.

    endpoint.py reaches no private name; these are the public names and parameters it
    calls, and the engine attributes the tests set (``run_dir``, as ``start`` does).
    """
    from globus_compute_endpoint.endpoint.config import (
        CoreEndpointConfig,
        UserEndpointConfig,
        utils,
    )
    from globus_compute_endpoint.endpoint.endpoint import Endpoint
    from globus_compute_endpoint.endpoint.identity_mapper import MappedPosixIdentity
    from globus_compute_endpoint.engines import GlobusComputeEngine
    from globus_compute_sdk.sdk.batch import create_user_runtime

    assert callable(utils.load_config_yaml)
    assert callable(utils.load_user_config_schema)
    assert callable(utils.load_user_config_template)
    assert callable(create_user_runtime)
    params = inspect.signature(utils.render_config_user_template).parameters
    assert {
        "parent_config",
        "user_config_template",
        "user_config_template_path",
        "mapped_identity",
        "user_config_schema",
        "user_opts",
        "user_runtime",
    } <= set(params)
    folder = Path("/nowhere")
    assert Endpoint.user_config_template_path(folder) == folder / ep.TEMPLATE_FILE
    assert Endpoint.user_config_schema_path(folder) == folder / ep.SCHEMA_FILE
    fields = inspect.signature(MappedPosixIdentity).parameters
    assert {"local_user_record", "matched_identity", "globus_identity_candidates"} <= set(fields)
    assert isinstance(utils.load_config_yaml(""), CoreEndpointConfig)
    assert "engine" in inspect.signature(UserEndpointConfig).parameters
    from globus_compute_endpoint.engines.globus_compute import VALID_CONTAINER_TYPES

    assert "custom" in VALID_CONTAINER_TYPES
    assert hasattr(GlobusComputeEngine, "containerized_launch_cmd")
    source = inspect.getsource(GlobusComputeEngine.containerized_launch_cmd)
    assert "{EXECUTOR_RUNDIR}" in source and "{EXECUTOR_LAUNCH_CMD}" in source
    assert "self.run_dir" in source
