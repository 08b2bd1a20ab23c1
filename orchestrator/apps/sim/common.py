"""Running a simulation code on a worker: fresh directory, argv, wall time, failures as data.

Every wrapper in this package follows the same pattern::

    atoms = to_atoms(structure, code="xtb")          # ASE Atoms, or SMILES made 3-D
    with workdir("xtb", keep=keep) as path:          # fresh directory, kept if the run fails
        write inputs into path (ASE writers where they exist)
        run = run_code("xtb", [...], workdir=path, walltime=walltime, default_command=["xtb"])
        if "[ERROR]" in run.stdout:
            raise run.failure(CODE_ERROR, "...")     # carries the exit code and output tail
        return parse(run)

The command that launches a code comes from the site (``commands:`` in its YAML, delivered with
each task): ``lmp`` on a laptop, ``mpiexec -n 4 lmp`` on a cluster. An MPI code (``run_code``'s
``parallel=True``, the default) is started by the launcher the task's resources and the site's
``mpi:`` call for (``orchestrator.apps.mpi.launch_prefix``: ``mpiexec -n 2 --map-by ppr:2:node
--host localhost:2 ... lmp`` for two ranks on an Open MPI site), unless the site's command
already starts with a launcher (``mpiexec``, ``mpirun``, ``srun``, ``aprun``: that one wins);
one rank on a site without ``mpi:`` runs the code bare. ``OMP_NUM_THREADS`` is the task's
threads per rank. A site with ``container: {mode: exec}`` runs the code inside its image, the
launcher outside: ``mpiexec -n 4 apptainer exec --cleanenv ... sim.sif lmp``. Only the standard
library, numpy, ASE and RDKit are imported here: this runs on workers.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from orchestrator.apps.containers import container_argv
from orchestrator.apps.failures import FailureReason, parse_reason
from orchestrator.apps.mpi import plan_launch
from orchestrator.apps.runtime import task_context

# Failure reasons (``SimulationError.reason``, copied to ``Result.failure_info.reason``);
# their meanings are in ``orchestrator.apps.failures.FailureReason``
BINARY_MISSING = FailureReason.BINARY_MISSING
BAD_INPUT = FailureReason.BAD_INPUT
NONZERO_EXIT = FailureReason.NONZERO_EXIT
CODE_ERROR = FailureReason.CODE_ERROR
NOT_CONVERGED = FailureReason.NOT_CONVERGED
OUTPUT_MISSING = FailureReason.OUTPUT_MISSING
OUTPUT_UNPARSABLE = FailureReason.OUTPUT_UNPARSABLE
TIMEOUT = FailureReason.TIMEOUT
"""The run exceeded its wall time and its whole process group was killed."""
WALLTIME = TIMEOUT
"""The former name of :data:`TIMEOUT` (the reason was ``walltime``; it now reads ``timeout``,
like a task orch itself stopped)."""

REASONS = (
    BINARY_MISSING,
    BAD_INPUT,
    NONZERO_EXIT,
    CODE_ERROR,
    NOT_CONVERGED,
    OUTPUT_MISSING,
    OUTPUT_UNPARSABLE,
    TIMEOUT,
)
"""The reasons a simulation wrapper raises :class:`SimulationError` with."""

Keep = Literal["never", "failed", "always"]
"""When a run's working directory is kept: never, only when the run failed, or always."""

BASE_ENV = {"OMP_NUM_THREADS": "1", "OMPI_MCA_ess_singleton_isolated": "1"}
"""Environment for every run: one OpenMP thread unless asked (the task's ``threads_per_rank``
or ``run_code``'s ``threads``; unset, xtb gets 3-14x slower on small machines) and no MPI
singleton daemon (saves ~0.1 s per MPI-linked binary)."""

TAIL_LINES = 30
KILL_GRACE_S = 5.0


