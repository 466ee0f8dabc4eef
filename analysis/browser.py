"""Open a report in a real headless browser (Chromium): did the page load without errors, and does every
figure have data? Also takes screenshots.

    python -m analysis.browser check PAGE.html [PAGE.html ...]    exit status 1 if any page has a problem
    python -m analysis.browser screenshot PAGE.html OUT.png [--width 1280 --height 2400]

The page is checked as a copy with two small scripts added: one first in <head>, which records errors
(script errors, failed resource loads, rejected promises, console.error) while the page loads, and one
last in <body>, which, once the page has loaded and plotly has drawn, writes what each figure holds into
the DOM, where `--dump-dom` returns it. The report itself carries no checking code.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

# Without the networking flags Chromium tries to reach Google's services at start, which a closed network
# refuses; none of them changes how a local page renders.
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars", "--virtual-time-budget=5000")

RECORD_ERRORS = """
window.__pageErrors = [];
window.addEventListener('error', function (e) {
  var what = e.target && e.target !== window ? 'failed to load ' + (e.target.src || e.target.href) : e.message;
  window.__pageErrors.push(String(what));
}, true);
window.addEventListener('unhandledrejection', function (e) { window.__pageErrors.push('rejected: ' + e.reason); });
(function () {
  var original = console.error;
  console.error = function () {
    window.__pageErrors.push('console.error: ' + Array.prototype.join.call(arguments, ' '));
    original.apply(console, arguments);
  };
})();
"""

REPORT_FIGURES = """
window.addEventListener('load', function () { setTimeout(function () {
  var figures = Array.prototype.map.call(document.querySelectorAll('.plotly-graph-div'), function (gd) {
    var title = gd.layout && gd.layout.title;
    return {
      title: (title && (title.text || title)) || '',
      drawn: gd.querySelectorAll('.main-svg').length > 0,
      points: (gd._fullData || []).map(function (t) { return t.visible === false ? 0 : (t._length || 0); })
    };
  });
  var out = document.createElement('pre');
  out.id = 'browser-check';
  out.textContent = JSON.stringify({errors: window.__pageErrors, plotly: typeof Plotly, figures: figures});
  document.body.appendChild(out);
}, 300); });
"""


@dataclass(frozen=True)
class FigureCheck:
    title: str
    drawn: bool
    points: tuple[int, ...]  # per trace, the data points plotly drew from

    @property
    def has_data(self) -> bool:
        return self.drawn and any(self.points)


@dataclass(frozen=True)
class PageCheck:
    page: Path
    errors: tuple[str, ...]
    figures: tuple[FigureCheck, ...]

    def problems(self) -> list[str]:
        out = [f"{self.page}: {e}" for e in self.errors]
        if not self.figures:
            out.append(f"{self.page}: no figure on the page")
        out += [f"{self.page}: figure {f.title!r} has no data" for f in self.figures if not f.has_data]
        return out


def find_browser() -> str | None:
    """$FEDFLEET_BROWSER, else Chromium or Chrome from PATH."""
    named = os.environ.get("FEDFLEET_BROWSER")
    if named:
        return named
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def _browser(*args: str, timeout_s: float) -> str:
    browser = find_browser()
    if browser is None:
        raise FileNotFoundError("no Chromium found: install Debian's chromium or set FEDFLEET_BROWSER")
    with tempfile.TemporaryDirectory() as profile:  # a fresh profile: nothing carried between checks
        done = subprocess.run([browser, *FLAGS, f"--user-data-dir={profile}", *args], capture_output=True,
                              text=True, timeout=timeout_s)
    if done.returncode != 0:
        raise RuntimeError(f"{browser} exited with {done.returncode}: {done.stderr[-2000:]}")
    return done.stdout


def check_page(page: Path, timeout_s: float = 120.0) -> PageCheck:
    page = Path(page).resolve()
    html = page.read_text(encoding="utf-8")
    if "<head>" not in html or "</body>" not in html:
        return PageCheck(page, ("not an HTML page with <head> and <body>",), ())
    probed = html.replace("<head>", f"<head><script>{RECORD_ERRORS}</script>", 1)
    probed = _replace_last(probed, "</body>", f"<script>{REPORT_FIGURES}</script></body>")
    # Beside the page, so that anything it refers to by a relative path resolves as it would for the page.
    copy = page.with_name(f".{page.stem}.browser-check.html")
    copy.write_text(probed, encoding="utf-8")
    try:
        dom = _browser("--dump-dom", copy.as_uri(), timeout_s=timeout_s)
    finally:
        copy.unlink(missing_ok=True)
    found = re.search(r'<pre id="browser-check">(.*?)</pre>', dom, re.S)
    if found is None:
        return PageCheck(page, ("the page never finished loading",), ())
    result = json.loads(_unescape(found.group(1)))
    errors = list(result["errors"])
    if result["plotly"] != "object":
        errors.append("plotly.js did not load")
    figures = tuple(FigureCheck(f["title"], f["drawn"], tuple(f["points"])) for f in result["figures"])
    return PageCheck(page, tuple(errors), figures)


def screenshot(page: Path, png: Path, width: int = 1280, height: int = 2400, timeout_s: float = 120.0) -> Path:
    png = Path(png).resolve()
    png.parent.mkdir(parents=True, exist_ok=True)
    _browser(f"--screenshot={png}", f"--window-size={width},{height}", Path(page).resolve().as_uri(),
             timeout_s=timeout_s)
    if not png.is_file():
        raise RuntimeError(f"the browser wrote no screenshot to {png}")
    return png


def _replace_last(text: str, old: str, new: str) -> str:
    head, sep, tail = text.rpartition(old)
    return head + new + tail if sep else text + new


def _unescape(text: str) -> str:
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", '"').replace("&amp;", "&")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m analysis.browser", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check", help="load pages headless; report errors and figures without data")
    check.add_argument("pages", nargs="+", type=Path)
    shot = sub.add_parser("screenshot", help="a PNG of the top of a page")
    shot.add_argument("page", type=Path)
    shot.add_argument("png", type=Path)
    shot.add_argument("--width", type=int, default=1280)
    shot.add_argument("--height", type=int, default=2400)
    args = parser.parse_args(argv)
    if args.command == "screenshot":
        print(screenshot(args.page, args.png, args.width, args.height))
        return 0
    problems = []
    for page in args.pages:
        result = check_page(page)
        print(f"{page}: {len(result.figures)} figures, {sum(f.has_data for f in result.figures)} with data, "
              f"{len(result.errors)} errors")
        problems += result.problems()
    if problems:
        print("\n".join(problems), file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
