#!/usr/bin/env python3
"""The minivm benchmark (issue 4): a running KVM guest migrated live, medians
of --runs repetitions, each against a reference measured in the same run.

  4 GiB guest (two KVM slots), standard content mix, 2 vCPUs (writer and
  checker), the writer dirtying RATE pages/s, 90% of them over a 1 GiB hot
  set, 4 channels, loopback (a unix socket), the destination a second minivm
  started with its RAM prefaulted (--verify-dest --prefault), which checks
  every page after the migration (reported separately: it is not part of the
  migration's time or downtime).

  Per rate (0, 10000, 25000 pages/s by default): total time, downtime,
  passes, bytes on the wire, the guest's real write rate while pre-copy ran,
  the dirty-log syncs (count, longest, as timed by the VMM) and the
  guest-visible stall: the longest gap between two steps of the guest's own
  counter while pre-copy ran (an upper bound on what any one sync cost it).
  The reference is the 0 pages/s run (an idle guest: the same image, the same
  machinery, nothing to re-send); ratios are to its median.

  --dirty-log ring|bitmap runs KVM's dirty ring against the bitmap too, at the
  highest rate, alternating.

Usage: bench/run_minivm.py BUILD_DIR [--runs N] [--mem 4G] [--rates 0,10000,25000]
                           [--idle S] [--rings] [--markdown]
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time


def one(build, mem, rate, dirty_log, tmp):
    sock = os.path.join(tmp, "b.sock")
    cmd = [f"{build}/tools/minivm/minivm", "run", "--mem", mem, "--vcpus", "2",
           "--dirty-rate", str(rate), "--hot-set", "1G", "--migrate-to", "unix:" + sock,
           "--migrate-after", "3s", "--verify-dest", "--prefault", "--dirty-log", dirty_log,
           "-c", "4", "--json", "--no-progress"]
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                       timeout=600)
    if p.returncode != 0:
        sys.exit(f"minivm failed (exit {p.returncode}):\n{p.stderr[-2000:]}")
    # The source's JSON summary (with the minivm object) and the child's.
    objs = [json.loads(l) for l in p.stdout.splitlines() if l.startswith("{")]
    src = [o for o in objs if "minivm" in o]
    if len(src) != 1 or not src[0]["ok"]:
        sys.exit(f"no source summary:\n{p.stdout[-2000:]}")
    j, mv = src[0], src[0]["minivm"]
    m = re.search(r"verified (\d+) pages in (\d+) ms", p.stderr)
    if not m:
        sys.exit(f"the destination did not verify:\n{p.stderr[-2000:]}")
    w = re.search(r"guest before migration: counter \d+, writes (\d+)", p.stderr)
    writes_before = int(w.group(1)) if w else 0
    return {"seconds": j["seconds"], "downtime": j["downtime_seconds"], "passes": j["passes"],
            "wire": j["wire_bytes"], "syncs": mv["syncs"], "sync_max": mv["sync_ms_max"],
            "stall": mv["precopy_stall_ms"], "verify_ms": int(m.group(2)),
            "pages": int(m.group(1)),
            "guest_rate": (mv["guest_writes"] - writes_before) / j["seconds"]}


def med(rows, key):
    return statistics.median(r[key] for r in rows)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("build")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--mem", default="4G")
    p.add_argument("--rates", default="0,10000,25000")
    p.add_argument("--idle", type=float, default=5)
    p.add_argument("--rings", action="store_true")
    p.add_argument("--markdown", action="store_true")
    a = p.parse_args()
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        print("SKIP: /dev/kvm is not usable here: the minivm benchmark needs KVM")
        return 77
    rates = [int(r) for r in a.rates.split(",")]
    modes = ["bitmap", "ring"] if a.rings else ["bitmap"]
    res = {}
    with tempfile.TemporaryDirectory(prefix="vmig-bench-minivm.") as tmp:
        for i in range(a.runs):
            for rate in rates:
                for mode in modes if rate == max(rates) else ["bitmap"]:
                    time.sleep(a.idle)
                    r = one(a.build, a.mem, rate, mode, tmp)
                    res.setdefault((rate, mode), []).append(r)
                    print(f"run {i + 1} rate {rate} {mode}: {r['seconds']:.3f} s, downtime "
                          f"{r['downtime'] * 1000:.1f} ms, {r['passes']} passes, stall "
                          f"{r['stall']:.1f} ms, guest {r['guest_rate']:.0f} pages/s",
                          file=sys.stderr)
    ref = med(res[(min(rates), "bitmap")], "seconds")
    print(f"| rate (pages/s) | dirty log | total | vs idle guest | downtime | passes | wire "
          f"| guest's write rate in pre-copy | syncs | longest sync | guest-visible stall "
          f"| destination check |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for (rate, mode), rows in sorted(res.items()):
        print(f"| {rate} | {mode} | {med(rows, 'seconds'):.3f} s | "
              f"{med(rows, 'seconds') / ref:.2f}x | {med(rows, 'downtime') * 1000:.1f} ms | "
              f"{med(rows, 'passes'):.0f} | {med(rows, 'wire') / 2**30:.2f} GiB | "
              f"{med(rows, 'guest_rate'):.0f} | {med(rows, 'syncs'):.0f} | "
              f"{med(rows, 'sync_max'):.2f} ms | {med(rows, 'stall'):.1f} ms | "
              f"{med(rows, 'pages'):.0f} pages in {med(rows, 'verify_ms'):.0f} ms |")
    print()
    for (rate, mode), rows in sorted(res.items()):
        print(f"- rate {rate} {mode}: total " +
              ", ".join(f"{r['seconds']:.3f}" for r in rows) + " s; downtime " +
              ", ".join(f"{r['downtime'] * 1000:.1f}" for r in rows) + " ms; stall " +
              ", ".join(f"{r['stall']:.1f}" for r in rows) + " ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
