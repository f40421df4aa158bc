#!/usr/bin/env python3
"""Synthetic market-data scenarios in NAB's format, for the detector validation protocol.

Writes OUT/data/<category>/<name>.csv (`timestamp,value`) and OUT/labels.json (NAB's combined
windows), so `nab_score.py` scores them like NAB's own files. Two categories:

- `synthMarket`: exchange metrics at 1-minute resolution over 9 days: message rates with a daily
  session cycle, a weekend dip and bursts; latency with blips; a binary connection status.
- `synthService`: service metrics at 1-minute resolution over 8 days: error rates with benign
  single-point blips, CPU with a daily cycle, disk with a slow drift and daily clean-ups, memory
  with a leak that a restart resets.

Every series carries the normal behaviour of its kind (daily and weekly seasonality, bursts,
benign blips, missing points, a restart's reset, slow drifts), and most carry one or two anomalies
of one kind: spike, repeated spikes, level shift, dropout to zero, flatline, variance change,
seasonal break, sustained error-rate increase, drift, trend acceleration. Windows follow NAB: 10 %
of a file's rows shared by its anomalies, centred on each onset.

Deterministic: the same seed gives the same files. Standard library only.
Usage: benches/scenarios.py OUT [--seed N]
"""

import argparse
import json
import math
import os
import random
from datetime import datetime, timedelta, timezone

T0 = datetime(2026, 3, 2, tzinfo=timezone.utc)  # a Monday, 00:00 UTC
STEP = 60  # seconds


def stamp(i):
    return (T0 + timedelta(seconds=i * STEP)).strftime("%Y-%m-%d %H:%M:%S")


def day_phase(i):
    return (i * STEP % 86400) / 86400.0


def weekday(i):
    return (T0 + timedelta(seconds=i * STEP)).weekday()


def session_cycle(i):
    """Market activity over a UTC day: Asia morning, Europe, the US open; quiet late evening."""
    h = day_phase(i) * 24
    return (
        0.55
        + 0.25 * math.exp(-((h - 2.5) ** 2) / 8)
        + 0.30 * math.exp(-((h - 9) ** 2) / 6)
        + 0.45 * math.exp(-((h - 15) ** 2) / 5)
    )


def weekend_factor(i):
    return 0.7 if weekday(i) >= 5 else 1.0


