"""The Globus Compute endpoint files ``orch deploy`` writes for a ``backend: globus`` site.

A site's owner installs the three files on the site with ``globus-compute-endpoint configure
NAME --core-config config.yaml --template-config user_config_template.yaml.j2
--schema-config user_config_schema.json``:

* ``config.yaml``: the manager (core) endpoint. No ``engine`` block: Globus Compute 4.19 reads
  a config without one as a template-capable ``CoreEndpointConfig``, which renders
  ``user_config_template.yaml.j2`` for every distinct ``user_endpoint_config`` it receives
  and starts one user endpoint process per rendered config.
* ``user_config_template.yaml.j2``: a ``GlobusComputeEngine`` (a ``GlobusMPIEngine`` for a
  site with ``mpi:``, see MPI below) with a Parsl provider. The defaults of its variables are
  the site's own ``user_endpoint_config`` values (so a task sent with exactly those values, as
  orch's tasks are, renders the defaults), and ``max_workers_per_node`` defaults to the
  site's ``capacity``.
* ``user_config_schema.json``: the variables' types; unknown variables are refused, so a
  misspelt option fails at submission instead of silently starting another user endpoint.

MPI. A site with ``mpi:`` gets a ``GlobusMPIEngine`` (Parsl's ``MPIExecutor``) instead: one
worker pool on the first node of each batch job, whose workers start their tasks' programs
over the nodes Parsl hands them (from ``PBS_NODEFILE`` or ``SLURM_NODELIST``, read by the
worker pool inside the job, never when the config is loaded). ``mpi_launcher`` is the site's
``mpi.launcher`` in Parsl's words (``openmpi`` is ``mpiexec``: Parsl has no OpenMPI kind, and
orch's wrappers build OpenMPI's launch line themselves), the provider's launcher is always a
``SimpleLauncher`` (the only one ``MPIExecutor`` accepts), ``nodes_per_block`` defaults to the
site's ``capacity`` (which counts nodes there) and ``max_workers_per_block`` (tasks at once
per job, one per node at most) to ``nodes_per_block``. The HTEX-only variables
(``launcher``, ``max_workers_per_node``, ``available_accelerators``) are not in an MPI site's
schema: a site that sets one is refused with the reason.

Containers. In ``mode: workers`` the engine wraps its worker pool with Globus Compute's
``custom`` container type: ``container_cmd_options`` is
:func:`orchestrator.containers.commands.workers_launch_template` with the engine's run
directory (``{EXECUTOR_RUNDIR}``, substituted by the engine at start) bound and used as the
working directory (``--pwd``): the worker pool writes its logs and the tasks' working
directories there, and ``--pwd`` makes the start directory inside the image the same on every
site, whether or not the site's Apptainer mounts the host's current directory. The template
variable ``container`` (default ``true``) turns the wrapper off: orch's deployment task is
sent with :data:`DEPLOY_USER_CONFIG` so that its worker runs on the host, where it can run
``apptainer build``/``pull``. In ``mode: exec`` (and without a ``container:`` section) there
is no wrapper: the workers run on the host and orch sends the exec spec with each task.

orch's every use of the endpoint package's configuration code is in this module;
``check_endpoint_files`` takes the same path ``globus-compute-endpoint`` takes
(``load_config_yaml`` -> ``render_config_user_template`` with the schema ->
``load_config_yaml`` of the rendered text into a ``UserEndpointConfig``). It needs no private
name of the endpoint package.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import uuid
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

from orchestrator.config.sites import SiteConfig
from orchestrator.containers import commands
from orchestrator.containers.plan import plan_for
from orchestrator.exceptions import ConfigError

CONFIG_FILE = "config.yaml"
TEMPLATE_FILE = "user_config_template.yaml.j2"
SCHEMA_FILE = "user_config_schema.json"

RUNDIR_PLACEHOLDER = "{EXECUTOR_RUNDIR}"
"""Where Globus Compute's ``custom`` container type puts the engine's run directory."""

DEPLOY_USER_CONFIG: dict[str, Any] = {"container": False}
"""What orch's deployment task adds to the site's ``user_endpoint_config``: no wrapper."""

_ORCH_VARIABLES = ("container",)
"""Template variables orch sets itself; a site's ``user_endpoint_config`` must not."""

