#!/usr/bin/env python3
"""The detectors' validation protocol: leave one category out, over NAB's dev subset plus our
synthetic market-data scenarios (benches/scenarios.py).

NAB's rule is one parameter set for every file. To estimate how a setting does on data it was not
chosen on, every candidate setting is scored on every category; then, for each category in turn,
the candidate that is best on all the *other* categories is chosen and its score on the left-out
category recorded. The mean of those left-out scores, next to the in-sample scores of the setting
chosen on everything, shows how much of a gain is fitted to the dev files. Scores are NAB's
standard profile of the shipped `alert` column (what pages); the optimised-threshold score of the
same candidate, with its threshold chosen on the other categories too, is reported beside it.
Ties (within `--tie` points of left-out mean) go to the simpler candidate: the earlier in the list.

Usage: benches/protocol.py --bin target/release/prismwatch [--nab ../shared/nab] [--out DIR]
       [--candidates NAME,...] [--json FILE]
"""

import argparse
import json
import os
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))

# Candidate settings: lines under the `anomaly:` operator, YAML. The first is the shipped default
# (config/prismwatch.yaml); the others change one thing each, or a few that go together.
def _candidates():
    """The shipped setting, the combination rule by the alert threshold, then one change each
    (ablations and the alternatives the issue names). Simpler settings first: they win ties."""
    out = {"shipped": []}
    for combine in ["grouped", "max", "noisy_or"]:
        for thr in [0.55, 0.58, 0.6, 0.62, 0.65, 0.68]:
            out["%s_t%s" % (combine, thr)] = [
                "fusion: { combine: %s, alert_threshold: %s }" % (combine, thr)]
    for d in ["seasonal", "trend", "variance", "iforest", "drift", "art"]:
        out["without_" + d] = ["fusion: { weights: { %s: 0.0 } }" % d]
    out["with_zscore"] = ["fusion: { weights: { zscore: 1.0 } }"]
    out["windows_in_points_only"] = [
        "fusion: { calibration_window_secs: 0, refractory_secs: 0 }"]
    out["no_season_blending"] = ["seasonal: { blend_cycles: 0.0 }"]
    out["no_calibration"] = ["fusion: { calibration_window_points: 0 }"]
    out["anomalies_learnt_at_0.3"] = ["fusion: { calibration_anomaly_weight: 0.3 }"]
    out["confirm_1"] = ["fusion: { confirm_points: 1 }"]
    out["budget_1_per_3d"] = ["fusion: { false_alarm_points: 1000, false_alarm_secs: 259200 }"]
    return out


CANDIDATES = _candidates()


# Synthetic series kinds and the MarketPrism metric each stands for (`--per-metric`).
KINDS = [
    ("error_rate", "api_error_rate_percent"),
    ("connection", "exchange_connection_status"),
    ("msg_rate", "exchange_message_rate"),
    ("latency", "exchange_latency_ms"),
    ("disk", "disk_usage_percent"),
    ("cpu", "cpu_usage_percent"),
    ("memory", "memory_usage_percent"),
]


