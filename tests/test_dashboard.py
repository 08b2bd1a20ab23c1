"""The live dashboard (``orch launch --dashboard``) in headless Chromium, on a real campaign.

The page must load without console errors, show the report's plots and the journal's
numbers, and a click on a task's cancel button must cancel that task (its process ends, the
thinker gets ``cancelled``). The server refuses requests without the token. A screenshot is
saved in the run directory.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil
import pytest
from support.browser import CHROMIUM, Browser
from test_control import (
    finish,
    launch_args,
    make_sites,
    orch,
    query,
    read_json,
    site_yaml,
    wait_for,
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not Path(CHROMIUM).exists(),
        reason="headless Chromium not installed (Debian package `chromium`, see scripts/setup)",
    ),
]


def test_dashboard_shows_the_run_and_cancels_a_task(tmp_path):
    sites = make_sites(tmp_path / "sites", site_yaml("solo", 2))
    run_dir, pids, go = tmp_path / "run", tmp_path / "pids", tmp_path / "go"
    hold = tmp_path / "hold"
    pids.mkdir()
    args = launch_args(
        sites, run_dir, pids, "naps=1", "quick=6", f"wait_file={go}", f"hold_file={hold}"
    )
    proc = subprocess.Popen(
        orch(*args, "--dashboard"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    lines: list[str] = []

    def read_stderr() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line)

    threading.Thread(target=read_stderr, daemon=True).start()
    browser = None
    try:
        url = wait_for(
            "the dashboard's URL",
            lambda: next((ln.split()[1] for ln in lines if ln.startswith("dashboard: ")), None),
            proc,
        )
        assert url.startswith("http://127.0.0.1:") and "token=" in url
        base = url.split("?")[0]
        with pytest.raises(urllib.error.HTTPError) as denied:
            urllib.request.urlopen(base + "api/status", timeout=10)
        assert denied.value.code == 403
        forged = urllib.request.Request(
            base + "api/control", data=b'{"action": "halt"}', method="POST"
        )
        with pytest.raises(urllib.error.HTTPError) as denied:
            urllib.request.urlopen(forged, timeout=10)
        assert denied.value.code == 403
        nap = wait_for("the nap to run", lambda: read_json(pids / "nap-0.json"), proc)
        (nap_id,) = read_json(pids / "task_ids.json")
        child = psutil.Process(nap["child"])

        browser = Browser(tmp_path / "profile")
        browser.navigate(url)
        browser.wait_for("document.body.dataset.loaded === 'yes'", timeout=30)
        browser.wait_for(
            f"!!document.querySelector('button.cancel-task[data-task=\"{nap_id}\"]')", timeout=30
        )
        assert browser.evaluate("document.getElementById('state').textContent") == "running"
        shown = browser.evaluate(
            "document.querySelector('#sites tr[data-site=\"solo\"] td:nth-child(3)').textContent"
        )
        assert shown == "2"  # workers, from the site's YAML

        browser.click(f'button.cancel-task[data-task="{nap_id}"]')
        browser.wait_for(
            "document.getElementById('message').textContent.includes('1 task(s) cancelled')",
            timeout=30,
        )
        child.wait(timeout=30)  # the task's process ended
        go.touch()

        def finished_in_page() -> bool:
            return browser.evaluate("document.getElementById('unfinished').textContent") == "0"

        wait_for("the page to show every task finished", finished_in_page, proc)
        browser.wait_for("Number(document.body.dataset.plots || 0) > 0", timeout=60)
        assert browser.evaluate("document.querySelectorAll('#plots svg').length") >= 1
        done = query(run_dir, "SELECT COUNT(*) FROM results WHERE success = 1")[0][0]
        failed = query(run_dir, "SELECT COUNT(*) FROM results WHERE success = 0")[0][0]
        assert (done, failed) == (6, 1)
        browser.wait_for(
            f"document.getElementById('done').textContent === '{done}' && "
            f"document.getElementById('failed').textContent === '{failed}'",
            timeout=30,
        )
        in_page = browser.evaluate(
            "Object.fromEntries([...document.querySelectorAll('#methods tbody tr')].map(r => "
            "[r.dataset.method, r.querySelector('[data-key=method-done]').textContent]))"
        )
        journal = dict(query(run_dir, "SELECT method, SUM(success) FROM results GROUP BY method"))
        assert {m: int(v) for m, v in in_page.items()} == journal
        control = browser.evaluate("document.querySelector('#control tbody').textContent")
        assert "cancel" in control and nap_id in control
        shot = run_dir / "dashboard.png"
        browser.screenshot(shot)
        print(f"dashboard screenshot: {shot}")
        assert shot.stat().st_size > 10_000
        assert browser.console_errors() == []
        hold.touch()
        code, _, _ = finish(proc)
    finally:
        if browser is not None:
            browser.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert code == 0, "".join(lines)
    outcomes = read_json(run_dir / "outcomes.json")["outcomes"]
    assert outcomes[nap_id]["reason"] == "cancelled"
    # the dashboard ended with orch
    deadline = time.monotonic() + 10
    while True:
        try:
            urllib.request.urlopen(url, timeout=2)
        except (urllib.error.URLError, ConnectionError):
            break
        assert time.monotonic() < deadline, "the dashboard outlived orch"
        time.sleep(0.1)
    assert (
        json.loads(
            subprocess.run(
                orch("status", str(run_dir), "--json"), capture_output=True, text=True
            ).stdout
        )["state"]
        == "ended"
    )