_SCHEMA_PROPERTIES: dict[str, dict[str, Any]] = {
    "container": {
        "type": "boolean",
        "description": "Run the worker pool inside the site's image (workers mode only); "
        "orch's deployment task sends false",
    },
    "provider": {
        "type": "string",
        "pattern": "^[A-Z][A-Za-z0-9]*Provider$",
        "description": "Parsl provider class, e.g. LocalProvider, SlurmProvider, PBSProProvider",
    },
    "launcher": {
        "type": "string",
        "pattern": "^[A-Z][A-Za-z0-9]*Launcher$",
        "description": "Parsl launcher class, e.g. SrunLauncher, MpiExecLauncher",
    },
    "account": {"type": "string", "minLength": 1, "description": "Batch account"},
    "partition": {"type": "string", "minLength": 1, "description": "Slurm partition"},
    "queue": {"type": "string", "minLength": 1, "description": "PBS/LSF queue"},
    "qos": {"type": "string", "minLength": 1, "description": "Slurm quality of service"},
    "walltime": {
        "type": "string",
        "pattern": "^[0-9]+:[0-5][0-9]:[0-5][0-9]$",
        "description": "Batch job walltime, HH:MM:SS",
    },
    "scheduler_options": {
        "type": "string",
        "description": "Extra lines for the batch script header (#SBATCH/#PBS lines)",
    },
    "nodes_per_block": {"type": "integer", "minimum": 1, "description": "Nodes per job"},
    "init_blocks": {"type": "integer", "minimum": 0, "description": "Jobs at start"},
    "min_blocks": {"type": "integer", "minimum": 0, "description": "Fewest jobs kept"},
    "max_blocks": {"type": "integer", "minimum": 1, "description": "Most jobs at once"},
    "worker_init": {
        "type": "string",
        "description": "Shell lines run on the host before the worker pool starts "
        "(e.g. module load apptainer)",
    },
    "max_workers_per_node": {
        "type": "integer",
        "minimum": 1,
        "description": "Workers per node (default: the site's capacity)",
    },
    "available_accelerators": {
        "type": "array",
        "items": {"type": "string", "minLength": 1},
        "description": "Accelerator ids of one node; one worker is pinned to each",
    },
    "address": {
        "type": "string",
        "minLength": 1,
        "description": "Address the workers reach the interchange at",
    },
    "interface": {
        "type": "string",
        "minLength": 1,
        "description": "Network interface whose address the workers reach the interchange "
        "at (ignored when address is given)",
    },
}
"""Every template variable of a site without ``mpi:`` and its JSON schema
(``additionalProperties: false``)."""

_MPI_ONLY_PROPERTIES: dict[str, dict[str, Any]] = {
    "max_workers_per_block": {
        "type": "integer",
        "minimum": 1,
        "description": "MPI tasks run at once per batch job, one per node at most "
        "(default: nodes_per_block)",
    },
}
"""Template variables only an ``mpi:`` site's template has."""

_MPI_REFUSED: dict[str, str] = {
    "launcher": "an MPI site's provider always uses SimpleLauncher (Parsl's MPIExecutor "
    "accepts no other; the tasks' ranks are started by mpi.launcher); remove it",
    "max_workers_per_node": "Parsl's MPIExecutor has no workers per node; use "
    "max_workers_per_block (MPI tasks at once per batch job)",
    "available_accelerators": "Parsl's MPIExecutor does not pin workers to accelerators; "
    "remove it (a task asks for GPUs with its resources)",
}
"""HTEX-only template variables an ``mpi:`` site's template does not have, and why."""

PARSL_MPI_LAUNCHERS: dict[str, str] = {
    "mpiexec": "mpiexec",
    "openmpi": "mpiexec",
    "srun": "srun",
    "aprun": "aprun",
}
"""A site's ``mpi.launcher`` -> the ``mpi_launcher`` of Parsl's ``MPIExecutor``."""

_PROVIDER_OPTIONAL = ("account", "partition", "queue", "qos", "walltime", "scheduler_options")
"""Provider settings written only when given (not every provider takes them)."""

_JINJA_DELIMITERS = re.compile(r"\{[{%#]|[}%#]\}")


# --- the site's values ------------------------------------------------------------------------


def _globus_site(config: SiteConfig) -> None:
    if config.backend != "globus":
        raise ConfigError(
            f"site '{config.name}': backend {config.backend!r} has no Globus Compute endpoint "
            "to configure; endpoint files are written for `backend: globus` sites only"
        )


