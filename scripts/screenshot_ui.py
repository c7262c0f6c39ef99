"""Screenshot a page of the MLflow UI (``nfstudy ui``) with headless Chromium.

Usage:
    nfstudy ui --port 5000 &                       # in another terminal
    python scripts/screenshot_ui.py http://127.0.0.1:5000 quickstart ui.png

Finds the study's experiment through the MLflow REST API and shoots its runs page
(``#/experiments/ID/runs``). Needs ``chromium`` (Debian: ``apt-get install -y chromium``); it runs
with a throw-away profile, no sandbox (containers run as root) and every background network
feature off, so it talks to the UI and nothing else.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.parse
import urllib.request
from pathlib import Path

from render_report import CHROMIUM, shoot  # scripts/ is on sys.path when run as a script


def experiment_id(ui_url: str, study: str) -> str:
    """The id of the experiment named ``study`` on the MLflow server at ``ui_url``."""
    query = urllib.parse.urlencode({"experiment_name": study})
    with urllib.request.urlopen(f"{ui_url}/api/2.0/mlflow/experiments/get-by-name?{query}", timeout=30) as answer:
        return json.load(answer)["experiment"]["experiment_id"]


def screenshot(page_url: str, png_path, *, width: int = 1400, height: int = 900, chromium: str = CHROMIUM,
               budget_ms: int = 10000, timeout_s: float = 120.0) -> Path:
    """Shoot ``page_url`` into ``png_path`` after ``budget_ms`` of virtual time (the UI's
    scripts load the runs meanwhile).

    Args:
        page_url: the page, e.g. ``http://127.0.0.1:5000/#/experiments/1``.
        png_path: where the PNG goes (its folder must exist).
        width, height: the browser window in CSS pixels.
        chromium: the Chromium executable.
        budget_ms: virtual time given to the page before the shot.
        timeout_s: give up after this long.

    Returns:
        ``png_path`` as an absolute Path.

    Raises:
        FileNotFoundError: Chromium is missing.
        RuntimeError: Chromium wrote no PNG (its stderr is in the message).
    """
    return shoot(page_url, png_path, width=width, height=height, chromium=chromium, timeout_s=timeout_s,
                 flags=(f"--virtual-time-budget={budget_ms}",))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ui_url", help="the MLflow UI, e.g. http://127.0.0.1:5000")
    parser.add_argument("study", help="the study (= MLflow experiment) to show")
    parser.add_argument("png", help="output PNG")
    parser.add_argument("--width", type=int, default=1400)
    parser.add_argument("--height", type=int, default=900)
    parser.add_argument("--chromium", default=CHROMIUM)
    args = parser.parse_args(argv)
    url = args.ui_url.rstrip("/")
    page = f"{url}/#/experiments/{experiment_id(url, args.study)}/runs"
    print(screenshot(page, args.png, width=args.width, height=args.height, chromium=args.chromium))
    return 0


if __name__ == "__main__":
    sys.exit(main())
