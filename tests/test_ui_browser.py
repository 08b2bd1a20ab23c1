"""The MLflow UI renders a campaign's registered model (versions, alias) in headless Chromium.

The server asks for the run's secret (HTTP basic auth), so the browser logs in as a user would
when the browser asks: Chromium is driven over the DevTools protocol on a pipe
(``tests/support/browser.py``: no port another user could reach), and answers each auth
challenge with the run's credentials (``Fetch.authRequired`` -> ``continueWithAuth``, what
Playwright's ``http_credentials`` does). The DOM is read again until the expected content is
there or a deadline passes.
"""

from __future__ import annotations

import re
import struct
import time
import urllib.error
import urllib.request
from html.parser import HTMLParser
from pathlib import Path

import pytest
import torch
from support.browser import HAVE_CHROMIUM, SKIP_REASON, WINDOW, Browser
from torch import nn

from orchestrator.registry import ModelRegistry, TrackingServer, store_paths

pytestmark = pytest.mark.skipif(not HAVE_CHROMIUM, reason=SKIP_REASON)


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
        # without the secret the page itself is refused
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{server.url}/", timeout=10)
        assert refused.value.code == 401

        assert server.credentials is not None
        url = f"{server.url}/#/models/{name}"
        screenshot = store_paths(run_dir)["root"] / "ui-screenshot.png"
        browser = Browser(tmp_path / "profile", server.credentials)
        try:
            browser.navigate(url)
            deadline = time.monotonic() + 120
            while True:  # poll the rendered DOM until the versions and the alias are there
                dom = browser.dom()
                rows = rows_text(dom)
                version_rows = [row for row in rows if re.match(r"Version \d+ ", row)]
                champion_rows = [row for row in version_rows if "champion" in row]
                if len(version_rows) == 2 and champion_rows or time.monotonic() > deadline:
                    break
                time.sleep(0.5)  # polling interval of the rendered page
            assert browser.challenges >= 1  # it did log in when asked
            assert name in dom, dom[-2000:]
            assert sorted(row.split()[1] for row in version_rows) == ["1", "2"], rows
            assert len(champion_rows) == 1 and champion_rows[0].startswith("Version 2 "), rows
            browser.screenshot(screenshot)
        finally:
            browser.close()
    assert screenshot.is_file()
    assert png_size(screenshot) == WINDOW
    assert screenshot.stat().st_size > 20_000  # a rendered page, not a blank one (~5 kB)
