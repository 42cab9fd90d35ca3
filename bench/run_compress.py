#!/usr/bin/env python3
"""The compression benchmark: which codec gets a 4 GiB standard-mix image
across soonest, per link, and whether compression=auto finds it.

  links    1gbit, 10gbit: two network namespaces joined by a veth pair shaped
           with tc (bench/linkemu.sh: tbf at the rate, netem --delay each way
           when the kernel has sch_netem), the sender in one, the receiver in
           the other (vmig bench --netns-src/--netns-dst/--host); loopback:
           plain 127.0.0.1, no shaping (the CPU is the limit)
  codecs   none, lz4, zstd, deflate-page, zlib, auto (vmig bench
           --compression C), 4 channels, cold destination

Per link and codec: the median total time of --runs runs, its ratio to none
at that link, and for auto its ratio to the best fixed codec at that link and
the mix of codecs it chose (pages per codec, from the "codecs" object of the
--json summary, summed over the runs). Each link's raw TCP throughput is
measured first (linkemu.sh measure, 4 streams) and printed with it.

The goals (checked when the codecs they name ran): at every link, auto is at
most 5% slower than the best fixed codec and never slower than none; at
1 Gbit/s, auto takes at most 0.55x the time of none.

The machine idles --idle seconds before every run but the first: fresh
memory on this VM is slow for a while after a run has freed 8 GiB.

Exit status: 0 (goals met or not checkable), 1 a goal missed or a run
failed, 77 namespaces cannot be made here and only shaped links were asked
for (with loopback among them, the shaped links are skipped with a note).
The namespaces are removed on every exit, also on SIGINT and SIGTERM.

Usage: bench/run_compress.py BUILD_DIR [--size 4G] [--links 1gbit,10gbit,loopback]
                             [--codecs none,lz4,zstd,deflate-page,zlib,auto]
                             [--runs 3] [--idle 20] [--delay 0.1ms] [--json-out FILE]
"""
import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

LINKEMU = os.path.join(os.path.dirname(os.path.abspath(__file__)), "linkemu.sh")
# name: (label, linkemu RATE or None for plain loopback)
LINKS = {"1gbit": ("1 Gbit/s", "1gbit"), "10gbit": ("10 Gbit/s", "10gbit"),
         "loopback": ("loopback (unlimited)", None)}
CODECS = ("none", "lz4", "zstd", "deflate-page", "zlib", "auto")
FIXED = tuple(c for c in CODECS if c != "auto")
# linkemu puts the receiver at this address in NAME-dst.
DST_ADDR = "10.201.0.2"
RUN_TIMEOUT = 900


def log(msg):
    print(msg, file=sys.stderr, flush=True)


class Interrupted(Exception):
    pass


def on_signal(signum, _frame):
    raise Interrupted(signal.Signals(signum).name)


def run_cmd(cmd, timeout, env=None):
    """Run cmd, stdout captured, stderr passed through. On an interruption
    the child gets SIGTERM first (vmig cancels and removes its files), then
    SIGKILL."""
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)
    try:
        out, _ = p.communicate(timeout=timeout)
    except BaseException:
        p.terminate()
        try:
            p.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            p.kill()
            p.communicate()
        raise
    return p.returncode, out


def linkemu(*args):
    env = dict(os.environ, LINKEMU_DELAY="optional")
    return run_cmd([LINKEMU, *args], 120, env)


def vmig_has_compression(vmig):
    rc, out = run_cmd([vmig, "bench", "--help"], 30)
    return rc == 0 and any(line.split()[:1] == ["compression"] for line in out.splitlines())


def bench_once(a, link, codec, dest_dir):
    cmd = [a.vmig, "bench", "--size", a.size, "--channels", "4", "--json", "--quiet",
           "--dest-dir", dest_dir]
    if a.has_compression:
        cmd += ["--compression", codec]
    if link["ns"]:
        cmd += ["--netns-src", link["ns"] + "-src", "--netns-dst", link["ns"] + "-dst",
                "--host", DST_ADDR]
    rc, out = run_cmd(cmd, RUN_TIMEOUT)
    lines = out.strip().splitlines()
    try:
        j = json.loads(lines[-1])
    except (IndexError, ValueError):
        sys.exit(f"vmig bench ({link['name']}, {codec}) exited {rc} without a JSON summary")
    b = j.get("bench", {})
    if rc != 0 or not j["ok"] or not b.get("verified"):
        sys.exit(f"vmig bench ({link['name']}, {codec}) failed (exit {rc}): {j.get('error')}")
    return {"seconds": j["seconds"], "wire_bytes": j["wire_bytes"], "cpu": b["cpu_seconds"],
            "codecs": j.get("codecs")}


