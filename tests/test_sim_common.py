"""The shared simulation runner: site commands, wall time, process groups, work directories."""

from __future__ import annotations

import os
import pickle
import time
from pathlib import Path

import psutil
import pytest
from ase import Atoms

from orchestrator.apps.runtime import run_task
from orchestrator.apps.sim.common import (
    BAD_INPUT,
    BINARY_MISSING,
    NONZERO_EXIT,
    WALLTIME,
    SimulationError,
    resolve_command,
    run_code,
    workdir,
)
from orchestrator.apps.sim.structures import to_atoms


def echo_words(*words: str) -> str:
    with workdir("echo") as path:
        return run_code(
            "echo", list(words), workdir=path, walltime=10, default_command=["echo"]
        ).stdout


def test_default_command_runs_in_a_fresh_directory(sim_root):
    with workdir("pwd") as path:
        run = run_code("pwd", [], workdir=path, walltime=10, default_command=["pwd"])
    assert run.returncode == 0 and run.stdout.strip() == str(path)
    assert path.parent == sim_root.resolve() and not path.exists()  # cleaned on success


def test_site_command_replaces_the_default():
    record = run_task(echo_words, ("x",), {}, {"commands": {"echo": ["echo", "prefix"]}})
    assert record["ok"] is True and record["value"].split() == ["prefix", "x"]
    assert resolve_command("echo", ["echo"]) == ["echo"]  # outside a task: the default


def test_missing_program_is_binary_missing():
    record = run_task(echo_words, ("x",), {}, {"commands": {"echo": ["no-such-program-xyz"]}})
    failure = record["failure"]
    assert record["ok"] is False and failure["reason"] == BINARY_MISSING
    assert "no-such-program-xyz" in failure["message"] and "commands:" in failure["message"]
    assert failure["details"]["code"] == "echo"


def test_nonzero_exit_carries_status_and_tail():
    with pytest.raises(SimulationError) as info, workdir("sh") as path:
        run = run_code(
            "sh", ["-c", "echo out-line; echo err-line >&2; exit 3"],
            workdir=path, walltime=10, default_command=["sh"],
        )  # fmt: skip
        run.check_exit()
    err = info.value
    assert err.reason == NONZERO_EXIT and err.returncode == 3
    assert "out-line" in err.output_tail and "err-line" in err.output_tail
    assert err.workdir is not None and os.path.isdir(err.workdir)


def test_walltime_kills_the_whole_process_group():
    script = "sleep 60 & echo $! > child.pid; sleep 60"
    started = time.monotonic()
    with pytest.raises(SimulationError) as info, workdir("sh") as path:
        run_code("sh", ["-c", script], workdir=path, walltime=1, default_command=["sh"])
    assert time.monotonic() - started < 30  # killed, not the 60 s it would have run
    err = info.value
    assert err.reason == WALLTIME and "wall time of 1 s" in err.message
    child_pid = int((Path(err.workdir) / "child.pid").read_text())
    # SIGTERM reached the child's group; its exit is asynchronous, so wait for it (bounded)
    deadline = time.monotonic() + 10
    while not _gone(child_pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert _gone(child_pid)


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"walltime": 0}, "walltime must be > 0"), ({"walltime": 5, "threads": 0}, "threads")],
)
def test_bad_run_settings_rejected_before_launch(kwargs, message):
    with pytest.raises(SimulationError, match=message) as info, workdir("sh") as path:
        run_code("sh", ["-c", "touch ran"], workdir=path, default_command=["sh"], **kwargs)
    assert info.value.reason == BAD_INPUT
    assert not (Path(info.value.workdir) / "ran").exists()


@pytest.mark.parametrize(("keep", "kept_ok", "kept_failed"), [
    ("never", False, False), ("failed", False, True), ("always", True, True),
])  # fmt: skip
def test_workdir_keep_policies(keep, kept_ok, kept_failed):
    with workdir("k", keep=keep) as ok_path:
        pass
    assert ok_path.exists() == kept_ok
    with pytest.raises(SimulationError), workdir("k", keep=keep) as bad_path:
        raise SimulationError(BAD_INPUT, "no", code="k")
    assert bad_path.exists() == kept_failed


def test_simulation_error_survives_pickling():
    err = SimulationError(WALLTIME, "too slow", code="xtb", returncode=-9, output_tail="t")
    copy = pickle.loads(pickle.dumps(err))
    assert (copy.reason, copy.message, copy.code, copy.returncode) == (
        WALLTIME,
        "too slow",
        "xtb",
        -9,
    )
    assert str(copy) == "xtb: too slow"


def test_structures_from_smiles_and_atoms():
    water = to_atoms("O", code="t")
    assert water.get_chemical_formula() == "H2O" and water.info["charge"] == 0
    again = to_atoms("O", code="t")
    assert (water.positions == again.positions).all()  # fixed seed: deterministic
    assert to_atoms("[NH4+]", code="t").info["charge"] == 1
    given = Atoms("H2", positions=[(0, 0, 0), (0, 0, 0.74)])
    copy = to_atoms(given, code="t")
    assert copy is not given and copy.get_chemical_formula() == "H2"
    for bad in ("C1CC", "", Atoms()):
        with pytest.raises(SimulationError) as info:
            to_atoms(bad, code="t")
        assert info.value.reason == BAD_INPUT


def test_spin_state_defaults_from_smiles_radicals():
    from orchestrator.apps.sim.structures import spin_state

    methyl, carbene, water = (to_atoms(s, code="t") for s in ("[CH3]", "[CH2]", "O"))
    assert methyl.info["multiplicity"] == 2 and carbene.info["multiplicity"] == 3
    assert spin_state("t", carbene, None, None) == (0, 3)  # triplet from the SMILES
    assert spin_state("t", carbene, None, 1) == (0, 1)  # an explicit choice wins
    assert spin_state("t", water, 1, None) == (1, 2)  # the cation: parity decides
    with pytest.raises(SimulationError, match="impossible for the molecule") as info:
        spin_state("t", water, None, 2)
    assert info.value.reason == BAD_INPUT