class SimulationError(Exception):
    """A simulation failed; ``reason`` says how (one of :data:`REASONS`).

    Attributes:
        reason: Machine-readable failure class: a :class:`FailureReason` member (a string
            given to the constructor is read with ``parse_reason``, so ``"walltime"`` is
            :data:`TIMEOUT`; one orch does not know stays that string).
        code: Which code (``xtb``, ``nwchem``, ``cp2k``, ``lammps``).
        returncode: The process's exit status, when it ran.
        output_tail: The last lines of its output (stdout, then stderr).
        workdir: The working directory, when it was kept for inspection.
    """

    def __init__(
        self,
        reason: FailureReason | str,
        message: str,
        *,
        code: str,
        returncode: int | None = None,
        output_tail: str = "",
        workdir: str | None = None,
    ):
        super().__init__(message)
        self.reason: FailureReason | str = parse_reason(reason) or str(reason)
        self.message = message
        self.code = code
        self.returncode = returncode
        self.output_tail = output_tail
        self.workdir = workdir

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"

    def __reduce__(self) -> tuple[Any, ...]:
        return (
            _rebuild_error,
            (
                str(self.reason),  # plain data: unpickled by whichever orch receives it
                self.message,
                self.code,
                self.returncode,
                self.output_tail,
                self.workdir,
            ),
        )

    @property
    def details(self) -> dict[str, Any]:
        """Structured facts for ``Result.failure_info.details``."""
        return {
            "code": self.code,
            "returncode": self.returncode,
            "output_tail": self.output_tail,
            "workdir": self.workdir,
        }


def _rebuild_error(
    reason: str,
    message: str,
    code: str,
    returncode: int | None,
    output_tail: str,
    workdir: str | None,
) -> SimulationError:
    return SimulationError(
        reason, message, code=code, returncode=returncode, output_tail=output_tail, workdir=workdir
    )


def bad_input(code: str, message: str) -> SimulationError:
    """A :data:`BAD_INPUT` error (raise it before launching anything)."""
    return SimulationError(BAD_INPUT, message, code=code)


def tail(text: str, lines: int = TAIL_LINES) -> str:
    """The last ``lines`` lines of ``text``."""
    return "\n".join(text.rstrip().splitlines()[-lines:])


@dataclass
class Run:
    """A finished run of a code."""

    code: str
    argv: list[str]
    returncode: int
    stdout: str
    stderr: str
    workdir: Path
    seconds: float
    files: dict[str, str] = field(default_factory=dict)

    def output_tail(self, lines: int = TAIL_LINES) -> str:
        """The last lines of each output file read (``files``), of stdout, then of stderr."""
        parts = [f"--- {name} ---\n{tail(text, lines)}" for name, text in self.files.items()]
        parts.append(tail(self.stdout, lines))
        if self.stderr.strip():
            parts.append("--- stderr ---\n" + tail(self.stderr, lines))
        return "\n".join(parts)

    def failure(self, reason: FailureReason | str, message: str) -> SimulationError:
        """A ``SimulationError`` for this run, with its exit status and output tail."""
        return SimulationError(
            reason,
            message,
            code=self.code,
            returncode=self.returncode,
            output_tail=self.output_tail(),
        )

    def check_exit(self) -> None:
        """Raise :data:`NONZERO_EXIT` if the code exited with a non-zero status."""
        if self.returncode != 0:
            raise self.failure(NONZERO_EXIT, f"exited with status {self.returncode}")


def resolve_command(code: str, default: Sequence[str]) -> list[str]:
    """The argv prefix that launches ``code`` at this site (site ``commands:``, else default)."""
    commands: Mapping[str, Sequence[str]] = task_context().get("commands") or {}
    return list(commands.get(code) or default)


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """Terminate the process and everything it started (its own session), then reap it."""
    for sig, wait in ((signal.SIGTERM, KILL_GRACE_S), (signal.SIGKILL, None)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=wait)
            break
        except subprocess.TimeoutExpired:
            continue
    proc.wait()


