#!/usr/bin/env python3
"""The continuous-checkpoint benchmark (issue 8): a running KVM guest protected
by a standby, against a reference measured in the same run.

  minivm with 2 GiB of RAM (one KVM slot), standard content mix, 2 vCPUs
  (writer and checker), the writer asked to dirty RATE pages/s of 4 KiB
  (12800: 50 MiB/s), 90% of them over a 1 GiB hot set, 4 channels, loopback
  (a unix socket). The standby is a second minivm (--colo-secondary, its RAM
  prefaulted). The primary takes a checkpoint every PERIOD (200 ms) for
  SECONDS (55 s: at least 200 checkpoints after checkpoint 0, the initial
  copy, which is left out of the figures). Both sides write one line per
  checkpoint (--checkpoint-log):

    pause   primary: the vCPUs stopped: dirty-log sync, the dirty pages and
            the device state (the vCPUs) onto the channels, until the resume
    ack     primary: from the resume to the standby's acknowledgement
    commit  secondary: from the checkpoint's last byte to its commit (the
            RAM cache flushed into RAM, the device state loaded) and ack
    flush   secondary: of that, the flush

  Mean, median, 99th percentile (nearest rank) and maximum of each; the
  guest's real write rate while protected (nested KVM cannot always reach
  the rate asked for) and the bytes per checkpoint.

  The reference: the downtime of a plain live migration of the same VM and
  workload to the same kind of destination (minivm --migrate-to with
  --verify-dest --prefault: a second minivm that prefaults its RAM), median
  of --ref-runs; each pause is a small switchover, so the figure reported is
  the mean pause as a ratio to that downtime.

Usage: bench/run_colo.py BUILD_DIR [--mem 2G] [--rate 12800] [--period 200ms]
                         [--seconds 55] [--ref-runs 3] [--channels 4] [--idle S]
"""
import argparse
import json
import math
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time


def minivm(build):
    return f"{build}/tools/minivm/minivm"


def workload(a):
    return ["--mem", a.mem, "--vcpus", "2", "--dirty-rate", str(a.rate), "--hot-set", "1G",
            "-c", str(a.channels)]


def reference(a, tmp):
    """One plain live migration: its downtime (s) and the guest's rate."""
    sock = os.path.join(tmp, "ref.sock")
    cmd = [minivm(a.build), "run", *workload(a), "--migrate-to", "unix:" + sock,
           "--migrate-after", "3s", "--verify-dest", "--prefault", "--json", "--no-progress"]
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                       timeout=600)
    if p.returncode != 0:
        sys.exit(f"reference migration failed (exit {p.returncode}):\n{p.stderr[-2000:]}")
    objs = [json.loads(l) for l in p.stdout.splitlines() if l.startswith("{")]
    src = [o for o in objs if "minivm" in o]
    if len(src) != 1 or not src[0]["ok"]:
        sys.exit(f"no source summary:\n{p.stdout[-2000:]}")
    if not re.search(r"verified \d+ pages", p.stderr):
        sys.exit(f"the reference's destination did not verify:\n{p.stderr[-2000:]}")
    j = src[0]
    w = re.search(r"guest before migration: counter \d+, writes (\d+)", p.stderr)
    rate = (j["minivm"]["guest_writes"] - int(w.group(1))) / j["seconds"] if w else 0
    return j["downtime_seconds"], rate


def read_log(path, ncols):
    rows = []
    with open(path) as f:
        for line in f:
            if line.startswith("#") or not line.strip():
                continue
            v = line.split()
            if len(v) != ncols:
                sys.exit(f"{path}: bad line {line!r}")
            rows.append([float(x) for x in v])
    return rows


