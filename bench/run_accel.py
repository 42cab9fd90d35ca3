#!/usr/bin/env python3
"""The zero-page offload benchmark: does checking zero pages through a DSA
work queue's pipeline (accel=dsa-model: the software model of the device,
with the hybrid CPU fallback) cost the migration any throughput against the
CPU path (accel=cpu), and how much of the check leaves the channel threads?

  image    --size (default 4G) standard mix, 4 channels, plain loopback,
           destination in /dev/shm (vmig bench --dest-dir), cold destination
  runs     cpu and dsa-model alternate (cpu, model, model, cpu, ...) so that
           drifts of this VM hit both alike; --idle seconds between runs

Per backend: the median total time, the channel threads' CPU time (sum over
the 4 channels), the model thread's CPU time, and who answered the pages:
the device, the channel threads (of those, pages taken from the tail of a
batch the device was behind on), or nobody (never-touched pages, zero
without reading). The ratio of the medians dsa-model / cpu is the pipeline's
cost; the goal is at most 1.05. The model spends host CPU for the device
(a real device spends none), so the channel threads' saving is the figure
that carries over to hardware, not the process total.

Exit status: 0 goal met, 1 missed or a run failed, 77 the device backend
cannot run here (not built, or no DSA work queue).

With --touch-zero the image's zero pages are written (a guest that zeroed
its memory), so whoever checks one reads all 4 KiB of it; by default they
are never touched, and both paths answer them without reading (the CPU path
after MADV_POPULATE_READ maps the kernel's zero page, the DSA path from
/proc/self/pagemap before submitting).

On a machine with DSA, --device dsa [--accel-path dsa:/dev/dsa/wq0.0]
compares the real device instead of the model.

Usage: bench/run_accel.py BUILD_DIR [--size 4G] [--runs 5] [--idle 20]
                          [--touch-zero] [--device dsa-model|dsa]
                          [--accel-path PATH] [--json-out FILE]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

RUN_TIMEOUT = 900


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def bench_once(a, accel):
    cmd = [a.vmig, "bench", "--size", a.size, "--channels", "4", "--json", "--quiet",
           "--dest-dir", a.dest_dir, "--compression", "none", "--accel", accel]
    if a.touch_zero:
        cmd.append("--touch-zero")
    if accel != "cpu" and a.accel_path:
        cmd += ["--accel-path", a.accel_path]
    p = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, timeout=RUN_TIMEOUT)
    try:
        j = json.loads(p.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        sys.exit(f"vmig bench --accel {accel} exited {p.returncode} without a JSON summary")
    if p.returncode != 0 or not j["ok"] or not j.get("bench", {}).get("verified"):
        if any(w in (j.get("error") or "") for w in ("not built", "no usable DSA", "no DSA")):
            log(f"skip: {j['error']}")
            sys.exit(77)
        sys.exit(f"vmig bench --accel {accel} failed (exit {p.returncode}): {j.get('error')}")
    acc = j["accel"]
    return {
        "seconds": j["seconds"],
        "channel_cpu": sum(c["cpu_seconds"] for c in j["channels"]),
        "device_cpu": acc["device_cpu_seconds"],
        "pages": j["normal_pages"] + j["zero_pages"],
        "zero_pages": j["zero_pages"],
        "device_pages": acc["device_pages"],
        "cpu_pages": acc["cpu_pages"],
        "tail_pages": acc["tail_pages"],
        "untouched": acc["untouched"],
        "faults": acc["faults"],
        "retries": acc["retries"],
        "fallbacks": acc["fallbacks"],
        "engine": acc["engine"],
    }


def med(runs, key):
    return statistics.median(r[key] for r in runs)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("build")
    ap.add_argument("--size", default="4G")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--idle", type=float, default=20)
    ap.add_argument("--device", default="dsa-model", choices=("dsa-model", "dsa"),
                    help="the offload backend compared with cpu (dsa: a real work queue)")
    ap.add_argument("--accel-path", default=None,
                    help="accel-path for the device (default: model for dsa-model, any "
                         "usable queue for dsa)")
    ap.add_argument("--dest-dir", default="/dev/shm")
    ap.add_argument("--touch-zero", action="store_true",
                    help="zero pages written (read in full by whoever checks them) instead of "
                         "never touched (found in pagemap)")
    ap.add_argument("--json-out")
    a = ap.parse_args()
    a.vmig = os.path.join(a.build, "tools", "vmig", "vmig")
    if not os.access(a.vmig, os.X_OK):
        sys.exit(f"no vmig binary at {a.vmig} (build first)")

    dev = a.device
    if a.accel_path is None and dev == "dsa-model":
        a.accel_path = "model"
    order = []
    for i in range(a.runs):
        order += ["cpu", dev] if i % 2 == 0 else [dev, "cpu"]
    runs = {"cpu": [], dev: []}
    for k, accel in enumerate(order):
        if k:
            time.sleep(a.idle)
        r = bench_once(a, accel)
        runs[accel].append(r)
        off = (r["device_pages"] + r["untouched"]) / max(r["pages"], 1)
        log(f"  run {k + 1:2}/{len(order)} {accel:9} {r['seconds']:7.3f} s  channel CPU "
            f"{r['channel_cpu']:6.3f} s  device thread {r['device_cpu']:6.3f} s  "
            f"off the channels {100 * off:5.1f}% of pages (tail {r['tail_pages']}, "
            f"untouched {r['untouched']}, fallbacks {r['fallbacks']})")

    c, m = runs["cpu"], runs[dev]
    ratio = med(m, "seconds") / med(c, "seconds")
    ch_c, ch_m = med(c, "channel_cpu"), med(m, "channel_cpu")
    off = statistics.median((r["device_pages"] + r["untouched"]) / max(r["pages"], 1) for r in m)
    zero_share = statistics.median(r["zero_pages"] / max(r["pages"], 1) for r in m)
    print(f"zero-page offload, {a.size} standard mix"
          f"{' (zero pages written)' if a.touch_zero else ''}, 4 channels, loopback, "
          f"median of {a.runs} runs each")
    print(f"  engine: {m[0]['engine']}")
    print(f"  {'accel':10} {'time':>9} {'channel CPU':>12} {'device CPU':>11}")
    print(f"  {'cpu':10} {med(c, 'seconds'):8.3f}s {ch_c:11.3f}s {0:10.3f}s")
    print(f"  {dev:10} {med(m, 'seconds'):8.3f}s {ch_m:11.3f}s "
          f"{med(m, 'device_cpu'):10.3f}s")
    print(f"  time {dev} / cpu: {ratio:.3f} (goal <= 1.05: {'met' if ratio <= 1.05 else 'MISSED'})")
    print(f"  pages answered off the channel threads: {100 * off:.1f}% "
          f"(zero pages are {100 * zero_share:.1f}% of the image)")
    print(f"  channel threads' CPU: {ch_m:.3f} s vs {ch_c:.3f} s "
          f"({100 * (ch_c - ch_m) / ch_c:+.1f}% saved)")
    if a.json_out:
        with open(a.json_out, "w") as f:
            json.dump({"runs": runs, "ratio": ratio}, f, indent=1)
    return 0 if ratio <= 1.05 else 1


if __name__ == "__main__":
    sys.exit(main())
