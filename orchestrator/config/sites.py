"""Site descriptions: one YAML file per site in a sites/ directory.

``load_sites(Path("sites"))`` reads every ``*.yaml``/``*.yml`` file directly in the folder
(sub-folders such as ``sites/examples/`` and hidden files are not read), in file-name order.
Every problem becomes a :class:`~orchestrator.exceptions.ConfigError` whose message is one line,
``<file>: <field>: <what is wrong>; <what to do>`` (no field for whole-file problems).
"""

from __future__ import annotations

import difflib
import ipaddress
import shlex
import stat
import uuid
from collections.abc import Hashable
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PositiveInt,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from orchestrator.config.containers import CONTAINER_FIELD_HINTS, ContainerConfig, is_uri
from orchestrator.data.config import DATA_FIELD_HINTS, DataConfig
from orchestrator.exceptions import ConfigError

SiteKind = Literal["cpu", "gpu"]
SiteBackend = Literal["local", "globus"]
SimulationCode = Literal["cp2k", "lammps", "nwchem", "xtb"]


SITE_FILE_SUFFIXES = (".yaml", ".yml")

_GLOBUS_ONLY = ("endpoint_id", "user_endpoint_config", "resource_specification")
_LOCAL_ONLY = ("address", "launcher")


def _rule(field: str, problem: str, hint: str) -> PydanticCustomError:
    """Build a cross-field rule error that remembers which field to blame."""
    return PydanticCustomError(
        "site_rule",
        "{field}: {problem}; {hint}",
        {"field": field, "problem": problem, "hint": hint},
    )


MpiLauncher = Literal["mpiexec", "openmpi", "srun", "aprun"]
"""How a site starts MPI programs: ``mpiexec`` of MPICH / Cray PALS (``-n N -ppn R``),
OpenMPI's ``mpiexec`` (``-n N --map-by ppr:R:node``), Slurm's ``srun`` or Cray's ``aprun``."""

MPI_LAUNCHERS: tuple[str, ...] = ("mpiexec", "openmpi", "srun", "aprun")


