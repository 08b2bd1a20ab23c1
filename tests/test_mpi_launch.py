"""The launch line a task's code starts with, per MPI launcher kind (nothing is started)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from orchestrator.apps import mpi
from orchestrator.apps.mpi import (
    ROOT_ENV,
    granted,
    launch_prefix,
    merge_hosts,
    plan_launch,
    starts_with_launcher,
    task_resources,
)
from orchestrator.apps.runtime import run_task, task_context, using_context
from orchestrator.apps.sim.common import (
    BAD_INPUT,
    BINARY_MISSING,
    SimulationError,
    command_line,
    run_code,
)

PARSL_VARS = (
    "PARSL_MPI_PREFIX",
    "PARSL_MPI_NODELIST",
    "PARSL_NUM_NODES",
    "PARSL_RANKS_PER_NODE",
    "PARSL_NUM_RANKS",
)


def res(nodes: int = 1, per_node: int = 1, threads: int = 1) -> dict[str, int]:
    """A task's resources as the control side sends them (``Resources.worker_view()``)."""
    return {
        "nodes": nodes,
        "ranks_per_node": per_node,
        "ranks": nodes * per_node,
        "threads_per_rank": threads,
        "gpus_per_rank": 0,
    }


def site(launcher: str, nodes: list[str] | None = None, options: str = "") -> dict:
    """``task_context()["mpi"]`` of a site with ``mpi:``."""
    return {"launcher": launcher, "options": options, "nodes": nodes or []}


@pytest.fixture(autouse=True)
def no_parsl_env(monkeypatch):
    """No MPI engine here: each test sets the Parsl variables it needs."""
    for name in PARSL_VARS:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def parsl_task(monkeypatch):
    """What Parsl's MPI engine sets for a task given nodes n1, n2 with 2 ranks each."""
    monkeypatch.setenv("PARSL_MPI_NODELIST", "n1,n2")
    monkeypatch.setenv("PARSL_NUM_NODES", "2")
    monkeypatch.setenv("PARSL_RANKS_PER_NODE", "2")
    monkeypatch.setenv("PARSL_NUM_RANKS", "4")
    monkeypatch.setenv("PARSL_MPI_PREFIX", "mpiexec -n 4 -ppn 2 -hosts n1,n2 --cpu-bind depth")


# -- resources ---------------------------------------------------------------------------------


def test_missing_resources_are_one_node_one_rank_one_thread():
    one = {"nodes": 1, "ranks_per_node": 1, "ranks": 1, "threads_per_rank": 1, "gpus_per_rank": 0}
    assert task_resources(None) == task_resources({}) == one
    assert task_resources({"nodes": 2, "ranks": 3})["ranks_per_node"] == 2  # rounded up
    assert task_resources({"nodes": 2, "ranks_per_node": 4})["ranks"] == 8


# -- no mpi: on the site ----------------------------------------------------------------------


def test_one_rank_without_mpi_has_no_prefix(parsl_task):
    assert launch_prefix(None, None) == []
    assert launch_prefix(res(), None) == []  # Parsl's leftovers are not read without mpi:
    launch = plan_launch(["lmp"], {"resources": res()})
    assert launch.prefix == [] and launch.env == {"OMP_NUM_THREADS": "1"}


def test_ranks_without_mpi_get_a_plain_mpiexec(parsl_task):
    assert launch_prefix(res(per_node=2), None) == ["mpiexec", "-n", "2"]


# -- mpiexec (MPICH, Cray PALS) ---------------------------------------------------------------


def test_mpiexec_uses_parsls_prefix(parsl_task):
    prefix = launch_prefix(res(2, 2), site("mpiexec", options="--ignored-here"))
    assert prefix == "mpiexec -n 4 -ppn 2 -hosts n1,n2 --cpu-bind depth".split()


def test_mpiexec_without_parsl_names_the_sites_nodes():
    context = site("mpiexec", ["h1", "h2", "h3"], options="--cpu-bind depth")
    prefix = launch_prefix(res(2, 2), context)
    assert prefix == "mpiexec -n 4 -ppn 2 --hosts h1,h2 --cpu-bind depth".split()


