#!/usr/bin/env python3
"""Opens pulmo's OHIF viewer on one study in Debian's headless chromium and says what it saw.

Driven by PyPI `playwright` with the system browser (`/usr/bin/chromium`; nothing is
downloaded). It opens `/viewer/viewer?StudyInstanceUIDs=STUDY` with the reader's bearer
token on every request, waits for the study browser to list the series, opens pulmo's SR
(its measurements) and SEG (as an overlay on the CT), and saves a screenshot of each step.
Every request the page makes to pulmo's DICOMweb is recorded with its answer.

Prints one JSON object: the series listed (modality, description, number, instances), the
viewport's text with the SR open (its measurements' labels and values), whether OHIF calls
the SR loadable as measurements, the measurement panel's rows once the SR is tracked and the
viewport's slice after clicking the last row, the segmentation panel's text with the SEG loaded, the DICOMweb requests that failed (status >= 400 or
no answer) and how many succeeded, the page's errors, and the screenshots. The Rust test
(tests/integration/viewer.rs) asserts on it.

    tests/viewer/ohif_check.py --base http://127.0.0.1:PORT --study UID --token T --out DIR
"""
from __future__ import annotations

import argparse
import json
import pathlib
import sys
import tempfile
import time

from playwright.sync_api import sync_playwright

FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--use-angle=swiftshader", "--enable-unsafe-swiftshader"]


