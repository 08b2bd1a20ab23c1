#!/usr/bin/env python3
"""An Apptainer-compatible runner built on bubblewrap, for the tests (standard library only).

There is no ``apptainer`` binary on the test machines, so ``tests/support/bin/apptainer`` (and
``singularity``) run this module instead. orch calls it exactly as it calls the real runtime; it
implements the subset of Apptainer's command line that orch emits, with Apptainer's semantics,
and fails loudly (``FATAL:`` on stderr, exit status 255, like apptainer) on anything else.

Subcommands:

* ``exec [options] IMAGE COMMAND [ARGS...]``, ``run [options] IMAGE [ARGS...]`` (the image's
  ``/.singularity.d/runscript``) and ``test [options] IMAGE`` (its ``/.singularity.d/test``).
  IMAGE is a sandbox directory (a root filesystem); SIF files and URIs are refused. Options:
  ``--cleanenv/-e``, ``--env K=V`` (parsed like Apptainer's map flag: one ``=`` is one pair,
  several are a comma-separated list), ``--env-file``, ``--bind/-B src[:dst[:ro|rw]]``
  (repeatable, comma-separated), ``--pwd``, ``--containall/-C``, ``--no-home``, and ``--nv`` /
  ``--rocm`` (no-ops: the host's ``/dev`` is bound anyway). Default binds as Apptainer's:
  ``$HOME``, ``/tmp``, the current directory, ``/proc``, ``/sys``, ``/dev``,
  ``/etc/resolv.conf`` and ``/etc/hosts``. Environment: the host's minus ``PATH`` and
  ``LD_LIBRARY_PATH`` (nothing with ``--cleanenv`` but ``TERM`` and proxies); then the image's
  ``/.singularity.d/env/*.sh`` are sourced by the image's ``/bin/sh``; then ``APPTAINERENV_*``,
  ``--env-file`` and ``--env`` values are exported, so they win over ``%environment``.
* ``build [--fakeroot] [--force] [--notest] [--build-arg k=v] --sandbox DEST RECIPE.def``.
* ``inspect [--labels|--runscript|--environment|--test|--helpfile|--deffile] [--json] IMAGE``.
* ``--version`` / ``version``.

How the image stays read-only. bubblewrap 0.8.0 has no ``--overlay-src``/``--tmp-overlay``
(they came in 0.9.0), so the container's root is bubblewrap's own tmpfs with every top-level
entry of the image bound read-only onto it (symbolic links recreated as links). A bind whose
mount point is missing from the image "splits" the directories above it: such a directory
becomes a tmpfs directory whose own entries are bound one by one, so the mount point is made
in memory and the image is never written. ``/`` is remounted read-only at the end, so the
container sees a read-only image as with a SIF, and writes only where something is bound.

Signals. The runner ``exec``s bubblewrap (its PID is bwrap's) with ``--die-with-parent`` and no
new session: a signal to the process group (orch's ``os.killpg``, Ctrl-C in a terminal) reaches
the command itself; SIGTERM to bwrap's PID alone ends bwrap, and the command gets SIGKILL.
The command's exit status is bwrap's (128+N when it is killed by signal N).

Builds and the image cache. ``Bootstrap: docker`` with ``From: debian:bookworm[-slim]`` (or
``debian:12[-slim]``) is built with ``debootstrap --variant=minbase bookworm``, which stands in
for Debian's official image (itself made by debootstrap: debuerreotype); Docker's apt settings
and, for ``-slim``, its dpkg path excludes (no documentation, man pages or locales) are added.
``Bootstrap: debootstrap`` takes ``OSVersion``, ``MirrorURL`` and ``Include`` as Apptainer
does. Sections: ``%arguments`` (``{{ name }}`` substitution, overridden by ``--build-arg``),
``%files`` (sources relative to the current directory, copied before ``%post``, without
``__pycache__`` directories or ``*.pyc`` files), ``%post`` (``/bin/sh -e`` in the root
filesystem under bubblewrap, as root, network on, ``$APPTAINER_LABELS``/``$SINGULARITY_LABELS``
and ``$APPTAINER_ENVIRONMENT`` set), ``%environment``, ``%runscript``, ``%startscript``,
``%labels``, ``%test`` (run after the build unless ``--notest``; failing it fails the build)
and ``%help``; ``%setup``, ``%app*`` and multi-stage recipes are refused. Only sandbox builds:
a SIF target is refused.

Every build is cached in ``${ORCH_IMAGE_CACHE:-$HOME/.cache/orch/images}`` under the sha256 of
the recipe text, the build arguments and the bytes (and names) of every ``%files`` source, so an
image is built once per machine; a hit is put at DEST as a hard-link copy (``cp -al``) when on
the same file system, else copied. Hard links share inodes with the cache entry: the runner
mounts images read-only, but do not edit files of a sandbox in place. Layout::

    base/<sha>/rootfs     the debootstrap root filesystem, keyed by the recipe's header
    entries/<sha>/rootfs  a built image;  entries/<sha>/meta.json  how and when it was built
    apt/pool/             every .deb that a %post downloaded (hard links feed later builds)
    pip/                  pip's cache for %post (PIP_CACHE_DIR)
    locks/<sha>.lock      flock: one build per key at a time, across processes

So a rebuild after a change to ``%files`` copies the cached base and downloads nothing. apt in
``%post`` is pointed (``APT_CONFIG``) at a per-build archive directory seeded with hard links
from the pool, and a ``DPkg::Post-Invoke`` hook links new downloads back into the pool, so a
recipe's own ``apt-get clean`` cannot empty the cache. Builds happen in a temporary directory
next to their cache entry and are renamed into place when complete (``%test`` included).
Only the newest ``$ORCH_IMAGE_CACHE_KEEP`` (default 2) entries per recipe file name are kept
(every change to ``%files`` makes a new one); delete the directory to reclaim all the space.
pip's cache (``PIP_CACHE_DIR``) only helps where the index sends cacheable responses (here it
does not, so wheels are downloaded again: quickly). The build host's CA bundle is bound into
``%post`` (``PIP_CERT``, ``SSL_CERT_FILE``, ``REQUESTS_CA_BUNDLE``) for hosts behind a
TLS-inspecting proxy; it does not stay in the image.
"""

from __future__ import annotations

import csv
import fcntl
import glob
import hashlib
import json
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import IO

APPTAINER_VERSION = "1.3.6"
VERSION_TEXT = f"{APPTAINER_VERSION}-bwrap (orch test runner)"
BUILDER_VERSION = "1"  # part of every cache key: bump when a build's result would change
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
DEBIAN_MIRROR = "http://deb.debian.org/debian"
DOCKER_DEBIAN = {
    "debian:bookworm": ("bookworm", False),
    "debian:bookworm-slim": ("bookworm", True),
    "debian:12": ("bookworm", False),
    "debian:12-slim": ("bookworm", True),
}
ALWAYS_PASS = {
    "TERM",
    "http_proxy",
    "HTTP_PROXY",
    "https_proxy",
    "HTTPS_PROXY",
    "no_proxy",
    "NO_PROXY",
    "all_proxy",
    "ALL_PROXY",
    "ftp_proxy",
    "FTP_PROXY",
}
RUNNER_VARS = ("ORCH_BWRAP_PROG", "ORCH_BWRAP_PYTHON")
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
BUILD_DIR = "/tmp/.orch-build"  # where a build's helper files appear inside %post (a tmpfs)
SECTIONS = {
    "arguments",
    "files",
    "post",
    "environment",
    "runscript",
    "startscript",
    "test",
    "labels",
    "help",
}
SLIM_DPKG_EXCLUDES = """\
# Docker's debian:*-slim images: no documentation, man pages or translations
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
"""
DOCKER_APT_CLEAN = """\
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
"""  # noqa: E501
DEBIAN_SOURCES = """\
Types: deb
URIs: {mirror}
Suites: {suite} {suite}-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: {suite}-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
"""