def colo(a, tmp):
    """One protected run: per-checkpoint rows of both sides and the primary's summary."""
    sock = os.path.join(tmp, "colo.sock")
    plog, slog = os.path.join(tmp, "primary.log"), os.path.join(tmp, "secondary.log")
    rfd_r, rfd_w = os.pipe()
    serr_f = open(os.path.join(tmp, "secondary.err"), "w+")
    sec = subprocess.Popen(
        [minivm(a.build), "run", "--colo-secondary", "unix:" + sock, "--mem", a.mem,
         "--prefault", "--checkpoint-log", slog, "--ready-fd", str(rfd_w), "--no-progress"],
        stdout=subprocess.DEVNULL, stderr=serr_f, pass_fds=(rfd_w,))
    os.close(rfd_w)
    try:
        with os.fdopen(rfd_r) as r:
            if not r.readline().startswith("listening"):
                sec.wait(timeout=60)
                serr_f.seek(0)
                sys.exit(f"the secondary did not listen:\n{serr_f.read()[-2000:]}")
        p = subprocess.run(
            [minivm(a.build), "run", *workload(a), "--colo-primary", "unix:" + sock,
             "--checkpoint", a.period, "--checkpoint-log", plog, "--run-for",
             f"{a.seconds}s", "--json", "--no-progress"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            timeout=a.seconds + 300)
        sec.wait(timeout=60)
    finally:
        if sec.poll() is None:
            sec.kill()
            sec.wait()
        serr_f.seek(0)
        serr = serr_f.read()
        serr_f.close()
    if p.returncode != 0:
        sys.exit(f"the primary failed (exit {p.returncode}):\n{p.stderr[-2000:]}")
    # The primary ended the protection: the secondary exits 4 without running.
    if sec.returncode != 4 or "ended the protection" not in serr:
        sys.exit(f"the secondary ended otherwise (exit {sec.returncode}):\n{serr[-2000:]}")
    objs = [json.loads(l) for l in p.stdout.splitlines() if l.startswith("{")]
    if len(objs) != 1 or "colo" not in objs[0]:
        sys.exit(f"no primary summary:\n{p.stdout[-2000:]}")
    # checkpoint pause_ns ack_ns bytes t_ms / checkpoint commit_ns flush_ns load_ns bytes t_ms
    prim = {int(r[0]): r for r in read_log(plog, 5)}
    seco = {int(r[0]): r for r in read_log(slog, 6)}
    return prim, seco, objs[0]["colo"]


def pct(v, q):
    """Nearest-rank percentile of a non-empty list."""
    s = sorted(v)
    return s[max(0, math.ceil(q / 100 * len(s)) - 1)]


def row(name, ns):
    v = [x / 1e6 for x in ns]
    return (f"| {name} | {statistics.mean(v):.2f} ms | {statistics.median(v):.2f} ms | "
            f"{pct(v, 99):.2f} ms | {max(v):.2f} ms |")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("build")
    p.add_argument("--mem", default="2G")
    p.add_argument("--rate", type=int, default=12800)
    p.add_argument("--period", default="200ms")
    p.add_argument("--seconds", type=int, default=55)
    p.add_argument("--ref-runs", type=int, default=3)
    p.add_argument("--channels", type=int, default=4)
    p.add_argument("--idle", type=float, default=3)
    a = p.parse_args()
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        print("SKIP: /dev/kvm is not usable here: the COLO benchmark needs KVM")
        return 77
    with tempfile.TemporaryDirectory(prefix="vmig-bench-colo.") as tmp:
        refs = []
        for i in range(a.ref_runs):
            time.sleep(a.idle)
            d, r = reference(a, tmp)
            refs.append((d, r))
            print(f"reference {i + 1}: downtime {d * 1000:.1f} ms, guest {r:.0f} pages/s "
                  f"in pre-copy", file=sys.stderr)
        time.sleep(a.idle)
        prim, seco, summ = colo(a, tmp)
    ids = sorted(i for i in prim if i > 0)
    if len(ids) < 200:
        print(f"warning: only {len(ids)} checkpoints after checkpoint 0 (want >= 200): "
              f"raise --seconds", file=sys.stderr)
    both = [i for i in ids if i in seco]
    pause = [prim[i][1] for i in ids]
    ack = [prim[i][2] for i in ids]
    commit = [seco[i][1] for i in both]
    flush = [seco[i][2] for i in both]
    dbytes = [prim[i][3] for i in ids]
    span = (prim[ids[-1]][4] - prim[ids[0]][4]) / 1000 if len(ids) > 1 else 0
    down = statistics.median(d for d, _ in refs)
    wrate = summ["guest_writes_protected"] / summ["protected_seconds"]
    print(f"minivm {a.mem}, writer asked for {a.rate} pages/s "
          f"({a.rate * 4096 / 2**20:.0f} MiB/s), checkpoint every {a.period}, "
          f"{a.channels} channels, unix socket")
    print(f"{len(ids)} checkpoints after checkpoint 0 in {span:.1f} s "
          f"(one every {span / max(1, len(ids) - 1) * 1000:.0f} ms); "
          f"checkpoint 0 (2 GiB): pause {prim[0][1] / 1e6:.1f} ms, ack {prim[0][2] / 1e6:.1f} ms")
    print(f"guest's real write rate while protected: {wrate:.0f} pages/s "
          f"({wrate * 4096 / 2**20:.1f} MiB/s); dirty bytes per checkpoint: mean "
          f"{statistics.mean(dbytes) / 2**20:.2f} MiB, max {max(dbytes) / 2**20:.2f} MiB "
          f"({statistics.mean(dbytes) / 2**20 / (span / max(1, len(ids) - 1)):.1f} MiB/s "
          f"checkpointed)")
    print()
    print("| per checkpoint | mean | median | p99 | max |")
    print("|---|---|---|---|---|")
    print(row("primary pause (VM stopped)", pause))
    print(row("ack latency (resume to ack)", ack))
    print(row("secondary commit (last byte to commit)", commit))
    print(row("of which the RAM-cache flush", flush))
    print()
    print(f"reference: downtime of a plain live migration of the same VM and workload "
          f"(--migrate-to, --verify-dest --prefault), median of {len(refs)}: "
          f"{down * 1000:.1f} ms (" + ", ".join(f"{d * 1000:.1f}" for d, _ in refs) +
          f" ms; guest " + ", ".join(f"{r:.0f}" for _, r in refs) + " pages/s in pre-copy)")
    print(f"pause mean / reference downtime: {statistics.mean(pause) / 1e9 / down:.2f}x; "
          f"p99 pause / reference downtime: {pct(pause, 99) / 1e9 / down:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
