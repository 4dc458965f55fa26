#!/usr/bin/env python3
"""LUNA16-style FROC of pulmo reports against phantom truth.

    .venv/bin/python3 scripts/evaluate.py --truth SET/truth.json [SET2/truth.json ...] --reports REPORTS/ [--json]
    .venv/bin/python3 scripts/evaluate.py --truth ... --reports REPORTS/ --operating 0.8 0.9 0.95
    .venv/bin/python3 scripts/evaluate.py --self-test

Truth: schema pulmo.truth/1. Reports: one pulmo.report/1 JSON per series in REPORTS/ (any
file name), matched to truth by series_instance_uid; a truth series without a report counts
as a scan with no findings.

Rules (LUNA16): a finding hits a nodule when its centre lies within the nodule's radius
(diameter/2) of the nodule's centre; several hits on one nodule count once, with the best
score; nodules under 3 mm are excluded, and findings that hit only excluded nodules are
neither true nor false positives. Every other finding is a false positive.

Output: sensitivity at 1/8, 1/4, 1/2, 1, 2, 4, 8 false positives per scan, their mean (CPM),
sensitivity for nodules >= 6 mm at 1 FP/scan, and the median |diameter error| of each
detected nodule's best-scoring hit.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import sys

import numpy as np

FP_RATES = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
MIN_DIAMETER = 3.0


def match_scan(nodules: list[dict], findings: list[dict]) -> tuple[list, list]:
    """Per nodule its best hit (score, finding) or None; and the false-positive scores."""
    best: list = [None] * len(nodules)
    fps: list[float] = []
    centres = np.array([n["center_patient_mm"] for n in nodules], float).reshape(-1, 3)
    radii = np.array([n["diameter_mm"] / 2 for n in nodules], float)
    for f in findings:
        d = np.linalg.norm(centres - np.asarray(f["center_patient_mm"], float), axis=1)
        hits = np.nonzero(d <= radii)[0]
        counted = [h for h in hits if nodules[h]["diameter_mm"] >= MIN_DIAMETER]
        if len(hits) and not counted:
            continue  # only excluded nodules: neither TP nor FP
        if not counted:
            fps.append(float(f["score"]))
            continue
        for h in counted:
            if best[h] is None or f["score"] > best[h][0]:
                best[h] = (float(f["score"]), f)
    return best, fps


def sensitivity_at(hit_scores: np.ndarray, n_nodules: int, fp_scores: np.ndarray, n_scans: int,
                   rate: float) -> float:
    """Best sensitivity at a score threshold whose false positives per scan stay <= rate."""
    if n_nodules == 0:
        return float("nan")
    thresholds = np.unique(np.concatenate([hit_scores, fp_scores, [np.inf]]))
    best = 0.0
    for t in thresholds:
        if (fp_scores >= t).sum() / n_scans <= rate:
            best = max(best, float((hit_scores >= t).sum()) / n_nodules)
    return best


def evaluate(truth: dict, reports: dict[str, dict]) -> dict:
    """FROC summary for the truth cases, given reports keyed by series UID."""
    hit_scores, big_hits, fp_scores, diam_err = [], [], [], []
    n_nod = n_big = 0
    cases = truth["cases"]
    for case in cases:
        rep = reports.get(case["series_instance_uid"], {"findings": []})
        nodules = case["nodules"]
        best, fps = match_scan(nodules, rep["findings"])
        fp_scores += fps
        for nod, b in zip(nodules, best):
            if nod["diameter_mm"] < MIN_DIAMETER:
                continue
            n_nod += 1
            big = nod["diameter_mm"] >= 6.0
            n_big += big
            if b is not None:
                hit_scores.append(b[0])
                if big:
                    big_hits.append(b[0])
                if "diameter_mm" in b[1]:
                    diam_err.append(abs(float(b[1]["diameter_mm"]) - nod["diameter_mm"]))
    hs, fs, bs = np.array(hit_scores), np.array(fp_scores), np.array(big_hits)
    n_scans = max(1, len(cases))
    sens = {str(r): sensitivity_at(hs, n_nod, fs, n_scans, r) for r in FP_RATES}
    return {
        "scans": len(cases), "nodules": n_nod, "nodules_ge_6mm": n_big,
        "detected_any_score": len(hs), "false_positives_total": len(fs),
        "sensitivity_at_fp_per_scan": sens,
        "cpm": float(np.mean(list(sens.values()))) if n_nod else float("nan"),
        "sensitivity_ge_6mm_at_1fp": sensitivity_at(bs, n_big, fs, n_scans, 1.0),
        "median_abs_diameter_error_mm": float(np.median(diam_err)) if diam_err else float("nan"),
    }


LUNG_RADS_ORDER = ("1", "2", "3", "4A", "4B", "4X")


def operating_points(truth: dict, reports: dict[str, dict], scores: list[float]) -> list[dict]:
    """At each candidate operating point: nodules called (a finding at or above it hits them),
    false calls per scan, and in how many scans the study category from the calls equals the
    one from the scan's true-positive findings alone (higher: false calls raised it; lower: a
    true nodule fell below the point)."""
    out = []
    for op in scores:
        called = n_nod = false = same = higher = lower = 0
        for case in truth["cases"]:
            findings = reports.get(case["series_instance_uid"], {"findings": []})["findings"]
            nodules = case["nodules"]
            centres = np.array([n["center_patient_mm"] for n in nodules], float).reshape(-1, 3)
            radii = np.array([n["diameter_mm"] / 2 for n in nodules], float)

            hits = [set(np.nonzero(np.linalg.norm(centres - np.asarray(f["center_patient_mm"], float), axis=1)
                                   <= radii)[0]) for f in findings]
            calls = [(f, h) for f, h in zip(findings, hits) if f["score"] >= op]
            true_hit = [f for f, h in zip(findings, hits) if h]
            false += sum(1 for _, h in calls if not h)
            called_ids = set().union(*(h for _, h in calls))
            for k, nod in enumerate(nodules):
                if nod["diameter_mm"] >= MIN_DIAMETER:
                    n_nod += 1
                    called += k in called_ids
            rank = lambda fs: max([LUNG_RADS_ORDER.index(f["lung_rads"]) for f in fs if "lung_rads" in f] + [0])
            got, ideal = rank([f for f, _ in calls]), rank(true_hit)
            same += got == ideal
            higher += got > ideal
            lower += got < ideal
        n_scans = max(1, len(truth["cases"]))
        out.append({"operating_score": op, "nodules_called": called, "nodules": n_nod,
                    "false_calls_per_scan": false / n_scans, "category_as_true_findings": same,
                    "category_higher": higher, "category_lower": lower, "scans": len(truth["cases"])})
    return out


def load_reports(folder: pathlib.Path) -> dict[str, dict]:
    """Every pulmo.report/1 JSON in folder, keyed by series UID."""
    out = {}
    for p in sorted(folder.glob("*.json")):
        rep = json.loads(p.read_text())
        if rep.get("schema") == "pulmo.report/1":
            out[rep["series_instance_uid"]] = rep
    return out


def _nod(c, d):
    return {"center_patient_mm": c, "diameter_mm": d}


def self_test() -> None:
    """Hand-made truth/report pairs with known answers."""
    truth = {"cases": [
        {"series_instance_uid": "A", "nodules": [_nod([0, 0, 0], 10.0), _nod([50, 0, 0], 4.0), _nod([0, 80, 0], 2.0)]},
        {"series_instance_uid": "B", "nodules": [_nod([10, 10, 10], 8.0)]},
        {"series_instance_uid": "C", "nodules": []},
    ]}
    reports = {
        "A": {"findings": [
            {"center_patient_mm": [4.9, 0, 0], "diameter_mm": 9.0, "score": 0.9},   # hit nodule 1 (r 5)
            {"center_patient_mm": [0, 0, 1], "diameter_mm": 11.0, "score": 0.5},    # second hit, counts once
            {"center_patient_mm": [0, 80.5, 0], "diameter_mm": 2.0, "score": 0.99},  # hits the 2 mm one: ignored
            {"center_patient_mm": [52.5, 0, 0], "diameter_mm": 4.0, "score": 0.3},  # just outside r 2: FP
        ]},
        "B": {"findings": [{"center_patient_mm": [10, 10, 13.9], "diameter_mm": 8.5, "score": 0.8},
                           {"center_patient_mm": [100, 0, 0], "score": 0.7}]},
        "C": {"findings": [{"center_patient_mm": [1, 2, 3], "score": 0.95}]},
    }
    r = evaluate(truth, reports)
    assert r["nodules"] == 3 and r["nodules_ge_6mm"] == 2, r
    assert r["false_positives_total"] == 3, r  # 0.3 (A), 0.7 (B), 0.95 (C)
    assert r["detected_any_score"] == 2, r
    s = r["sensitivity_at_fp_per_scan"]
    # 3 scans: <=1/8 FP/scan allows 0 FPs -> threshold above 0.95 -> nothing detected
    assert s["0.125"] == 0.0 and s["0.25"] == 0.0, s
    # 1/3 FP/scan (1 FP: 0.95) fits 0.5 -> thresholds 0.8..0.95 detect both (2/3)
    assert abs(s["0.5"] - 2 / 3) < 1e-9 and abs(s["8.0"] - 2 / 3) < 1e-9, s
    assert abs(r["sensitivity_ge_6mm_at_1fp"] - 1.0) < 1e-9, r
    assert abs(r["median_abs_diameter_error_mm"] - 0.75) < 1e-9, r  # |9-10|=1, |8.5-8|=0.5
    assert abs(r["cpm"] - (5 * 2 / 3) / 7) < 1e-9, r
    # missing report = scan with no findings; empty truth scan with no report adds no FP
    r2 = evaluate(truth, {})
    assert r2["cpm"] == 0.0 and r2["false_positives_total"] == 0
    # At 0.85: A's 0.9 calls nodule 1 (the 0.99 one hits only the excluded 2 mm nodule, so it
    # is no false call); B's 0.8 is below; C's 0.95 is the one false call.
    reports["A"]["findings"][0]["lung_rads"] = "4A"
    reports["C"]["findings"][0]["lung_rads"] = "3"
    (p,) = operating_points(truth, reports, [0.85])
    assert (p["nodules_called"], p["nodules"]) == (1, 3), p
    assert abs(p["false_calls_per_scan"] - 1 / 3) < 1e-9, p
    assert (p["category_as_true_findings"], p["category_higher"], p["category_lower"]) == (2, 1, 0), p
    print("self-test passed")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--truth", type=pathlib.Path, nargs="+", help="one or more truth.json files (cases merged)")
    ap.add_argument("--reports", type=pathlib.Path)
    ap.add_argument("--json", action="store_true", help="print the summary as JSON")
    ap.add_argument("--operating", type=float, nargs="+", metavar="SCORE",
                    help="also show, at each of these operating points, the nodules called, false calls per scan "
                         "and how often the study's Lung-RADS category matches its true findings' category")
    ap.add_argument("--self-test", action="store_true")
    args = ap.parse_args()
    if args.self_test:
        self_test()
        return
    if not args.truth or not args.reports:
        ap.error("--truth and --reports are required")
    cases = [case for path in args.truth for case in json.loads(path.read_text())["cases"]]
    reports = load_reports(args.reports)
    res = evaluate({"cases": cases}, reports)
    if args.operating:
        res["operating_points"] = operating_points({"cases": cases}, reports, args.operating)
    if args.json:
        print(json.dumps(res, indent=1))
        return
    print(f"scans {res['scans']}, nodules >= 3 mm {res['nodules']} ({res['nodules_ge_6mm']} >= 6 mm), "
          f"false positives {res['false_positives_total']}")
    for k, v in res["sensitivity_at_fp_per_scan"].items():
        print(f"  sensitivity at {float(k):>5.3f} FP/scan: {v:.3f}")
    print(f"CPM {res['cpm']:.3f}; >= 6 mm at 1 FP/scan {res['sensitivity_ge_6mm_at_1fp']:.3f}; "
          f"median |diameter error| {res['median_abs_diameter_error_mm']:.2f} mm")
    for p in res.get("operating_points", []):
        print(f"operating point {p['operating_score']}: {p['nodules_called']} of {p['nodules']} nodules called, "
              f"{p['false_calls_per_scan']:.2f} false calls per scan; study category as its true findings' in "
              f"{p['category_as_true_findings']} of {p['scans']} scans ({p['category_higher']} higher, "
              f"{p['category_lower']} lower)")


if __name__ == "__main__":
    sys.exit(main())