class Gen:
    def __init__(self, rng, n):
        self.rng = rng
        self.n = n
        self.drop = set()  # rows that are never published (missing points)
        self.onsets = []

    def gaps(self, count, longest):
        for _ in range(count):
            start = self.rng.randrange(self.n // 10, self.n - longest)
            for j in range(start, start + self.rng.randint(1, longest)):
                self.drop.add(j)

    def onset(self, lo_frac=0.45, hi_frac=0.95):
        i = self.rng.randrange(int(self.n * lo_frac), int(self.n * hi_frac))
        self.onsets.append(i)
        return i


def message_rate(g, kind):
    """Messages per minute of one exchange: session cycle, weekend dip, bursts (normal)."""
    r = g.rng
    level = r.uniform(800, 3000)
    bursts = {}
    for _ in range(g.n // 240):  # about six bursts a day, 1-8 minutes at 1.5-3x
        s = r.randrange(g.n)
        f = r.uniform(1.5, 3.0)
        for j in range(s, min(g.n, s + r.randint(1, 8))):
            bursts[j] = f
    v = [
        level * session_cycle(i) * weekend_factor(i) * bursts.get(i, 1.0) * math.exp(r.gauss(0, 0.08))
        for i in range(g.n)
    ]
    g.gaps(3, 20)
    if kind == "dropout":
        s = g.onset()
        for j in range(s, s + r.randint(5, 30)):
            v[j] = 0.0
    elif kind == "level_shift":
        s = g.onset()
        f = r.choice([0.4, 0.5, 2.2])
        for j in range(s, g.n):
            v[j] *= f
    elif kind == "seasonal_break":
        # The session peaks do not come: activity stays at the night level for a day.
        s = g.onset(0.5, 0.8)
        for j in range(s, min(g.n, s + 1440)):
            v[j] = level * 0.55 * weekend_factor(j) * math.exp(r.gauss(0, 0.08))
    elif kind == "flatline":
        s = g.onset()
        for j in range(s, min(g.n, s + 180)):
            v[j] = v[s]
    return v


def latency(g, kind):
    """Milliseconds: log-normal around a base with a mild daily cycle, benign single-point blips."""
    r = g.rng
    base = r.uniform(20, 120)
    v = [base * (0.9 + 0.2 * session_cycle(i)) * math.exp(r.gauss(0, 0.12)) for i in range(g.n)]
    for _ in range(g.n // 300):
        v[r.randrange(g.n)] *= r.uniform(1.8, 2.5)
    g.gaps(2, 10)
    if kind == "spikes":
        for _ in range(2):
            s = g.onset(0.4, 0.95)
            for j in range(s, s + r.randint(1, 3)):
                v[j] = base * r.uniform(8, 15)
    elif kind == "variance":
        s = g.onset()
        for j in range(s, g.n):
            v[j] = base * (0.9 + 0.2 * session_cycle(j)) * math.exp(r.gauss(0, 0.6))
    elif kind == "level_shift":
        s = g.onset()
        for j in range(s, g.n):
            v[j] *= 2.0
    return v


def connection(g, kind):
    """Binary connection status: 1, with a one-minute reconnect now and then (normal)."""
    r = g.rng
    v = [1.0] * g.n
    for _ in range(3):
        v[r.randrange(g.n // 5, g.n)] = 0.0
    g.gaps(2, 5)
    if kind == "dropout":
        s = g.onset()
        for j in range(s, s + r.randint(8, 40)):
            v[j] = 0.0
    return v


def error_rate(g, kind):
    """Percent of failed requests: small, noisy, benign single-point blips of 2-3x the median."""
    r = g.rng
    base = r.uniform(0.05, 0.5)
    v = [max(0.0, base * (1 + r.gauss(0, 0.3))) for _ in range(g.n)]
    for _ in range(g.n // 150):
        v[r.randrange(g.n)] = base * r.uniform(2.0, 3.0)
    g.gaps(2, 10)
    if kind == "sustained":
        s = g.onset()
        f = r.uniform(4, 8)
        for j in range(s, min(g.n, s + r.randint(20, 90))):
            v[j] = base * f * (1 + r.gauss(0, 0.3))
    return v


def cpu(g, kind):
    """CPU percent: daily cycle, noise, a slow drift of a few percent over the week (normal)."""
    r = g.rng
    base, amp, drift = r.uniform(20, 50), r.uniform(5, 20), r.uniform(-0.5, 1.0)
    v = [
        base + amp * (session_cycle(i) - 0.8) + drift * i / 1440 + r.gauss(0, 2.0)
        for i in range(g.n)
    ]
    g.gaps(2, 30)
    if kind == "level_shift":
        s = g.onset()
        for j in range(s, g.n):
            v[j] += 15
    elif kind == "drift":
        # A runaway: the level leaves its baseline at 2 points an hour.
        s = g.onset(0.45, 0.8)
        for j in range(s, g.n):
            v[j] += (j - s) / 30.0
    elif kind == "variance":
        s = g.onset()
        for j in range(s, g.n):
            v[j] += r.gauss(0, 8.0)
    return [min(100.0, max(0.0, x)) for x in v]


def disk(g, kind):
    """Disk percent: a slow climb with a clean-up every night at 03:00 (normal)."""
    r = g.rng
    level, rate = r.uniform(30, 60), r.uniform(0.5, 2.0) / 1440  # 0.5-2 points a day
    v, x = [], level
    for i in range(g.n):
        x += rate + r.gauss(0, 0.01)
        if i % 1440 == 180:
            x -= rate * 1440 * 0.6
        v.append(x + r.gauss(0, 0.05))
    g.gaps(2, 15)
    if kind == "trend_acceleration":
        s = g.onset(0.45, 0.75)
        extra = 0.0
        for j in range(s, g.n):
            extra += rate * 6  # the climb gets seven times faster
            v[j] += extra
    return [min(100.0, x) for x in v]


def memory(g, kind):
    """Memory MB: a slow leak, reset by a restart every 2-3 days (normal)."""
    r = g.rng
    base = r.uniform(500, 2000)
    leak = base * 0.1 / 1440
    restarts = set()
    i = r.randrange(1440, 3 * 1440)
    while i < g.n:
        restarts.add(i)
        i += r.randrange(2 * 1440, 3 * 1440)
    v, x = [], base
    for i in range(g.n):
        x = base if i in restarts else x + leak
        v.append(x + r.gauss(0, base * 0.005))
    g.gaps(1, 20)
    if kind == "spikes":
        s = g.onset()
        v[s] *= 1.6
    return v


SCENARIOS = {
    "synthMarket": [
        ("binance_msg_rate", message_rate, None),
        ("okx_msg_rate", message_rate, "dropout"),
        ("bybit_msg_rate", message_rate, "level_shift"),
        ("deribit_msg_rate", message_rate, "seasonal_break"),
        ("coinbase_msg_rate", message_rate, "flatline"),
        ("binance_latency", latency, None),
        ("okx_latency", latency, "spikes"),
        ("bybit_latency", latency, "variance"),
        ("deribit_latency", latency, "level_shift"),
        ("binance_connection", connection, None),
        ("okx_connection", connection, "dropout"),
    ],
    "synthService": [
        ("gateway_error_rate", error_rate, None),
        ("collector_error_rate", error_rate, "sustained"),
        ("storage_error_rate", error_rate, "sustained"),
        ("gateway_cpu", cpu, None),
        ("collector_cpu", cpu, "level_shift"),
        ("storage_cpu", cpu, "drift"),
        ("monitor_cpu", cpu, "variance"),
        ("storage_disk", disk, None),
        ("archive_disk", disk, "trend_acceleration"),
        ("collector_memory", memory, None),
        ("gateway_memory", memory, "spikes"),
    ],
}
DAYS = {"synthMarket": 9, "synthService": 8}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    labels = {}
    for cat, items in SCENARIOS.items():
        os.makedirs(os.path.join(args.out, "data", cat), exist_ok=True)
        for k, (name, fn, kind) in enumerate(items):
            n = DAYS[cat] * 1440
            g = Gen(random.Random(args.seed * 1000 + k * 17 + len(cat)), n)
            v = fn(g, kind)
            rows = [i for i in range(n) if i not in g.drop]
            with open(os.path.join(args.out, "data", cat, name + ".csv"), "w") as f:
                f.write("timestamp,value\n")
                for i in rows:
                    f.write("%s,%.6g\n" % (stamp(i), v[i]))
            windows = []
            if g.onsets:
                half = max(1, int(len(rows) * 0.1 / len(g.onsets)) // 2)
                for o in sorted(g.onsets):
                    pos = min(range(len(rows)), key=lambda p: abs(rows[p] - o))
                    lo, hi = max(0, pos - half), min(len(rows) - 1, pos + half)
                    if windows and lo <= windows[-1][1]:
                        windows[-1][1] = hi  # overlapping windows become one, as in NAB
                        continue
                    windows.append([lo, hi])
            labels["%s/%s.csv" % (cat, name)] = [
                [stamp(rows[lo]) + ".000000", stamp(rows[hi]) + ".000000"] for lo, hi in windows
            ]
    with open(os.path.join(args.out, "labels.json"), "w") as f:
        json.dump(labels, f, indent=1, sort_keys=True)


if __name__ == "__main__":
    main()
