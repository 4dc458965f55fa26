"""pulmo's JSON reports as the model scripts read them (the scoring itself is `pulmo evaluate`)."""
from __future__ import annotations

import json
import pathlib


def load_reports(folder: pathlib.Path) -> dict[str, dict]:
    """Every pulmo.report/1 JSON in folder, keyed by series UID."""
    out = {}
    for p in sorted(folder.glob("*.json")):
        rep = json.loads(p.read_text())
        if rep.get("schema") == "pulmo.report/1":
            out[rep["series_instance_uid"]] = rep
    return out
