"""Drives pulmo's review page in headless Chromium (Debian's, through Playwright):
signs in with a read-only token (refused) and a review token, jumps through the findings
with j/k, accepts finding 1 and rejects finding 2 by their buttons, signs, and saves
screenshots. Used by tests/integration/review.rs; prints one JSON line of what it saw.

usage: review_page.py BASE_URL STUDY_UID REVIEW_TOKEN READ_TOKEN SCREENSHOT_DIR
"""
import json
import os
import sys

from playwright.sync_api import expect

import headless


def main(base, study, review_token, read_token, shots):
    os.makedirs(shots, exist_ok=True)
    seen = {}
    with headless.page() as page:
        page.goto(f"{base}/review/{study}")
        expect(page.get_by_role("note")).to_contain_text("Machine suggestions, not a diagnosis")
        token = page.get_by_label("Reader token")
        token.fill(read_token)
        page.get_by_role("button", name="Sign in").click()
        expect(page.locator("#sign-in-error")).to_contain_text("lacks the review role")
        seen["read_only_refused"] = True
        token.fill(review_token)
        page.get_by_role("button", name="Sign in").click()
        expect(page.get_by_role("button", name="Accept finding 1")).to_be_visible()
        expect(page.locator("#who")).to_contain_text("Reader: dr-reader")
        page.wait_for_function("document.getElementById('slice').naturalWidth > 0")
        page.screenshot(path=os.path.join(shots, "review-page-opened.png"))
        # j/k move the selection and jump to the finding's slice.
        selected = lambda: page.locator("tr.finding.selected th").inner_text()
        page.locator("body").press("j")
        seen["after_j"] = selected()
        slice_after_j = page.locator("#slice-label").inner_text()
        page.locator("body").press("k")
        seen["after_k"] = selected()
        seen["slice_after_j"] = slice_after_j
        seen["slice_after_k"] = page.locator("#slice-label").inner_text()
        page.get_by_role("button", name="Accept finding 1").click()
        expect(page.get_by_role("button", name="Accept finding 1")).to_have_attribute("aria-pressed", "true")
        page.get_by_label("Comment on finding 2").fill("vessel")
        page.get_by_role("button", name="Reject finding 2").click()
        expect(page.get_by_role("button", name="Reject finding 2")).to_have_attribute("aria-pressed", "true")
        page.locator("body").press("j")
        page.wait_for_function("document.getElementById('outline').width > 0")
        page.screenshot(path=os.path.join(shots, "review-page-decided.png"))
        page.get_by_role("button", name="Sign", exact=True).click()
        expect(page.locator("#sign-result")).to_contain_text("Signed by dr-reader")
        expect(page.locator("#status")).to_contain_text("signed")
        page.screenshot(path=os.path.join(shots, "review-page-signed.png"))
        seen["overflows"] = page.evaluate(
            "document.documentElement.scrollWidth > window.innerWidth")
    print(json.dumps(seen))


if __name__ == "__main__":
    main(*sys.argv[1:6])
