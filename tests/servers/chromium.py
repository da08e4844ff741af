"""Debian's headless Chromium driven by Playwright, with a fresh profile; never a downloaded browser."""

import pytest

from tests.servers import require_executable

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--no-first-run", "--disable-sync"]


@pytest.fixture
def page(tmp_path):
    """A Playwright page in headless Chromium; console errors are collected in `page.console_errors`."""
    require_executable(CHROMIUM, "Debian's chromium")
    from playwright.sync_api import sync_playwright
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path=CHROMIUM, headless=True, args=FLAGS,
            viewport={"width": 1400, "height": 900})
        try:
            new_page = context.new_page()
            new_page.console_errors = []
            new_page.on("console", lambda message: message.type == "error" and new_page.console_errors.append(
                message.text))
            yield new_page
        finally:
            context.close()
