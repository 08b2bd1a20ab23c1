"""Image identity and placement, on the machine that holds the image (orch's or a site's).

* :func:`image_digest`: ``sha256:<hex>`` of a SIF file's bytes, or of a sandbox directory's
  tree (every entry's relative path, type, mode and content or link target, in sorted order).
* :func:`fingerprint`: a cheap summary of the same (sizes and modification times) that tells
  whether the image changed since its digest was computed, without reading its contents.
* :func:`ensure_image`: the deployment task: build or pull the image unless it is there, and
  report its digest. It runs the container runtime as a subprocess with an argument list.

Standard library only: the deployment task runs on a site, outside any image.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import stat
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Sequence
from typing import Any

_CHUNK = 1 << 20


def _hash_file(path: str, digest: Any) -> None:
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)


def _walk(root: str) -> list[tuple[str, os.stat_result]]:
    """Every entry under ``root`` (not following links), as (relative path, lstat), sorted."""
    entries: list[tuple[str, os.stat_result]] = []
    pending = [("", root)]
    while pending:
        prefix, folder = pending.pop()
        with os.scandir(folder) as listing:
            for entry in listing:
                rel = prefix + entry.name
                info = entry.stat(follow_symlinks=False)
                entries.append((rel, info))
                if stat.S_ISDIR(info.st_mode):
                    pending.append((rel + "/", entry.path))
    entries.sort(key=lambda item: item[0])
    return entries


def image_digest(path: str | os.PathLike[str]) -> str:
    """``sha256:<hex>`` of the image at ``path`` (a file, or a sandbox directory's tree).

    Raises:
        FileNotFoundError: nothing is there.
    """
    root = os.fspath(path)
    digest = hashlib.sha256()
    if not os.path.isdir(root):
        _hash_file(root, digest)
        return f"sha256:{digest.hexdigest()}"
    for rel, info in _walk(root):
        mode = info.st_mode
        digest.update(f"{rel}\0{stat.S_IFMT(mode):o}\0{stat.S_IMODE(mode):o}\0".encode())
        full = os.path.join(root, rel)
        if stat.S_ISLNK(mode):
            digest.update(os.readlink(full).encode(errors="surrogateescape"))
        elif stat.S_ISREG(mode):
            _hash_file(full, digest)
        digest.update(b"\n")
    return f"sha256:{digest.hexdigest()}"


def fingerprint(path: str | os.PathLike[str]) -> str:
    """A summary of the image's metadata (paths, sizes, mtimes) that changes when it does."""
    root = os.fspath(path)
    digest = hashlib.sha256()
    info = os.stat(root)
    digest.update(f"{info.st_size}\0{info.st_mtime_ns}\0{info.st_ino}\n".encode())
    if os.path.isdir(root):
        for rel, entry in _walk(root):
            digest.update(
                f"{rel}\0{entry.st_mode}\0{entry.st_size}\0{entry.st_mtime_ns}\n".encode()
            )
    return digest.hexdigest()


def _run(argv: Sequence[str], cwd: str | None, timeout: float) -> tuple[int, str]:
    proc = subprocess.run(
        list(argv),
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        timeout=timeout,
        check=False,
    )
    return proc.returncode, proc.stdout.decode(errors="replace")


def ensure_image(
    runtime: str,
    image: str,
    *,
    build: Sequence[str] | None = None,
    pull: Sequence[str] | None = None,
    sources: bytes | None = None,
    force: bool = False,
    timeout: float = 3600.0,
) -> dict[str, Any]:
    """Put the image in place (build or pull it unless it is there) and report its digest.

    Args:
        runtime: ``apptainer`` or ``singularity`` (found on PATH).
        image: The image's path (``~`` is expanded here, on the machine that runs this).
        build: ``apptainer build ...`` argv to run when the image is missing; the recipe path
            in it is relative to the unpacked ``sources``.
        pull: ``apptainer pull ...`` argv to run when the image is missing.
        sources: A gzipped tar of the recipe and its ``%files`` sources (remote builds).
        force: Rebuild or pull even when the image exists.
        timeout: Seconds the runtime may take.

    Returns:
        ``image`` (expanded path), ``action`` (``found``, ``built`` or ``pulled``), ``digest``,
        ``seconds`` and ``log`` (the runtime's last output lines).

    Raises:
        RuntimeError: the runtime is missing or the build/pull failed (its output tail in the
            message).
    """
    started = time.monotonic()
    path = os.path.expanduser(image)
    action = "found"
    log = ""
    if force or not os.path.exists(path):
        argv = list(build or pull or [])
        if not argv:
            raise RuntimeError(f"{path} does not exist and there is no recipe or URI to make it")
        if shutil.which(runtime) is None:
            raise RuntimeError(
                f"{runtime!r} not found on PATH on {os.uname().nodename}; load its module "
                "(e.g. `module load apptainer`) in the site's worker_init"
            )
        argv = [os.path.expanduser(a) if a == image else a for a in argv]
        parent = os.path.dirname(path)
        if parent:
            os.makedirs(parent, exist_ok=True)
        if force and os.path.exists(path):
            argv.insert(2, "--force")
        with tempfile.TemporaryDirectory(prefix="orch-build-") as scratch:
            cwd = None
            if sources is not None:
                with tarfile.open(fileobj=io.BytesIO(sources), mode="r:gz") as tar:
                    tar.extractall(scratch, filter="data")
                cwd = scratch
            code, log = _run(argv, cwd, timeout)
        if code != 0:
            tail = "\n".join(log.strip().splitlines()[-15:])
            raise RuntimeError(f"`{' '.join(argv)}` failed with status {code}:\n{tail}")
        action = "built" if build else "pulled"
    return {
        "image": path,
        "action": action,
        "digest": image_digest(path),
        "fingerprint": fingerprint(path),
        "seconds": time.monotonic() - started,
        "log": "\n".join(log.strip().splitlines()[-15:]),
    }
