"""The probe: what an image offers, reported from inside it.

``orch deploy`` sends :func:`probe` to each site. In ``workers`` mode the task already runs in
the image; in ``exec`` mode it starts ``python3 -m orchestrator.apps.probe`` in the image
through the site's ``apptainer exec`` command. Either way the report comes from inside:

* ``versions``: Python, orch, globus-compute-endpoint, parsl, dill, torch (and whether CUDA is
  usable), each simulation code found on PATH;
* ``image``: whether it runs in a container (``APPTAINER_CONTAINER``), the image's labels
  (``/.singularity.d/labels.json``) and its ``/opt/orch/IMAGE`` marker.

Standard library only (torch is imported when present).
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import shutil
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

PACKAGES = ("globus-compute-endpoint", "globus-compute-sdk", "parsl", "dill", "proxystore")
"""Python packages whose versions must match orch's own."""

CODES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "xtb": (("xtb",), ("--version",)),
    "lammps": (("lmp", "lmp_serial", "lmp_mpi"), ("-h",)),
    "cp2k": (("cp2k.psmp", "cp2k.ssmp", "cp2k"), ("--version",)),
    "nwchem": (("nwchem",), ()),
}
"""Code -> (program names tried in order, arguments that print its version)."""

LABELS_FILE = "/.singularity.d/labels.json"
MARKER_FILE = "/opt/orch/IMAGE"


def _first_line(argv: Sequence[str]) -> str:
    env = {**os.environ, "OMPI_MCA_ess_singleton_isolated": "1", "OMP_NUM_THREADS": "1"}
    try:
        proc = subprocess.run(
            list(argv),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=30,
            env=env,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"(failed: {type(exc).__name__})"
    for line in proc.stdout.decode(errors="replace").splitlines():
        text = line.strip(" *\t")
        if text and ("version" in text.lower() or any(c.isdigit() for c in text)):
            return text[:120]
    return "present"


def code_versions() -> dict[str, str | None]:
    """Each simulation code's version line (``None``: not on PATH)."""
    found: dict[str, str | None] = {}
    for code, (programs, args) in CODES.items():
        program = next((p for p in programs if shutil.which(p)), None)
        if program is None:
            found[code] = None
        elif args:
            found[code] = _first_line([program, *args])
        else:
            found[code] = "present"
    return found


def _torch() -> dict[str, Any] | None:
    try:
        import torch  # noqa: PLC0415 - optional, heavy
    except ImportError:
        return None
    cuda = bool(torch.cuda.is_available())
    return {
        "version": str(torch.__version__),
        "cuda_build": torch.version.cuda,
        "cuda_available": cuda,
        "devices": int(torch.cuda.device_count()) if cuda else 0,
    }


def _installed(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def own_versions() -> dict[str, Any]:
    """Python, orch and package versions from metadata alone: quick, imports nothing heavy.

    ``torch`` is ``{"version": ...}`` or ``None``; no code is run.
    """
    try:
        import orchestrator  # noqa: PLC0415 - the package this module belongs to

        orch_version: str | None = orchestrator.__version__
    except ImportError:
        orch_version = None
    torch = _installed("torch")
    return {
        "python": platform.python_version(),
        "orch": orch_version,
        "packages": {name: _installed(name) for name in PACKAGES},
        "torch": {"version": torch} if torch else None,
    }


def versions() -> dict[str, Any]:
    """The versions this process sees: :func:`own_versions`, torch's CUDA, each code's."""
    return {**own_versions(), "torch": _torch(), "codes": code_versions()}


def image_facts() -> dict[str, Any]:
    """Whether this runs in a container, and the image's labels and marker."""
    container = os.environ.get("APPTAINER_CONTAINER") or os.environ.get("SINGULARITY_CONTAINER")
    labels: dict[str, Any] = {}
    try:
        with open(LABELS_FILE) as handle:
            labels = json.load(handle)
    except (OSError, ValueError):
        pass
    marker = None
    try:
        with open(MARKER_FILE) as handle:
            marker = handle.read().strip()
    except OSError:
        pass
    return {"container": container, "labels": labels, "marker": marker}


def report() -> dict[str, Any]:
    """Everything the probe reports, from this process."""
    return {**versions(), "image": image_facts(), "host": platform.node()}


def probe(exec_prefix: Sequence[str] | None = None) -> dict:
    """The probe task: the report from inside the image.

    Args:
        exec_prefix: ``[runtime, 'exec', options..., image]`` (exec mode): the report is made by
            ``python3 -m orchestrator.apps.probe`` started that way. ``None`` (workers mode):
            this task already runs in the image.

    Raises:
        RuntimeError: the in-image run failed (its output tail in the message).
    """
    if not exec_prefix:
        return report()
    argv = [*exec_prefix, "python3", "-m", "orchestrator.apps.probe"]
    proc = subprocess.run(
        argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=300, check=False
    )
    out = proc.stdout.decode(errors="replace")
    if proc.returncode != 0:
        tail = "\n".join((out + proc.stderr.decode(errors="replace")).strip().splitlines()[-10:])
        raise RuntimeError(f"the probe failed in the image (status {proc.returncode}):\n{tail}")
    return dict(json.loads(out.strip().splitlines()[-1]))


if __name__ == "__main__":
    print(json.dumps(report()))
    sys.exit(0)