class Fatal(Exception):
    """An error reported as ``FATAL:   message`` with exit status 255."""


def info(message: str) -> None:
    """A progress line on stderr, in Apptainer's style."""
    print(f"INFO:    {message}", file=sys.stderr, flush=True)


def prog_name() -> str:
    """``apptainer`` or ``singularity``: the name the runner was started under."""
    name = os.environ.get("ORCH_BWRAP_PROG", "apptainer")
    return "singularity" if name == "singularity" else "apptainer"


# --- option parsing ----------------------------------------------------------------------


class Options:
    """A small getopt for Apptainer-style flags: ``--name value``, ``--name=value``, ``-X``."""

    def __init__(self, spec: dict[str, tuple[str, bool]]):
        """``spec`` maps every spelling (``--bind``, ``-B``) to (canonical name, takes value)."""
        self.spec = spec

    def parse(self, args: Sequence[str], positional_stop: bool = True) -> tuple[dict, list[str]]:
        """Parse leading options; returns ({name: [values] or count}, remaining arguments)."""
        found: dict[str, list[str]] = {}
        rest = list(args)
        while rest:
            arg = rest[0]
            if arg == "--":
                rest.pop(0)
                break
            if not arg.startswith("-") or arg == "-":
                if positional_stop:
                    break
                raise Fatal(f"unexpected argument {arg!r}")
            rest.pop(0)
            if arg.startswith("--"):
                name, eq, value = arg.partition("=")
                if name not in self.spec:
                    raise Fatal(f"unknown flag: {name} (not supported by this test runner)")
                canon, takes = self.spec[name]
                if takes:
                    if not eq:
                        if not rest:
                            raise Fatal(f"flag needs an argument: {name}")
                        value = rest.pop(0)
                    found.setdefault(canon, []).append(value)
                else:
                    if eq:
                        if value.lower() not in ("true", "1"):
                            raise Fatal(f"flag {name} takes no value here: {arg!r}")
                    found.setdefault(canon, []).append("")
                continue
            letters = arg[1:]
            while letters:
                flag = "-" + letters[0]
                if flag not in self.spec:
                    raise Fatal(
                        f"unknown shorthand flag: {letters[0]!r} in {arg} "
                        "(not supported by this test runner)"
                    )
                canon, takes = self.spec[flag]
                letters = letters[1:]
                if takes:
                    if letters:
                        value = letters.lstrip("=")
                    elif rest:
                        value = rest.pop(0)
                    else:
                        raise Fatal(f"flag needs an argument: {flag}")
                    found.setdefault(canon, []).append(value)
                    letters = ""
                else:
                    found.setdefault(canon, []).append("")
        return found, rest


ACTION_OPTIONS = Options(
    {
        "--cleanenv": ("cleanenv", False),
        "-e": ("cleanenv", False),
        "--env": ("env", True),
        "--env-file": ("env-file", True),
        "--bind": ("bind", True),
        "-B": ("bind", True),
        "--nv": ("nv", False),
        "--rocm": ("rocm", False),
        "--pwd": ("pwd", True),
        "--containall": ("containall", False),
        "-C": ("containall", False),
        "--no-home": ("no-home", False),
    }
)
BUILD_OPTIONS = Options(
    {
        "--fakeroot": ("fakeroot", False),
        "-f": ("fakeroot", False),
        "--force": ("force", False),
        "-F": ("force", False),
        "--notest": ("notest", False),
        "-T": ("notest", False),
        "--sandbox": ("sandbox", False),
        "-s": ("sandbox", False),
        "--build-arg": ("build-arg", True),
        "--build-arg-file": ("build-arg-file", True),
        "--disable-cache": ("disable-cache", False),
    }
)
INSPECT_OPTIONS = Options(
    {
        "--labels": ("labels", False),
        "-l": ("labels", False),
        "--json": ("json", False),
        "-j": ("json", False),
        "--runscript": ("runscript", False),
        "-r": ("runscript", False),
        "--environment": ("environment", False),
        "-e": ("environment", False),
        "--test": ("test", False),
        "-t": ("test", False),
        "--helpfile": ("helpfile", False),
        "-H": ("helpfile", False),
        "--deffile": ("deffile", False),
        "-d": ("deffile", False),
    }
)
GLOBAL_OPTIONS = Options(
    {
        "--version": ("version", False),
        "--quiet": ("quiet", False),
        "-q": ("quiet", False),
        "--silent": ("silent", False),
        "-s": ("silent", False),
    }
)


def parse_env_flag(value: str) -> dict[str, str]:
    """One ``--env`` value, as Apptainer's map flag (pflag's stringToString) reads it.

    A value with one ``=`` is one pair (commas included); with several it is a CSV list of
    pairs, so ``--env A=1,B=2`` sets two variables.
    """
    if value.count("=") == 0:
        raise Fatal(f"invalid argument {value!r} for --env: {value} must be formatted as key=value")
    if value.count("=") == 1:
        pairs = [value.strip('"')]
    else:
        try:
            pairs = next(csv.reader([value]))
        except (csv.Error, StopIteration) as err:
            raise Fatal(f"invalid argument {value!r} for --env: {err}") from err
    out = {}
    for pair in pairs:
        key, eq, val = pair.partition("=")
        if not eq:
            raise Fatal(f"invalid argument {value!r} for --env: {pair} must be key=value")
        out[key] = val
    return out


def read_env_file(path: str) -> dict[str, str]:
    """``--env-file``: ``KEY=value`` lines (``export`` allowed, shell quoting, ``#`` comments)."""
    try:
        text = Path(path).read_text()
    except OSError as err:
        raise Fatal(f"while processing {path}: {err}") from err
    out = {}
    for number, line in enumerate(text.splitlines(), 1):
        try:
            words = shlex.split(line, comments=True)
        except ValueError as err:
            raise Fatal(f"{path}:{number}: {err}") from err
        if words[:1] == ["export"]:
            words = words[1:]
        for word in words:
            key, eq, value = word.partition("=")
            if not eq or not ENV_NAME.match(key):
                raise Fatal(f"{path}:{number}: not a KEY=value assignment: {line.strip()!r}")
            out[key] = value
    return out


# --- running an image ----------------------------------------------------------------------


def check_image(image: str) -> Path:
    """The sandbox directory ``image`` names (absolute), or a clear refusal."""
    if re.match(r"^[a-z][a-z0-9+.-]*://", image):
        raise Fatal(
            f"{image}: this test runner only runs sandbox directories, not URIs "
            "(build one with `apptainer build --sandbox DIR RECIPE.def`)"
        )
    path = Path(os.path.abspath(image))
    if not os.path.lexists(path):
        raise Fatal(
            f"could not open image {path}: failed to retrieve path for {image}: "
            f"lstat {image}: no such file or directory"
        )
    if not path.is_dir():
        raise Fatal(
            f"could not open image {path}: this test runner (bubblewrap) only runs sandbox "
            "directories, not SIF or other image files; build one with "
            "`apptainer build --sandbox DIR RECIPE.def`"
        )
    if not (path / "bin" / "sh").exists() and not os.path.lexists(path / "bin" / "sh"):
        raise Fatal(f"{path} is not a root filesystem: it has no /bin/sh")
    return path


