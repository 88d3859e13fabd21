"""``report.html`` in a real browser: headless Chromium lays it out at 1280 px, screenshots it and prints it.

The page itself carries no script; the test loads a copy with a probe appended
that writes what the layout measured (the document's scroll width, every plot's
box) into the DOM, which ``--dump-dom`` prints. The screenshot and the PDF stay
in the test's temporary directory as artifacts.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from models import WINDOW

from edge_lstm import archs, load
from edge_lstm.report_page import expected_plots

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
WIDTH = 1280
PROBE = """<script>
(function () {
  var plots = Array.prototype.map.call(document.querySelectorAll("svg.plot"), function (s) {
    var r = s.getBoundingClientRect();
    return {name: s.getAttribute("data-plot"), width: r.width, height: r.height, right: r.right};
  });
  var probe = document.createElement("pre");
  probe.id = "probe";
  probe.textContent = JSON.stringify({scrollWidth: document.documentElement.scrollWidth,
                                      clientWidth: document.documentElement.clientWidth, plots: plots});
  document.body.appendChild(probe);
})();
</script>"""


def _chromium(profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Headless Chromium with its own profile directory (``--no-sandbox``: tests may run as root)."""
    if not Path(CHROMIUM).exists():
        pytest.skip("chromium is not installed (Debian package 'chromium'; .ci/run installs it)")
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
           "--disable-extensions", "--disable-dev-shm-usage", f"--user-data-dir={profile}",
           f"--window-size={WIDTH},900", *args]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env={**os.environ, "HOME": str(profile)})
    assert p.returncode == 0, p.stderr[-2000:]
    return p


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory, temps_csv: Path) -> tuple[Path, str]:
    """A forecaster with all-steps outputs, exported through the CLI with real held-out data and --profile."""
    import numpy as np
    import torch

    from edge_lstm import data as data_mod

    d = tmp_path_factory.mktemp("report")
    torch.manual_seed(0)
    cfg = archs.ArchConfig(hidden=8, layers=1, all_steps=True)
    temps = data_mod.read_series(temps_csv)[:, 0]
    norm = {"mean": [float(np.mean(temps))], "std": [float(np.std(temps))]}
    ckpt = load.save_checkpoint(d / "allsteps.pt", archs.build("forecaster", cfg).eval(), "forecaster", cfg, WINDOW,
                                norm, "forecast")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    p = subprocess.run([sys.executable, "-m", "edge_lstm.cli", "export", str(ckpt), "-o", str(d / "out"),
                        "--format", "onnx", "--format", "tflite", "--precision", "fp32", "--precision", "dynamic-int8",
                        "--data", str(temps_csv), "--profile", "--units", "°F"],
                       capture_output=True, text=True, env=env, timeout=600)
    assert p.returncode == 0, p.stderr
    return d / "out", p.stdout


def test_summary_fits_100_columns_with_units(exported: tuple[Path, str]) -> None:
    out, stdout = exported
    assert max(len(line) for line in stdout.splitlines()) <= 100, stdout
    assert "mae °F" in stdout and "p50 µs" in stdout and "persistence" in stdout
    assert f"Report (HTML, plots): {out / 'report.html'}" in stdout


def test_report_html_in_headless_chromium(exported: tuple[Path, str], tmp_path: Path) -> None:
    out, _ = exported
    html = (out / "report.html").read_text()
    report = json.loads((out / "report.json").read_text())
    assert "<script" not in html and not re.search(r"""(src|href)=["']?(https?:)?//""", html)  # nothing fetched
    probed = tmp_path / "probed.html"
    probed.write_text(html.replace("</body>", PROBE + "</body>"))
    dom = _chromium(tmp_path / "chromium", "--virtual-time-budget=5000", "--dump-dom", probed.as_uri())
    found = re.search(r'<pre id="probe">(.*?)</pre>', dom.stdout, re.S)
    assert found, dom.stderr[-2000:]
    layout = json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    assert layout["clientWidth"] == WIDTH and layout["scrollWidth"] <= WIDTH, layout  # no sideways scrolling
    names = [p["name"] for p in layout["plots"]]
    assert names == expected_plots(report) == ["forecast", "timestep", "tradeoff", "latency"]
    for plot in layout["plots"]:
        assert plot["width"] > 300 and plot["height"] > 100 and plot["right"] <= WIDTH, plot

    shot = tmp_path / "report.png"
    _chromium(tmp_path / "chromium", f"--screenshot={shot}", "--window-size=1280,4000", (out / "report.html").as_uri())
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
    pdf = tmp_path / "report.pdf"
    _chromium(tmp_path / "chromium", f"--print-to-pdf={pdf}", "--no-pdf-header-footer", (out / "report.html").as_uri())
    assert pdf.read_bytes()[:5] == b"%PDF-" and pdf.stat().st_size > 20_000  # printable


def test_report_html_names_what_it_shows(exported: tuple[Path, str]) -> None:
    out, _ = exported
    html = (out / "report.html").read_text()
    report = json.loads((out / "report.json").read_text())
    acc = report["accuracy"]
    assert acc["units"] == "°F" and acc["windows"] == report["validation_data"]["samples"]
    assert acc["persistence"]["mae"] > 0  # one accuracy row per artifact and runtime it was validated on
    assert sorted((r["file"], r["runtime"]) for r in acc["artifacts"]) == sorted(
        (a["file"], v["runtime"]) for a in report["artifacts"] for v in a["validation"])
    for section in ("Verdict per artifact", "Per runtime", "Per layer", "Accuracy", "Trade-off",
                    "Latency distributions", "Target budgets", "Recommended for this host",
                    "persistence (the window&#x27;s last value)", "MAE (°F)", "MACs per time step"):
        assert section in html, section
    for a in report["artifacts"]:
        assert a["file"] in html
    md = (out / "report.md").read_text()
    assert "(informative: the gate is aggregate)" in md and "MAE (°F)" in md and "persistence" in md
