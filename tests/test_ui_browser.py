"""The MLflow UI renders a campaign's registered model (versions, alias) in headless Chromium.

Chromium's own CLI renders the React page (``--dump-dom`` / ``--screenshot`` with a virtual
time budget); the DOM is fetched again until the expected content is there or a deadline passes.
"""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
import time
from html.parser import HTMLParser
from pathlib import Path

import pytest
import torch
from torch import nn

from orchestrator.registry import ModelRegistry, TrackingServer, store_paths

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--virtual-time-budget=20000",  # virtual ms the page may run (network waits pause it)
]
WINDOW = (1400, 900)

pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(),
    reason="headless Chromium not installed (Debian package `chromium`, see scripts/setup)",
)


def chromium(url: str, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """One headless Chromium run on ``url`` with a fresh profile directory."""
    cmd = [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args, url]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=90)


class _Rows(HTMLParser):
    """Collects the text of each element with ``role="row"`` (table rows of the MLflow UI)."""

    VOID = {"area", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "wbr"}

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[str]] = []
        self.depth = 0  # open elements inside the current row (0: not in a row)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self.VOID:
            return
        if self.depth:
            self.depth += 1
        elif ("role", "row") in attrs:
            self.rows.append([])
            self.depth = 1

    def handle_endtag(self, tag: str) -> None:
        if self.depth and tag not in self.VOID:
            self.depth -= 1

    def handle_data(self, data: str) -> None:
        if self.depth:
            self.rows[-1].append(data)


def rows_text(dom: str) -> list[str]:
    """The visible text of each table row of a rendered page, whitespace collapsed."""
    parser = _Rows()
    parser.feed(dom)
    return [" ".join(" ".join(parts).split()) for parts in parser.rows]


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    width, height = struct.unpack(">II", data[16:24])  # IHDR
    return width, height


@pytest.mark.timeout(240)
def test_model_page_shows_versions_and_alias(tmp_path):
    run_dir = tmp_path / "run"
    name = "ui-surrogate"
    with TrackingServer(run_dir) as server:
        registry = ModelRegistry(server, name)
        torch.manual_seed(0)
        for rmse in (0.4, 0.2):  # version 2 is better: it becomes the champion
            model = nn.Sequential(nn.Linear(2, 4), nn.ReLU(), nn.Linear(4, 1))
            version = registry.log_training(model, {"width": 4}, {"val_rmse": rmse}).version
            registry.promote(version)
        assert registry.alias_version("champion") == 2

        url = f"{server.url}/#/models/{name}"
        deadline = time.monotonic() + 120
        attempt = 0
        while True:  # poll the rendered DOM until the versions and the alias are there
            attempt += 1
            done = chromium(url, tmp_path / f"profile-{attempt}", "--dump-dom")
            rows = rows_text(done.stdout)
            version_rows = [row for row in rows if re.match(r"Version \d+ ", row)]
            champion_rows = [row for row in version_rows if "champion" in row]
            if len(version_rows) == 2 and champion_rows or time.monotonic() > deadline:
                break
        assert done.returncode == 0, done.stderr[-2000:]
        assert name in done.stdout, done.stdout[-2000:]
        assert sorted(row.split()[1] for row in version_rows) == ["1", "2"], rows
        assert len(champion_rows) == 1 and champion_rows[0].startswith("Version 2 "), rows

        screenshot = store_paths(run_dir)["root"] / "ui-screenshot.png"
        width, height = WINDOW
        shot = chromium(
            url, tmp_path / "profile-shot", f"--window-size={width},{height}",
            f"--screenshot={screenshot}",
        )  # fmt: skip
        assert shot.returncode == 0, shot.stderr[-2000:]
    assert screenshot.is_file()
    assert png_size(screenshot) == WINDOW
    assert screenshot.stat().st_size > 20_000  # a rendered page, not a blank one (~5 kB)