def resolve_in(root: Path, path: str) -> str:
    """``path`` inside ``root`` with symbolic links resolved as if ``root`` were ``/``.

    Components after the first missing one are kept as they are.
    """
    parts = [p for p in path.split("/") if p and p != "."]
    done: list[str] = []
    hops = 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            if done:
                done.pop()
            continue
        candidate = root.joinpath(*done, part)
        if candidate.is_symlink():
            hops += 1
            if hops > 40:
                raise Fatal(f"too many levels of symbolic links in {path} inside {root}")
            target = os.readlink(candidate)
            if target.startswith("/"):
                done = []
            parts = [p for p in target.split("/") if p and p != "."] + parts
            continue
        done.append(part)
        if not candidate.exists():
            done.extend(p for p in parts if p not in ("", "."))
            break
    return "/" + "/".join(done)


def under(path: str, parent: str) -> bool:
    """Whether ``path`` is ``parent`` or inside it (container paths)."""
    return path == parent or parent == "/" or path.startswith(parent.rstrip("/") + "/")


class Mounts:
    """The bwrap arguments that build the container's file system, in order."""

    def __init__(self, image: Path):
        """Mounts for a read-only view of ``image``."""
        self.image = image
        self.targets: list[tuple[str, list[str]]] = []  # (container path, bwrap args)

    def add(self, dst: str, args: list[str]) -> None:
        """A mount on container path ``dst`` (resolved inside the image)."""
        self.targets.append((dst, args))

    def bind(self, src: str, dst: str, ro: bool = False, dev: bool = False) -> None:
        """Bind host path ``src`` on container path ``dst``."""
        kind = "--dev-bind" if dev else "--ro-bind" if ro else "--bind"
        self.targets.append((dst, [kind, src, dst]))

    def _split_dirs(self, resolved: list[str]) -> set[str]:
        """Image directories to recreate as tmpfs directories so mount points can be made."""
        split = {"/"}
        for index, dst in enumerate(resolved):
            # a mount point inside an earlier mount lives in that mount, not in the image
            if any(under(dst, earlier) for earlier in resolved[:index] if earlier != dst):
                continue
            if dst == "/":
                continue
            parts = dst.strip("/").split("/")
            for depth in range(1, len(parts) + 1):
                path = "/" + "/".join(parts[:depth])
                if not os.path.lexists(self.image / path.lstrip("/")):
                    split.update("/" + "/".join(parts[:d]) for d in range(1, depth))
                    break
        return {"/" + s.strip("/") if s != "/" else "/" for s in split}

    def args(self) -> list[str]:
        """The bwrap arguments: the image skeleton, then every mount, then ``/`` read-only."""
        resolved = [resolve_in(self.image, dst) for dst, _ in self.targets]
        split = self._split_dirs(resolved)
        exact = set(resolved)
        out: list[str] = []
        for directory in sorted(split, key=lambda p: (p.count("/") if p != "/" else 0, p)):
            host_dir = self.image / directory.lstrip("/")
            for entry in sorted(os.listdir(host_dir)):
                child = (directory.rstrip("/") + "/" + entry) if directory != "/" else "/" + entry
                host = host_dir / entry
                mode = os.lstat(host).st_mode
                if child in split:
                    out += ["--dir", child]
                elif stat.S_ISLNK(mode):
                    out += ["--symlink", os.readlink(host), child]
                elif stat.S_ISDIR(mode):
                    if child in exact:
                        out += ["--dir", child]  # a mount point: something is mounted on it
                    else:
                        out += ["--ro-bind", str(host), child]
                elif stat.S_ISREG(mode):
                    out += ["--ro-bind", str(host), child]
        for (_, args), dst in zip(self.targets, resolved, strict=True):
            out += [*args[:-1], dst]
        return [*out, "--remount-ro", "/"]


SYSTEM_DIRS = (
    "/proc",
    "/sys",
    "/dev",
    "/usr",
    "/etc",
    "/bin",
    "/sbin",
    "/lib",
    "/lib64",
    "/boot",
    "/run",
    "/var",
)


def cwd_bindable(cwd: str) -> bool:
    """Whether the current directory is bound by default (not ``/`` or a system directory)."""
    return cwd != "/" and not any(under(cwd, system) for system in SYSTEM_DIRS)


def parse_binds(values: Iterable[str], cwd: str) -> list[tuple[str, str, bool]]:
    """``--bind`` values as (host source, container destination, read-only)."""
    out = []
    for value in values:
        for spec in value.split(","):
            if not spec:
                continue
            fields = spec.split(":")
            if len(fields) > 3:
                raise Fatal(f"wrong bind format {spec!r} (use src[:dst[:ro|rw]])")
            src = fields[0]
            dst = fields[1] if len(fields) > 1 and fields[1] else src
            opts = fields[2].split(",") if len(fields) > 2 else []
            ro = False
            for opt in opts:
                if opt == "ro":
                    ro = True
                elif opt == "rw":
                    ro = False
                else:
                    raise Fatal(f"bind option {opt!r} in {spec!r} is not supported by this runner")
            src_abs = os.path.realpath(os.path.join(cwd, src))
            if not os.path.exists(src_abs):
                raise Fatal(
                    "container creation failed: mount hook function failure: mount "
                    f"{src}->{dst} error: while mounting {src}: mount source {src} doesn't exist"
                )
            if not dst.startswith("/"):
                raise Fatal(f"bind destination {dst!r} in {spec!r} must be an absolute path")
            out.append((src_abs, os.path.normpath(dst), ro))
    return out


def container_env(opts: dict, image: Path, home: str) -> tuple[dict[str, str], dict[str, str]]:
    """(environment bwrap starts with, values exported after the image's env scripts)."""
    host = {k: v for k, v in os.environ.items() if k not in RUNNER_VARS}
    clean = "cleanenv" in opts or "containall" in opts
    overrides: dict[str, str] = {}
    for prefix in ("SINGULARITYENV_", "APPTAINERENV_"):  # APPTAINERENV_ wins
        for key, value in host.items():
            if key.startswith(prefix) and len(key) > len(prefix):
                overrides[key[len(prefix) :]] = value
    for path in opts.get("env-file", []):
        overrides.update(read_env_file(path))
    for value in opts.get("env", []):
        overrides.update(parse_env_flag(value))
    for key in overrides:
        if not ENV_NAME.match(key):
            raise Fatal(f"invalid environment variable name {key!r}")
    if clean:
        env = {k: v for k, v in host.items() if k in ALWAYS_PASS}
    else:
        env = {
            k: v
            for k, v in host.items()
            if k not in ("PATH", "LD_LIBRARY_PATH")
            and not k.startswith(("APPTAINERENV_", "SINGULARITYENV_"))
        }
    env.update(
        PATH=DEFAULT_PATH,
        LD_LIBRARY_PATH="/.singularity.d/libs",
        HOME=home,
        APPTAINER_CONTAINER=str(image),
        APPTAINER_NAME=image.name,
        APPTAINER_ENVIRONMENT="/.singularity.d/env/91-environment.sh",
    )
    if prog_name() == "singularity":
        env.update(
            SINGULARITY_CONTAINER=str(image),
            SINGULARITY_NAME=image.name,
            SINGULARITY_ENVIRONMENT="/.singularity.d/env/91-environment.sh",
        )
    env.update(overrides)
    return env, overrides


