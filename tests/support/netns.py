"""A second host for tests: a network namespace joined to this one by a veth pair.

``far_host()`` makes a namespace with one end of a veth pair in it and the other end here, a
/30 between them (orch's side ``host_address``, the far side ``far_address``, from
198.18.0.0/15, the range set aside for network tests), and ``lo`` up inside. Programs run
there through :attr:`FarHost.prefix` (``ip netns exec <name>``) reach this side only through
the link, which :meth:`FarHost.cut` takes down (the far end's interface goes down: packets
from here toward it are dropped, connections there fail) and :meth:`FarHost.restore` brings
back. On the way out every process still in the namespace is killed, then the link and the
namespace are removed, whether the block ended normally or not.

Needs root and iproute2; :func:`unavailable` says why it cannot run here, for a skip.
"""

from __future__ import annotations

import ipaddress
import itertools
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

IP = shutil.which("ip") or ("/usr/sbin/ip" if Path("/usr/sbin/ip").exists() else None)

RANGE = ipaddress.ip_network("198.18.0.0/15")
"""Where the /30 of each link comes from (RFC 2544: benchmarking, never routed)."""

_COUNT = itertools.count()


class NetnsError(RuntimeError):
    """An ``ip`` command failed."""


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    assert IP is not None, "iproute2 (`ip`) is not installed"
    done = subprocess.run([IP, *args], capture_output=True, text=True, timeout=30)
    if check and done.returncode != 0:
        raise NetnsError(f"ip {' '.join(args)}: {done.stderr.strip() or done.returncode}")
    return done


def unavailable() -> str | None:
    """Why a namespace cannot be made here (for ``pytest.skip``), or None when it can."""
    if IP is None:
        return "iproute2 (`ip`) is not installed (scripts/setup installs it)"
    if os.geteuid() != 0:
        return "making a network namespace and a veth pair needs root"
    probe = f"orch-probe-{os.getpid()}-{next(_COUNT)}"
    made = _ip("netns", "add", probe, check=False)
    if made.returncode != 0:
        return f"`ip netns add` is not available here: {made.stderr.strip()}"
    _ip("netns", "del", probe, check=False)
    return None


@dataclass
class FarHost:
    """One namespace and its link to this one.

    Attributes:
        name: The namespace's name.
        host_if: The link's interface on this side.
        far_if: The link's interface in the namespace.
        host_address: This side's address on the link (what far processes connect to).
        far_address: The namespace's address on the link.
    """

    name: str
    host_if: str
    far_if: str
    host_address: str
    far_address: str

    @property
    def prefix(self) -> list[str]:
        """The argv prefix that runs a program in the namespace."""
        assert IP is not None
        return [IP, "netns", "exec", self.name]

    def popen(self, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        """Start ``argv`` in the namespace (arguments as for ``subprocess.Popen``)."""
        return subprocess.Popen([*self.prefix, *argv], **kwargs)

    def pids(self) -> list[int]:
        """The processes running in the namespace now."""
        out = _ip("netns", "pids", self.name, check=False).stdout
        return [int(word) for word in out.split()]

    def cut(self) -> None:
        """Take the link down: the far end's interface goes down (both ends lose carrier)."""
        _ip("-n", self.name, "link", "set", self.far_if, "down")

    def restore(self, timeout: float = 10.0) -> None:
        """Bring the link back; returns once both ends report carrier."""
        _ip("-n", self.name, "link", "set", self.far_if, "up")
        deadline = time.monotonic() + timeout
        while not (self._up(self.host_if) and self._up(self.far_if, self.name)):
            if time.monotonic() > deadline:
                raise NetnsError(f"link {self.host_if} <-> {self.far_if} not up in {timeout} s")
            time.sleep(0.05)

    @property
    def is_cut(self) -> bool:
        """Whether the link is down now."""
        return not self._up(self.host_if)

    @staticmethod
    def _up(interface: str, namespace: str | None = None) -> bool:
        where = ("-n", namespace) if namespace else ()
        out = _ip(*where, "-o", "link", "show", "dev", interface, check=False).stdout
        return "LOWER_UP" in out and "NO-CARRIER" not in out


def _free_block(start: int) -> ipaddress.IPv4Network:
    """A /30 of :data:`RANGE` that no interface here uses, trying from block ``start``."""
    blocks = RANGE.num_addresses // 4
    for step in range(blocks):
        base = RANGE.network_address + 4 * ((start + step) % blocks)
        net = ipaddress.IPv4Network(f"{base}/30")
        if not _ip("-4", "-o", "addr", "show", "to", str(net), check=False).stdout.strip():
            return net
    raise NetnsError(f"no free /30 left in {RANGE}")


def _kill_all(far: FarHost, grace: float = 5.0) -> list[int]:
    """Stop every process in the namespace (TERM, then KILL after ``grace`` s)."""
    found = far.pids()
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in far.pids():
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace
        while far.pids() and time.monotonic() < deadline:
            time.sleep(0.05)
        if not far.pids():
            break
    return found


@contextmanager
def far_host() -> Iterator[FarHost]:
    """A namespace linked to this one by a veth pair, removed (with its processes) at the end.

    Names and the /30 are unique per process and use: the namespace is
    ``orch-far-<pid>-<n>``, the interfaces ``oh<pid>-<n>`` (here) and ``of<pid>-<n>``.
    """
    n = next(_COUNT)
    pid = os.getpid()
    net = _free_block(pid * 8 + n)
    host_address, far_address = (str(a) for a in net.hosts())
    far = FarHost(
        name=f"orch-far-{pid}-{n}",
        host_if=f"oh{pid}-{n}",
        far_if=f"of{pid}-{n}",
        host_address=host_address,
        far_address=far_address,
    )
    made_ns = False
    try:
        _ip("netns", "add", far.name)
        made_ns = True
        veth = ("type", "veth", "peer", "name", far.far_if, "netns", far.name)
        _ip("link", "add", far.host_if, *veth)
        _ip("addr", "add", f"{host_address}/30", "dev", far.host_if)
        _ip("link", "set", far.host_if, "up")
        _ip("-n", far.name, "addr", "add", f"{far_address}/30", "dev", far.far_if)
        _ip("-n", far.name, "link", "set", "lo", "up")
        far.restore()  # the far end up, and both ends with carrier
        yield far
    finally:
        if made_ns:
            _kill_all(far)
        _ip("link", "del", far.host_if, check=False)  # removes its peer too
        if made_ns:
            _ip("netns", "del", far.name, check=False)
