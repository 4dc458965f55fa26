#!/usr/bin/env python3
"""pulmo against the Python stack users would pick instead, on the same generated series.

Entry point: `scripts/eval/bench` (runs this with the venv's python after `cargo build --release`).

For each slice count (default 100, 300, 600; 512 x 512, one chest phantom whose slice
spacing is chosen to give that count, so the anatomy and the network's work stay the same)
and each transfer syntax (explicit VR little endian, JPEG 2000 lossless), it runs, `--reps`
times and alternating which goes first:

  pulmo        target/release/pulmo analyze SERIES --device D --out DIR --no-sr --no-seg
               --no-images --no-capture  (a whole process: libtorch load included)
  ref-lungs    scripts/eval/reference_monai.py SERIES (pydicom + numpy + MONAI, the network on the
               lungs' bounding box; a whole process: Python, torch and MONAI imports included)
  ref-full     (with --refs lungs full) the same with --roi full: sliding window over the whole
               resampled volume, as MONAI's lung-nodule bundle does
  ref-tuned    (with --refs lungs tuned) ref-lungs in the number format pulmo runs in (bfloat16
               on a CPU with native bfloat16 when the manifest allows it) with channels-last
               weights on the CPU: what the reference gains from pulmo's engine settings, so
               the ratio to it is the like-for-like one

and prints Markdown tables: median wall time per stage (the reports' `timing_ms`) and end to
end (wall clock of the process, min-max over the reps), peak RSS of the process, the ratio
reference / pulmo, and whether the findings agree (matched within --tolerance-mm, unmatched on
each side, truth nodules found). `--json FILE` keeps every run.

    scripts/eval/bench --quick                      # 100 slices, explicit, 1 rep, ref-lungs: minutes
    scripts/eval/bench --reps 3                     # the full table for docs/benchmarks.md
    scripts/eval/bench --device cuda                # GPU: fp16 on both sides (manifest half_on_cuda)
    scripts/eval/bench --quick --refs lungs tuned   # also the reference tuned like pulmo's engine
"""
from __future__ import annotations

import argparse
import datetime
import json
import multiprocessing
import os
import pathlib
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import time
import tomllib

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[2]
PY = sys.executable
STAGES = ("decode", "preprocess", "inference", "postprocess", "total")
CODECS = {"explicit": "explicit VR LE", "j2k": "JPEG 2000 lossless"}


# ----------------------------------------------------------------------------- series


def series_dir(data: pathlib.Path, slices: int, codec: str, seed: int) -> pathlib.Path:
    return data / f"s{slices}-{codec}" / str(seed)


def make_series(data: pathlib.Path, slices: int, codec: str, seed: int) -> pathlib.Path:
    """The phantom series (made once, then reused): explicit rendered, JPEG 2000 transcoded."""
    out = series_dir(data, slices, codec, seed)
    done = out.parent / ".complete"
    if done.exists():
        return out
    shutil.rmtree(out.parent, ignore_errors=True)
    if codec == "explicit":
        log(f"rendering the {slices}-slice phantom (seed {seed})")
        subprocess.run([PY, str(ROOT / "scripts/model/phantom.py"), "--seed", str(seed), "--out", str(out.parent),
                        "--matrix", "512", "--slices", str(slices), "--syntax", "explicit"],
                       check=True, stdout=subprocess.DEVNULL)
    else:
        src = make_series(data, slices, "explicit", seed)
        log(f"transcoding the {slices}-slice phantom to JPEG 2000 lossless")
        out.mkdir(parents=True)
        files = sorted(src.iterdir())
        with multiprocessing.Pool(os.cpu_count()) as pool:
            pool.starmap(transcode_j2k, [(f, out / f.name) for f in files])
        shutil.copy(src.parent / "truth.json", out.parent / "truth.json")
    done.touch()
    return out


def transcode_j2k(src: pathlib.Path, dst: pathlib.Path) -> None:
    import pydicom
    from pydicom.uid import JPEG2000Lossless
    ds = pydicom.dcmread(src)
    ds.compress(JPEG2000Lossless, encoding_plugin="pylibjpeg", generate_instance_uid=False)
    ds.save_as(dst, enforce_file_format=True)