class Unseen(Exception):
    """A step whose result never showed."""

    def __init__(self, what: str, cause: Exception):
        super().__init__(f"{what}: {str(cause).splitlines()[0]}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", required=True, help="pulmo's URL, e.g. http://127.0.0.1:8090")
    ap.add_argument("--study", required=True, help="StudyInstanceUID to open")
    ap.add_argument("--token", help="a token with the read role (sent as a bearer header)")
    ap.add_argument("--out", type=pathlib.Path, required=True, help="folder for the screenshots")
    ap.add_argument("--chromium", default="/usr/bin/chromium")
    ap.add_argument("--timeout", type=float, default=240.0, help="seconds for each wait")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    result: dict = {"dicomweb_ok": 0, "dicomweb_failed": [], "page_errors": [], "screenshots": []}
    timeout_ms = args.timeout * 1000

    with sync_playwright() as p, tempfile.TemporaryDirectory() as profile:
        browser = p.chromium.launch_persistent_context(
            profile, executable_path=args.chromium, headless=True, args=FLAGS,
            viewport={"width": 1600, "height": 1000},
            extra_http_headers={"Authorization": f"Bearer {args.token}"} if args.token else None)
        page = browser.pages[0] if browser.pages else browser.new_page()

        def answered(response):
            if "/dicomweb" not in response.url:
                return
            if response.status >= 400:
                result["dicomweb_failed"].append({"url": response.url, "status": response.status})
            else:
                result["dicomweb_ok"] += 1

        def failed(request):
            if "/dicomweb" in request.url:
                result["dicomweb_failed"].append({"url": request.url, "status": None,
                                                  "error": request.failure})

        page.on("response", answered)
        page.on("requestfailed", failed)
        page.on("pageerror", lambda e: result["page_errors"].append(str(e)[:300]))

        def shot(name: str) -> None:
            path = args.out / f"{name}.png"
            page.screenshot(path=str(path))
            result["screenshots"].append(str(path))

        page.goto(f"{args.base}/viewer/viewer?StudyInstanceUIDs={args.study}", timeout=timeout_ms)
        # The study browser lists each series as a thumbnail with its modality.
        thumbnails = page.locator("[data-cy='study-browser-thumbnail'], [data-cy^='study-browser-thumbnail']")
        try:
            thumbnails.first.wait_for(timeout=timeout_ms)
        except Exception as e:  # noqa: BLE001 - reported, not raised: the test says what is missing
            result["error"] = f"no series listed: {e}"
            shot("viewer-failed")
            print(json.dumps(result))
            return 0
        deadline = time.time() + args.timeout
        while time.time() < deadline and thumbnails.count() < 3:
            page.wait_for_timeout(500)
        result["series"] = [t.inner_text() for t in thumbnails.all()]
        def settle() -> None:
            """Closes OHIF's onboarding tour, which can open late on a loaded machine and
            then sits over the study browser."""
            skip = page.get_by_text("Skip all")
            if skip.count() and skip.first.is_visible():
                skip.first.click()
                page.wait_for_timeout(500)

        def until(action, shown, what: str, patience: float = 90.0) -> None:
            """Does `action` (after closing the tour) and waits up to `patience` seconds for
            `shown`; repeats both until `shown` is visible or the overall timeout is spent.
            The first wait is long because a repeated action can restart what the first one
            began (a double-click on the SR reloads the CT under it)."""
            deadline = time.time() + args.timeout
            while True:
                settle()
                try:
                    action()
                    shown.first.wait_for(timeout=patience * 1000)
                    return
                except Exception as e:  # noqa: BLE001 - retried, then raised with what was awaited
                    if time.time() > deadline:
                        raise Unseen(what, e) from e
                    patience = 30.0

        page.wait_for_timeout(2000)
        settle()
        shot("viewer-study")

        try:
            # pulmo's SR: opened in the viewport, its measurements drawn with their values.
            until(lambda: page.get_by_text("pulmo nodule measurements").first.dblclick(timeout=15000),
                  page.get_by_text("Diameter:"), "the SR's measurements")
            page.wait_for_timeout(2000)
            result["sr_viewport"] = page.locator("[data-cy='viewport-grid']").inner_text()
            badge = page.locator("[data-cy='ModalityLoadBadge-default']")
            # OHIF's own words for an SR it can load as measurements ("status-untracked") or not.
            result["sr_loadable"] = bool(badge.count()) and badge.first.locator("svg").count() > 0 and \
                page.locator("[data-cy='ModalityLoadBadge-default'] svg rect").count() > 0
            shot("viewer-sr")

            # Tracked, the SR's measurements are listed in OHIF's measurement panel (one row
            # per finding: its label and slice), and clicking a row jumps to its slice.
            until(lambda: page.locator("[data-cy='yes-hydrate-btn']").first.click(timeout=15000),
                  page.locator("[data-cy='trackedMeasurements-btn']"), "the tracking prompt's answer")
            rows = page.locator("[data-cy^='measurement-table-row-']")
            until(lambda: page.locator("[data-cy='trackedMeasurements-btn']").first.click(timeout=15000),
                  rows, "the measurement panel's rows")
            page.wait_for_timeout(2000)
            result["measurement_rows"] = [r.inner_text() for r in rows.all()]
            if rows.count() > 1:
                rows.nth(rows.count() - 1).locator("[data-cy='data-row-title']").first.click()
                page.wait_for_timeout(3000)
                result["viewport_after_last_row"] = page.locator(
                    "[data-cy='viewport-overlay-bottom-right']").first.inner_text()
            shot("viewer-measurements")

            # pulmo's SEG: opened over the CT, its segments listed in the segmentation panel.
            yes = page.get_by_role("button", name="Yes")
            until(lambda: page.get_by_text("pulmo nodule segmentation").first.dblclick(timeout=15000),
                  yes, "the SEG's prompt")
            until(lambda: yes.first.click(timeout=15000) if yes.count() else None,
                  page.locator("[data-cy='panelSegmentation-btn']"), "the segmentation panel's button")
            until(lambda: page.locator("[data-cy='panelSegmentation-btn']").first.click(timeout=15000),
                  page.get_by_text("nodule-1"), "the SEG's segments")
            page.wait_for_timeout(2000)
            result["segmentation_panel"] = page.inner_text("body")[-3000:]
            shot("viewer-seg")
        except Unseen as e:
            # Reported, not raised: the test prints what the page showed and what it asked.
            result["error"] = str(e)
            result["page_text"] = page.inner_text("body")[-3000:]
            shot("viewer-failed")
        browser.close()
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