def per_metric(args, scorer):
    """Each synthetic kind scored with the generic operators and with its metric's own
    (`pipeline.metric_operators` of the shipped config, via `detect --metric`)."""
    synth = os.path.join(args.out, "synth")
    run([sys.executable, os.path.join(HERE, "scenarios.py"), synth])
    labels = json.load(open(os.path.join(synth, "labels.json")))
    print("| kind (metric) | files | windows | generic: alert, windows found, false alarms "
          "per 1,000 normal points | metric's own: alert, windows found, false alarms per 1,000 |")
    print("|---|---|---|---|---|")
    for kind, metric in KINDS:
        root = os.path.join(args.out, "kind", kind)
        shutil.rmtree(root, ignore_errors=True)
        data = os.path.join(root, "data")
        sub = {}
        for rel, w in labels.items():
            if kind in os.path.basename(rel):
                cat = rel.split("/")[0]
                os.makedirs(os.path.join(data, cat), exist_ok=True)
                os.symlink(os.path.abspath(os.path.join(synth, "data", rel)),
                           os.path.join(data, rel))
                sub[rel] = w
        with open(os.path.join(root, "labels.json"), "w") as f:
            json.dump(sub, f)
        cells = []
        for extra in [[], ["--metric", metric]]:
            res = os.path.join(root, "results" + ("_metric" if extra else ""))
            try:
                run([args.bin, "--config", args.config, "detect", "--input", data,
                     "--output", res] + extra, stderr=subprocess.DEVNULL)
            except subprocess.CalledProcessError:
                if not extra:
                    raise
                cells.append("no anomaly operator: threshold rules only, 0/%d, 0.00"
                             % sum(len(w) for w in sub.values()))
                continue
            r = score(scorer, data, os.path.join(root, "labels.json"), res,
                      ["--column", "alert", "--threshold", "0.5"])
            normal = 0  # rows outside every labelled window
            for rel, windows in sub.items():
                with open(os.path.join(data, rel)) as f:
                    stamps = [line.split(",")[0] for line in list(f)[1:]]
                normal += sum(1 for t in stamps
                              if not any(lo[:19] <= t <= hi[:19] for lo, hi in windows))
            fa = 1000.0 * r["fp_rows"] / max(1, normal)
            norm = r["normalised"]
            cells.append("%s, %d/%d, %.2f" % ("%.1f" % norm if norm is not None else "n/a",
                                              r["windows_detected"], r["windows"], fa))
        print("| %s (`%s`) | %d | %d | %s | %s |" % (
            kind, metric, len(sub), sum(len(w) for w in sub.values()), cells[0], cells[1]))


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, **kw)


def corpus(nab, synth_out, out):
    """A merged NAB-format corpus: NAB's dev categories and the synthetic ones, one labels file."""
    data = os.path.join(out, "data")
    if os.path.isdir(data):
        shutil.rmtree(data)
    os.makedirs(data)
    labels = json.load(open(os.path.join(nab, "labels.json")))
    for cat in sorted(os.listdir(os.path.join(nab, "data"))):
        os.symlink(os.path.abspath(os.path.join(nab, "data", cat)), os.path.join(data, cat))
    run([sys.executable, os.path.join(HERE, "scenarios.py"), synth_out])
    for cat in sorted(os.listdir(os.path.join(synth_out, "data"))):
        os.symlink(os.path.abspath(os.path.join(synth_out, "data", cat)), os.path.join(data, cat))
    labels.update(json.load(open(os.path.join(synth_out, "labels.json"))))
    with open(os.path.join(out, "labels.json"), "w") as f:
        json.dump(labels, f)
    return data, os.path.join(out, "labels.json")


def config_file(path, lines):
    with open(path, "w") as f:
        f.write("rules: { paths: [config/rules] }\npipeline:\n  operators:\n")
        f.write("    - dedup: {}\n    - zscore: {}\n    - anomaly:%s\n" % ("" if lines else " {}"))
        for l in lines:
            f.write("        %s\n" % l)


def score(scorer, data, labels, results, extra):
    out = subprocess.run(
        [sys.executable, scorer, "--data", data, "--labels", labels, "--results", results,
         "--profiles", "standard", "--json"] + extra,
        check=True, capture_output=True, text=True).stdout
    return json.loads(out)["profiles"]["standard"]


