#!/usr/bin/env python3
"""The live pre-copy benchmarks (issue 3), medians of --runs repetitions,
each against a reference measured in the same run.

  converge  4 GiB standard mix, 4 channels, loopback, max-bandwidth 1 GB/s,
            2 writers dirtying 100 MB/s over a 512 MiB hot set (vmig bench
            --live): total time, downtime, passes, throttle. References: the
            same image migrated stopped over the same link (vmig bench without
            --live), and the ideal time (non-zero bytes / link rate).
  throttle  the same image, max-bandwidth 200 MB/s, writers dirtying 400 MB/s:
            converges only by throttling; throttle adaptive (default) against
            QEMU's ladder (throttle ladder), alternating.
  tracker   what the tracker costs the writers (bench_track): throughput and
            CPU per GB with wp-async and wp-sync against tracking off, at the
            converge case's 100 MB/s and unlimited.

The destination is prefaulted (a VMM with preallocated guest RAM), so that the
link, not the 2-core machine's first-touch cost, is the limit; --cold runs the
converge case on fresh destination memory too (docs/benchmarks.md explains).

Usage: bench/run_live.py BUILD_DIR [--runs N] [--size 4G] [--idle S]
                         [--only converge,throttle,tracker] [--cold] [--markdown]
"""
import argparse
import json
import statistics
import subprocess
import sys
import time


def run_json(cmd):
    out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def bench(build, size, bw, live=None, dest="--prefault", extra=()):
    cmd = [f"{build}/tools/vmig/vmig", "bench", "--size", size, dest, "--channels", "4",
           "--max-bandwidth", str(bw), "--compression", "none", "--json", "--quiet", *extra]
    if live:
        cmd += ["--live", "--hot-set", "512M", "--dirty-rate", str(live)]
    j = run_json(cmd)
    b = j["bench"]
    if not j["ok"] or not b["verified"]:
        sys.exit(f"vmig bench failed: {j.get('error')}")
    r = {"seconds": j["seconds"], "downtime": j["downtime_seconds"], "passes": j["passes"],
         "throttle": j["throttle_max_pct"], "tracker": j["dirty_track"], "cpu": b["cpu_seconds"]}
    if live:
        lv = b["live"]
        if not lv["same_at_switchover"]:
            sys.exit("vmig bench --live: the destination differs from the source at switchover")
        r.update(ideal=lv["ideal_seconds"], over_ideal=lv["time_over_ideal"],
                 writer_mbps=lv["writer_bytes_per_second"] / 1e6)
    return r


def med(rows, key):
    return statistics.median(r[key] for r in rows)


def idle(s):
    if s > 0:
        time.sleep(s)


def converge(a, dest):
    live, stopped = [], []
    for _ in range(a.runs):
        idle(a.idle)
        stopped.append(bench(a.build, a.size, 1000000000, dest=dest))
        idle(a.idle)
        live.append(bench(a.build, a.size, 1000000000, live=100000000, dest=dest))
    t, ts = med(live, "seconds"), med(stopped, "seconds")
    return {
        "case": f"converge ({dest[2:]})",
        "live_seconds": t,
        "stopped_seconds": ts,
        "live_over_stopped": t / ts,
        "ideal_seconds": live[0]["ideal"],
        "live_over_ideal": med(live, "over_ideal"),
        "downtime_ms": med(live, "downtime") * 1e3,
        "downtime_ms_max": max(r["downtime"] for r in live) * 1e3,
        "passes": med(live, "passes"),
        "throttle_max": max(r["throttle"] for r in live),
        "writer_mbps": med(live, "writer_mbps"),
        "tracker": live[0]["tracker"],
        "runs": [r["seconds"] for r in live],
    }


def throttle(a):
    res = {"adaptive": [], "ladder": []}
    for _ in range(a.runs):
        for pol in ("ladder", "adaptive"):
            idle(a.idle)
            res[pol].append(bench(a.build, a.size, 200000000, live=400000000,
                                  extra=("--throttle", pol)))
    out = {"case": "throttle (400 MB/s dirty, 200 MB/s link)"}
    for pol, rows in res.items():
        out[pol] = {
            "seconds": med(rows, "seconds"),
            "downtime_ms": med(rows, "downtime") * 1e3,
            "passes": med(rows, "passes"),
            "throttle_pct": med(rows, "throttle"),
            "writer_mbps": med(rows, "writer_mbps"),
            "over_ideal": med(rows, "over_ideal"),
            "runs": [r["seconds"] for r in rows],
        }
    out["adaptive_over_ladder"] = out["adaptive"]["seconds"] / out["ladder"]["seconds"]
    return out


def tracker(a):
    out = {"case": "tracker cost (bench_track, 2 writers, 512 MiB, sync every 100 ms)"}
    for label, rate in (("at 100 MB/s", "100000000"), ("unlimited", "0")):
        txt = subprocess.run([f"{a.build}/bench/bench_track", "--rate", rate, "--runs",
                              str(a.runs), "--seconds", "2"], check=True, stdout=subprocess.PIPE,
                             text=True).stdout
        out[label] = txt.strip()
    return out


def main():
    p = argparse.ArgumentParser()
    p.add_argument("build")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--size", default="4G")
    p.add_argument("--idle", type=float, default=5)
    p.add_argument("--only", default="converge,throttle,tracker")
    p.add_argument("--cold", action="store_true")
    p.add_argument("--markdown", action="store_true")
    a = p.parse_args()
    only = a.only.split(",")
    results = []
    if "converge" in only:
        results.append(converge(a, "--prefault"))
        if a.cold:
            results.append(converge(a, "--cold"))
    if "throttle" in only:
        results.append(throttle(a))
    if "tracker" in only:
        results.append(tracker(a))
    for r in results:
        if a.markdown and "live_seconds" in r:
            print(f"| {r['case']} | {r['live_seconds']:.3f} s | {r['stopped_seconds']:.3f} s "
                  f"({r['live_over_stopped']:.2f}x) | {r['live_over_ideal']:.2f}x of "
                  f"{r['ideal_seconds']:.3f} s | {r['downtime_ms']:.0f} ms (max "
                  f"{r['downtime_ms_max']:.0f}) | {r['passes']:g} | {r['throttle_max']}% |")
        elif "label" not in r and "at 100 MB/s" in r:
            print(r["case"])
            print(r["at 100 MB/s"])
            print(r["unlimited"])
        else:
            print(json.dumps(r, indent=1))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