class MpiConfig(BaseModel):
    """A site whose tasks run under MPI (``mpi:`` in its YAML).

    With ``mpi:``, the site's ``capacity`` counts nodes: a task takes the nodes it asks for
    (``Resources.nodes``), and its program is started by the site's launcher over them.

    Attributes:
        launcher: ``mpiexec`` (MPICH, Cray PALS / Aurora, Polaris), ``openmpi`` (OpenMPI's
            ``mpiexec``), ``srun`` (Slurm) or ``aprun`` (Cray ALPS). A local site supports
            ``mpiexec`` and ``openmpi`` (srun and aprun need their batch system).
        options: Extra words for every launch line (``launcher_options`` of the endpoint's
            ``resource_specification``), e.g. ``--cpu-bind depth``.
        ranks_per_node: Most ranks a task may put on one node (its cores); a task that asks
            for more is refused. Default: unbounded on a ``globus`` site; this machine's core
            count on a ``local`` site.
        nodes: Host names of the nodes (``local`` only; default: ``localhost`` once per
            ``capacity``: every node is a share of this machine).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    launcher: MpiLauncher
    options: str = ""
    ranks_per_node: PositiveInt | None = None
    nodes: list[str] = Field(default_factory=list)

    @field_validator("nodes")
    @classmethod
    def _plain_names(cls, value: list[str]) -> list[str]:
        for name in value:
            if not name or any(c.isspace() or c in ",:" for c in name):
                raise PydanticCustomError(
                    "mpi_node_name",
                    "{name!r} is not a host name (no spaces, ',' or ':')",
                    {"name": name},
                )
        return value


class SiteConfig(BaseModel):
    """One site: where tasks of one kind run.

    Rules checked across fields:

    * ``globus`` needs ``endpoint_id``; ``local`` must not set ``endpoint_id``,
      ``user_endpoint_config`` or ``resource_specification``; ``worker_init`` is for ``local``
      only (a remote endpoint's worker setup belongs in its own template/config), and so are
      ``address`` and ``launcher`` (a ``globus`` site setting either is an error).
    * ``max_in_flight``, when given, is at least ``capacity``: fewer would leave workers idle.
    * ``accelerators`` ids are unique. On a ``local`` site the engine pins one worker to each
      id and starts at most ``len(accelerators)`` workers (Parsl's HTEX caps workers per node
      at the number of accelerators), so ``capacity <= len(accelerators)``; a smaller capacity
      uses the first ``capacity`` ids. On a ``globus`` site the list describes ONE node, while
      ``capacity`` counts slots over all the endpoint's nodes, so no such bound applies there.

    Attributes:
        name: Unique short name (lower case letters, digits, '-' and '_'); defaults to the
            file's stem when loaded from a file.
        kind: ``cpu`` or ``gpu``: which methods the site may run.
        backend: ``local`` (a Globus Compute endpoint engine on this machine) or ``globus``
            (a remote Globus Compute endpoint reached through the cloud service).
        capacity: Task slots (workers) the site offers at once.
        max_in_flight: Most task slots orch keeps at the site at once, queued there included;
            defaults to four times ``capacity``.
        accelerators: Accelerator ids the site's workers are pinned to (one worker each).
        working_dir: Where the site's engine and tasks write files; defaults to
            ``<run-dir>/sites/<name>``.
        worker_init: Shell lines run before the workers start (local backend).
        address: The address the site's interchange listens on and its workers connect to
            (local backend): an IPv4 or IPv6 address of this machine that the workers reach,
            e.g. orch's side of the link to another host; default ``127.0.0.1``.
        launcher: Words put before the worker pool's command line (local backend), e.g.
            ``["ip", "netns", "exec", "far"]`` or ``["ssh", "node7"]``, so the workers run
            in another network namespace or on another host while the interchange stays
            beside orch; a string is split as a POSIX shell would. Default: none.
        endpoint_id: Globus Compute endpoint UUID (globus backend).
        user_endpoint_config: Values for the endpoint's user config template (globus backend).
        resource_specification: Per-task resources passed to the endpoint (globus backend).
        http_timeout: Seconds before a call to the Globus service is given up (globus backend).
        commands: How the site launches each simulation code, as the command line that
            replaces the bare binary: e.g. ``lammps: mpiexec -n 4 lmp`` or
            ``xtb: apptainer exec /images/sim.sif xtb``. Codes: cp2k, lammps, nwchem, xtb.
        data: The ProxyStore connector this site's workers reach (``connector:`` file, redis,
            endpoint, multi or globus, with that connector's fields; see ``DataConfig``) and
            ``threshold_bytes``: arguments and results larger than it move by proxy instead of
            through the task channel.
        container: The Apptainer image the site's tasks run in (``image``, ``recipe``,
            ``runtime``, ``mode``, ``binds``, ``env``, ``gpu``; see ``ContainerConfig``).
        mpi: Tasks run under MPI (``launcher``, ``options``, ``ranks_per_node``, ``nodes``;
            see ``MpiConfig``); ``capacity`` then counts nodes.
        description: Free text shown by ``orch sites list``.

    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]*$", max_length=64)
    kind: SiteKind
    backend: SiteBackend
    capacity: PositiveInt
    max_in_flight: PositiveInt | None = None
    accelerators: list[str] = Field(default_factory=list)
    working_dir: Path | None = None
    worker_init: str = ""
    address: str = Field(
        default="127.0.0.1",
        description="Address the interchange listens on and the workers connect to (local).",
    )
    launcher: list[str] = Field(
        default_factory=list,
        description="Words put before the worker pool's command line (local), e.g. "
        "`ip netns exec far` or `ssh node7`.",
    )
    endpoint_id: uuid.UUID | None = None
    user_endpoint_config: dict[str, Any] = Field(default_factory=dict)
    resource_specification: dict[str, Any] = Field(default_factory=dict)
    http_timeout: float = Field(default=10.0, gt=0, le=600)
    commands: dict[SimulationCode, str | list[str]] = Field(default_factory=dict)
    data: DataConfig | None = None
    container: ContainerConfig | None = None
    mpi: MpiConfig | None = None
    description: str = ""

    @field_validator("commands")
    @classmethod
    def _commands_not_empty(cls, value: dict[str, str | list[str]]) -> dict[str, str | list[str]]:
        """Each command must split into at least one word (the program)."""
        for code, command in value.items():
            try:
                words = shlex.split(command) if isinstance(command, str) else command
            except ValueError as exc:
                raise PydanticCustomError(
                    "command_syntax", "{code}: {error}", {"code": code, "error": str(exc)}
                ) from None
            if not words or not all(isinstance(w, str) and w for w in words):
                raise PydanticCustomError(
                    "command_empty", "{code}: the command is empty", {"code": code}
                )
        return value

    def command_argv(self) -> dict[str, list[str]]:
        """``commands`` as argument lists (strings split as a POSIX shell would)."""
        return {
            code: shlex.split(command) if isinstance(command, str) else list(command)
            for code, command in self.commands.items()
        }

    @field_validator("address")
    @classmethod
    def _address_is_ip(cls, value: str) -> str:
        """The interchange binds to it: an IP address, not a host name."""
        try:
            ipaddress.ip_address(value)
        except ValueError:
            raise PydanticCustomError(
                "address_not_ip", "must be an IPv4 or IPv6 address, not a host name"
            ) from None
        return value

    @field_validator("launcher", mode="before")
    @classmethod
    def _launcher_words(cls, value: Any) -> Any:
        """Split a string as a POSIX shell would; every word must be non-empty text."""
        if isinstance(value, str):
            try:
                value = shlex.split(value)
            except ValueError as exc:
                raise PydanticCustomError(
                    "launcher_syntax", "cannot split it into words: {error}", {"error": str(exc)}
                ) from None
        if isinstance(value, list):
            for i, word in enumerate(value):
                if isinstance(word, str) and not word.strip():
                    raise PydanticCustomError(
                        "launcher_word_empty", "word {index} is empty", {"index": i + 1}
                    )
        return value

    @field_validator("capacity", "max_in_flight", mode="before")
    @classmethod
    def _no_bool(cls, value: Any) -> Any:
        """Reject ``true``/``false``, which pydantic would otherwise read as 1/0."""
        if isinstance(value, bool):
            raise PydanticCustomError("int_type", "Input should be a valid integer")
        return value

    @field_validator("accelerators", mode="before")
    @classmethod
    def _accelerator_ids(cls, value: Any) -> Any:
        """Accept integer ids (``[0, 1]``) as strings; reject empty and repeated ids."""
        if not isinstance(value, list):
            return value
        ids = [str(v) if isinstance(v, int) and not isinstance(v, bool) else v for v in value]
        texts = [v for v in ids if isinstance(v, str)]
        if any(not v.strip() for v in texts):
            raise PydanticCustomError("accelerator_empty", "an accelerator id is empty")
        repeated = sorted({v for v in texts if texts.count(v) > 1})
        if repeated:
            raise PydanticCustomError(
                "accelerator_repeated", "id {ids} is listed twice", {"ids": ", ".join(repeated)}
            )
        return ids

    @model_validator(mode="after")
    def _check_backend_rules(self) -> SiteConfig:
        """Apply the rules that involve more than one field (see the class docstring)."""
        if self.backend == "globus":
            if self.endpoint_id is None:
                raise _rule(
                    "endpoint_id",
                    "required for backend 'globus'",
                    "add `endpoint_id: <uuid>` (see `globus-compute-endpoint list`)",
                )
            if self.worker_init:
                raise _rule(
                    "worker_init",
                    "only used by backend 'local'",
                    "remove it and put worker setup in the endpoint's own config or in "
                    "user_endpoint_config",
                )
            for field in _LOCAL_ONLY:
                if field in self.model_fields_set:
                    raise _rule(
                        field,
                        "only used by backend 'local'",
                        "remove it; a remote endpoint's workers reach their interchange as "
                        "the endpoint's own config says (its provider and address)",
                    )
        else:
            for field in _GLOBUS_ONLY:
                if getattr(self, field):
                    raise _rule(
                        field,
                        "only used by backend 'globus'",
                        "remove it, or set `backend: globus` for a remote endpoint",
                    )
            if self.accelerators and self.capacity > len(self.accelerators):
                raise _rule(
                    "capacity",
                    f"{self.capacity} is more than the {len(self.accelerators)} accelerator(s) "
                    "listed (one worker per accelerator)",
                    f"set `capacity: {len(self.accelerators)}` or list more accelerators",
                )
        container = self.container
        if container is not None:
            if (
                self.backend == "local"
                and not is_uri(container.image)
                and container.recipe is None
                and not Path(container.image).expanduser().exists()
            ):
                raise _rule(
                    "container.image",
                    f"{container.image} does not exist",
                    "fix the path, or add `recipe:` (a file in containers/) so `orch deploy` "
                    "builds it there",
                )
            if container.mode == "workers":
                spaced = [p for p in (container.image, *container.binds) if " " in p]
                if spaced:
                    raise _rule(
                        "container",
                        f"{spaced[0]!r} contains a space, which a workers-mode launch command "
                        "cannot carry (Globus Compute's container wrapper splits on spaces)",
                        "use a path without spaces (a symbolic link will do), or `mode: exec`",
                    )
        mpi = self.mpi
        if mpi is not None:
            if self.backend == "local" and mpi.launcher in ("srun", "aprun"):
                raise _rule(
                    "mpi.launcher",
                    f"{mpi.launcher} needs its batch system, which a local site does not have",
                    "use `launcher: openmpi` (Debian's MPI) or `launcher: mpiexec` (MPICH) here",
                )
            if mpi.nodes and self.backend != "local":
                raise _rule(
                    "mpi.nodes",
                    "only used by backend 'local'",
                    "remove it; an endpoint's nodes come from its batch job",
                )
            if mpi.nodes and len(mpi.nodes) != self.capacity:
                raise _rule(
                    "mpi.nodes",
                    f"lists {len(mpi.nodes)} node(s) but capacity is {self.capacity}",
                    f"list {self.capacity} host names, or set `capacity: {len(mpi.nodes)}`",
                )
            if self.container is not None and self.container.mode == "workers":
                raise _rule(
                    "container.mode",
                    "an MPI site starts its programs with the launcher outside the image",
                    "set `mode: exec` (launcher ... apptainer exec IMAGE code)",
                )
        if self.max_in_flight is not None and self.max_in_flight < self.capacity:
            raise _rule(
                "max_in_flight",
                f"{self.max_in_flight} is less than capacity {self.capacity}",
                f"set it to at least {self.capacity}, or remove it (default 4 x capacity)",
            )
        return self

    @property
    def in_flight_limit(self) -> int:
        """Most task slots kept at the site at once."""
        return self.max_in_flight or 4 * self.capacity


