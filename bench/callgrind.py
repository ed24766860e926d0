#!/usr/bin/python3
"""bench/callgrind.py -- instructions per call of a springrun server, by thread and library.

    /usr/bin/python3 bench/callgrind.py [--calls 5000] [--scenario seq|table|connect]

Runs bin/springrun bench/sr_server.lua under valgrind --tool=callgrind (one output per
thread) twice: once serving 1 call, once serving 1 + CALLS calls from bench/sr_client.lua;
the difference divided by CALLS is what one call costs, start-up excluded. Instruction
counts are deterministic (unlike time on a shared VM) but say nothing about waiting,
wake-ups or cache misses: read them next to bench/profile.py. Stops what it starts by pid.
"""
import argparse
import collections
import glob
import os
import re
import subprocess
import sys
import tempfile

sys.dont_write_bytecode = True  # no bench/__pycache__ in the checkout
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run  # noqa: E402

LINE = re.compile(r"\s*([\d,]+) \(\s*[\d.]+%\)\s+(.*)\[(.*)\]\s*$")


def category(fn, dso):
    base = os.path.basename(dso)
    if "libc" in base and any(k in fn for k in ("malloc", "free", "realloc", "calloc", "_int_",
                                                   "unlink_chunk", "consolidate", "tcache")):
        return "malloc/free"
    if "core.so" in base:
        src = fn.split(":")[0].split("/")[-1]
        return "springrun core.so: " + src
    if "liblua" in base:
        return "Lua VM (liblua5.4)"
    if "libuv" in base:
        return "libuv"
    return base


def measure(calls, scenario, tmp, tag):
    out = os.path.join(tmp, tag + ".%p")
    srv = run.spawn(["valgrind", "--tool=callgrind", "--separate-threads=yes",
                     "--callgrind-out-file=" + out, run.SR, os.path.join(run.BENCH, "sr_server.lua"), "0"],
                    role="tool", stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
                    cwd=run.ROOT)
    try:
        line = run.read_line(srv, 120)
        if not line or not line.startswith("PORT "):
            raise SystemExit("server under valgrind did not start")
        uri = "PYRO:bench@127.0.0.1:%s" % line.split()[1]
        argv = [run.SR, os.path.join(run.BENCH, "sr_client.lua"), "--uri", uri, "--scenario", scenario,
                "--n", str(calls), "--warm", "1"]
        res = run.run_client(argv, timeout=1800)
        if "error" in res:
            raise SystemExit("client failed: %s" % res["error"])
    finally:
        run.stop(srv)  # SIGTERM: callgrind writes its files at exit
    per_thread = {}
    for f in sorted(glob.glob(os.path.join(tmp, tag + ".*-*"))):
        text = subprocess.check_output(["callgrind_annotate", "--inclusive=no", "--threshold=100", f],
                                       stderr=subprocess.DEVNULL).decode(errors="replace")
        c = collections.Counter()
        for ln in text.splitlines():
            m = LINE.match(ln)
            if m:
                c[category(m.group(2).strip(), m.group(3))] += int(m.group(1).replace(",", ""))
        per_thread[f.rsplit("-", 1)[1]] = c
    return per_thread


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=5000)
    ap.add_argument("--scenario", default="seq", choices=["seq", "table", "connect"])
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="springrun-callgrind-")
    base = measure(1, a.scenario, tmp, "base")
    full = measure(1 + a.calls, a.scenario, tmp, "full")
    names = {"01": "Lua thread", "02": "daemon thread"}
    print("### Instructions per call (callgrind, scenario %s, %d calls)" % (a.scenario, a.calls))
    print("")
    print("| thread | where | instructions per call | share |")
    print("| --- | --- | --- | --- |")
    for th in sorted(full):
        b = base.get(th, collections.Counter())
        diff = {k: (full[th][k] - b.get(k, 0)) / a.calls for k in set(full[th]) | set(b)}
        total = sum(diff.values())
        who = names.get(th, "thread " + th)
        for k, v in sorted(diff.items(), key=lambda kv: -kv[1]):
            if total > 0 and v / total >= 0.01:
                print("| %s | %s | {:,.0f} | %.0f%% |".format(v) % (who, k, 100 * v / total))
        print("| %s | **total** | {:,.0f} | |".format(total) % who)


if __name__ == "__main__":
    try:
        main()
    finally:
        for p in list(run.PROCS):
            run.stop(p)
