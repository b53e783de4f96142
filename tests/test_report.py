"""`snakemake --report` on the CI DAG: every figure is in the report and renders in Chromium.

The Snakemake 9 html report is one self-contained file: a React app with every result embedded
as a data URI. Chromium (headless) opens a copy of it with a small script appended that shows
every image through the report's own viewer (`app.setView`) and records each image's decoded
size; the last image stays on screen for a screenshot.
"""

from __future__ import annotations

import base64
import html as html_lib
import json
import re
import shutil
import struct
import subprocess

import numpy as np
import pytest

from ssltrace.figures import FIGURES
from tests.conftest import run_snakemake

pytestmark = pytest.mark.slow

CATEGORIES = {
    "Seed 000: few-shot structure and human errors",
    "Seed 001: representational trajectories",
    "Seed 004: clustering geometry",
    "Training",
    "Seed 003: neural predictivity, behaviour, embedding diagnostics, semi-supervision",
}
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--window-size=1400,1000",
    # Virtual time runs timers and React renders without waiting in real time.
    "--virtual-time-budget=60000",
]

# Shows each embedded image in the report's viewer, waits for it to decode, records its size.
CHECK_SCRIPT = """
<script>
(async function () {
  function until(condition) {
    return new Promise(function (resolve) {
      var start = performance.now();
      (function poll() {
        var value = condition();
        if (value || performance.now() - start > 20000) { return resolve(value); }
        setTimeout(poll, 50);
      })();
    });
  }
  var out = {};
  try {
    // React renders asynchronously: the global `app` exists once the App has mounted.
    await until(function () { return typeof app !== "undefined" && app; });
    for (var path of Object.keys(results)) {
      if (!results[path].mime_type.startsWith("image/")) { continue; }
      var uri = results[path].data_uri;
      app.setView({content: "img", contentPath: uri, resultPath: path});
      var img = await until(function () {
        return Array.from(document.images).find(function (i) {
          return i.src === uri && i.complete;
        });
      });
      out[path] = img ? {width: img.naturalWidth, height: img.naturalHeight} : null;
    }
  } catch (error) {
    out = {error: String(error)};
  }
  var pre = document.createElement("pre");
  pre.id = "ssltrace-check";
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
})();
</script>
"""


def report_data(html: str, name: str):
    """The JSON assigned to `var <name> = ...;` in the report's script blocks."""
    match = re.search(rf'<script id="{name}">\s*var {name} = (.*?);\n', html, re.S)
    assert match, f"report has no `var {name}`"
    return json.loads(match.group(1))


def png_size(data: bytes) -> tuple[int, int]:
    assert data.startswith(b"\x89PNG\r\n\x1a\n"), "not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def chromium(tmp_path, *args) -> subprocess.CompletedProcess:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.fail("chromium is not installed (apt-get install chromium; see scripts/)")
    profile = tmp_path / "chromium-profile"
    cmd = [exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, f"chromium failed:\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def report(ci_study, tmp_path_factory):
    """The report of the session's CI study (the `ci_study` fixture of conftest.py)."""
    _root, work, _cfg = ci_study
    out = tmp_path_factory.mktemp("report")
    path = out / "report.html"  # outside the shared study, which tests must not change
    run_snakemake(work, "--report", str(path), "--nolock")
    html = path.read_text(encoding="utf-8")
    check = out / "check.html"
    head, _, tail = html.rpartition("</body>")
    check.write_text(head + CHECK_SCRIPT + "</body>" + tail, encoding="utf-8")
    return work, html, check


def test_report_is_one_selfcontained_html_with_every_figure(report):
    work, html, _ = report
    results = report_data(html, "results")
    figures = sorted((work / "results" / "figures").rglob("*.png"))
    assert len(figures) == len(FIGURES.names())
    by_name = {entry["filename"]: entry for entry in results.values()}
    for png in figures:
        entry = by_name.get(png.name)
        assert entry, f"{png.name} is not in the report"
        assert entry["mime_type"] == "image/png"
        header, _, payload = entry["data_uri"].partition(",")
        assert header.startswith("data:image/png;") and header.endswith(";base64"), header
        assert base64.b64decode(payload) == png.read_bytes(), f"{png.name} embedded differently"
        caption = " ".join(re.sub(r"<[^>]+>", " ", entry["caption"]).split())
        # Each caption names the paper figure it reproduces (or says it is none).
        assert re.search(r"seed paper 00\d", caption) or "Not a paper figure" in caption, png.name
        assert len(caption.split()) > 25, f"{png.name}: caption too short"
    categories = report_data(html, "categories")
    assert set(categories) == CATEGORIES
    assert sum(len(paths) for sub in categories.values() for paths in sub.values()) == len(figures)


def test_every_report_image_loads_in_chromium(report, tmp_path):
    work, html, check = report
    results = report_data(html, "results")
    dom = chromium(tmp_path, "--dump-dom", check.as_uri()).stdout
    match = re.search(r'<pre id="ssltrace-check">(.*?)</pre>', dom, re.S)
    assert match, "the check script did not finish"
    loaded = json.loads(html_lib.unescape(match.group(1)))
    images = {p for p, r in results.items() if r["mime_type"].startswith("image/")}
    assert set(loaded) == images and len(images) == len(FIGURES.names())
    for path, size in loaded.items():
        data = base64.b64decode(results[path]["data_uri"].split(",", 1)[1])
        assert (size["width"], size["height"]) == png_size(data), f"{path} did not render"


def test_report_screenshot_is_not_blank(report, tmp_path):
    import matplotlib.image

    _, _, check = report
    shot = tmp_path / "report.png"
    chromium(tmp_path, f"--screenshot={shot}", check.as_uri())
    pixels = (matplotlib.image.imread(shot)[..., :3] * 255).astype(np.uint8)
    colours, counts = np.unique(pixels.reshape(-1, 3), axis=0, return_counts=True)
    assert len(colours) > 100, "screenshot has almost no colours"
    assert counts.max() / counts.sum() < 0.9, "screenshot is one flat colour"
    # The viewer right of the navigation bar shows the last figure: it must not be empty.
    content = pixels[:, pixels.shape[1] // 3 :]
    drawn = int((content < 240).any(axis=-1).sum())
    assert drawn > 2000, f"only {drawn} pixels drawn where the figure should be"
