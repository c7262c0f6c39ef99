import importlib.util
import shutil
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "render_report.py"


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("/usr/bin/chromium") is None, reason="needs /usr/bin/chromium")
def test_render_report_screenshots_an_html_file(tmp_path):
    spec = importlib.util.spec_from_file_location("render_report", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    page = tmp_path / "report.html"
    page.write_text("<!doctype html><html><body style='background:#2b5b84'><h1>report</h1></body></html>")
    png = module.render(page, tmp_path / "shot.png", width=400, height=300)
    from PIL import Image  # matplotlib's dependency

    image = Image.open(png).convert("RGB")
    assert image.size == (400, 300)
    assert image.getpixel((390, 290)) == (0x2B, 0x5B, 0x84)  # the page's background, not a blank window
