#!/usr/bin/env python3
"""The cost of a cut channel with resume (issue 9): `vmig bench` of the
standard 4 GiB image over loopback TCP, 4 channels, prefaulted destination,
medians of --runs repetitions, each case measured in the same run:

  off      resume=off, no fault (the reference)
  on       resume=on, no fault: what the acknowledgements cost
  cut-src  resume=on, the source shuts a channel down (fault site close)
           when it is half way through its packets: it reconnects and
           re-sends what was not acknowledged
  cut-dst  the same cut made by the destination
  restart  resume=off, the same cut as cut-src: the migration fails (its
           time to the failure is measured) and must start over; its cost
           is that time plus a whole uninterrupted migration ('off')

Half way is measured, not guessed: the packets of a warm-up 'on' run (not
counted) over 4 channels, halved; the first channel to reach that many is
cut (ch=any). The order of the cases rotates from one repetition to the
next. The figure is the time lost to the cut: the median
migration time of a cut case minus that of 'on', and the ratio of the two.
Every run must be verified (the destination equal to the source) and a cut
case must report exactly one reconnect.

Usage: bench/run_resume.py BUILD_DIR [--runs N] [--size 4G] [--markdown]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

CASES = ["off", "on", "cut-src", "cut-dst", "restart"]


def run_case(args, case, pkt):
    cmd = [f"{args.build}/tools/vmig/vmig", "bench", "--size", args.size, "--prefault",
           "--channels", "4", "--json", "--quiet", "--resume", "off" if case in ("off", "restart") else "on"]
    env = dict(os.environ)
    env.pop("VMIG_FAULTS", None)
    if case.startswith("cut") or case == "restart":
        role = "src" if case == "restart" else case[4:]
        env["VMIG_FAULTS"] = f"close:role={role}:ch=any:pkt={pkt}"
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    lines = p.stdout.strip().splitlines()
    j = json.loads(lines[-1]) if lines else {"ok": False, "error": p.stderr.strip()}
    if case == "restart":
        if j.get("ok"):
            sys.exit("restart: the migration survived a cut without resume")
        return {"seconds": j["seconds"], "mbps": 0.0, "resent": 0, "resent_bytes": 0,
                "packets": j["packets"]}
    if not j.get("ok"):
        sys.exit(f"{case}: {j.get('error') or p.stderr.strip()}")
    if not j["bench"]["verified"]:
        sys.exit(f"{case}: the destination differs from the source")
    r = j["resume"]
    want = 1 if case.startswith("cut") else 0
    if r["reconnects"] != want:
        sys.exit(f"{case}: {r['reconnects']} reconnects, expected {want}")
    return {"seconds": j["seconds"], "mbps": j["mbps"], "resent": r["resent_packets"],
            "resent_bytes": r["resent_bytes"],
            "packets": j["packets"]}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("build")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--size", default="4G")
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args()
    rows = {c: [] for c in CASES}
    # half way: from a warm-up run that is not counted
    pkt = max(1, run_case(args, "on", None)["packets"] // 8)
    for r in range(args.runs):
        # the order rotates, so that no case always follows the same one
        k = r % len(CASES)
        for c in CASES[k:] + CASES[:k]:
            res = run_case(args, c, pkt)
            rows[c].append(res)
            print(f"run {r + 1} {c:8s} {res['seconds']:.3f} s {res['mbps']:.0f} MB/s "
                  f"resent {res['resent']} packets ({res['resent_bytes'] / 2**20:.1f} MiB)"
                  + (f" cut at packet {pkt} of a channel" if c != "off" and c != "on" else ""),
                  flush=True)

    def med(c, k):
        return statistics.median(x[k] for x in rows[c])

    on = med("on", "seconds")
    if args.markdown:
        print("\n| case | time | throughput | packets sent again | time lost | ratio | to |")
        print("|---|---|---|---|---|---|---|")
    else:
        print(f"\nmedians of {args.runs}, {args.size}, 4 channels, cut at packet {pkt} of "
              "the first channel to reach it (half way):")
    for c in CASES:
        s, m, rs = med(c, "seconds"), med(c, "mbps"), med(c, "resent")
        ref = med("off", "seconds") if c == "on" else on
        if c == "restart":  # the failed attempt, then a whole migration
            s += med("off", "seconds")
            ref = med("off", "seconds")
        lost = (s - ref) * 1000 if c != "off" else 0.0
        ratio = s / ref if c != "off" else 1.0
        if args.markdown:
            to = "" if c == "off" else ("off" if c in ("on", "restart") else "on")
            print(f"| {c} | {s:.3f} s | {'%.0f MB/s' % m if m else ''} | {rs:.0f} | "
                  f"{'' if c == 'off' else '%+.0f ms' % lost} | "
                  f"{'' if c == 'off' else '**%.3fx**' % ratio} | {to} |")
        else:
            print(f"{c:8s} {s:7.3f} s {m:6.0f} MB/s resent {rs:4.0f}"
                  + ("" if c == "off" else f"  {lost:+7.0f} ms  {ratio:.3f}x of "
                     + ("off" if c in ("on", "restart") else "on")))


if __name__ == "__main__":
    main()
