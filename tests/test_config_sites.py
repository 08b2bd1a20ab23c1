"""Tests for orchestrator.config.sites: loading sites/*.yaml and one-line error messages."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from orchestrator.config.sites import SiteConfig, find_site_files, load_site_file, load_sites
from orchestrator.exceptions import ConfigError

REPO = Path(__file__).resolve().parents[1]
SITES = REPO / "sites"

LOCAL = "kind: cpu\nbackend: local\ncapacity: 2\n"
GLOBUS = (
    "kind: gpu\nbackend: globus\ncapacity: 2\nendpoint_id: 00000000-0000-4000-8000-000000000001\n"
)


def _error(directory: Path) -> str:
    """Load a sites folder that must fail; return the message after checking it is one line."""
    with pytest.raises(ConfigError) as info:
        load_sites(directory)
    message = str(info.value)
    assert "\n" not in message, message
    assert "Traceback" not in message and "validation error" not in message, message
    return message


# --- the shipped files ----------------------------------------------------------------------------


def test_default_sites_are_the_two_local_mock_sites() -> None:
    sites = load_sites(SITES)
    assert [(s.name, s.kind, s.backend) for s in sites] == [
        ("local-cpu", "cpu", "local"),
        ("local-gpu", "gpu", "local"),
    ]
    cpu, gpu = sites
    assert cpu.capacity == 2 and cpu.accelerators == []
    assert gpu.capacity == 1 and gpu.accelerators == ["0"]
    assert cpu.in_flight_limit == 8


def test_examples_validate_and_are_remote() -> None:
    sites = load_sites(SITES / "examples")
    assert {s.name for s in sites} >= {"cpu-cluster", "gpu-system"}
    for site in sites:
        assert site.backend == "globus"
        assert isinstance(site.endpoint_id, uuid.UUID)
    gpu = next(s for s in sites if s.name == "gpu-system")
    assert gpu.kind == "gpu" and gpu.capacity == len(gpu.accelerators) == 4


def test_example_files_hold_no_credentials() -> None:
    for path in (SITES / "examples").glob("*.yaml"):
        text = path.read_text()
        assert "GLOBUS_COMPUTE_CLIENT_SECRET" in text  # explained in a comment ...
        data_lines = [ln for ln in text.splitlines() if not ln.lstrip().startswith("#")]
        assert not any("secret" in ln.lower() or "token" in ln.lower() for ln in data_lines)


# --- loading rules --------------------------------------------------------------------------------


def test_name_defaults_to_file_stem(tmp_path: Path) -> None:
    (tmp_path / "my-site.yml").write_text(LOCAL)
    assert load_site_file(tmp_path / "my-site.yml").name == "my-site"
    (tmp_path / "other.yaml").write_text("name: explicit\n" + LOCAL)
    assert [s.name for s in load_sites(tmp_path)] == ["my-site", "explicit"]


def test_subfolders_hidden_and_other_files_are_ignored(tmp_path: Path) -> None:
    (tmp_path / "b.yaml").write_text(LOCAL)
    (tmp_path / "a.yml").write_text(LOCAL)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.yaml").write_text("not: [valid")
    (tmp_path / ".hidden.yaml").write_text("not: [valid")
    (tmp_path / "notes.txt").write_text("not: [valid")
    (tmp_path / "dir.yaml").mkdir()
    assert [p.name for p in find_site_files(tmp_path)] == ["a.yml", "b.yaml"]
    assert [s.name for s in load_sites(tmp_path)] == ["a", "b"]


def test_accelerator_ids_may_be_written_as_integers(tmp_path: Path) -> None:
    (tmp_path / "g.yaml").write_text(
        "kind: gpu\nbackend: local\ncapacity: 2\naccelerators: [0, 1]\n"
    )
    assert load_site_file(tmp_path / "g.yaml").accelerators == ["0", "1"]


def test_local_capacity_may_be_below_accelerator_count(tmp_path: Path) -> None:
    (tmp_path / "g.yaml").write_text(
        "kind: gpu\nbackend: local\ncapacity: 1\naccelerators: ['0', '1']\n"
    )
    assert load_site_file(tmp_path / "g.yaml").capacity == 1


def test_globus_capacity_may_exceed_per_node_accelerators(tmp_path: Path) -> None:
    (tmp_path / "g.yaml").write_text(
        GLOBUS.replace("capacity: 2", "capacity: 8") + "accelerators: ['0', '1', '2', '3']\n"
    )
    assert load_site_file(tmp_path / "g.yaml").capacity == 8


def test_model_rules_apply_when_built_in_code() -> None:
    with pytest.raises(ValueError, match="max_in_flight"):
        SiteConfig(name="x", kind="cpu", backend="local", capacity=4, max_in_flight=2)


# --- bad inputs: (file name, content, expected substrings: field, problem, fix hint) -------------

BAD_FILES: list[tuple[str, str, list[str]]] = [
    (
        "syntax.yaml",
        "kind: cpu\n  backend: local\n",
        ["invalid YAML", "line 2", "fix the syntax"],
    ),
    (
        "list.yaml",
        "- kind: cpu\n- kind: gpu\n",
        ["top level is a list", "not a mapping", "one site per file"],
    ),
    ("empty.yaml", "# only a comment\n", ["file is empty", "field: value"]),
    ("typo.yaml", LOCAL + "capcity: 3\n", ["capcity: unknown field", "did you mean 'capacity'"]),
    ("junk.yaml", LOCAL + "zzz: 1\n", ["zzz: unknown field", "valid fields: name, kind"]),
    (
        "nocap.yaml",
        "kind: cpu\nbackend: local\n",
        ["capacity: required field is missing", "add `capacity: N`"],
    ),
    (
        "nokind.yaml",
        "backend: local\ncapacity: 1\n",
        ["kind: required field is missing", "kind: gpu"],
    ),
    (
        "kind.yaml",
        LOCAL.replace("cpu", "tpu"),
        ["kind: 'tpu' is not allowed", "use one of: cpu, gpu"],
    ),
    (
        "backend.yaml",
        LOCAL.replace("local", "slurm"),
        ["backend: 'slurm' is not allowed", "use one of: local", "globus"],
    ),
    (
        "cap0.yaml",
        LOCAL.replace("capacity: 2", "capacity: 0"),
        ["capacity: 0 is out of range", "whole number >= 1"],
    ),
    (
        "capneg.yaml",
        LOCAL.replace("capacity: 2", "capacity: -3"),
        ["capacity: -3 is out of range", "whole number >= 1"],
    ),
    (
        "capword.yaml",
        LOCAL.replace("capacity: 2", "capacity: two"),
        ["capacity: must be a whole number, got 'two'", "whole number >= 1"],
    ),
    (
        "capfloat.yaml",
        LOCAL.replace("capacity: 2", "capacity: 2.5"),
        ["capacity: must be a whole number, got 2.5"],
    ),
    (
        "capbool.yaml",
        LOCAL.replace("capacity: 2", "capacity: true"),
        ["capacity: must be a whole number, got True"],
    ),
    (
        "baduuid.yaml",
        GLOBUS.replace("00000000-0000-4000-8000-000000000001", "my-endpoint"),
        ["endpoint_id: 'my-endpoint' is not a UUID", "globus-compute-endpoint list"],
    ),
    (
        "noep.yaml",
        "kind: cpu\nbackend: globus\ncapacity: 2\n",
        ["endpoint_id: required for backend 'globus'", "add `endpoint_id: <uuid>`"],
    ),
    (
        "localep.yaml",
        LOCAL + "endpoint_id: 00000000-0000-4000-8000-000000000001\n",
        ["endpoint_id: only used by backend 'globus'", "remove it, or set `backend: globus`"],
    ),
    (
        "localuec.yaml",
        LOCAL + "user_endpoint_config: {account: abc}\n",
        ["user_endpoint_config: only used by backend 'globus'", "remove it"],
    ),
    (
        "localrs.yaml",
        LOCAL + "resource_specification: {priority: 1}\n",
        ["resource_specification: only used by backend 'globus'", "remove it"],
    ),
    (
        "globuswi.yaml",
        GLOBUS + "worker_init: module load x\n",
        ["worker_init: only used by backend 'local'", "user_endpoint_config"],
    ),
    (
        "Bad Name.yaml",
        LOCAL,
        [
            "name: 'Bad Name' has characters that are not allowed",
            "taken from the file name",
            "lower case letters",
            "rename the file",
        ],
    ),
    (
        "badname.yaml",
        "name: My_Site\n" + LOCAL,
        ["name: 'My_Site' has characters that are not allowed", "lower case letters"],
    ),
    (
        "mif.yaml",
        LOCAL + "max_in_flight: 1\n",
        ["max_in_flight: 1 is less than capacity 2", "at least 2"],
    ),
    (
        "ht0.yaml",
        GLOBUS + "http_timeout: 0\n",
        ["http_timeout: 0 is out of range (must be > 0)", "> 0 and <= 600"],
    ),
    (
        "ht1000.yaml",
        GLOBUS + "http_timeout: 1000\n",
        ["http_timeout: 1000 is out of range (must be <= 600)", "> 0 and <= 600"],
    ),
    (
        "accel.yaml",
        "kind: gpu\nbackend: local\ncapacity: 2\naccelerators: ['0']\n",
        ["capacity: 2 is more than the 1 accelerator(s)", "set `capacity: 1`"],
    ),
    (
        "acceldup.yaml",
        "kind: gpu\nbackend: local\ncapacity: 1\naccelerators: ['0', '0']\n",
        ["accelerators: id 0 is listed twice", "distinct accelerator ids"],
    ),
    (
        "accelscalar.yaml",
        "kind: gpu\nbackend: local\ncapacity: 1\naccelerators: 0\n",
        ["accelerators: must be a list, got 0", 'e.g. ["0", "1"]'],
    ),
    ("dupkey.yaml", LOCAL + "capacity: 3\n", ["capacity: given twice (lines 3 and 4)", "keep one"]),
    (
        "twodocs.yaml",
        LOCAL + "---\n" + LOCAL,
        ["invalid YAML", "line 4", "single document"],
    ),
]


@pytest.mark.parametrize(
    ("filename", "content", "expected"), BAD_FILES, ids=[b[0] for b in BAD_FILES]
)
def test_bad_site_file_gives_one_clear_line(
    tmp_path: Path, filename: str, content: str, expected: list[str]
) -> None:
    path = tmp_path / filename
    path.write_text(content)
    message = _error(path.parent)
    assert message.startswith(f"{path}: "), message
    for part in expected:
        assert part in message, f"{part!r} not in {message!r}"
    # also through load_site_file directly
    with pytest.raises(ConfigError, match="^" + str(path).replace("\\", "\\\\")):
        load_site_file(path)


def test_bad_inputs_have_distinct_messages(tmp_path: Path) -> None:
    messages = set()
    for filename, content, _ in BAD_FILES:
        path = tmp_path / filename
        path.write_text(content)
        with pytest.raises(ConfigError) as info:
            load_site_file(path)
        messages.add(str(info.value).removeprefix(f"{path}: "))
    assert len(messages) == len(BAD_FILES)


def test_several_problems_report_the_first_and_a_count(tmp_path: Path) -> None:
    (tmp_path / "s.yaml").write_text("kind: tpu\nbackend: slurm\ncapacity: 0\n")
    message = _error(tmp_path)
    assert "kind: 'tpu' is not allowed" in message and "(+2 more problem(s))" in message


def test_typo_is_reported_before_the_missing_field_it_causes(tmp_path: Path) -> None:
    (tmp_path / "s.yaml").write_text("knd: cpu\nbackend: local\ncapacity: 1\n")
    assert "knd: unknown field; did you mean 'kind'?" in _error(tmp_path)


def test_missing_directory(tmp_path: Path) -> None:
    message = _error(tmp_path / "nowhere")
    assert message.startswith(f"{tmp_path / 'nowhere'}: sites directory not found")
    assert "--sites sites/" in message


def test_file_instead_of_directory(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(LOCAL)
    with pytest.raises(ConfigError) as info:
        load_sites(tmp_path / "a.yaml")
    message = str(info.value)
    assert message.startswith(f"{tmp_path / 'a.yaml'}: is a file, not a directory")
    assert f"--sites {tmp_path}/" in message


def test_directory_without_site_files(tmp_path: Path) -> None:
    (tmp_path / "examples").mkdir()
    (tmp_path / "examples" / "x.yaml").write_text(LOCAL)
    message = _error(tmp_path)
    assert message.startswith(f"{tmp_path}: no *.yaml or *.yml site files")
    assert "sub-folders are not read" in message and "add one" in message


def test_duplicate_names_across_files(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("name: twin\n" + LOCAL)
    (tmp_path / "b.yml").write_text("name: twin\n" + LOCAL)
    message = _error(tmp_path)
    assert message == (
        f"{tmp_path / 'b.yml'}: name: 'twin' is already used by {tmp_path / 'a.yaml'}; "
        "give each site a unique name"
    )


def test_duplicate_names_from_stems(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(LOCAL)
    (tmp_path / "a.yml").write_text(LOCAL)
    assert "name: 'a' is already used by" in _error(tmp_path)


def test_unreadable_file(tmp_path: Path) -> None:
    (tmp_path / "bin.yaml").write_bytes(b"kind: \xff\xfe\n")
    message = _error(tmp_path)
    assert message.startswith(f"{tmp_path / 'bin.yaml'}: cannot read the file")
    assert "UTF-8" in message


def test_non_text_key(tmp_path: Path) -> None:
    (tmp_path / "k.yaml").write_text(LOCAL + "1: x\n")
    assert "1: field names must be text" in _error(tmp_path)


def _special_file(path: Path, kind: str) -> None:
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "link to a device":
        path.symlink_to("/dev/null")
    elif kind == "broken link":
        path.symlink_to(path.parent / "gone.yaml")
    elif kind == "link to a fifo":
        os.mkfifo(path.parent / "pipe")
        path.symlink_to(path.parent / "pipe")


@pytest.mark.parametrize(
    ("kind", "what"),
    [
        ("fifo", "a FIFO"),
        ("link to a device", "a symbolic link to a character device"),
        ("broken link", "a broken symbolic link"),
        ("link to a fifo", "a symbolic link to a FIFO"),
    ],
)
def test_site_file_that_is_not_a_regular_file(tmp_path: Path, kind: str, what: str) -> None:
    (tmp_path / "a.yaml").write_text(LOCAL)
    _special_file(tmp_path / "b.yml", kind)
    message = _error(tmp_path)  # returns: a FIFO is never opened, so nothing blocks
    assert message == (
        f"{tmp_path / 'b.yml'}: is not a regular file ({what}); site files must be regular "
        "YAML files: replace it with one, or move it out of the sites folder"
    )


def test_links_to_files_and_folders_are_followed(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "target.txt").write_text(LOCAL)
    (tmp_path / "a.yaml").symlink_to(tmp_path / "real" / "target.txt")
    (tmp_path / "old.yaml").symlink_to(tmp_path / "real")  # a folder: skipped, as sub-folders
    os.mkfifo(tmp_path / "notes.txt")  # not a site-file name: not looked at
    os.mkfifo(tmp_path / ".hidden.yaml")  # hidden: not looked at
    assert [s.name for s in load_sites(tmp_path)] == ["a"]


@pytest.mark.parametrize("command", ["list", "validate"])
def test_cli_reports_a_fifo_site_file_in_one_line(tmp_path: Path, command: str) -> None:
    sites = tmp_path / "sites"
    sites.mkdir()
    (sites / "a.yaml").write_text(LOCAL)
    os.mkfifo(sites / "pipe.yaml")
    done = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "sites", command, "--sites", str(sites)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,  # a loader that opened the FIFO would block here
    )
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2, done
    assert "Traceback" not in done.stdout + done.stderr
    assert lines == [
        f"error: {sites / 'pipe.yaml'}: is not a regular file (a FIFO); site "
        "files must be regular YAML files: replace it with one, or move it out of the sites "
        "folder"
    ], lines


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ("  connector: file\n", "data.path: required by connector 'file'; add `path:`"),
        ("  connector: s3\n", "data.connector: 's3' is not allowed; use one of: file"),
        ("  connector: redis\n  host: x\n  port: 99999\n", "data.port: 99999 is out of range"),
    ],
)
def test_bad_data_section(tmp_path, data, expected):
    path = tmp_path / "site.yaml"
    path.write_text("kind: cpu\nbackend: local\ncapacity: 1\ndata:\n" + data)
    with pytest.raises(ConfigError) as info:
        load_site_file(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ") and expected in message and "\n" not in message