def _schema_properties(config: SiteConfig) -> dict[str, dict[str, Any]]:
    """The template variables of ``config``'s template and their JSON schemas."""
    if config.mpi is None:
        return dict(_SCHEMA_PROPERTIES)
    kept = {k: v for k, v in _SCHEMA_PROPERTIES.items() if k not in _MPI_REFUSED}
    return kept | _MPI_ONLY_PROPERTIES


def _site_values(config: SiteConfig) -> dict[str, Any]:
    """The site's ``user_endpoint_config``, checked against the schema orch writes."""
    values = dict(config.user_endpoint_config)
    for name in _ORCH_VARIABLES:
        if name in values:
            raise ConfigError(
                f"site '{config.name}': user_endpoint_config.{name}: set by orch (false only "
                "for the deployment task); remove it"
            )
    if config.mpi is not None:
        for name, why in _MPI_REFUSED.items():
            if name in values:
                raise ConfigError(
                    f"site '{config.name}': user_endpoint_config.{name}: not used by an MPI "
                    f"site: {why}"
                )
    _validate(values, _schema(config), f"site '{config.name}': user_endpoint_config")
    return values


def template_defaults(config: SiteConfig) -> dict[str, Any]:
    """The template variables' defaults: orch's, then the site's ``user_endpoint_config``.

    Raises:
        ConfigError: the site is not a globus site, or its ``user_endpoint_config`` holds a
            variable the template does not have or a value of the wrong type.
    """
    _globus_site(config)
    values = _site_values(config)
    defaults: dict[str, Any] = {
        "container": True,
        "provider": "LocalProvider",
        "nodes_per_block": 1,
        "init_blocks": 1,
        "min_blocks": 0,
        "max_blocks": 1,
        "worker_init": "",
    }
    if config.mpi is not None:
        # capacity counts nodes: one batch job holds them all unless the site says otherwise,
        # and a job runs at most one task per node.
        nodes = int(values.get("nodes_per_block", config.capacity))
        defaults["nodes_per_block"] = config.capacity
        defaults["max_workers_per_block"] = min(nodes, config.capacity)
    else:
        defaults["max_workers_per_node"] = config.capacity
        if config.accelerators:
            defaults["available_accelerators"] = list(config.accelerators)
    return defaults | values


def probe_user_config(config: SiteConfig) -> dict[str, Any]:
    """The ``user_endpoint_config`` orch's probe is sent with: the container on.

    It is exactly the site's ``user_endpoint_config`` (``container`` left at its default,
    ``true``), the same values the site's tasks are sent with, so the probe runs in the very
    user endpoint (and batch job) the tasks use instead of starting one of its own.

    Raises:
        ConfigError: see :func:`template_defaults`.
    """
    _globus_site(config)
    return _site_values(config)


def deploy_user_config(config: SiteConfig) -> dict[str, Any]:
    """The ``user_endpoint_config`` of orch's deployment task: the site's, container off.

    The site's provider settings (account, partition, ...) are kept so that the deployment
    job goes to the same queue as the site's tasks.

    Raises:
        ConfigError: see :func:`template_defaults`.
    """
    return probe_user_config(config) | DEPLOY_USER_CONFIG


# --- the three files ----------------------------------------------------------------------------


def _schema(config: SiteConfig) -> dict[str, Any]:
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": f"user_endpoint_config of orch site '{config.name}'",
        "type": "object",
        "properties": _schema_properties(config),
        "additionalProperties": False,
    }


def _schema_text(config: SiteConfig, defaults: Mapping[str, Any]) -> str:
    schema = _schema(config)
    schema["properties"] = {
        name: prop | ({"default": defaults[name]} if name in defaults else {})
        for name, prop in _schema_properties(config).items()
    }
    return json.dumps(schema, indent=2) + "\n"


def _config_text(config: SiteConfig) -> str:
    display = f"orch site {config.name} ({config.kind})"
    return (
        f"# Manager endpoint of orch site '{config.name}', written by `orch deploy`.\n"
        "# No engine block: a template-capable endpoint that renders\n"
        f"# {TEMPLATE_FILE} (validated by {SCHEMA_FILE}) for each submission.\n"
        "# Install on the site: globus-compute-endpoint configure NAME --core-config config.yaml\n"
        f"#   --template-config {TEMPLATE_FILE} --schema-config {SCHEMA_FILE}\n"
        f"display_name: {json.dumps(display)}\n"
    )


