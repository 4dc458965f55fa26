"""Opens pulmo's review page on a study compared with a prior, in headless Chromium
(Debian's, through Playwright), on a server without tokens (loopback, anonymous reader).
Selects each finding that has a match in the prior and records what the prior panel beside
the slice shows: its caption and the prior slice it drew (the SOP Instance UID). Also records
the findings table's Change column and the resolved line, and saves a screenshot. Used by
tests/integration/followup.rs; prints one JSON line of what it saw.

usage: review_prior.py BASE_URL STUDY_UID SCREENSHOT_DIR
"""
import json
import os
import sys

from playwright.sync_api import expect

import headless


def main(base, study, shots):
    os.makedirs(shots, exist_ok=True)
    seen = {"matched": []}
    with headless.page() as page:
        page.goto(f"{base}/review/{study}")
        expect(page.locator("tr.finding").first).to_be_visible()
        expect(page.locator("#prior")).to_be_visible()
        rows = page.locator("tr.finding")
        seen["ids"] = [rows.nth(i).locator("th").inner_text() for i in range(rows.count())]
        seen["changes"] = [c.inner_text() for c in page.locator("tr.finding td.change").all()]
        seen["resolved"] = page.locator("#resolved").inner_text() if page.locator("#resolved").is_visible() else None
        canvas = page.locator("#prior-image")
        for i in range(rows.count()):
            rows.nth(i).locator("th").click()
            expect(rows.nth(i)).to_have_class("finding selected")
            if "(" not in seen["changes"][i]:
                expect(page.locator("#prior-label")).to_contain_text("has no match")
                continue
            expect(page.locator("#prior-label")).to_contain_text("outlined on its slice")
            seen["matched"].append({
                "id": seen["ids"][i],
                "caption": page.locator("#prior-label").inner_text(),
                "prior_sop": canvas.get_attribute("data-sop"),
                "drawn": page.evaluate(
                    "() => { const c = document.getElementById('prior-image');"
                    " const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
                    " let lit = 0; for (let i = 0; i < d.length; i += 4) if (d[i] > 30) lit++; return [c.width, c.height, lit]; }"),
            })
            if len(seen["matched"]) == 1:
                page.wait_for_function("document.getElementById('slice').naturalWidth > 0")
                page.screenshot(path=os.path.join(shots, "review-prior.png"))
    print(json.dumps(seen))


if __name__ == "__main__":
    main(*sys.argv[1:])