# ----------------------------------------------------------------------------- runs


def run(cmd: list[str], out: pathlib.Path) -> dict:
    """Runs one pipeline process; wall seconds, peak RSS (MiB) and the report it wrote."""
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    with open(out / "log.txt", "w") as logf:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, cwd=ROOT)
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        except BaseException:  # Ctrl-C or kill: take the pipeline process down too
            proc.kill()
            raise
        wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"failed ({status}): {' '.join(cmd)}\n{(out / 'log.txt').read_text()[-3000:]}")
    reports = [p for p in out.glob("*.json")]
    if len(reports) != 1:
        sys.exit(f"expected one report in {out}, found {len(reports)}")
    report = json.loads(reports[0].read_text())
    return {"wall_s": wall, "max_rss_mib": usage.ru_maxrss / 1024, "user_s": usage.ru_utime,
            "sys_s": usage.ru_stime, "timing_ms": report["timing_ms"], "findings": report["findings"],
            "precision": report.get("precision", "float32"),
            "tiles": tiles_of(report, out / "log.txt"), "load": os.getloadavg()[0]}


def tiles_of(report: dict, log_path: pathlib.Path) -> int | None:
    if "reference" in report:
        return report["reference"]["tiles"]
    for line in log_path.read_text().splitlines():  # pulmo's closing line: "... N tiles in M batches"
        if " tiles in " in line:
            return int(line.split(" tiles in ")[0].split()[-1])
    return None


def commands(args, series: pathlib.Path, out: pathlib.Path) -> dict[str, list[str]]:
    pulmo = [str(args.pulmo), "--log", "warn", "analyze", str(series), "--device", args.device,
             "--precision", args.precision, "--model", str(args.model), "--out", str(out), "--no-sr",
             "--no-seg", "--no-images", "--no-capture"]
    ref = [PY, str(ROOT / "scripts/eval/reference_monai.py"), str(series), "--model", str(args.model),
           "--device", args.device, "--threads", str(args.threads), "--out", str(out)]
    if args.half:
        ref.append("--half")
    tools = {"pulmo": pulmo}
    for roi in args.refs:
        if roi == "tuned":
            # pulmo's report says which format its --precision resolved to; the first rep runs
            # pulmo before the references, so ref-tuned is only ever asked for once it is known.
            if args.pulmo_precision:
                tuned = ref + ["--roi", "lungs", "--precision", args.pulmo_precision]
                tools["ref-tuned"] = tuned + ([] if args.device.startswith("cuda") else ["--channels-last"])
        else:
            tools[f"ref-{roi}"] = ref + ["--roi", roi]
    return tools


# ----------------------------------------------------------------------------- agreement


def distance(a, b) -> float:
    return float(np.linalg.norm(np.array(a, float) - np.array(b, float)))


def match(ours: list[dict], theirs: list[dict], tol: float) -> list[tuple[dict, dict, float]]:
    """Greedy one-to-one pairs, nearest first, centres within `tol` mm."""
    pairs = sorted((distance(a["center_patient_mm"], b["center_patient_mm"]), i, j)
                   for i, a in enumerate(ours) for j, b in enumerate(theirs))
    used_a, used_b, out = set(), set(), []
    for d, i, j in pairs:
        if d <= tol and i not in used_a and j not in used_b:
            used_a.add(i), used_b.add(j)
            out.append((ours[i], theirs[j], d))
    return out


def truth_found(findings: list[dict], nodules: list[dict], tol: float) -> int:
    """Truth nodules with a finding within max(radius, tol) of their centre."""
    return sum(any(distance(f["center_patient_mm"], n["center_patient_mm"]) <= max(n["diameter_mm"] / 2, tol)
                   for f in findings) for n in nodules)


