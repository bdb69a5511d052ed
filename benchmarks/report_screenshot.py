"""Screenshot a run's ``report.html`` with headless Chromium into ``RUN_DIR/report.png``.

The report is meant to be looked at, not only parsed: this renders it the way a browser does
(1400 px wide, the first 3000 px) so a person, or a reviewer, can check it at a glance.
Chromium runs offline and with a throw-away profile (no network services, no sync, no first-run
pages); the report itself loads nothing from the network.

Usage:
    python -m benchmarks.report_screenshot [RUN_DIR] [--out PNG] [--height PX] [--chromium PATH]
    make report-screenshot      # the newest run directory under runs/

``RUN_DIR`` defaults to the most recently modified run directory (one holding
``results.parquet``) under ``runs/``. If ``report.html`` is missing it is written first
(``arnas_ray.results.write_report``). Chromium is not installed by this script: it prints how
to install it and exits with status 3 when no browser is found.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

RESULTS_FILE = "results.parquet"
REPORT_FILE = "report.html"
SCREENSHOT_FILE = "report.png"
WINDOW = (1400, 3000)
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
TIMEOUT_S = 180
EXIT_NO_RUN, EXIT_NO_BROWSER, EXIT_FAILED = 2, 3, 4


def find_chromium(explicit: str | None = None) -> str | None:
    """The Chromium executable: ``explicit``, ``$CHROMIUM``, /usr/bin/chromium or one on PATH."""
    for candidate in (explicit, os.environ.get("CHROMIUM"), "/usr/bin/chromium"):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    for name in BROWSERS:
        found = shutil.which(name)
        if found:
            return found
    return None


def newest_run(storage: Path) -> Path | None:
    """The most recently modified directory under ``storage`` that holds a results table."""
    if not storage.is_dir():
        return None
    runs = [p.parent for p in storage.glob(f"*/{RESULTS_FILE}")]
    return max(runs, key=lambda p: (p / RESULTS_FILE).stat().st_mtime, default=None)


def chromium_command(browser: str, html: Path, png: Path, profile: Path,
                     window: tuple[int, int] = WINDOW) -> list[str]:
    """The headless Chromium command line that screenshots ``html`` into ``png``."""
    return [
        browser,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
        f"--screenshot={png}",
        f"--window-size={window[0]},{window[1]}",
        html.resolve().as_uri(),
    ]


def screenshot(run_dir: Path, browser: str, out: Path | None = None,
               window: tuple[int, int] = WINDOW) -> Path:
    """Write ``run_dir/report.png`` (or ``out``) from ``run_dir/report.html``.

    Only the top ``window[1]`` CSS pixels are captured (Chromium's ``--screenshot`` renders
    the window, not the whole page).

    Raises:
        RuntimeError: Chromium failed or wrote no image.
    """
    html = run_dir / REPORT_FILE
    if not html.is_file():
        from arnas_ray.results import write_report

        print(f"{html} is missing; writing it first", file=sys.stderr)
        write_report(run_dir)
    png = (out or run_dir / SCREENSHOT_FILE).resolve()
    png.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="arnas-chromium-") as profile:
        cmd = chromium_command(browser, html, png, Path(profile), window)
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S,
                                  check=False)
        except subprocess.TimeoutExpired as exc:
            raise RuntimeError(f"chromium did not finish within {TIMEOUT_S} s") from exc
    if proc.returncode != 0 or not png.is_file() or png.stat().st_size == 0:
        tail = "\n".join((proc.stderr or proc.stdout or "").strip().splitlines()[-10:])
        raise RuntimeError(f"chromium exited with {proc.returncode} and wrote no {png.name}:\n"
                           f"{tail}")
    return png


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", nargs="?", default=None,
                        help="run directory (default: the newest under --storage)")
    parser.add_argument("--storage", default="runs", help="where to look for the newest run")
    parser.add_argument("--out", default=None, help="PNG path (default: RUN_DIR/report.png)")
    parser.add_argument("--chromium", default=None, help="Chromium executable")
    parser.add_argument("--height", type=int, default=WINDOW[1],
                        help=f"window height in CSS pixels: how much of the page is captured "
                             f"(default {WINDOW[1]})")
    args = parser.parse_args(argv)

    run_dir = Path(args.run_dir) if args.run_dir else newest_run(Path(args.storage))
    if run_dir is None:
        print(f"no run directory with {RESULTS_FILE} under {args.storage}/; run "
              "`make quickstart` first or pass RUN_DIR", file=sys.stderr)
        return EXIT_NO_RUN
    if not (run_dir / RESULTS_FILE).is_file() and not (run_dir / REPORT_FILE).is_file():
        print(f"{run_dir} is not a run directory (no {RESULTS_FILE} or {REPORT_FILE})",
              file=sys.stderr)
        return EXIT_NO_RUN
    browser = find_chromium(args.chromium)
    if browser is None:
        print("headless Chromium is needed for the screenshot and was not found "
              f"(looked for /usr/bin/chromium and {', '.join(BROWSERS)} on PATH).\n"
              "Install it, e.g. `sudo apt-get install -y chromium` (Debian/Ubuntu) or "
              "`brew install --cask chromium` (macOS), or pass --chromium PATH / set CHROMIUM.",
              file=sys.stderr)
        return EXIT_NO_BROWSER
    try:
        png = screenshot(run_dir, browser, Path(args.out) if args.out else None,
                         (WINDOW[0], args.height))
    except RuntimeError as exc:
        print(f"screenshot failed: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print(png)
    return 0


if __name__ == "__main__":
    sys.exit(main())
