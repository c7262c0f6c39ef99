"""Render a report.html to a PNG screenshot with headless Chromium.

Usage:
    python scripts/render_report.py .nfstudy/reports/clip-threshold/report.html out.png [--height 2400]

Needs ``chromium`` (Debian: ``apt-get install -y chromium``). Chromium runs with a fresh
throw-away profile, no sandbox (containers run as root), and every background network
feature off, so it renders the local file and nothing else.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"


def render(html_path, png_path, *, width: int = 1280, height: int = 2400, chromium: str = CHROMIUM,
           timeout_s: float = 120.0) -> Path:
    """Screenshot ``html_path`` into ``png_path`` (the top ``width``×``height`` pixels).

    Args:
        html_path: the report to render.
        png_path: where the PNG goes (its folder must exist).
        width, height: the browser window, in CSS pixels.
        chromium: the Chromium executable.
        timeout_s: give up after this long.

    Returns:
        ``png_path`` as a Path.

    Raises:
        FileNotFoundError: Chromium or the HTML file is missing.
        RuntimeError: Chromium exited without writing the PNG (its stderr is in the message).
    """
    html_file = Path(html_path).resolve()
    if not html_file.exists():
        raise FileNotFoundError(f"html_path: {html_file} does not exist")
    return shoot(html_file.as_uri(), png_path, width=width, height=height, chromium=chromium, timeout_s=timeout_s)


def shoot(url: str, png_path, *, width: int, height: int, chromium: str = CHROMIUM, timeout_s: float = 120.0,
          flags: tuple[str, ...] = ()) -> Path:
    """Headless Chromium screenshot of ``url`` into ``png_path`` (a throw-away profile, no
    sandbox, background networking off); ``flags`` are added to Chromium's command line.

    Raises:
        FileNotFoundError: Chromium is missing.
        RuntimeError: Chromium exited without writing the PNG (its stderr is in the message).
    """
    if shutil.which(chromium) is None:
        raise FileNotFoundError(f"chromium: {chromium!r} not found; install it with `apt-get install -y chromium`")
    png_file = Path(png_path).resolve()
    png_file.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="nfstudy-chromium-") as profile:
        completed = subprocess.run(
            [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--hide-scrollbars", f"--user-data-dir={profile}", *flags, f"--screenshot={png_file}",
             f"--window-size={width},{height}", url],
            capture_output=True, text=True, timeout=timeout_s, check=False,
        )
    if not png_file.exists():
        raise RuntimeError(f"chromium wrote no screenshot (exit {completed.returncode}): {completed.stderr[-2000:]}")
    return png_file


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("html")
    parser.add_argument("png")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=2400)
    args = parser.parse_args(argv)
    try:
        print(render(args.html, args.png, width=args.width, height=args.height))
    except (FileNotFoundError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