# --- loading ------------------------------------------------------------------------------------

_FIELDS = list(SiteConfig.model_fields)

_HINTS: dict[str, str] = {
    "name": "use lower case letters, digits, '-' and '_' (starting with a letter or digit, "
    "at most 64 characters)",
    "kind": "use one of: cpu, gpu",
    "backend": "use one of: local (this machine), globus (a Globus Compute endpoint)",
    "capacity": "set a whole number >= 1: how many tasks the site runs at once",
    "max_in_flight": "set a whole number >= capacity, or remove it (default 4 x capacity)",
    "accelerators": 'give a list of distinct accelerator ids, e.g. ["0", "1"]',
    "working_dir": "give a directory path, or remove it (default <run-dir>/sites/<name>)",
    "worker_init": "give the shell lines as one string (use `|` for several lines)",
    "address": "give the IP address of this machine that the site's workers reach, e.g. "
    "127.0.0.1 (the default) or orch's end of the link to the workers' host",
    "launcher": 'give the words to put before the worker command, e.g. ["ip", "netns", '
    '"exec", "far"] or "ssh node7", or remove it',
    "endpoint_id": "copy the endpoint's UUID from `globus-compute-endpoint list`",
    "user_endpoint_config": "give a mapping of template variable: value",
    "resource_specification": "give a mapping, e.g. {num_nodes: 1}",
    "http_timeout": "set a number of seconds, > 0 and <= 600",
    "data": "give `connector:` file (with `path:`), redis (`host:`, `port:`), endpoint "
    "(`endpoint:`), multi (`connectors:`) or globus (`collections:`); see the README's data "
    "section",
    "commands": "map a code (cp2k, lammps, nwchem, xtb) to its launch command, e.g. "
    "`lammps: mpiexec -n 4 lmp`",
    "description": "give a line of text (quote it if it contains ':' or '#')",
    "mpi": "give `launcher:` (mpiexec, openmpi, srun or aprun) and optionally options, "
    "ranks_per_node, nodes; see the README's MPI section",
    "container": "give `image:` (a path or oras:// URI) and optionally recipe, runtime, mode, "
    "binds, env, gpu; see the README's containers section",
}