def mix_text(mix):
    """'zstd 74% 2.9x, none 26%': pages per codec, and the compression ratio."""
    if not mix:
        return "-"
    pages = sum(m["pages"] for m in mix.values()) or 1
    parts = []
    for name, m in sorted(mix.items(), key=lambda kv: -kv[1]["pages"]):
        share = 100 * m["pages"] / pages
        t = f"{name} {share:.0f}%" if share >= 0.5 or not m["pages"] else f"{name} <1%"
        if name != "none" and m["out_bytes"]:
            t += f" {m['in_bytes'] / m['out_bytes']:.1f}x"
        parts.append(t)
    return ", ".join(parts)


def add_mix(acc, mix):
    for name, m in (mix or {}).items():
        d = acc.setdefault(name, {"packets": 0, "pages": 0, "in_bytes": 0, "out_bytes": 0,
                                  "ns": 0})
        for k in d:
            d[k] += m.get(k, 0)


def run_link(a, link, first):
    """All runs of all codecs over one link: runs alternate the codecs
    (none, lz4, ..., none, lz4, ...) so that drift hurts all alike."""
    rows = {c: [] for c in a.codecs}
    dest_dir = tempfile.mkdtemp(prefix="vmig-compress-", dir="/dev/shm")
    try:
        for i in range(a.runs):
            for codec in a.codecs:
                if not first[0] and a.idle > 0:
                    time.sleep(a.idle)
                first[0] = False
                r = bench_once(a, link, codec, dest_dir)
                rows[codec].append(r)
                log(f"  {link['name']:8} run {i + 1}/{a.runs} {codec:12} {r['seconds']:8.3f} s  "
                    f"wire {r['wire_bytes'] / 2**20:8.1f} MiB  cpu {r['cpu']:6.2f} s  "
                    f"{mix_text(r['codecs'])}")
    finally:
        shutil.rmtree(dest_dir, ignore_errors=True)
    res = {}
    for codec, rs in rows.items():
        mix = {}
        for r in rs:
            add_mix(mix, r["codecs"])
        res[codec] = {
            "seconds": statistics.median(r["seconds"] for r in rs),
            "wire_bytes": statistics.median(r["wire_bytes"] for r in rs),
            "cpu_seconds": statistics.median(r["cpu"] for r in rs),
            "mix": mix or None,
            "runs": [r["seconds"] for r in rs],
        }
    return res


def goals(results):
    """[(goal, link, value text, target text, met)] for the goals that can
    be checked with the codecs that ran."""
    out = []
    for name, lr in results.items():
        c = lr["codecs"]
        fixed = {k: v["seconds"] for k, v in c.items() if k in FIXED}
        if "auto" not in c:
            continue
        auto = c["auto"]["seconds"]
        if fixed:
            best = min(fixed, key=fixed.get)
            r = auto / fixed[best]
            out.append(("auto <= 1.05x the best fixed codec", lr["label"],
                        f"{r:.3f}x ({best})", "<= 1.05x", r <= 1.05))
        if "none" in c:
            r = auto / c["none"]["seconds"]
            out.append(("auto never slower than none", lr["label"], f"{r:.3f}x", "<= 1.00x",
                        r <= 1.0))
            if name == "1gbit":
                out.append(("auto at 1 Gbit/s vs none", lr["label"], f"{r:.3f}x", "<= 0.55x",
                            r <= 0.55))
    return out