@dataclass(frozen=True)
class CommandLine:
    """How one run of a code is started (:func:`command_line`).

    Attributes:
        argv: The whole command: launcher, container runtime and image (exec mode), code,
            arguments.
        env: Variables set for the run (:data:`BASE_ENV`, threads, MPI's, the caller's).
        launcher: The MPI launcher words at the start of ``argv`` (``[]``: none added).
        ranks: MPI ranks the task asks for (1 for a code run without MPI).
    """

    argv: list[str]
    env: dict[str, str]
    launcher: list[str]
    ranks: int


def command_line(
    code: str,
    args: Sequence[str],
    *,
    workdir: Path,
    default_command: Sequence[str],
    threads: int | None = None,
    env: Mapping[str, str] | None = None,
    parallel: bool = True,
) -> CommandLine:
    """The command and variables :func:`run_code` starts ``code`` with, in this task.

    ``launcher + site command + args``; in exec mode ``launcher + runtime exec ... IMAGE +
    code + args`` (the MPI launcher outside the image, the code's variables passed in with
    ``--env``). Arguments are those of :func:`run_code`; nothing is started.

    Raises:
        SimulationError: ``bad_input`` for a thread count below 1 or an unknown launcher
            kind in the site's ``mpi:``.
    """
    if threads is not None and threads < 1:
        raise bad_input(code, f"threads must be >= 1 (got {threads})")
    command = resolve_command(code, default_command)
    context = task_context()
    try:
        launch = plan_launch(command, context, threads=threads, parallel=parallel)
    except ValueError as exc:
        raise bad_input(code, str(exc)) from None
    argv = command + [str(a) for a in args]
    run_env = {**BASE_ENV, **launch.env, **(env or {})}
    container = context.get("container")
    if container:  # exec mode: the launcher on the host, the code in the site's image
        argv = container_argv(container, argv, default_command[0], env=run_env, workdir=workdir)
    return CommandLine(
        argv=launch.prefix + argv, env=run_env, launcher=launch.prefix, ranks=launch.ranks
    )


