"""Pre-flight at ``orch launch``: every site is checked before the thinker starts.

For each site, in parallel with starting the sites:

* the site's own check (:meth:`Site.check`): for a Globus site, credentials that work and an
  endpoint the service reports ``online``;
* for a site with ``container:``: a deployment record (``orch deploy`` made it), the image
  present with the recorded digest (on this machine: a metadata fingerprint, re-hashed only
  when it changed), and the versions the probe reported equal to orch's own.

A site that fails is reported in one line. One whose image failed is left out; one whose
service or endpoint failed is kept as *down*, so the dispatcher revives it when it answers.
When a kind the campaign needs has no site that passes, the campaign stops before any task
runs (exit 2).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from orchestrator.config.containers import is_uri
from orchestrator.containers.deploy import load_record, local_image_state, version_problems
from orchestrator.sites.base import Site


@dataclass
class Verdict:
    """The pre-flight result of one site: ``reason`` is ``None`` when it passed.

    ``revivable`` failures come from the site's own check (an unreachable service, an endpoint
    that is not online): such a site may come back during the campaign, so it is kept, down,
    for the dispatcher to revive. Image problems are not revivable: the site is left out.
    """

    site: str
    reason: str | None
    seconds: float
    digest: str | None = None
    revivable: bool = False


def _container_reason(site: Site, sites_dir: Path | None) -> tuple[str | None, str | None]:
    """(problem, digest) of the site's image against its deployment record."""
    config = site.config
    container = config.container
    if container is None:
        return None, None
    fix = f"run `orch deploy --sites {sites_dir or '<dir>'} --site {site.name}`"
    if sites_dir is None:
        return f"site {site.name}: its image was never checked by orch deploy; {fix}", None
    record = load_record(sites_dir, site.name)
    if record is None:
        return f"site {site.name}: not deployed (no deployment record); {fix}", None
    if record.get("image") != container.image or record.get("runtime") != container.runtime:
        return (
            f"site {site.name}: its container settings changed since it was deployed "
            f"(image {record.get('image')} then, {container.image} now); {fix}"
        ), None
    digest = str(record.get("digest") or "")
    if config.backend == "local":
        path = Path(str(record.get("image_path") or container.image_path(site.name))).expanduser()
        if not path.exists():
            return f"site {site.name}: image {path} does not exist; {fix}", None
        _, current = local_image_state(record)
        if current is not None and current != digest:
            return (
                f"site {site.name}: image {path} changed since it was deployed (digest "
                f"{current[:19]} now, {digest[:19]} recorded); {fix} to verify it again"
            ), None
    elif is_uri(container.image) and not digest:
        return f"site {site.name}: no digest recorded; {fix}", None
    problems = version_problems(site.name, record.get("report") or {})
    if problems:
        return problems[0] + (f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""), None
    return None, digest


def check_site(site: Site, sites_dir: Path | None) -> Verdict:
    """Run every pre-flight check of one site (never raises)."""
    started = time.monotonic()
    revivable = False
    try:
        reason, digest = _container_reason(site, sites_dir)
        if reason is None:
            reason = site.check()
            revivable = reason is not None
    except Exception as exc:  # noqa: BLE001 - a broken check is a failed site, not a crash
        reason, digest = f"site {site.name}: pre-flight failed: {type(exc).__name__}: {exc}", None
    return Verdict(site.name, reason, time.monotonic() - started, digest, revivable)


def apply(site: Site, verdict: Verdict) -> None:
    """Record a verified image's identity on its site (results carry it)."""
    if verdict.digest is not None and site.config.container is not None:
        site.image = site.config.container.image
        site.image_digest = verdict.digest


def missing_kinds(sites: Sequence[Site], verdicts: Sequence[Verdict], kinds: set[str]) -> set[str]:
    """The kinds in ``kinds`` that no passing site offers."""
    passed = {v.site for v in verdicts if v.reason is None}
    return {k for k in kinds if not any(s.kind == k and s.name in passed for s in sites)}