def normalised(parts):
    raw = sum(p["raw"] for p in parts)
    null = sum(p["null"] for p in parts)
    perfect = sum(p["perfect"] for p in parts)
    return 100.0 * (raw - null) / (perfect - null) if perfect != null else float("nan")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin", required=True)
    ap.add_argument("--nab", default=os.path.join(HERE, "..", "..", "shared", "nab"))
    ap.add_argument("--out", default="target/protocol")
    ap.add_argument("--candidates", default=None)
    ap.add_argument("--tie", type=float, default=0.5)
    ap.add_argument("--json", default=None)
    ap.add_argument("--per-metric", action="store_true",
                    help="score each synthetic kind generic vs with its metric's operators")
    ap.add_argument("--config", default="config/prismwatch.yaml",
                    help="the config whose metric_operators --per-metric measures")
    args = ap.parse_args()
    if args.per_metric:
        per_metric(args, os.path.join(args.nab, "nab_score.py"))
        return
    names = args.candidates.split(",") if args.candidates else list(CANDIDATES)
    os.makedirs(args.out, exist_ok=True)
    data, labels = corpus(args.nab, os.path.join(args.out, "synth"), args.out)
    scorer = os.path.join(args.nab, "nab_score.py")
    cats = sorted(os.listdir(data))

    def detect(name):
        """Scores the corpus with a candidate; its results are ~40 MB, kept only while needed."""
        cfg = os.path.join(args.out, name + ".yaml")
        config_file(cfg, CANDIDATES[name])
        res = os.path.join(args.out, "results", name)
        if not os.path.isdir(res):
            run([args.bin, "--config", cfg, "detect", "--input", data, "--output", res],
                stderr=subprocess.DEVNULL)
        return res

    per = {}  # candidate -> {"alert": {cat: part}, "dir": results}
    for name in names:
        res = detect(name)
        alert = score(scorer, data, labels, res, ["--column", "alert", "--threshold", "0.5"])
        shutil.rmtree(res)
        per[name] = {"alert": alert["per_category"], "dir": res}
        pc = alert["per_category"]
        print("%-34s alert %6.2f  NAB %6.2f  synth %6.2f  %s" % (
              name, normalised(list(pc.values())),
              normalised([v for c, v in pc.items() if not c.startswith("synth")]),
              normalised([v for c, v in pc.items() if c.startswith("synth")]),
              "  ".join("%s %.1f" % (c[:12], alert["per_category"][c]["normalised"] or 0.0)
                        for c in cats)), flush=True)

    def alert_score(name, subset):
        return normalised([per[name]["alert"][c] for c in subset])

    def best(subset):
        # The first candidate within `tie` of the best: the simpler one wins ties.
        scores = [(alert_score(n, subset), i, n) for i, n in enumerate(names)]
        top = max(s for s, _, _ in scores)
        return next(n for s, _, n in scores if s >= top - args.tie)

    rows = []
    for c in cats:
        others = [o for o in cats if o != c]
        chosen = best(others)
        detect(chosen)
        # The optimised threshold of the chosen candidate, chosen on the other categories too.
        opt_in = score(scorer, data, labels, per[chosen]["dir"], ["--only", ",".join(others)])
        thr = opt_in["threshold"]
        opt_out = score(scorer, data, labels, per[chosen]["dir"], ["--only", c, "--threshold", str(thr)])
        rows.append({
            "left_out": c, "chosen": chosen,
            "alert_left_out": alert_score(chosen, [c]),
            "alert_in_sample": alert_score(chosen, others),
            "optimised_left_out": opt_out["normalised"], "threshold": thr,
        })
    shutil.rmtree(os.path.join(args.out, "results"), ignore_errors=True)
    overall = best(cats)
    print("\nchosen on every category: %s (alert %.2f)" % (overall, alert_score(overall, cats)))
    print("\n| left out | chosen on the others | alert, left out | alert, the others (in sample) "
          "| optimised, left out (threshold from the others) |")
    print("|---|---|---|---|---|")
    for r in rows:
        print("| %s | %s | %.2f | %.2f | %.2f (%.3f) |" % (
            r["left_out"], r["chosen"], r["alert_left_out"], r["alert_in_sample"],
            r["optimised_left_out"] if r["optimised_left_out"] is not None else float("nan"),
            r["threshold"]))
    left = [r["alert_left_out"] for r in rows if r["alert_left_out"] == r["alert_left_out"]]
    ins = [alert_score(overall, [c]) for c in cats]
    ins = [x for x in ins if x == x]
    print("\nmean per category: in sample (%s) %.2f, left out %.2f, gap %.2f" % (
        overall, sum(ins) / len(ins), sum(left) / len(left),
        sum(ins) / len(ins) - sum(left) / len(left)))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"candidates": {n: {c: per[n]["alert"][c] for c in cats} for n in names},
                       "left_out": rows, "chosen": overall}, f, indent=1)


if __name__ == "__main__":
    main()