def run_code(
    code: str,
    args: Sequence[str],
    *,
    workdir: Path,
    walltime: float,
    default_command: Sequence[str],
    threads: int | None = None,
    env: Mapping[str, str] | None = None,
    stdin_path: Path | None = None,
    output_files: Sequence[str] = (),
    parallel: bool = True,
) -> Run:
    """Run ``<launcher> <site command for code> + args`` in ``workdir``, at most ``walltime`` s.

    The launcher comes from the task's resources and its site's ``mpi:``
    (:func:`orchestrator.apps.mpi.plan_launch`): none for one rank on a site without ``mpi:``
    or when the site's command starts with its own launcher. With ``container: {mode: exec}``
    the launcher stays outside the image: ``launcher apptainer exec ... IMAGE code args``.

    The process gets its own session; on timeout (or if the wait is interrupted) the whole
    process group is terminated, then killed. Output goes to ``orch.stdout``/``orch.stderr`` in
    the working directory (files, not pipes, so a chatty code cannot block on a full pipe).
    Files named in ``output_files`` (relative to ``workdir``; codes that write their log to a
    file) are read into ``Run.files`` and lead the output tail of any failure.

    Args:
        code: The code's name (the key of the site's ``commands:``).
        args: Arguments after the code's command.
        workdir: The run's directory.
        walltime: Seconds before the process group is killed.
        default_command: The command when the site gives none (its first word names the
            program for containers).
        threads: OpenMP threads per rank (``OMP_NUM_THREADS``, and cores bound per rank);
            default the task's ``threads_per_rank`` (1 outside a task).
        env: Further variables for the run.
        stdin_path: A file for the code's standard input.
        output_files: Output files read into ``Run.files``.
        parallel: Whether the code runs under MPI when the task has more than one rank;
            ``False`` (xtb) never puts a launcher before it.

    Raises:
        SimulationError: ``binary_missing`` (the program or the MPI launcher is not found),
            ``bad_input`` (a non-positive wall time or thread count), ``timeout`` (killed).
    """
    if walltime <= 0:
        raise bad_input(code, f"walltime must be > 0 seconds (got {walltime})")
    line = command_line(
        code,
        args,
        workdir=workdir,
        default_command=default_command,
        threads=threads,
        env=env,
        parallel=parallel,
    )
    argv, run_env = line.argv, line.env
    if line.launcher and shutil.which(line.launcher[0]) is None:
        raise SimulationError(
            BINARY_MISSING,
            f"MPI launcher {line.launcher[0]!r} not found on PATH; the task asks for "
            f"{line.ranks} rank(s): install MPI on the workers, or set the site's "
            "'mpi: {launcher: ...}' to the one it has",
            code=code,
        )
    program = argv[len(line.launcher)]
    if shutil.which(program) is None:
        raise SimulationError(
            BINARY_MISSING,
            f"program {program!r} not found on PATH; install {code} on the workers, or set "
            f"'commands: {{{code}: ...}}' in the site's YAML to the command that runs it",
            code=code,
        )
    full_env = {**os.environ, **run_env}
    out_path, err_path = workdir / "orch.stdout", workdir / "orch.stderr"
    started = time.monotonic()
    with contextlib.ExitStack() as files:
        out = files.enter_context(open(out_path, "wb"))
        err = files.enter_context(open(err_path, "wb"))
        stdin = files.enter_context(open(stdin_path, "rb")) if stdin_path else subprocess.DEVNULL
        proc = subprocess.Popen(
            argv,
            cwd=workdir,
            stdout=out,
            stderr=err,
            stdin=stdin,
            env=full_env,
            start_new_session=True,
        )
        try:
            returncode = proc.wait(timeout=walltime)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            run = _finished(
                code, argv, proc.returncode, out_path, err_path, workdir, started, output_files
            )
            raise run.failure(
                TIMEOUT, f"exceeded its wall time of {walltime:g} s; process group killed"
            ) from None
        except BaseException:
            _kill_group(proc)
            raise
    return _finished(code, argv, returncode, out_path, err_path, workdir, started, output_files)


def _finished(
    code: str,
    argv: list[str],
    returncode: int | None,
    out_path: Path,
    err_path: Path,
    workdir: Path,
    started: float,
    output_files: Sequence[str],
) -> Run:
    files = {
        name: (workdir / name).read_text(errors="replace")
        for name in output_files
        if (workdir / name).is_file()
    }
    return Run(
        code=code,
        argv=argv,
        returncode=-1 if returncode is None else returncode,
        stdout=out_path.read_text(errors="replace"),
        stderr=err_path.read_text(errors="replace"),
        workdir=workdir,
        seconds=time.monotonic() - started,
        files=files,
    )


@contextlib.contextmanager
def workdir(code: str, keep: Keep = "failed", root: Path | str | None = None) -> Iterator[Path]:
    """A fresh directory for one run, removed afterwards according to ``keep``.

    Args:
        code: Name used as the directory's prefix.
        keep: ``failed`` (default) keeps it only when the block raises; ``never``/``always``.
        root: Parent directory; default ``$ORCH_SIM_ROOT`` or ``./sim`` (on a site's worker
            the current directory is the site's working directory).

    A ``SimulationError`` raised in the block gets ``workdir`` set when the directory is kept.
    """
    if keep not in ("never", "failed", "always"):
        raise bad_input(code, f"keep must be 'never', 'failed' or 'always' (got {keep!r})")
    base = Path(root or os.environ.get("ORCH_SIM_ROOT") or Path.cwd() / "sim")
    base.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix=f"{code}-", dir=base)).resolve()
    try:
        yield path
    except BaseException as exc:
        if keep == "never":
            shutil.rmtree(path, ignore_errors=True)
        elif isinstance(exc, SimulationError):
            exc.workdir = str(path)
        raise
    if keep != "always":
        shutil.rmtree(path, ignore_errors=True)