ACTION_SCRIPTS = {
    "exec": (
        'if ! command -v -- "$1" >/dev/null 2>&1; then\n'
        '  printf \'FATAL:   "%s": executable file not found in $PATH\\n\' "$1" >&2\n'
        "  exit 255\n"
        "fi\n"
        'exec "$@"\n'
    ),
    "run": (
        'if [ -x /.singularity.d/runscript ]; then exec /.singularity.d/runscript "$@"; fi\n'
        "if [ -f /.singularity.d/runscript ]; then\n"
        '  exec /bin/sh /.singularity.d/runscript "$@"\n'
        "fi\n"
        "echo 'FATAL:   no runscript found in the container' >&2\n"
        "exit 255\n"
    ),
    "test": (
        'if [ -x /.singularity.d/test ]; then exec /.singularity.d/test "$@"; fi\n'
        'if [ -f /.singularity.d/test ]; then exec /bin/sh /.singularity.d/test "$@"; fi\n'
        "echo 'INFO:    No test script found in container, exiting' >&2\n"
        "exit 0\n"
    ),
}


def action_argv(
    action: str, opts: dict, image_arg: str, command: Sequence[str]
) -> tuple[list[str], dict[str, str]]:
    """(bwrap argv, environment) that run ``command`` in the image as ``apptainer ACTION``."""
    bwrap = shutil.which("bwrap") or "/usr/bin/bwrap"
    if not os.path.exists(bwrap):
        raise Fatal("bwrap (bubblewrap) is not installed: this runner needs it")
    image = check_image(image_arg)
    cwd = os.getcwd()
    home = os.environ.get("HOME") or "/root"
    contain = "containall" in opts
    cwd_bound = False
    mounts = Mounts(image)
    mounts.add("/proc", ["--proc", "/proc"])
    mounts.bind("/sys", "/sys", ro=True)
    if contain:
        mounts.add("/dev", ["--dev", "/dev"])
    else:
        mounts.bind("/dev", "/dev", dev=True)
    for etc in ("/etc/resolv.conf", "/etc/hosts"):
        if os.path.exists(etc):
            mounts.bind(etc, etc, ro=True)
    if contain:
        mounts.add(home, ["--perms", "0700", "--tmpfs", home])
        mounts.add("/tmp", ["--perms", "1777", "--tmpfs", "/tmp"])
        mounts.add("/var/tmp", ["--perms", "1777", "--tmpfs", "/var/tmp"])
    else:
        if "no-home" not in opts and os.path.isdir(home):
            mounts.bind(home, home)
        mounts.bind("/tmp", "/tmp")
        if cwd_bindable(cwd) and ("no-home" not in opts or not under(cwd, home)):
            mounts.bind(cwd, cwd)
            cwd_bound = True
    for src, dst, ro in parse_binds(opts.get("bind", []), cwd):
        mounts.bind(src, dst, ro=ro)

    env, overrides = container_env(opts, image, home)
    if opts.get("pwd"):
        pwd, fallback = opts["pwd"][-1], None
    else:  # the current directory where it is bound (or in the image), else $HOME
        pwd, fallback = (cwd, home) if cwd_bound or not contain else (home, "/")
    script = [
        "for __orch_f in /.singularity.d/env/*.sh; do",
        '  if [ -f "$__orch_f" ]; then . "$__orch_f"; fi',
        "done",
        "unset __orch_f",
    ]
    script += [f"export {key}={shlex.quote(value)}" for key, value in overrides.items()]
    if fallback is None:
        fatal = shlex.quote(f"FATAL:   could not set working directory {pwd}: no such directory")
        script += [f"cd -- {shlex.quote(pwd)} 2>/dev/null || {{ echo {fatal} >&2; exit 255; }}"]
    else:
        script += [f"cd -- {shlex.quote(pwd)} 2>/dev/null || cd -- {shlex.quote(fallback)}"]
    argv = [bwrap, "--die-with-parent"]
    if contain:
        argv += ["--unshare-pid", "--unshare-ipc"]
    argv += mounts.args()
    argv += ["/bin/sh", "-c", "\n".join(script) + "\n" + ACTION_SCRIPTS[action]]
    argv += [f"/.singularity.d/actions/{action}", *command]
    return argv, env


def cmd_action(action: str, args: list[str]) -> int:
    """``exec``, ``run`` and ``test``: replace this process with bwrap."""
    opts, rest = ACTION_OPTIONS.parse(args)
    if not rest:
        raise Fatal(f"{action} needs an image" + (" and a command" if action == "exec" else ""))
    image, command = rest[0], rest[1:]
    if action == "exec" and not command:
        raise Fatal("exec needs a command to run in the container")
    argv, env = action_argv(action, opts, image, command)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(argv[0], argv, env)
    return 255  # not reached


# --- definition files ----------------------------------------------------------------------