def _as_submitted(value: Any) -> Any:
    """``value`` as a submitted option reaches the template: strings JSON-quoted."""
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return [_as_submitted(v) for v in value]
    return value


def _jinja_literal(value: Any) -> str:
    """A Jinja expression that evaluates to ``value`` (str, bool, int or list of those)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        # Jinja unescapes string literals with Python's unicode-escape codec.
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    if isinstance(value, list):
        return "[" + ", ".join(_jinja_literal(v) for v in value) + "]"
    raise TypeError(f"no Jinja literal for {type(value).__name__}")


def _wrapper(config: SiteConfig) -> str | None:
    """``container_cmd_options`` of the ``custom`` container type, or ``None`` (no wrapper)."""
    plan = plan_for(config, None, None)
    if plan is None or plan.mode != "workers":
        return None
    # The image as the site spells it: a pulled image's default path keeps its '~', which
    # the batch script's shell expands on the site (plan.image expands it here).
    image = plan.container.image_path(config.name)
    try:
        text = commands.workers_launch_template(
            plan.container,
            plan.kind,
            [RUNDIR_PLACEHOLDER, *plan.binds],
            image,
            plan.env,
            RUNDIR_PLACEHOLDER,
        )
    except ValueError as exc:
        raise ConfigError(f"site '{config.name}': container: {exc}") from None
    rest = text.replace(RUNDIR_PLACEHOLDER, "").replace(commands.LAUNCH_PLACEHOLDER, "")
    if "{" in rest or "}" in rest:
        # Parsl formats the launch command (str.format) after Globus Compute wraps it.
        raise ConfigError(
            f"site '{config.name}': container: a path or env value contains '{{' or '}}', "
            "which the worker pool's launch command cannot carry; remove them or use "
            "`mode: exec`"
        )
    return text


def _template_text(config: SiteConfig, defaults: Mapping[str, Any]) -> str:
    wrapper = _wrapper(config)
    mode = config.container.mode if config.container else None
    mpi = config.mpi
    lines = [
        f"{{#- Globus Compute user endpoint template of orch site '{config.name}', written by",
        "    `orch deploy` (Jinja, rendered by the endpoint for each user_endpoint_config;",
        f"    submitted strings arrive JSON-quoted; see {SCHEMA_FILE}).",
    ]
    if mpi is None:
        lines.append(
            "    Defaults: the site's user_endpoint_config; max_workers_per_node: its capacity."
        )
    else:
        lines += [
            "    Defaults: the site's user_endpoint_config; nodes_per_block: its capacity (in",
            "    nodes); max_workers_per_block: nodes_per_block (one MPI task per node at most).",
            f"    MPI (mpi.launcher: {mpi.launcher}): Parsl's MPIExecutor, whose provider must",
            "    use SimpleLauncher (one worker pool on the job's first node); each task's",
            "    resource_specification (num_nodes, ranks_per_node, num_ranks) picks its nodes.",
        ]
    if wrapper is not None:
        lines += [
            "    container (default true): run the worker pool inside the image with",
            "    `apptainer exec` (Globus Compute's custom container type); false runs it on",
            "    the host (orch's deployment task, which builds or pulls the image).",
        ]
    else:
        lines += [
            f"    No container wrapper (container mode: {mode or 'none'}): the workers run on",
            "    the host; the variable `container` has no effect here.",
        ]
    lines.append("-#}")
    for name, value in defaults.items():
        literal = _jinja_literal(_as_submitted(value))
        lines.append(f"{{%- set {name} = {name} | default({literal}) -%}}")
    lines += [
        "",
        "idle_heartbeats_soft: 10",
        "idle_heartbeats_hard: 5760",
        "",
        "engine:",
    ]
    if mpi is None:
        lines += [
            "  type: GlobusComputeEngine",
            "  max_workers_per_node: {{ max_workers_per_node }}",
            "{%- if available_accelerators is defined %}",
            '  available_accelerators: [{{ available_accelerators | join(", ") }}]',
            "{%- endif %}",
        ]
    else:
        lines += [
            "  type: GlobusMPIEngine",
            f"  mpi_launcher: {PARSL_MPI_LAUNCHERS[mpi.launcher]}",
            "  max_workers_per_block: {{ max_workers_per_block }}",
        ]
    lines += [
        "{%- if address is defined %}",
        "  address: {{ address }}",
        "{%- elif interface is defined %}",
        "  address:",
        "    type: address_by_interface",
        "    ifname: {{ interface }}",
        "{%- endif %}",
    ]
    if wrapper is not None:
        value = json.dumps(wrapper)
        if _JINJA_DELIMITERS.search(value):  # cannot happen: braces are refused above
            raise ConfigError(f"site '{config.name}': container: {value} holds Jinja syntax")
        lines += [
            "{%- if container %}",
            "  container_type: custom",
            f"  container_cmd_options: {value}",
            "{%- endif %}",
        ]
    lines += ["  provider:", "    type: {{ provider }}"]
    if mpi is None:
        lines += [
            "{%- if launcher is defined %}",
            "    launcher:",
            "      type: {{ launcher }}",
            "{%- endif %}",
        ]
    else:
        lines += ["    launcher:", "      type: SimpleLauncher"]
    for name in _PROVIDER_OPTIONAL:
        lines += [f"{{%- if {name} is defined %}}", f"    {name}: {{{{ {name} }}}}", "{%- endif %}"]
    lines += [
        "    nodes_per_block: {{ nodes_per_block }}",
        "    init_blocks: {{ init_blocks }}",
        "    min_blocks: {{ min_blocks }}",
        "    max_blocks: {{ max_blocks }}",
        "    worker_init: {{ worker_init }}",
    ]
    return "\n".join(lines) + "\n"


def endpoint_files(config: SiteConfig) -> dict[str, str]:
    """The endpoint configuration files of a ``backend: globus`` site: file name -> text.

    Args:
        config: The site.

    Returns:
        ``config.yaml``, ``user_config_template.yaml.j2`` and ``user_config_schema.json``.

    Raises:
        ConfigError: the site is not a globus site, its ``user_endpoint_config`` does not fit
            the template's variables, or its container settings cannot be carried by the
            worker pool's launch command.
    """
    defaults = template_defaults(config)
    return {
        CONFIG_FILE: _config_text(config),
        TEMPLATE_FILE: _template_text(config, defaults),
        SCHEMA_FILE: _schema_text(config, defaults),
    }


def write_endpoint_files(config: SiteConfig, folder: Path) -> list[Path]:
    """Write :func:`endpoint_files` into ``folder`` (created if needed).

    Args:
        config: The site.
        folder: Where the files go.

    Returns:
        The paths written, in the order of :func:`endpoint_files`.

    Raises:
        ConfigError: see :func:`endpoint_files`.
    """
    files = endpoint_files(config)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in files.items():
        path = folder / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


# --- checking them with the endpoint package's own code ------------------------------------------


def _one_line(text: object) -> str:
    return " ".join(str(text).split()) or "(no message)"


def _validate(values: Mapping[str, Any], schema: Mapping[str, Any], where: str) -> None:
    """Validate ``values`` with jsonschema (what the endpoint does), as one-line errors."""
    import jsonschema

    try:
        jsonschema.validate(instance=dict(values), schema=dict(schema))
    except jsonschema.ValidationError as exc:
        field = ".".join(str(p) for p in exc.absolute_path)
        raise ConfigError(
            f"{where}{'.' + field if field else ''}: {_one_line(exc.message)}"
        ) from None


def _identity() -> Any:
    """The identity the template is rendered for: this user (as the CLI's render does)."""
    from globus_compute_endpoint.endpoint.identity_mapper import MappedPosixIdentity

    uid = os.getuid()
    try:
        record = pwd.getpwuid(uid)
    except KeyError:  # no passwd entry (some containers)
        home = os.path.expanduser("~")
        record = pwd.struct_passwd((str(uid), "x", uid, os.getgid(), "", home, "/bin/sh"))
    return MappedPosixIdentity(
        local_user_record=record,
        matched_identity=uuid.UUID(int=0),
        globus_identity_candidates=[],
    )


def _user_runtime() -> dict[str, Any]:
    """What the SDK says about the submitting side (as the CLI's render does), JSON only."""
    from globus_compute_sdk.sdk.batch import create_user_runtime

    runtime: dict[str, Any] = json.loads(json.dumps(asdict(create_user_runtime())))
    return runtime


def _load_yaml_config(text: str, where: Path) -> Any:
    """``globus_compute_endpoint``'s ``load_config_yaml``, errors as one line."""
    from click import ClickException
    from globus_compute_endpoint.endpoint.config.utils import load_config_yaml

    try:
        return load_config_yaml(text)
    except ClickException as exc:
        raise ConfigError(f"{where}: {_one_line(exc.message)}") from None
    except Exception as exc:  # noqa: BLE001 - any loader failure is a config problem
        raise ConfigError(f"{where}: {type(exc).__name__}: {_one_line(exc)}") from None


def check_endpoint_files(folder: Path, values: dict[str, Any] | None = None) -> str:
    """Render the folder's template as the endpoint would, and load the result.

    The steps of a real submission, with the endpoint package's own functions: load
    ``config.yaml`` (it must be a template-capable ``CoreEndpointConfig``), validate
    ``values`` against ``user_config_schema.json`` and render ``user_config_template.yaml.j2``
    (``render_config_user_template``: sandboxed Jinja, undefined variables are errors,
    strings JSON-quoted), then load the rendered YAML into a ``UserEndpointConfig`` (which
    builds its engine and provider objects, and starts nothing).

    Args:
        folder: The endpoint folder (as written by :func:`write_endpoint_files`).
        values: The ``user_endpoint_config`` a submission sends; ``None`` for none (the
            template's defaults).

    Returns:
        The rendered user endpoint config (YAML text).

    Raises:
        ConfigError: one line naming the file and the problem, for any failing step.
    """
    import jinja2
    from globus_compute_endpoint.endpoint.config import CoreEndpointConfig, UserEndpointConfig
    from globus_compute_endpoint.endpoint.config.utils import (
        load_user_config_schema,
        load_user_config_template,
        render_config_user_template,
    )
    from globus_compute_endpoint.endpoint.endpoint import Endpoint

    config_path = folder / CONFIG_FILE
    try:
        config_text = config_path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{config_path}: cannot read it ({exc.strerror or exc})") from None
    parent = _load_yaml_config(config_text, config_path)
    if not isinstance(parent, CoreEndpointConfig):
        raise ConfigError(
            f"{config_path}: has an engine block, so the endpoint does not render templates; "
            "remove the engine block"
        )

    template_path = Endpoint.user_config_template_path(folder, parent)
    schema_path = Endpoint.user_config_schema_path(folder, parent)
    try:
        template = load_user_config_template(template_path)
    except OSError as exc:
        raise ConfigError(f"{template_path}: cannot read it ({exc.strerror or exc})") from None
    try:
        schema = load_user_config_schema(schema_path)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{schema_path}: not valid JSON ({_one_line(exc)})") from None
    except OSError as exc:
        raise ConfigError(f"{schema_path}: cannot read it ({exc.strerror or exc})") from None
    if schema is None:
        raise ConfigError(f"{schema_path}: missing; every option would be accepted unchecked")

    import jsonschema

    try:
        rendered = render_config_user_template(
            parent_config=parent,
            user_config_template=template,
            user_config_template_path=template_path,
            mapped_identity=_identity(),
            user_config_schema=schema,
            user_opts=dict(values or {}),
            user_runtime=_user_runtime(),
        )
    except jsonschema.ValidationError as exc:
        field = ".".join(str(p) for p in exc.absolute_path)
        raise ConfigError(
            f"{schema_path}: user_endpoint_config{'.' + field if field else ''}: "
            f"{_one_line(exc.message)}"
        ) from None
    except jsonschema.SchemaError as exc:
        raise ConfigError(
            f"{schema_path}: not a valid JSON schema: {_one_line(exc.message)}"
        ) from None
    except jinja2.TemplateSyntaxError as exc:
        raise ConfigError(f"{template_path}:{exc.lineno}: {_one_line(exc.message)}") from None
    except jinja2.TemplateError as exc:
        raise ConfigError(f"{template_path}: {type(exc).__name__}: {_one_line(exc)}") from None
    except ValueError as exc:  # a reserved variable name, or a value JSON cannot carry
        raise ConfigError(f"{schema_path}: user_endpoint_config: {_one_line(exc)}") from None

    user = _load_yaml_config(rendered, Path(f"{template_path} (rendered)"))
    if not isinstance(user, UserEndpointConfig) or user.engine is None:
        raise ConfigError(f"{template_path}: the rendered config has no engine block")
    return rendered