def print_report(a, results, gl):
    links = list(results)
    print(f"\n## compression: {a.size} image, standard mix, 4 channels, cold destination, "
          f"median of {a.runs}\n")
    print("| codec | " + " | ".join(results[n]["label"] for n in links) + " |")
    print("|---|" + "---|" * len(links))
    cells = []
    for n in links:
        lr = results[n]
        if lr["measured_bps"]:
            cells.append(f"TCP {lr['measured_bps'] / 1e6:.0f} Mbit/s, delay {lr['delay']}")
        else:
            cells.append("-")
    print("| link (measured) | " + " | ".join(cells) + " |")
    for codec in a.codecs:
        cells = []
        for n in links:
            c = results[n]["codecs"]
            if codec not in c:
                cells.append("-")
                continue
            t = c[codec]["seconds"]
            cell = f"{t:.3f} s"
            if "none" in c and codec != "none":
                cell += f" ({t / c['none']['seconds']:.2f}x none)"
            cells.append(cell)
        print(f"| {codec} | " + " | ".join(cells) + " |")
    if "auto" in a.codecs:
        cells = []
        for n in links:
            c = results[n]["codecs"]
            fixed = {k: v["seconds"] for k, v in c.items() if k in FIXED}
            if fixed and "auto" in c:
                best = min(fixed, key=fixed.get)
                cells.append(f"{c['auto']['seconds'] / fixed[best]:.3f}x (best: {best})")
            else:
                cells.append("-")
        print("| auto / best fixed | " + " | ".join(cells) + " |")
        print("| auto chose | " + " | ".join(
            mix_text(results[n]["codecs"].get("auto", {}).get("mix")) for n in links) + " |")
    if gl:
        print("\n| goal | link | value | target | met |")
        print("|---|---|---|---|---|")
        for g, link, v, t, ok in gl:
            print(f"| {g} | {link} | {v} | {t} | {'yes' if ok else 'NO'} |")
    print("\nraw seconds: " + json.dumps({n: {c: v["runs"] for c, v in results[n]["codecs"].items()}
                                         for n in links}))
    sys.stdout.flush()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("build")
    ap.add_argument("--size", default="4G")
    ap.add_argument("--links", default=",".join(LINKS))
    ap.add_argument("--codecs", default=",".join(CODECS))
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--idle", type=float, default=20.0)
    ap.add_argument("--delay", default="0.1ms",
                    help="one-way delay of the shaped links (default 0.1ms; needs sch_netem)")
    ap.add_argument("--json-out", metavar="FILE")
    a = ap.parse_args()
    a.links = [x for x in a.links.split(",") if x]
    a.codecs = [x for x in a.codecs.split(",") if x]
    for x in a.links:
        if x not in LINKS:
            ap.error(f"--links: unknown link '{x}' (known: {', '.join(LINKS)})")
    for x in a.codecs:
        if x not in CODECS:
            ap.error(f"--codecs: unknown codec '{x}' (known: {', '.join(CODECS)})")
    if a.runs < 1 or not a.links or not a.codecs:
        ap.error("--runs, --links and --codecs must not be empty")
    a.vmig = os.path.join(a.build, "tools", "vmig", "vmig")
    if not os.access(a.vmig, os.X_OK):
        sys.exit(f"{a.vmig} is not an executable (build first)")

    a.has_compression = vmig_has_compression(a.vmig)
    if not a.has_compression:
        if a.codecs != ["none"]:
            sys.exit("this vmig has no 'compression' parameter: only --codecs none can run "
                     "(uncompressed, without --compression)")
        log("note: this vmig has no 'compression' parameter: 'none' runs without --compression")

    shaped = [x for x in a.links if LINKS[x][1]]
    if shaped:
        rc, out = linkemu("check")
        if rc != 0:
            if len(shaped) == len(a.links):
                log("network namespaces cannot be made here (see above): skipping")
                sys.exit(77)
            log(f"note: network namespaces cannot be made here: skipping {', '.join(shaped)}")
            a.links = [x for x in a.links if x not in shaped]
        elif "netem" not in out.split():
            log(f"note: no sch_netem in this kernel: the shaped links get no delay "
                f"(asked: {a.delay})")

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    results, up = {}, None
    first = [True]
    try:
        for x in a.links:
            label, rate = LINKS[x]
            link = {"name": x, "ns": None}
            lr = {"label": label, "rate": rate or "none", "delay": "none", "measured_bps": None}
            if rate:
                ns = f"vmigcz{os.getpid()}"
                up = ns
                rc, out = linkemu("up", ns, rate, a.delay)
                if rc != 0:
                    sys.exit(f"linkemu.sh up {ns} {rate} {a.delay} failed (exit {rc})")
                words = out.split()
                lr["delay"] = words[words.index("delay") + 1] if "delay" in words else "?"
                link["ns"] = ns
                rc, out = linkemu("measure", ns, "3", "4")
                if rc == 0 and out.strip():
                    lr["measured_bps"] = float(out.split()[-1])
                log(f"{label}: link up, TCP measured "
                    f"{(lr['measured_bps'] or 0) / 1e6:.0f} Mbit/s, delay {lr['delay']}")
            lr["codecs"] = run_link(a, link, first)
            results[x] = lr
            if up:
                linkemu("down", up)
                up = None
    except Interrupted as e:
        log(f"interrupted ({e}): removing the namespaces")
        sys.exit(130)
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if up:
            linkemu("down", up)

    gl = goals(results)
    print_report(a, results, gl)
    if a.json_out:
        with open(a.json_out, "w") as f:
            json.dump({"size": a.size, "runs": a.runs, "idle": a.idle, "channels": 4,
                       "links": results,
                       "goals": [{"goal": g, "link": link, "value": v, "target": t, "met": ok}
                                 for g, link, v, t, ok in gl]}, f, indent=1)
            f.write("\n")
    sys.exit(0 if all(g[4] for g in gl) else 1)


if __name__ == "__main__":
    main()