class Recipe:
    """A parsed Apptainer definition file (single stage)."""

    def __init__(self, text: str, build_args: dict[str, str], path: str):
        """Parse ``text`` after ``{{ name }}`` substitution from %arguments and ``build_args``."""
        self.path = path
        self.raw = text
        self.arguments = self._arguments(text)
        used = set()
        values = {**self.arguments, **build_args}

        def substitute(match: re.Match) -> str:
            name = match.group(1)
            if name not in values:
                raise Fatal(
                    f"build var {name} is not defined through either --build-arg "
                    "(--build-arg-file) or 'arguments' section"
                )
            used.add(name)
            return values[name]

        self.text = re.sub(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}", substitute, text)
        for name in sorted(set(build_args) - used):
            print(f"WARNING: unused build args: {name}", file=sys.stderr)
        self.build_args = {k: values[k] for k in sorted(used)}
        self.header: dict[str, str] = {}
        self.sections: dict[str, str] = {}
        self.interpreters: dict[str, str] = {}  # %post -c /bin/bash
        self._parse(self.text)

    @staticmethod
    def _arguments(text: str) -> dict[str, str]:
        out: dict[str, str] = {}
        inside = False
        for line in text.splitlines():
            if line.startswith("%"):
                inside = line.split()[0] == "%arguments"
                continue
            stripped = line.strip()
            if inside and stripped and not stripped.startswith("#"):
                key, eq, value = stripped.partition("=")
                if not eq:
                    raise Fatal(f"%arguments: not a name=value line: {stripped!r}")
                out[key.strip()] = value.strip().strip('"')
        return out

    def _parse(self, text: str) -> None:
        current: str | None = None
        body: list[str] = []

        def close() -> None:
            if current is not None:
                self.sections[current] = "\n".join(body).strip("\n") + "\n"

        for number, line in enumerate(text.splitlines(), 1):
            if line.startswith("%"):
                close()
                words = line[1:].split()
                name = words[0] if words else ""
                if name.startswith("app"):
                    raise Fatal(f"{self.path}:{number}: SCIF app sections are not supported here")
                if name == "setup":
                    raise Fatal(f"{self.path}:{number}: %setup (runs on the host) is not supported")
                if name not in SECTIONS:
                    raise Fatal(f"{self.path}:{number}: unknown section %{name}")
                if name in self.sections:
                    raise Fatal(f"{self.path}:{number}: section %{name} appears twice")
                interpreter = None
                if len(words) > 1:
                    if name in ("post", "test") and words[1] == "-c" and len(words) == 3:
                        interpreter = words[2]
                    else:
                        raise Fatal(f"{self.path}:{number}: unsupported section options: {line}")
                if interpreter:
                    self.interpreters[name] = interpreter
                current, body = name, []
                continue
            if current is None:
                stripped = line.strip()
                if not stripped or stripped.startswith("#"):
                    continue
                key, colon, value = stripped.partition(":")
                if not colon:
                    raise Fatal(f"{self.path}:{number}: bad header line {stripped!r}")
                self.header[key.strip().lower()] = value.strip()
            else:
                body.append(line)
        close()
        if "stage" in self.header:
            raise Fatal(f"{self.path}: multi-stage builds are not supported by this runner")
        if "bootstrap" not in self.header:
            raise Fatal(f"{self.path}: no Bootstrap: header")

    def base_spec(self) -> dict[str, object]:
        """What the base root filesystem is made from (the key of the base cache)."""
        agent = self.header["bootstrap"].lower()
        if agent == "docker":
            source = self.header.get("from", "")
            ref = source.removeprefix("docker.io/").removeprefix("library/")
            if ref not in DOCKER_DEBIAN:
                raise Fatal(
                    f"Bootstrap: docker From: {source}: this runner builds only "
                    f"{', '.join(DOCKER_DEBIAN)} (with debootstrap)"
                )
            suite, slim = DOCKER_DEBIAN[ref]
            return {
                "agent": "docker",
                "from": ref,
                "suite": suite,
                "slim": slim,
                "mirror": DEBIAN_MIRROR,
                "include": [],
            }
        if agent == "debootstrap":
            suite = self.header.get("osversion", "")
            mirror = self.header.get("mirrorurl", "")
            if not suite or not mirror:
                raise Fatal("Bootstrap: debootstrap needs OSVersion and MirrorURL")
            include = [w for w in re.split(r"[\s,]+", self.header.get("include", "")) if w]
            return {
                "agent": "debootstrap",
                "suite": suite,
                "slim": False,
                "mirror": mirror.rstrip("/"),
                "include": include,
            }
        raise Fatal(
            f"Bootstrap: {self.header['bootstrap']} is not supported by this runner "
            "(use docker with a debian image, or debootstrap)"
        )

    def files(self) -> list[tuple[str, str]]:
        """``%files`` as (source pattern, destination) pairs."""
        out = []
        for line in self.sections.get("files", "").splitlines():
            stripped = line.strip()
            if not stripped or stripped.startswith("#"):
                continue
            words = shlex.split(stripped)
            if len(words) > 2:
                raise Fatal(f"%files: too many fields in {stripped!r}")
            out.append((words[0], words[1] if len(words) > 1 else words[0]))
        return out

    def labels(self) -> list[tuple[str, str]]:
        """``%labels`` as (key, value) pairs."""
        return parse_label_lines(self.sections.get("labels", ""))


def parse_label_lines(text: str) -> list[tuple[str, str]]:
    """``key value`` lines (the value may contain spaces)."""
    out = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            key, _, value = stripped.partition(" ")
            out.append((key, value.strip()))
    return out


def skip_file(name: str) -> bool:
    """Build litter that ``%files`` does not copy."""
    return name == "__pycache__" or name.endswith(".pyc")


def expand_sources(pattern: str) -> list[str]:
    """The paths a ``%files`` source names (a glob, relative to the current directory)."""
    matches = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
    found = [m for m in matches if os.path.exists(m)]
    if not found:
        raise Fatal(f"%files: {pattern}: no such file or directory (relative to {os.getcwd()})")
    return found


def hash_tree(digest, path: str) -> None:
    """Feed the names, executable bits and bytes under ``path`` into ``digest``."""
    real = os.path.realpath(path)
    items: list[tuple[str, str | None]]
    if os.path.isfile(real):
        items = [("", real)]
    else:
        items = []
        for folder, dirs, files in os.walk(real, followlinks=True):
            dirs[:] = sorted(d for d in dirs if not skip_file(d))
            rel = os.path.relpath(folder, real)
            items.append((rel + "/", None))
            items += [
                (os.path.join(rel, f), os.path.join(folder, f))
                for f in sorted(files)
                if not skip_file(f)
            ]
    for rel, file in items:
        digest.update(rel.encode() + b"\0")
        if file is not None:
            digest.update(b"x" if os.access(file, os.X_OK) else b"-")
            with open(file, "rb") as handle:
                for chunk in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(chunk)
            digest.update(b"\0")


def recipe_key(recipe: Recipe) -> str:
    """The cache key: recipe text, build arguments and %files content."""
    digest = hashlib.sha256()
    digest.update(f"orch-bwrap-build {BUILDER_VERSION}\n".encode())
    digest.update(recipe.raw.encode())
    digest.update(json.dumps(recipe.build_args, sort_keys=True).encode())
    for pattern, dst in recipe.files():
        digest.update(f"\n%files {pattern} -> {dst}\n".encode())
        for source in expand_sources(pattern):
            digest.update(f"source {source}\n".encode())
            hash_tree(digest, source)
    return digest.hexdigest()


# --- building ------------------------------------------------------------------------------


def cache_root() -> Path:
    """``${ORCH_IMAGE_CACHE:-$HOME/.cache/orch/images}``."""
    root = os.environ.get("ORCH_IMAGE_CACHE") or os.path.join(
        os.environ.get("HOME") or "/root", ".cache", "orch", "images"
    )
    return Path(root)