MPI_FIELD_HINTS: dict[str, str] = {
    "launcher": "use one of: mpiexec (MPICH, Cray PALS), openmpi (OpenMPI's mpiexec), srun "
    "(Slurm), aprun (Cray ALPS)",
    "options": 'give the extra launcher words as one string, e.g. "--cpu-bind depth"',
    "ranks_per_node": "set a whole number >= 1: the most ranks one node takes (its cores)",
    "nodes": 'give a list of host names, one per node, e.g. ["localhost", "localhost"]',
}

_MISSING_HINTS: dict[str, str] = {
    "kind": "add `kind: cpu` or `kind: gpu`",
    "backend": "add `backend: local` (this machine) or `backend: globus` (a remote endpoint)",
    "capacity": "add `capacity: N`, the number of tasks the site runs at once",
}


_RANGE: dict[str, tuple[str, str]] = {
    "greater_than": ("gt", ">"),
    "greater_than_equal": ("ge", ">="),
    "less_than": ("lt", "<"),
    "less_than_equal": ("le", "<="),
}

_SHAPES: dict[str, str] = {
    "list_type": "a list",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "string_type": "text",
    "path_type": "a path",
}


class _DuplicateKeyError(yaml.constructor.ConstructorError):
    """A mapping gives the same key twice (PyYAML would silently keep the last)."""

    def __init__(self, key: str, first: yaml.Mark, second: yaml.Mark) -> None:
        super().__init__(None, None, f"duplicate key {key!r}", second)
        self.key, self.first_line, self.second_line = key, first.line + 1, second.line + 1