def test_mpiexec_merges_a_local_sites_repeated_host():
    prefix = launch_prefix(res(2, 1), site("mpiexec", ["localhost"] * 3))
    assert prefix == "mpiexec -n 2 -ppn 2 --hosts localhost".split()


def test_mpiexec_with_no_node_names_leaves_hosts_to_the_launcher():
    assert launch_prefix(res(2, 4), site("mpiexec")) == "mpiexec -n 8 -ppn 4".split()


# -- openmpi ------------------------------------------------------------------------------------


def test_openmpi_never_takes_parsls_prefix_only_its_node_list(parsl_task):
    prefix = launch_prefix(res(2, 2), site("openmpi", ["localhost"] * 4))
    assert prefix == (
        "mpiexec -n 4 --map-by ppr:2:node --host n1:2,n2:2 -x OMP_NUM_THREADS".split()
    )


def test_openmpi_threads_bind_cores_and_options_come_last(parsl_task):
    prefix = launch_prefix(res(2, 2, threads=3), site("openmpi", options="--bind-to core"))
    assert prefix == (
        "mpiexec -n 4 --map-by ppr:2:node:PE=3 --host n1:2,n2:2 -x OMP_NUM_THREADS "
        "--bind-to core".split()
    )


def test_openmpi_local_nodes_merge_into_one_host():
    prefix = launch_prefix(res(2, 1), site("openmpi", ["localhost", "localhost"]))
    assert prefix == (
        "mpiexec -n 2 --map-by ppr:2:node --host localhost:2 -x OMP_NUM_THREADS".split()
    )
    one = launch_prefix(res(1, 2), site("openmpi", ["localhost", "localhost"]))
    assert one == "mpiexec -n 2 --map-by ppr:2:node --host localhost:2 -x OMP_NUM_THREADS".split()


def test_openmpi_uneven_hosts_fill_slots_in_turn(monkeypatch):
    monkeypatch.setenv("PARSL_MPI_NODELIST", "a,a,b")
    prefix = launch_prefix(res(3, 1, threads=2), site("openmpi"))
    assert prefix == ("mpiexec -n 3 --map-by slot:PE=2 --host a:2,b:1 -x OMP_NUM_THREADS".split())
    assert merge_hosts(["a", "b", "a"], 2) == [("a", 4), ("b", 2)]


def test_openmpi_without_node_names():
    one = launch_prefix(res(1, 2), site("openmpi"))
    assert one == "mpiexec -n 2 --map-by ppr:2:node --host localhost:2 -x OMP_NUM_THREADS".split()
    # several nodes, none named: Open MPI reads the batch system's allocation
    many = launch_prefix(res(2, 2), site("openmpi"))
    assert many == "mpiexec -n 4 --map-by ppr:2:node -x OMP_NUM_THREADS".split()


# -- srun, aprun ----------------------------------------------------------------------------------


def test_srun_own_line_and_parsls(monkeypatch):
    context = site("srun", options="--exclusive")
    assert launch_prefix(res(2, 2), context) == (
        "srun --ntasks 4 --ntasks-per-node 2 --nodes 2 --exclusive".split()
    )
    assert launch_prefix(res(2, 2, threads=4), context) == (
        "srun --ntasks 4 --ntasks-per-node 2 --nodes 2 --cpus-per-task 4 --exclusive".split()
    )
    parsl = "srun --ntasks 4 --ntasks-per-node 2 --nodelist n1,n2 --nodes 2 --exclusive"
    monkeypatch.setenv("PARSL_MPI_PREFIX", parsl)
    assert launch_prefix(res(2, 2), context) == parsl.split()
    assert launch_prefix(res(2, 2, threads=4), context) == [*parsl.split(), "--cpus-per-task", "4"]


def test_aprun_own_line_and_parsls(monkeypatch):
    context = site("aprun", options="-cc depth")
    assert launch_prefix(res(2, 4), context) == "aprun -n 8 -N 4 -cc depth".split()
    assert launch_prefix(res(2, 4, 2), context) == "aprun -n 8 -N 4 -d 2 -cc depth".split()
    monkeypatch.setenv("PARSL_MPI_PREFIX", "aprun -n 8 -N 4 -node-list n1,n2 -cc depth")
    assert launch_prefix(res(2, 4), context) == "aprun -n 8 -N 4 -node-list n1,n2 -cc depth".split()