def agreement(pulmo: dict, ref: dict, truth: list[dict], tol: float) -> dict:
    pairs = match(pulmo["findings"], ref["findings"], tol)
    strong = [f for f in pulmo["findings"] if f["score"] >= 0.9]
    strong_pairs = match(strong, ref["findings"], tol)
    return {"pulmo": len(pulmo["findings"]), "ref": len(ref["findings"]), "matched": len(pairs),
            "only_pulmo": len(pulmo["findings"]) - len(pairs), "only_ref": len(ref["findings"]) - len(pairs),
            "strong": len(strong), "strong_matched": len(strong_pairs),
            "median_centre_mm": statistics.median([d for *_, d in pairs]) if pairs else None,
            "median_diam_mm": statistics.median([abs(a["diameter_mm"] - b["diameter_mm"]) for a, b, _ in pairs])
            if pairs else None,
            "truth": len(truth), "truth_pulmo": truth_found(pulmo["findings"], truth, tol),
            "truth_ref": truth_found(ref["findings"], truth, tol)}


# ----------------------------------------------------------------------------- tables


def med(runs: list[dict], key) -> float:
    return statistics.median(key(r) for r in runs)


def fmt_s(ms: float) -> str:
    return f"{ms / 1e3:.2f}"


def timing_table(results: dict) -> list[str]:
    lines = ["| series | codec | pipeline | decode | preprocess | inference | postprocess | total (report) "
             "| wall median (min-max) | start + scan | CPU user + sys | tiles | peak RSS |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for (slices, codec), tools in results.items():
        for name, runs in tools.items():
            st = [fmt_s(med(runs, lambda r, s=s: r["timing_ms"].get(s, 0.0))) for s in STAGES]
            walls = [r["wall_s"] for r in runs]
            other = med(runs, lambda r: r["wall_s"] - r["timing_ms"]["total"] / 1e3)
            lines.append(f"| {slices}x512x512 | {CODECS[codec]} | {name} | " + " | ".join(st[:-1])
                         + f" | {st[-1]} | **{statistics.median(walls):.2f}** ({min(walls):.2f}-{max(walls):.2f}) "
                         f"| {other:.2f} | {med(runs, lambda r: r['user_s'] + r['sys_s']):.1f} | {runs[0]['tiles']} "
                         f"| {med(runs, lambda r: r['max_rss_mib']):.0f} MiB |")
    return lines


def ratio_table(results: dict, refs: list[str]) -> list[str]:
    head = "| series | codec | " + " | ".join(f"{r} / pulmo, median wall | best wall | median report total"
                                             for r in refs) + " |"
    lines = [head, "|---|---|" + "---:|---:|---:|" * len(refs)]
    for (slices, codec), tools in results.items():
        p = tools["pulmo"]
        cells = []
        for r in refs:
            q = tools[f"ref-{r}"]
            cells.append(f"**{med(q, lambda x: x['wall_s']) / med(p, lambda x: x['wall_s']):.2f}x**")
            cells.append(f"{min(x['wall_s'] for x in q) / min(x['wall_s'] for x in p):.2f}x")
            cells.append(f"{med(q, lambda x: x['timing_ms']['total']) / med(p, lambda x: x['timing_ms']['total']):.2f}x")
        lines.append(f"| {slices}x512x512 | {CODECS[codec]} | " + " | ".join(cells) + " |")
    return lines


def scaling_table(results: dict) -> list[str]:
    """Wall and report total per config relative to the smallest slice count of its codec."""
    lines = ["| codec | pipeline | slices | x slices | x median wall | x best wall | x report total |",
             "|---|---|---:|---:|---:|---:|---:|"]
    by_codec: dict[str, list] = {}
    for (slices, codec), tools in results.items():
        by_codec.setdefault(codec, []).append((slices, tools))
    for codec, rows in by_codec.items():
        rows.sort(key=lambda r: r[0])
        base_slices, base = rows[0]
        for name in base:
            w0 = med(base[name], lambda r: r["wall_s"])
            b0 = min(r["wall_s"] for r in base[name])
            t0 = med(base[name], lambda r: r["timing_ms"]["total"])
            for slices, tools in rows:
                lines.append(f"| {CODECS[codec]} | {name} | {slices} | {slices / base_slices:.1f} | "
                             f"{med(tools[name], lambda r: r['wall_s']) / w0:.2f} | "
                             f"{min(r['wall_s'] for r in tools[name]) / b0:.2f} | "
                             f"{med(tools[name], lambda r: r['timing_ms']['total']) / t0:.2f} |")
    return lines


def agreement_table(agree: dict, tol: float) -> list[str]:
    lines = [f"| series | codec | reference | pulmo findings | ref findings | matched <= {tol:g} mm | only pulmo "
             "| only ref | pulmo score >= 0.9 matched | median centre distance | median abs diameter diff "
             "| truth found pulmo / ref |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for (slices, codec, ref), a in agree.items():
        c = "-" if a["median_centre_mm"] is None else f"{a['median_centre_mm']:.2f} mm"
        d = "-" if a["median_diam_mm"] is None else f"{a['median_diam_mm']:.2f} mm"
        lines.append(f"| {slices}x512x512 | {CODECS[codec]} | {ref} | {a['pulmo']} | {a['ref']} | {a['matched']} "
                     f"| {a['only_pulmo']} | {a['only_ref']} | {a['strong_matched']} / {a['strong']} | {c} | {d} "
                     f"| {a['truth_pulmo']} / {a['truth_ref']} of {a['truth']} |")
    return lines


# ----------------------------------------------------------------------------- main


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def machine() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor())
    rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout
    return {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "cpu": cpu, "cores": os.cpu_count(), "load": os.getloadavg(), "git": rev.strip(),
            "python": platform.python_version()}


def parse() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--slices", type=int, nargs="+", default=[100, 300, 600])
    ap.add_argument("--codecs", nargs="+", choices=list(CODECS), default=list(CODECS))
    ap.add_argument("--reps", type=int, default=3, help="runs of each pipeline per series (median reported)")
    ap.add_argument("--refs", nargs="+", choices=["lungs", "full", "tuned"], default=["lungs"],
                    help="reference variants: network on the lungs' box (default), or also on the whole "
                         "volume (`full`: 7x the tiles, about 3 minutes a run on 2 cores)")
    ap.add_argument("--quick", action="store_true", help="100 slices, explicit, 1 rep")
    ap.add_argument("--device", default="cpu", help="cpu or cuda[:N] for both pipelines")
    ap.add_argument("--half", action="store_true",
                    help="fp16 reference on CUDA (pulmo: the manifest's half_on_cuda); default on cuda")
    ap.add_argument("--precision", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                    help="pulmo's --precision (ref-lungs and ref-full stay float32 on the CPU)")
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads of the reference")
    ap.add_argument("--seed", type=int, default=9001, help="phantom seed")
    ap.add_argument("--data", type=pathlib.Path,
                    default=pathlib.Path(os.environ.get("PULMO_BENCH_DATA", "/tmp/pulmo-bench")),
                    help="where series are made once and runs write (default /tmp/pulmo-bench)")
    ap.add_argument("--model", type=pathlib.Path, default=ROOT / "models/pulmo-nodule-v1")
    ap.add_argument("--pulmo", type=pathlib.Path, default=ROOT / "target/release/pulmo")
    ap.add_argument("--tolerance-mm", type=float, default=5.0, help="centres closer than this agree")
    ap.add_argument("--json", type=pathlib.Path, help="also write every run here")
    ap.add_argument("--tables-from", type=pathlib.Path, metavar="JSON",
                    help="print the tables of an earlier (or interrupted) run's --json file; runs nothing")
    args = ap.parse_args()
    if args.quick:
        args.slices, args.codecs, args.reps = [100], ["explicit"], 1
    manifest = tomllib.loads((args.model / "manifest.toml").read_text())
    if args.device.startswith("cuda") and manifest.get("precision", {}).get("half_on_cuda"):
        args.half = True  # pulmo runs fp16 there; so does the reference
    if args.half and not args.device.startswith("cuda"):
        ap.error("--half needs --device cuda")
    args.pulmo_precision = None  # read from pulmo's first report (measure)
    return args


def main() -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("terminated"))
    args = parse()
    if args.tables_from:
        saved = json.loads(args.tables_from.read_text())
        info = saved["machine"]
        results = {(int(k.split("-")[0]), k.split("-")[1]): v for k, v in saved["runs"].items()}
        results = {cfg: tools for cfg, tools in results.items() if len(tools) == 1 + len(args.refs)}
        args.reps = min(len(runs) for tools in results.values() for runs in tools.values())
        args.device, args.half = saved["args"]["device"], saved["args"]["half"] == "True"
        args.pulmo_precision = saved["args"].get("pulmo_precision", "float32")
    else:
        info = machine()
        results = measure(args, info)
    info.setdefault("load_end", os.getloadavg())
    agree = {}
    for cfg, tools in results.items():
        truth_file = series_dir(args.data, *cfg, args.seed).parent / "truth.json"
        truth = json.loads(truth_file.read_text())["cases"][0]["nodules"]
        for ref in args.refs:
            agree[(*cfg, f"ref-{ref}")] = agreement(tools["pulmo"][0], tools[f"ref-{ref}"][0], truth,
                                                    args.tolerance_mm)
    print("\n".join(summary(info, args, results, agree)))
    if args.json:
        save(args.json, info, args, results, agree)