class _SiteLoader(yaml.SafeLoader):
    """Safe YAML loader that rejects repeated keys."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        """Build a mapping, raising on a key given twice."""
        seen: dict[str, yaml.Mark] = {}
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                key = str(key_node.value)
                if key in seen:
                    raise _DuplicateKeyError(key, seen[key], key_node.start_mark)
                seen[key] = key_node.start_mark
        return super().construct_mapping(node, deep)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _show(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _field_path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if part == "[key]":  # pydantic's marker for "the key itself" (e.g. an unknown code)
            continue
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _explain(path: Path, error: ValidationError, name_from_stem: bool) -> str:
    """Turn the most useful error of a ValidationError into one ``file: field: ...`` line."""
    errors = sorted(error.errors(), key=lambda e: e["type"] != "extra_forbidden")
    first = errors[0]
    kind, ctx, value = first["type"], first.get("ctx") or {}, first.get("input")
    loc = tuple(first["loc"])
    if kind == "site_rule":
        field, problem, hint = str(ctx["field"]), str(ctx["problem"]), str(ctx["hint"])
    else:
        field = _field_path(loc) or "(site)"
        top = str(loc[0]) if loc else ""
        hint = _HINTS.get(top, "see the annotated files in sites/examples/")
        if top == "data" and len(loc) > 1 and str(loc[1]) in DATA_FIELD_HINTS:
            hint = DATA_FIELD_HINTS[str(loc[1])]
        if top == "container" and len(loc) > 1 and str(loc[1]) in CONTAINER_FIELD_HINTS:
            hint = CONTAINER_FIELD_HINTS[str(loc[1])]
        if top == "mpi" and len(loc) > 1 and str(loc[1]) in MPI_FIELD_HINTS:
            hint = MPI_FIELD_HINTS[str(loc[1])]
        if kind == "extra_forbidden":
            name, valid = top, _FIELDS
            if top == "container" and len(loc) > 1:
                name, valid = str(loc[1]), list(ContainerConfig.model_fields)
            if top == "mpi" and len(loc) > 1:
                name, valid = str(loc[1]), list(MpiConfig.model_fields)
            close = difflib.get_close_matches(name, valid, n=1, cutoff=0.6)
            problem = "unknown field"
            hint = (
                f"did you mean '{close[0]}'?"
                if close
                else f"remove it; valid fields: {', '.join(valid)}"
            )
        elif kind == "missing":
            problem = "required field is missing"
            hint = _MISSING_HINTS.get(top, hint)
        elif kind == "literal_error":
            problem = f"{_show(value)} is not allowed"
        elif kind == "string_pattern_mismatch":
            problem = f"{_show(value)} has characters that are not allowed"
            if top == "name" and name_from_stem:
                problem += " (taken from the file name)"
                hint += "; add a `name:` line or rename the file"
        elif kind in _RANGE:
            key, op = _RANGE[kind]
            bound = ctx.get(key)
            if isinstance(bound, float) and bound.is_integer():
                bound = int(bound)
            problem = f"{_show(value)} is out of range (must be {op} {bound})"
        elif kind in ("int_parsing", "int_type", "int_from_float"):
            problem = f"must be a whole number, got {_show(value)}"
        elif kind in ("float_parsing", "float_type"):
            problem = f"must be a number, got {_show(value)}"
        elif kind in ("uuid_parsing", "uuid_type"):
            problem = f"{_show(value)} is not a UUID"
        elif kind in _SHAPES:
            problem = f"must be {_SHAPES[kind]}, got {_show(value)}"
        elif kind.startswith("accelerator_"):
            problem = first["msg"]
        else:
            problem = f"{first['msg']} (got {_show(value)})"
    more = f" (+{len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
    return _one_line(f"{path}: {field}: {problem}; {hint}{more}")


def find_site_files(directory: Path | str) -> list[Path]:
    """List the site files directly in ``directory``, sorted by file name.

    Only regular ``*.yaml``/``*.yml`` files are listed; sub-folders (such as ``examples/``)
    and hidden files (names starting with '.') are skipped. A ``*.yaml``/``*.yml`` name that
    is neither (a FIFO, a device, a socket, a broken symbolic link, after following links)
    is an error rather than skipped: it is meant as a site, but cannot be read as one.

    Args:
        directory: The sites folder.

    Returns:
        The site files, possibly none.

    Raises:
        ConfigError: ``directory`` does not exist or is not a directory, or a site file in
            it is not a regular file.

    """
    folder = Path(directory)
    if not folder.exists():
        raise ConfigError(
            f"{folder}: sites directory not found; pass the folder that holds the site YAML "
            "files, e.g. --sites sites/"
        )
    if not folder.is_dir():
        raise ConfigError(
            f"{folder}: is a file, not a directory; pass the folder that holds the site files "
            f"(e.g. --sites {folder.parent}/)"
        )
    found = []
    for p in folder.iterdir():
        if p.suffix.lower() not in SITE_FILE_SUFFIXES or p.name.startswith(".") or p.is_dir():
            continue
        if not p.is_file():  # would be read as nothing, or block forever (a FIFO)
            raise ConfigError(_not_a_file(p))
        found.append(p)
    return sorted(found, key=lambda p: p.name)


def _not_a_file(path: Path) -> str:
    """The one-line error for a site-file name that is not a regular file."""
    try:
        mode = path.stat().st_mode
    except OSError:  # a broken or looping link; anything else unreadable
        mode = 0
    if mode == 0:
        what = "a broken symbolic link" if path.is_symlink() else "not a file"
    else:
        kinds = (
            (stat.S_ISFIFO, "a FIFO"),
            (stat.S_ISSOCK, "a socket"),
            (stat.S_ISCHR, "a character device"),
            (stat.S_ISBLK, "a block device"),
        )
        what = next((name for test, name in kinds if test(mode)), "not a file")
        if path.is_symlink():
            what = f"a symbolic link to {what}"
    return _one_line(
        f"{path}: is not a regular file ({what}); site files must be regular YAML files: "
        "replace it with one, or move it out of the sites folder"
    )


def load_site_file(path: Path | str) -> SiteConfig:
    """Load and validate one site file; ``name`` defaults to the file's stem.

    Args:
        path: A ``*.yaml``/``*.yml`` site file.

    Returns:
        The validated site.

    Raises:
        ConfigError: One line naming the file (and field) at fault and what to do.

    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(
            _one_line(
                f"{path}: cannot read the file ({reason}); check it exists, is "
                "readable and is UTF-8 text"
            )
        ) from None
    try:
        data = yaml.load(text, Loader=_SiteLoader)  # _SiteLoader is a SafeLoader
    except _DuplicateKeyError as exc:
        raise ConfigError(
            f"{path}: {exc.key}: given twice (lines {exc.first_line} and {exc.second_line}); "
            "keep one of them"
        ) from None
    except yaml.YAMLError as exc:
        where = ""
        mark = getattr(exc, "problem_mark", None)
        if mark is not None:
            where = f" at line {mark.line + 1}, column {mark.column + 1}"
        problem = getattr(exc, "problem", None) or str(exc)
        context = getattr(exc, "context", None)
        if context and problem.startswith("but "):
            problem = f"{context} {problem}"  # e.g. "expected a single document ... but found"
        raise ConfigError(
            _one_line(
                f"{path}: invalid YAML{where}: {problem}; fix the syntax there (indent with "
                "spaces, quote values that contain ': ' or ' #')"
            )
        ) from None
    if data is None:
        raise ConfigError(
            f"{path}: file is empty; describe the site with `field: value` lines (kind, "
            "backend, capacity, ...) or delete the file"
        )
    if not isinstance(data, dict):
        shape = "a list" if isinstance(data, list) else f"a single value ({_show(data, 30)})"
        raise ConfigError(
            f"{path}: top level is {shape}, not a mapping; write one `field: value` per line, "
            "one site per file"
        )
    for key in data:
        if not isinstance(key, str):
            raise ConfigError(
                f"{path}: {_show(key)}: field names must be text; use a field name such as "
                "kind, backend or capacity"
            )
    name_from_stem = "name" not in data
    if name_from_stem:
        data = {"name": path.stem, **data}
    try:
        return SiteConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_explain(path, exc, name_from_stem)) from None


def load_sites(directory: Path | str) -> list[SiteConfig]:
    """Load every ``*.yaml``/``*.yml`` file directly in ``directory`` (not sub-folders).

    Files are read in file-name order; a site's ``name`` defaults to its file's stem.

    Args:
        directory: The sites folder, e.g. ``Path("sites")``.

    Returns:
        The sites, in file-name order.

    Raises:
        ConfigError: One line naming the file and field at fault and what to do: the folder is
            missing or holds no site file, a file is invalid, or two files use the same name.

    """
    folder = Path(directory)
    files = find_site_files(folder)
    if not files:
        raise ConfigError(
            f"{folder}: no *.yaml or *.yml site files here (sub-folders are not read); add one, "
            "e.g. copy sites/local-cpu.yaml, or pass the folder that holds them"
        )
    sites: list[SiteConfig] = []
    seen: dict[str, Path] = {}
    for path in files:
        site = load_site_file(path)
        if site.name in seen:
            raise ConfigError(
                f"{path}: name: {site.name!r} is already used by {seen[site.name]}; give each "
                "site a unique name"
            )
        seen[site.name] = path
        sites.append(site)
    return sites
