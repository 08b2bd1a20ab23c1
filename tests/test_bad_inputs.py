"""The bad-input corpus: every folder in tests/bad_inputs/ is one bad input to ``orch``.

A case folder holds the input files (site YAML files under ``sites/``, a campaign ``.py``, ...)
and a ``case.yaml``:

``what``
    The bad input, in words.
``args``
    The ``orch`` arguments. ``{case}`` stands for a copy of the case folder, ``{tmp}`` for an
    empty per-test directory (the command's working directory).
``message``
    A regular expression (``re.search``) the error line must match after ``error: ``: it
    names the file or field at fault and, after a ``;``, what to do. ``{case}`` and ``{tmp}``
    stand for those paths, matched literally.
``setup`` (optional)
    Steps for what git cannot hold, run in order: ``mkdir: PATH``; ``write: PATH`` with
    ``text``; ``write_bytes: PATH`` with ``hex``; ``journal: RUN_DIR`` with ``meta`` (a run
    directory whose journal holds those facts); ``chmod: PATH`` with ``mode`` (octal).
``skip_if_root`` (optional)
    Why the case means nothing when run as root (e.g. a mode that root ignores).
``xfail`` (optional)
    Why the case does not pass yet (a known fault, with its place); checked strictly, so a fix
    shows up as a failure until the mark is removed.

Each case must exit with code 2, print exactly one non-empty line, on stderr, that starts with
``error:`` and matches ``message``, print no traceback, and start no site.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from orchestrator.dispatch.journal import Journal

REPO = Path(__file__).resolve().parents[1]
CORPUS = Path(__file__).resolve().parent / "bad_inputs"
CASE_KEYS = {"what", "args", "message", "setup", "skip_if_root", "xfail"}
REQUIRED_KEYS = {"what", "args", "message"}
SETUP_STEPS = {"mkdir": set(), "write": {"text"}, "write_bytes": {"hex"}, "journal": {"meta"}}
SETUP_STEPS["chmod"] = {"mode"}
PLACEHOLDER = re.compile(r"\{(case|tmp)\}")
CATEGORIES = {
    # category: a case-name fragment that must be present in the corpus
    "malformed YAML": "yaml-",
    "wrong types": "capacity-not-a-number",
    "unknown fields": "unknown-field",
    "duplicate site names": "duplicate-site-names",
    "no site for a method's kind": "no-site-for-method-kind",
    "missing endpoint id": "globus-without-endpoint-id",
    "bad campaign path": "campaign-file-missing",
    "bad option values": "option-wrong-type",
    "unwritable run dir": "run-dir-cannot-be-created",
    "unreadable run dir": "resume-unreadable-run-dir",
    "resume of a non-run dir": "resume-not-a-run-dir",
}


def _folders() -> list[Path]:
    return sorted(p for p in CORPUS.iterdir() if p.is_dir() and not p.name.startswith("_"))


def _spec(folder: Path) -> dict[str, Any]:
    path = folder / "case.yaml"
    return yaml.safe_load(path.read_text(encoding="utf-8")) if path.is_file() else {}


def _params() -> list[Any]:
    params = []
    for folder in _folders():
        spec = _spec(folder)
        marks = []
        if spec.get("xfail"):
            marks.append(pytest.mark.xfail(reason=str(spec["xfail"]), strict=True))
        params.append(pytest.param(folder, spec, id=folder.name, marks=marks))
    return params


def _fill(value: Any, places: dict[str, Path]) -> Any:
    """Replace ``{case}``/``{tmp}`` in every string of ``value``."""
    if isinstance(value, str):
        return PLACEHOLDER.sub(lambda m: str(places[m.group(1)]), value)
    if isinstance(value, list):
        return [_fill(v, places) for v in value]
    if isinstance(value, dict):
        return {k: _fill(v, places) for k, v in value.items()}
    return value


def _pattern(message: str, places: dict[str, Path]) -> re.Pattern[str]:
    """``message`` as a regular expression, with ``{case}``/``{tmp}`` matched literally."""
    return re.compile(PLACEHOLDER.sub(lambda m: re.escape(str(places[m.group(1)])), message))


def _set_up(steps: list[dict[str, Any]], chmodded: list[tuple[Path, int]]) -> None:
    for step in steps:
        action = next(k for k in step if k in SETUP_STEPS)
        path = Path(step[action])
        if action == "mkdir":
            path.mkdir(parents=True, exist_ok=True)
        elif action == "write":
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(step["text"], encoding="utf-8")
        elif action == "write_bytes":
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(bytes.fromhex(step["hex"]))
        elif action == "journal":
            path.mkdir(parents=True, exist_ok=True)
            journal = Journal(path)
            journal.set_meta(step["meta"])
            journal.close()
        elif action == "chmod":
            chmodded.append((path, path.stat().st_mode & 0o7777))
            path.chmod(int(str(step["mode"]), 8))


def _dirs_named_sites(root: Path) -> set[Path]:
    found = set()
    for folder, subdirs, _ in os.walk(root):
        found.update(Path(folder) / d for d in subdirs if d == "sites")
    return found


# --- the corpus itself ----------------------------------------------------------------------------


def test_corpus_is_large_and_well_formed() -> None:
    folders = _folders()
    assert len(folders) >= 30, f"only {len(folders)} bad-input cases"
    numbers = [f.name.split("-", 1)[0] for f in folders]
    assert all(re.fullmatch(r"\d{3}", n) for n in numbers), numbers
    assert len(set(numbers)) == len(numbers), "two cases share a number"
    for folder in folders:
        spec = _spec(folder)
        where = folder.name
        assert isinstance(spec, dict) and REQUIRED_KEYS <= set(spec), f"{where}: case.yaml keys"
        assert set(spec) <= CASE_KEYS, f"{where}: unknown keys {set(spec) - CASE_KEYS}"
        assert isinstance(spec["args"], list) and all(isinstance(a, str) for a in spec["args"])
        assert "; " in spec["message"], f"{where}: the message must check a '; <fix>' part"
        re.compile(spec["message"])
        for step in spec.get("setup", []):
            actions = [k for k in step if k in SETUP_STEPS]
            assert len(actions) == 1, f"{where}: setup step {step}"
            assert set(step) == {actions[0], *SETUP_STEPS[actions[0]]}, f"{where}: {step}"
        if any("chmod" in step for step in spec.get("setup", [])):
            assert spec.get("skip_if_root"), f"{where}: chmod means nothing to root; say why"


def test_corpus_covers_every_category() -> None:
    names = " ".join(f.name for f in _folders())
    missing = [what for what, fragment in CATEGORIES.items() if fragment not in names]
    assert not missing, f"no case for: {missing}"


# --- each case ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("folder", "spec"), _params())
def test_bad_input_gives_one_line_and_exit_2(
    folder: Path, spec: dict[str, Any], tmp_path: Path
) -> None:
    if spec.get("skip_if_root") and os.geteuid() == 0:
        pytest.skip(str(spec["skip_if_root"]))
    tmp_path = tmp_path.resolve()  # messages show resolved paths (e.g. macOS /private/tmp)
    places = {"case": tmp_path / "case", "tmp": tmp_path / "work"}
    shutil.copytree(folder, places["case"])
    places["tmp"].mkdir()
    chmodded: list[tuple[Path, int]] = []
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCH_TRACKING")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    try:
        _set_up(_fill(spec.get("setup", []), places), chmodded)
        sites_before = _dirs_named_sites(tmp_path)
        done = subprocess.run(
            [sys.executable, "-m", "orchestrator.cli", *_fill(spec["args"], places)],
            cwd=places["tmp"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        for path, mode in reversed(chmodded):
            path.chmod(mode)
    shown = f"exit {done.returncode}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    assert "Traceback" not in done.stdout + done.stderr, shown
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), shown
    assert _pattern(spec["message"], places).search(lines[0].removeprefix("error: ")), (
        f"{lines[0]!r} does not match {spec['message']!r}"
    )
    assert done.returncode == 2, shown
    assert not done.stdout.strip(), shown
    started = _dirs_named_sites(tmp_path) - sites_before
    assert not started, f"a site was started (working dirs {started}); fail before any starts"