def test_unknown_launcher_is_bad_input(tmp_path):
    with pytest.raises(ValueError, match="unknown MPI launcher 'mpich'"):
        launch_prefix(res(), site("mpich"))
    with using_context({"mpi": site("mpich")}), pytest.raises(SimulationError) as info:
        command_line("lammps", [], workdir=tmp_path, default_command=["lmp"])
    assert info.value.reason == BAD_INPUT


# -- one run: plan_launch and command_line -------------------------------------------------------


@pytest.mark.parametrize(
    "command", [["mpirun", "-np", "4", "lmp"], ["/opt/cray/pals/bin/mpiexec", "lmp"],
                ["mpirun.openmpi", "lmp"], ["srun", "lmp"], ["aprun", "-n", "2", "lmp"]],
)  # fmt: skip
def test_a_site_command_with_its_own_launcher_wins(command):
    assert starts_with_launcher(command)
    context = {"resources": res(2, 2), "mpi": site("openmpi", ["a", "b"])}
    assert plan_launch(command, context).prefix == []
    assert not starts_with_launcher(["lmp_mpi"]) and not starts_with_launcher([])


def test_threads_and_root_variables(monkeypatch):
    context = {"resources": res(1, 2, threads=3), "mpi": site("openmpi", ["localhost"])}
    monkeypatch.setattr(mpi, "_is_root", lambda: True)
    launch = plan_launch(["lmp"], context)
    assert launch.env == {"OMP_NUM_THREADS": "3", **ROOT_ENV} and launch.ranks == 2
    assert plan_launch(["mpirun", "lmp"], context).env == {"OMP_NUM_THREADS": "3", **ROOT_ENV}
    assert plan_launch(["lmp"], {"resources": res()}).env == {"OMP_NUM_THREADS": "1"}
    # the caller's threads win, and the launch line binds that many cores
    assert "ppr:2:node:PE=2" in plan_launch(["lmp"], context, threads=2).prefix
    monkeypatch.setattr(mpi, "_is_root", lambda: False)
    assert plan_launch(["lmp"], context).env == {"OMP_NUM_THREADS": "3"}


def test_a_code_that_is_not_mpi_gets_threads_only():
    context = {"resources": res(1, 2, threads=2), "mpi": site("openmpi", ["localhost"])}
    launch = plan_launch(["xtb"], context, parallel=False)
    assert launch.prefix == [] and launch.env == {"OMP_NUM_THREADS": "2"} and launch.ranks == 1


def test_command_line_puts_the_launcher_before_the_command(tmp_path, monkeypatch):
    monkeypatch.setattr(mpi, "_is_root", lambda: True)
    context = {
        "resources": res(2, 1, threads=2),
        "mpi": site("openmpi", ["localhost", "localhost"]),
        "commands": {"lammps": ["lmp", "-sf", "omp"]},
    }
    with using_context(context):
        line = command_line(
            "lammps", ["-in", "in.lammps"], workdir=tmp_path, default_command=["lmp"]
        )
    assert line.argv == (
        "mpiexec -n 2 --map-by ppr:2:node:PE=2 --host localhost:2 -x OMP_NUM_THREADS "
        "lmp -sf omp -in in.lammps".split()
    )
    assert line.launcher == line.argv[:9] and line.ranks == 2
    assert line.env["OMP_NUM_THREADS"] == "2" and line.env["OMPI_ALLOW_RUN_AS_ROOT"] == "1"
    assert line.env["OMPI_MCA_ess_singleton_isolated"] == "1"  # BASE_ENV stays