class Lock:
    """An exclusive flock on a file, held in a ``with`` block."""

    def __init__(self, path: Path, what: str):
        """Lock ``path`` (created if missing); ``what`` names it in the waiting message."""
        self.path, self.what = path, what
        self.handle: IO[str] | None = None

    def __enter__(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = self.handle = open(self.path, "a")  # noqa: SIM115
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            info(f"waiting for another build of {self.what} ({self.path})")
            fcntl.flock(handle, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        assert self.handle is not None
        fcntl.flock(self.handle, fcntl.LOCK_UN)
        self.handle.close()


def run_logged(argv: list[str], log: Path, what: str, env: dict | None = None) -> None:
    """Run ``argv`` with its output in ``log``; on failure show the log's tail and stop."""
    with open(log, "ab") as out:
        proc = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, env=env, check=False)
    if proc.returncode != 0:
        tail = log.read_text(errors="replace").splitlines()[-30:]
        raise Fatal(f"{what} failed (exit {proc.returncode}); end of {log}:\n" + "\n".join(tail))


def remove_tree(path: Path) -> None:
    """``rm -rf`` that also works on read-only directories."""
    if os.path.lexists(path):
        subprocess.run(["rm", "-rf", "--one-file-system", str(path)], check=False)


def ensure_base(spec: dict[str, object]) -> Path:
    """The cached debootstrap root filesystem for ``spec``, made once per machine."""
    key = hashlib.sha256(json.dumps({**spec, "v": BUILDER_VERSION}, sort_keys=True).encode())
    key_hex = key.hexdigest()
    root = cache_root()
    entry = root / "base" / key_hex
    label = f"{spec.get('from') or spec['suite']}"
    if (entry / "rootfs").is_dir():
        info(f"bootstrap: cached base {label} ({entry})")
        return entry / "rootfs"
    debootstrap = shutil.which("debootstrap") or "/usr/sbin/debootstrap"
    if not os.path.exists(debootstrap):
        raise Fatal("debootstrap is not installed: this runner builds images with it")
    with Lock(root / "locks" / f"base-{key_hex}.lock", f"base {label}"):
        if (entry / "rootfs").is_dir():
            info(f"bootstrap: cached base {label} ({entry})")
            return entry / "rootfs"
        entry.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{key_hex[:12]}-", dir=entry.parent))
        try:
            rootfs = tmp / "rootfs"
            include = ["apt", *spec["include"]]  # type: ignore[misc]
            argv = [debootstrap, "--variant=minbase", f"--include={','.join(include)}"]
            if spec["agent"] == "debootstrap":
                argv.append("--exclude=openssl,udev,debconf-i18n,e2fsprogs")
            argv += [str(spec["suite"]), str(rootfs), str(spec["mirror"])]
            info(f"bootstrap: debootstrap --variant=minbase {spec['suite']} (for {label})")
            started = time.monotonic()
            run_logged(argv, tmp / "debootstrap.log", "debootstrap")
            if spec["agent"] == "docker":
                dockerize(rootfs, str(spec["suite"]), bool(spec["slim"]), str(spec["mirror"]))
            (rootfs / "var/lib/apt/lists").mkdir(parents=True, exist_ok=True)
            for lists in (rootfs / "var/lib/apt/lists").glob("*_*"):
                lists.unlink()
            for deb in (rootfs / "var/cache/apt/archives").glob("*.deb"):
                deb.unlink()
            info(f"bootstrap: done in {time.monotonic() - started:.0f} s")
            (tmp / "meta.json").write_text(json.dumps({**spec, "created": time.time()}))
            os.rename(tmp, entry)
        finally:
            remove_tree(tmp)
    return entry / "rootfs"


def dockerize(rootfs: Path, suite: str, slim: bool, mirror: str) -> None:
    """Make a debootstrap root filesystem look like Docker's debian image (apt, dpkg)."""
    apt = rootfs / "etc/apt"
    (apt / "sources.list").unlink(missing_ok=True)
    (apt / "sources.list.d").mkdir(exist_ok=True)
    (apt / "sources.list.d/debian.sources").write_text(
        DEBIAN_SOURCES.format(mirror=mirror, suite=suite)
    )
    (apt / "apt.conf.d/docker-clean").write_text(DOCKER_APT_CLEAN)
    (apt / "apt.conf.d/docker-no-languages").write_text('Acquire::Languages "none";\n')
    (apt / "apt.conf.d/docker-autoremove-suggests").write_text(
        'Apt::AutoRemove::SuggestsImportant "false";\n'
    )
    (rootfs / "etc/resolv.conf").unlink(missing_ok=True)
    (rootfs / "etc/hostname").unlink(missing_ok=True)
    if slim:
        (rootfs / "etc/dpkg/dpkg.cfg.d/docker").write_text(SLIM_DPKG_EXCLUDES)
        share = rootfs / "usr/share"
        for sub in ("man", "groff", "info", "lintian", "linda"):
            for child in (share / sub).glob("*"):
                remove_tree(child)
        for child in (share / "locale").glob("*"):
            if child.name != "locale.alias":
                remove_tree(child)
        for doc in (share / "doc").glob("*"):
            if doc.is_dir() and not doc.is_symlink():
                for item in doc.iterdir():
                    if item.name != "copyright":
                        remove_tree(item)


APT_HARVEST = """\
#!/bin/sh
# DPkg::Post-Invoke hook: keep every downloaded .deb in the runner's pool (hard links)
for deb in {archives}/*.deb; do
  [ -f "$deb" ] || continue
  [ -e "{pool}/${{deb##*/}}" ] || ln "$deb" "{pool}/" 2>/dev/null || cp "$deb" "{pool}/"
done
exit 0
"""


def post_mounts(rootfs: Path, build_tmp: Path) -> list[str]:
    """bwrap arguments for running build steps inside ``rootfs`` (writable, as root)."""
    args = ["--bind", str(rootfs), "/", "--proc", "/proc", "--dev", "/dev"]
    args += ["--perms", "1777", "--tmpfs", "/tmp"]
    if os.path.exists("/etc/resolv.conf"):
        args += ["--ro-bind", "/etc/resolv.conf", "/etc/resolv.conf"]
    args += ["--bind", str(build_tmp), BUILD_DIR]
    return args


def host_ca_bundle() -> str | None:
    """The build host's CA bundle (``$SSL_CERT_FILE`` or Debian's), if it has one."""
    for path in (os.environ.get("SSL_CERT_FILE"), "/etc/ssl/certs/ca-certificates.crt"):
        if path and os.path.isfile(path):
            return os.path.realpath(path)
    return None


def run_post(recipe: Recipe, rootfs: Path, entry_tmp: Path) -> list[tuple[str, str]]:
    """Run ``%post`` inside ``rootfs``; returns the label lines it wrote."""
    root = cache_root()
    build_tmp = entry_tmp / "build"
    (build_tmp / "cache").mkdir(parents=True)
    labels_file = build_tmp / "labels"
    labels_file.write_text("")
    post = recipe.sections.get("post")
    if not post:
        return []
    (build_tmp / "post.sh").write_text(post)
    # apt: a per-build archive directory seeded from the pool; new downloads go back to it
    cache = root / "apt"
    pool = cache / "pool"
    pool.mkdir(parents=True, exist_ok=True)
    (root / "pip").mkdir(parents=True, exist_ok=True)
    archives = Path(tempfile.mkdtemp(prefix="archives-", dir=cache))
    try:
        archives.chmod(0o755)
        (archives / "partial").mkdir()
        for deb in pool.glob("*.deb"):
            os.link(deb, archives / deb.name)
        inside = f"{BUILD_DIR}/cache/apt"
        (build_tmp / "apt-harvest.sh").write_text(
            APT_HARVEST.format(archives=f"{inside}/{archives.name}", pool=f"{inside}/pool")
        )
        (build_tmp / "apt.conf").write_text(
            f'Dir::Cache::Archives "{inside}/{archives.name}/";\n'
            f'DPkg::Post-Invoke {{ "/bin/sh {BUILD_DIR}/apt-harvest.sh"; }};\n'
        )
        env = {
            "PATH": DEFAULT_PATH,
            "HOME": "/root",
            "TERM": os.environ.get("TERM", "dumb"),
            "APPTAINER_ROOTFS": "/",
            "APPTAINER_LABELS": f"{BUILD_DIR}/labels",
            "SINGULARITY_LABELS": f"{BUILD_DIR}/labels",
            "APPTAINER_ENVIRONMENT": "/.singularity.d/env/91-environment.sh",
            "SINGULARITY_ENVIRONMENT": "/.singularity.d/env/91-environment.sh",
            "APT_CONFIG": f"{BUILD_DIR}/apt.conf",
            "PIP_CACHE_DIR": f"{BUILD_DIR}/cache/pip",
        }
        for key in ALWAYS_PASS - {"TERM"}:
            if key in os.environ:
                env[key] = os.environ[key]
        bwrap = shutil.which("bwrap") or "/usr/bin/bwrap"
        argv = [bwrap, "--die-with-parent", "--unshare-pid", *post_mounts(rootfs, build_tmp)]
        host_ca = host_ca_bundle()
        if host_ca:  # build hosts behind a TLS-inspecting proxy: their CA, for this build only
            argv += ["--ro-bind", host_ca, f"{BUILD_DIR}/host-ca.crt"]
            for key in ("PIP_CERT", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE"):
                env[key] = f"{BUILD_DIR}/host-ca.crt"
        argv += ["--bind", str(cache), f"{BUILD_DIR}/cache/apt"]
        argv += ["--bind", str(root / "pip"), f"{BUILD_DIR}/cache/pip"]
        shell = recipe.interpreters.get("post")
        argv += ["--chdir", "/", *([shell] if shell else ["/bin/sh", "-e"]), f"{BUILD_DIR}/post.sh"]
        info("post: running %post")
        started = time.monotonic()
        sys.stdout.flush()
        sys.stderr.flush()
        proc = subprocess.run(argv, env=env, stdout=sys.stderr, check=False)
        if proc.returncode != 0:
            raise Fatal(f"While performing build: %post exited with status {proc.returncode}")
        info(f"post: done in {time.monotonic() - started:.0f} s")
        return parse_label_lines(labels_file.read_text())
    finally:
        remove_tree(archives)


def copy_files(recipe: Recipe, rootfs: Path) -> None:
    """``%files``: like ``cp -rL src dst`` into the root filesystem, without build litter."""
    pairs = recipe.files()
    if pairs:
        info(f"files: copying {len(pairs)} %files entr{'y' if len(pairs) == 1 else 'ies'}")
    for pattern, dst in pairs:
        sources = expand_sources(pattern)
        target = rootfs / dst.lstrip("/")
        if len(sources) > 1:
            target.mkdir(parents=True, exist_ok=True)
        for source in sources:
            copy_one(source, target)


def copy_one(source: str, target: Path) -> None:
    """Copy ``source`` to ``target`` (into it when it is a directory), following links."""
    if target.is_dir() and not target.is_symlink():
        target = target / os.path.basename(os.path.normpath(source))
    target.parent.mkdir(parents=True, exist_ok=True)
    if os.path.isdir(source):
        shutil.copytree(
            source,
            target,
            symlinks=False,
            dirs_exist_ok=True,
            ignore=lambda _dir, names: [n for n in names if skip_file(n)],
        )
    else:
        shutil.copy2(source, target)


def write_metadata(recipe: Recipe, rootfs: Path, post_labels: list[tuple[str, str]]) -> None:
    """``/.singularity.d``: env scripts, runscript, test, labels.json, help, the recipe."""
    meta = rootfs / ".singularity.d"
    for sub in ("env", "actions", "libs"):
        (meta / sub).mkdir(parents=True, exist_ok=True)
    base = meta / "env/01-base.sh"
    if not base.exists():
        base.write_text("#!/bin/sh\n#\n# Copyright (c) Contributors to the Apptainer project.\n")
    (meta / "env/99-base.sh").write_text(
        '#!/bin/sh\nif [ -z "${LD_LIBRARY_PATH:-}" ]; then\n'
        "    LD_LIBRARY_PATH=/.singularity.d/libs\nelse\n"
        '    LD_LIBRARY_PATH="$LD_LIBRARY_PATH:/.singularity.d/libs"\nfi\n'
        'PS1="Apptainer> "\nexport LD_LIBRARY_PATH PS1\n'
    )
    env = "#!/bin/sh\n# Custom environment shell code should follow\n\n"
    (meta / "env/90-environment.sh").write_text(env + recipe.sections.get("environment", ""))
    run = recipe.sections.get("runscript")
    (meta / "runscript").write_text(
        "#!/bin/sh\n\n"
        + (run if run is not None else 'echo "There is no runscript defined for this container"\n')
    )
    (meta / "runscript").chmod(0o755)
    if "test" in recipe.sections:
        shell = recipe.interpreters.get("test", "/bin/sh")
        (meta / "test").write_text(f"#!{shell}\n\n" + recipe.sections["test"])
        (meta / "test").chmod(0o755)
    if "startscript" in recipe.sections:
        (meta / "startscript").write_text("#!/bin/sh\n\n" + recipe.sections["startscript"])
        (meta / "startscript").chmod(0o755)
    if "help" in recipe.sections:
        (meta / "runscript.help").write_text(recipe.sections["help"])
    (meta / "Singularity").write_text(recipe.raw)
    labels = {
        "org.label-schema.build-arch": "amd64",
        "org.label-schema.build-date": time.strftime("%A_%d_%B_%Y_%H:%M:%S_%Z"),
        "org.label-schema.schema-version": "1.0",
        "org.label-schema.usage": "/.singularity.d/runscript.help",
        "org.label-schema.usage.apptainer.version": VERSION_TEXT,
        "org.label-schema.usage.singularity.deffile.bootstrap": recipe.header["bootstrap"],
    }
    if "from" in recipe.header:
        labels["org.label-schema.usage.singularity.deffile.from"] = recipe.header["from"]
    labels.update(recipe.labels())
    labels.update(post_labels)
    (meta / "labels.json").write_text(json.dumps(labels, indent="\t") + "\n")
    links = {
        "singularity": ".singularity.d/runscript",
        "environment": ".singularity.d/env/90-environment.sh",
    }
    for name, target in links.items():
        if not os.path.lexists(rootfs / name):
            os.symlink(target, rootfs / name)
    for mount_point in ("etc/hosts", "etc/resolv.conf", "etc/localtime"):
        path = rootfs / mount_point
        if not os.path.lexists(path):
            path.touch()
    for folder in ("proc", "sys", "dev", "tmp", "var/tmp", "home", "root"):
        (rootfs / folder).mkdir(parents=True, exist_ok=True)
    (rootfs / "tmp").chmod(0o1777)
    (rootfs / "var/tmp").chmod(0o1777)


def run_test(rootfs: Path) -> None:
    """``%test`` in the built image, the way ``apptainer test --cleanenv`` runs it."""
    if not (rootfs / ".singularity.d/test").exists():
        return
    info("test: running %test")
    started = time.monotonic()
    argv, env = action_argv("test", {"cleanenv": [""]}, str(rootfs), [])
    sys.stdout.flush()
    sys.stderr.flush()
    proc = subprocess.run(argv, env=env, stdout=sys.stderr, check=False)
    if proc.returncode != 0:
        raise Fatal(
            f"While performing build: %test failed (exit {proc.returncode}): the image "
            "was not stored in the cache"
        )
    info(f"test: passed in {time.monotonic() - started:.1f} s")


def same_filesystem(a: Path, b: Path) -> bool:
    """Whether ``a`` and ``b`` live on one file system (hard links possible)."""
    return os.stat(a).st_dev == os.stat(b).st_dev


def deliver(rootfs: Path, dest: Path) -> str:
    """Put the cached ``rootfs`` at ``dest`` (a real directory); returns how."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = dest.parent / f".{dest.name}.tmp-{os.getpid()}"
    remove_tree(staging)
    how = "hard-link copy" if same_filesystem(rootfs, dest.parent) else "copy"
    flags = "-al" if how == "hard-link copy" else "-a"
    proc = subprocess.run(["cp", flags, str(rootfs), str(staging)], capture_output=True, text=True)
    if proc.returncode != 0:
        remove_tree(staging)
        raise Fatal(f"while copying the image to {dest}: {proc.stderr.strip()}")
    os.rename(staging, dest)
    return how


def prune(root: Path, name: str, keep: str) -> None:
    """Keep the newest ``$ORCH_IMAGE_CACHE_KEEP`` (default 2) entries built from recipe ``name``.

    Sandboxes already delivered stay whole: they are hard links (or copies), not references.
    """
    limit = max(1, int(os.environ.get("ORCH_IMAGE_CACHE_KEEP") or 2))
    found = []
    for entry in (root / "entries").iterdir():
        try:
            meta = json.loads((entry / "meta.json").read_text())
        except (OSError, ValueError):
            continue
        if meta.get("name") == name and entry.name != keep:
            found.append((meta.get("created", 0), entry))
    for _, entry in sorted(found, reverse=True)[limit - 1 :]:
        with Lock(root / "locks" / f"{entry.name}.lock", f"old entry {entry.name[:16]}"):
            info(f"cache: removing old entry {entry.name[:16]} of {name}")
            stale = root / "entries" / f".stale-{entry.name}-{os.getpid()}"
            os.rename(entry, stale)
            remove_tree(stale)


def cmd_build(args: list[str]) -> int:
    """``build --sandbox DEST RECIPE.def``, cached (see the module docstring)."""
    opts, rest = BUILD_OPTIONS.parse(args)
    if len(rest) != 2:
        raise Fatal("build needs exactly two arguments: DEST and a definition file")
    dest_arg, spec = rest
    if "sandbox" not in opts or dest_arg.endswith(".sif"):
        raise Fatal(
            f"{dest_arg}: this test runner builds only sandbox directories "
            "(`apptainer build --sandbox DIR RECIPE.def`), not SIF files"
        )
    if re.match(r"^[a-z][a-z0-9+.-]*://", spec) or not os.path.isfile(spec):
        raise Fatal(f"{spec}: this runner builds only from a definition file (got no such file)")
    dest = Path(os.path.abspath(dest_arg))
    if os.path.lexists(dest):
        if "force" not in opts:
            raise Fatal(
                f"Build target '{dest_arg}' already exists. Use --force if you want to overwrite it"
            )
        info(f"removing existing {dest} (--force)")
        if dest.is_symlink() or not dest.is_dir():
            dest.unlink()
        else:
            remove_tree(dest)
    build_args: dict[str, str] = {}
    for path in opts.get("build-arg-file", []):
        build_args.update(read_env_file(path))
    for value in opts.get("build-arg", []):
        key, eq, val = value.partition("=")
        if not eq:
            raise Fatal(f"--build-arg {value!r}: use name=value")
        build_args[key] = val
    recipe = Recipe(Path(spec).read_text(), build_args, spec)
    started = time.monotonic()
    key = recipe_key(recipe)
    root = cache_root()
    entry = root / "entries" / key
    (root / "entries").mkdir(parents=True, exist_ok=True)
    info(f"Starting build of {dest_arg} from {spec} (cache key {key[:16]})")
    with Lock(root / "locks" / f"{key}.lock", f"{spec} (key {key[:16]})"):
        if "disable-cache" in opts and entry.exists():
            info("--disable-cache: rebuilding")
            stale = root / "entries" / f".stale-{key}-{os.getpid()}"
            os.rename(entry, stale)
            remove_tree(stale)
        if (entry / "rootfs").is_dir():
            meta = json.loads((entry / "meta.json").read_text())
            if not meta.get("tested") and "notest" not in opts:
                run_test(entry / "rootfs")
                meta["tested"] = True
                (entry / "meta.json").write_text(json.dumps(meta, indent=1))
            how = deliver(entry / "rootfs", dest)
            info(
                f"cached: {key[:16]} built {time.ctime(meta.get('created', 0))}; {how} to "
                f"{dest_arg} in {time.monotonic() - started:.1f} s"
            )
            info(f"Build complete: {dest_arg}")
            return 0
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{key[:16]}-", dir=root / "entries"))
        try:
            base = ensure_base(recipe.base_spec())
            rootfs = tmp / "rootfs"
            info("bootstrap: copying the base root filesystem")
            subprocess.run(["cp", "-a", str(base), str(rootfs)], check=True)
            write_metadata(recipe, rootfs, [])
            copy_files(recipe, rootfs)
            post_labels = run_post(recipe, rootfs, tmp)
            remove_tree(tmp / "build")
            write_metadata(recipe, rootfs, post_labels)
            tested = False
            if "notest" not in opts:
                run_test(rootfs)
                tested = True
            meta = {
                "key": key,
                "name": os.path.basename(spec),
                "recipe": os.path.abspath(spec),
                "build_args": recipe.build_args,
                "created": time.time(),
                "seconds": round(time.monotonic() - started, 1),
                "tested": tested,
                "runner": VERSION_TEXT,
            }
            (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
            os.rename(tmp, entry)
        finally:
            remove_tree(tmp)
    prune(root, os.path.basename(spec), keep=key)
    how = deliver(entry / "rootfs", dest)
    info(f"built {key[:16]} in {time.monotonic() - started:.0f} s; {how} to {dest_arg}")
    info(f"Build complete: {dest_arg}")
    return 0


# --- inspect -------------------------------------------------------------------------------


def cmd_inspect(args: list[str]) -> int:
    """``inspect [--labels|...] [--json] IMAGE``."""
    opts, rest = INSPECT_OPTIONS.parse(args)
    if len(rest) != 1:
        raise Fatal("inspect needs one image")
    image = check_image(rest[0])
    meta = image / ".singularity.d"
    files = {
        "runscript": meta / "runscript",
        "environment": meta / "env/90-environment.sh",
        "test": meta / "test",
        "helpfile": meta / "runscript.help",
        "deffile": meta / "Singularity",
    }
    chosen = [name for name in files if name in opts]
    if "labels" in opts or not chosen:
        path = meta / "labels.json"
        labels = json.loads(path.read_text()) if path.exists() else {}
        if "json" in opts:
            doc = {"data": {"attributes": {"labels": labels}}, "type": "container"}
            print(json.dumps(doc, indent=4))
        else:
            for key, value in labels.items():
                print(f"{key}: {value}")
    for name in chosen:
        path = files[name]
        text = path.read_text() if path.exists() else ""
        if "json" in opts:
            print(json.dumps({"data": {"attributes": {name: text}}, "type": "container"}, indent=4))
        else:
            print(text, end="" if text.endswith("\n") else "\n")
    return 0


# --- entry point ---------------------------------------------------------------------------


def main(argv: Sequence[str]) -> int:
    """Dispatch a command line; errors become ``FATAL:`` and exit status 255."""
    try:
        opts, rest = GLOBAL_OPTIONS.parse(argv)
        if "version" in opts:
            print(f"{prog_name()} version {VERSION_TEXT}")
            return 0
        if rest[:1] == ["version"]:
            print(VERSION_TEXT)
            return 0
        if not rest:
            raise Fatal("no command given (this runner supports exec, run, test, build, inspect)")
        command, args = rest[0], rest[1:]
        if command in ("exec", "run", "test"):
            return cmd_action(command, args)
        if command == "build":
            return cmd_build(args)
        if command == "inspect":
            return cmd_inspect(args)
        raise Fatal(
            f"unknown command {command!r}: this test runner supports exec, run, test, build, "
            "inspect, version"
        )
    except Fatal as err:
        print(f"FATAL:   {err}", file=sys.stderr)
        return 255
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