def measure(args, info: dict) -> dict:
    """Every run, alternating which pipeline goes first: {(slices, codec): {name: [run]}}."""
    log(f"{info['cpu']}, {info['cores']} cores, load {info['load'][0]:.2f}, git {info['git']}")
    configs = [(s, c) for s in args.slices for c in args.codecs]
    series = {cfg: make_series(args.data, *cfg, args.seed) for cfg in configs}
    results: dict = {cfg: {} for cfg in configs}
    for rep in range(args.reps):
        for cfg in configs:
            names = ["pulmo"] + [f"ref-{r}" for r in args.refs]
            names = names[rep % len(names):] + names[:rep % len(names)]  # alternate who goes first
            for name in names:
                out = args.data / "runs" / f"s{cfg[0]}-{cfg[1]}-{name}"
                r = run(commands(args, series[cfg], out)[name], out)
                if name == "pulmo":
                    args.pulmo_precision = r["precision"]
                results[cfg].setdefault(name, []).append(r)
                if args.json:  # kept up to date, so that an interrupted run leaves its numbers
                    save(args.json, info, args, results, {})
                log(f"rep {rep + 1}/{args.reps} {cfg[0]} slices {cfg[1]} {name}: {r['wall_s']:.1f} s wall, "
                    f"{r['timing_ms']['total'] / 1e3:.1f} s report, {len(r['findings'])} findings, "
                    f"{r['max_rss_mib']:.0f} MiB, load {r['load']:.2f}")
    return results