def test_exec_mode_keeps_the_launcher_outside_the_image(tmp_path, monkeypatch):
    monkeypatch.setattr(mpi, "_is_root", lambda: False)
    for name in ("CUDA_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES"):
        monkeypatch.delenv(name, raising=False)
    container = {"argv": ["apptainer", "exec", "--cleanenv"], "image": "/images/sim.sif"}
    context = {
        "resources": res(1, 2),
        "mpi": site("openmpi", ["localhost"]),
        "container": container,
    }
    with using_context(context):
        line = command_line("lammps", ["-in", "x"], workdir=tmp_path, default_command=["lmp"])
    run = str(tmp_path)
    assert line.argv == [
        *"mpiexec -n 2 --map-by ppr:2:node --host localhost:2 -x OMP_NUM_THREADS".split(),
        "apptainer", "exec", "--cleanenv", "--bind", run, "--pwd", run,
        "--env", "OMP_NUM_THREADS=1", "--env", "OMPI_MCA_ess_singleton_isolated=1",
        "/images/sim.sif", "lmp", "-in", "x",
    ]  # fmt: skip
    # a site command with its own launcher: that one, still outside the image
    context["commands"] = {"lammps": ["srun", "-n", "8", "lmp"]}
    with using_context(context):
        line = command_line("lammps", [], workdir=tmp_path, default_command=["lmp"])
    assert line.launcher == [] and line.argv[:5] == ["srun", "-n", "8", "apptainer", "exec"]
    assert line.argv[-2:] == ["/images/sim.sif", "lmp"]


def test_a_missing_launcher_is_binary_missing(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    context = {"resources": res(1, 2), "mpi": site("openmpi", ["localhost"])}
    with using_context(context), pytest.raises(SimulationError) as info:
        run_code("lammps", [], workdir=tmp_path, walltime=10, default_command=["lmp"])
    assert info.value.reason == BINARY_MISSING
    assert "MPI launcher 'mpiexec' not found" in str(info.value) and "2 rank(s)" in str(info.value)


def test_one_rank_command_line_is_todays(tmp_path):
    with using_context({"resources": res()}):
        line = command_line("xtb", ["a.xyz"], workdir=tmp_path, default_command=["xtb"])
    assert line.argv == ["xtb", "a.xyz"] and line.launcher == []
    assert line.env == {"OMP_NUM_THREADS": "1", "OMPI_MCA_ess_singleton_isolated": "1"}


def test_using_context_restores_the_previous_one():
    with using_context({"a": 1}):
        with using_context({"b": 2}):
            assert task_context() == {"b": 2}
        assert task_context() == {"a": 1}
    assert task_context() == {}


# -- what the task got ------------------------------------------------------------------------


def test_granted_without_mpi_is_the_workers_host(parsl_task):
    here = socket.gethostname()
    assert granted(None) == {"nodes": 1, "ranks": 1, "threads_per_rank": 1, "hosts": [here]}
    got = granted({"resources": res(1, 2, threads=2)})  # Parsl's leftovers are not read
    assert got == {"nodes": 1, "ranks": 2, "threads_per_rank": 2, "hosts": [here]}


def test_granted_on_an_mpi_site(parsl_task, monkeypatch):
    context = {"resources": res(2, 2), "mpi": site("openmpi", ["x", "y"])}
    assert granted(context) == {
        "nodes": 2,
        "ranks": 4,
        "threads_per_rank": 1,
        "hosts": ["n1", "n2"],
    }
    monkeypatch.delenv("PARSL_MPI_NODELIST")
    assert granted(context)["hosts"] == ["x", "y"]
    assert granted({**context, "mpi": site("srun")})["hosts"] == []  # unknown here


def unit() -> int:
    return 1


def fails() -> None:
    raise RuntimeError("no")


def test_run_task_reports_granted_for_every_task(parsl_task):
    context = {"resources": res(2, 2, 2), "mpi": site("openmpi", ["localhost"] * 2)}
    expected = {"nodes": 2, "ranks": 4, "threads_per_rank": 2, "hosts": ["n1", "n2"]}
    assert run_task(unit, (), {}, context)["granted"] == expected
    failed = run_task(fails, (), {}, context)
    assert failed["ok"] is False and failed["granted"] == expected
    assert run_task(unit, (), {})["granted"]["ranks"] == 1  # an old site: no resources


def test_mpi_module_is_worker_side_only():
    source = Path(mpi.__file__).read_text()
    imports = [ln for ln in source.splitlines() if ln.startswith(("import ", "from "))]
    assert all(
        ln.split()[1].split(".")[0] in {"__future__", "os", "shlex", "socket", "collections",
                                        "dataclasses", "pathlib", "typing"}
        for ln in imports
    ), imports  # fmt: skip
