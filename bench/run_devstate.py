#!/usr/bin/env python3
"""The device-state benchmark (issue 7): downtime of a live minivm migration
whose VM carries a large device, with the device's state over the data
channels (devstate-path=channels) against the same state sent serially on
the control channel (devstate-path=control), medians of --runs repetitions,
alternating the two paths, in one run.

  minivm with 2 GiB of RAM (standard content mix), 2 vCPUs, the writer
  dirtying RATE pages/s, and a synthetic device with 512 MiB of state (the
  guest rewrites its regions through I/O ports: it can only be saved once the
  VM is stopped), 4 channels, loopback TCP (127.0.0.1), the destination a
  second minivm started with its RAM and device buffer prefaulted
  (--verify-dest --prefault), which checks every page and the whole device
  buffer after the migration (not part of the downtime).

  Downtime is vmig's: from the stop of the vCPUs to the destination's commit
  (the last RAM pass, the device state, its load, the digests). A run
  without the device shows what the RAM part alone costs.

Usage: bench/run_devstate.py BUILD_DIR [--runs N] [--mem 2G] [--device 512M]
                             [--rate 5000] [--idle S] [--markdown]
"""
import argparse
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import time


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def one(a, path):
    uri = f"tcp:127.0.0.1:{free_port()}"
    cmd = [f"{a.build}/tools/minivm/minivm", "run", "--mem", a.mem, "--vcpus", "2",
           "--dirty-rate", str(a.rate), "--migrate-to", uri, "--migrate-after", "3s",
           "--verify-dest", "--prefault", "-c", "4", "--json", "--no-progress",
           "-o", f"downtime-limit={a.limit}"]
    if path != "none":
        cmd += ["--device-state", a.device, "-o", f"devstate-path={path}"]
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                       timeout=900)
    if p.returncode != 0:
        sys.exit(f"minivm failed (exit {p.returncode}):\n{p.stderr[-3000:]}")
    objs = [json.loads(l) for l in p.stdout.splitlines() if l.startswith("{")]
    src = [o for o in objs if o["role"] == "sender"]
    dst = [o for o in objs if o["role"] == "receiver"]
    if len(src) != 1 or len(dst) != 1 or not src[0]["ok"] or not dst[0]["ok"]:
        sys.exit(f"no summaries:\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}")
    if path != "none" and "verified device state" not in p.stderr:
        sys.exit(f"the destination did not verify the device:\n{p.stderr[-2000:]}")
    s, d = src[0], dst[0]
    return {"downtime": s["downtime_seconds"] * 1e3, "passes": s["passes"],
            "seconds": s["seconds"], "dev_bytes": s["devices"]["bytes"],
            "chunks": s["devices"]["chunks"], "save_ms": s["devices"]["save_seconds"] * 1e3,
            "load_ms": d["devices"]["load_seconds"] * 1e3,
            "held_mib": d["devices"]["held_max_bytes"] / 2**20,
            "src_cpu": s["thread_cpu_seconds"], "dst_cpu": d["thread_cpu_seconds"]}


def med(rows, key):
    return statistics.median(r[key] for r in rows)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("build")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--mem", default="2G")
    p.add_argument("--device", default="512M")
    p.add_argument("--rate", type=int, default=5000)
    p.add_argument("--limit", type=int, default=1000, help="downtime-limit, ms (both paths)")
    p.add_argument("--idle", type=float, default=5)
    p.add_argument("--markdown", action="store_true")
    a = p.parse_args()
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        print("SKIP: /dev/kvm is not usable here: the device-state benchmark needs minivm")
        return 77
    rows = {"channels": [], "control": [], "none": []}
    for i in range(a.runs):
        for path in ("channels", "control", "none"):
            time.sleep(a.idle)
            r = one(a, path)
            rows[path].append(r)
            print(f"run {i + 1} {path:8s} downtime {r['downtime']:7.1f} ms, passes {r['passes']}, "
                  f"save {r['save_ms']:6.1f} ms, load {r['load_ms']:6.1f} ms, "
                  f"held {r['held_mib']:.1f} MiB", flush=True)
    ch, ct, no = (med(rows[k], "downtime") for k in ("channels", "control", "none"))
    ratio = ch / ct
    print(f"\nmedian downtime over {a.runs} runs: channels {ch:.1f} ms, control (serial) "
          f"{ct:.1f} ms, no device {no:.1f} ms")
    print(f"channels / serial = {ratio:.3f}: {100 * (1 - ratio):.1f} % less downtime "
          f"(goal: at least 40 % less)")
    print(f"device-state part: channels {ch - no:.1f} ms, serial {ct - no:.1f} ms "
          f"({(ch - no) / (ct - no):.3f})")
    # What moving the device's state cost in CPU: the sessions' threads
    # (migrating thread, channels, load threads) over the run without it.
    for k in ("channels", "control"):
        sc = med(rows[k], "src_cpu") - med(rows["none"], "src_cpu")
        dc = med(rows[k], "dst_cpu") - med(rows["none"], "dst_cpu")
        print(f"CPU for the device state ({k}): source {sc:.3f} s, destination {dc:.3f} s, "
              f"sum {sc + dc:.3f} s")
    if a.markdown:
        print("\n| path | downtime (median) | save (stopped) | load | held out of order | passes |")
        print("|---|---|---|---|---|---|")
        for k, name in (("channels", "data channels"), ("control", "control channel (serial)"),
                        ("none", "no device (RAM only)")):
            rs = rows[k]
            print(f"| {name} | {med(rs, 'downtime'):.1f} ms | {med(rs, 'save_ms'):.1f} ms | "
                  f"{med(rs, 'load_ms'):.1f} ms | {med(rs, 'held_mib'):.1f} MiB | "
                  f"{med(rs, 'passes'):.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