def summary(info: dict, args, results: dict, agree: dict) -> list[str]:
    lines = [f"Machine: {info['cpu']}, {info['cores']} cores; {info['date']}; git {info['git']}; device "
             f"{args.device}, pulmo in {args.pulmo_precision}, reference in {'float16' if args.half else 'float32'}"
             f"{' (ref-tuned: ' + args.pulmo_precision + ')' if 'tuned' in args.refs else ''}; load average {info['load'][0]:.2f} at the start, "
             f"{info['load_end'][0]:.2f} at the end; {args.reps} rep(s), alternating order.", "",
             "Median seconds per stage (`timing_ms` of each report) and end to end (process wall clock):", ""]
    lines += timing_table(results) + ["", "Reference / pulmo (above 1: pulmo is faster; best = fastest of the "
                                      "reps, the figure least disturbed by other load):", ""]
    lines += ratio_table(results, args.refs) + ["", "Cost against slice count:", ""]
    lines += scaling_table(results) + ["", "Agreement of the findings (first rep):", ""]
    return lines + agreement_table(agree, args.tolerance_mm)


def save(path: pathlib.Path, info: dict, args, results: dict, agree: dict) -> None:
    path.write_text(json.dumps({"machine": info, "args": {k: str(v) for k, v in vars(args).items()},
                                "runs": {f"{s}-{c}": v for (s, c), v in results.items()},
                                "agreement": {"-".join(map(str, k)): v for k, v in agree.items()}},
                               indent=1) + "\n")


if __name__ == "__main__":
    main()
