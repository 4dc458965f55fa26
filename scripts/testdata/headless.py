"""The review page's browser tests' shared set-up: Debian's chromium, headless, through
Playwright (nothing downloaded), at the 1280 x 800 the review page must work at."""
import contextlib
import tempfile

from playwright.sync_api import expect, sync_playwright

FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


@contextlib.contextmanager
def page():
    """A fresh browser profile's page, closed on leaving."""
    with sync_playwright() as p, tempfile.TemporaryDirectory() as profile:
        browser = p.chromium.launch_persistent_context(
            profile, executable_path="/usr/bin/chromium", args=FLAGS, headless=True,
            viewport={"width": 1280, "height": 800})
        opened = browser.new_page()
        # Generous waits: CI runs these beside the other tests on 2 loaded cores, and
        # `expect` has its own 5 s default besides the page's.
        opened.set_default_timeout(120000)
        expect.set_options(timeout=60000)
        try:
            yield opened
        finally:
            browser.close()
