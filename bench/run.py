#!/usr/bin/python3
"""bench/run.py -- springrun's benchmark harness (issue 7): springrun, Pyro4 and a C floor
side by side, in one run, on 127.0.0.1.

    /usr/bin/python3 bench/run.py [--quick] [--only SCENARIO,...] [--out DIR]

Starts every server itself (ports picked at run time), runs each scenario for every
client -> server combination, interleaved, repeated; prints markdown tables of medians
with min-max, p50/p99 latency and server CPU per call (the server's own utime+stime from
/proc/<pid>/stat around the measured loop), springrun's ratios to Pyro4 and to the floor,
writes the raw results (DIR/latest.json, default bench/results) and a gnuplot PNG of
throughput against concurrent connections. Every process it starts is stopped by pid.
"""
import argparse
import json
import os
import platform
import resource
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
PY = "/usr/bin/python3"
FLOOR = os.path.join(ROOT, os.environ.get("BUILD", "build"), "bench", "floor")
SR = os.path.join(ROOT, "bin", "springrun")
CLK = os.sysconf("SC_CLK_TCK")

sys.dont_write_bytecode = True  # no bench/__pycache__ in the checkout
sys.path.insert(0, BENCH)
from pyro_client import nested_table  # noqa: E402  (the same table every client sends)

# the floor echoes as many bytes as the table's JSON text
TABLE_BYTES = len(json.dumps(nested_table(), separators=(",", ":")))

MODES = {
    "quick": dict(reps=3, seq_n=3000, oneway_n=5000, table_n=300, connect_n=300,
                  echo=[(1024, "1KB", 1500), (102400, "100KB", 200), (1048576, "1MB", 15)],
                  conc=[1, 8, 32], conc_dur=0.5, conc_reps=1,
                  load=[1, 8, 32, 128], load_dur=0.5, load_reps=2,
                  idle=1000, soak=0, serpent=False, pyro_threads=200,
                  async_n=2000, async_reps=1),
    "full": dict(reps=5, seq_n=20000, oneway_n=20000, table_n=1000, connect_n=3000,
                 echo=[(1024, "1KB", 5000), (102400, "100KB", 1000), (1048576, "1MB", 50)],
                 conc=[1, 8, 32, 128], conc_dur=2.0, conc_reps=3,
                 load=[1, 8, 32, 128], load_dur=2.0, load_reps=3,
                 idle=10000, soak=1000000, serpent=True, pyro_threads=200,
                 async_n=10000, async_reps=3),
}

PROCS = []  # every Popen we started, stopped by pid at exit


def log(msg):
    sys.stderr.write("bench: %s\n" % msg)
    sys.stderr.flush()


def proc_cpu(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK
    except (OSError, IndexError, ValueError):
        return None


def proc_rss_kb(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def stop(p):
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)
    if p in PROCS:
        PROCS.remove(p)


PIN = None  # None (free scheduling), "same" (all on CPU 0), "split" (servers CPU 0, clients CPU 1)
ONECPU_ROW = "seq, one CPU"  # the "onecpu" part: sequential calls, every process on CPU 0
ONECPU_CONNECT = "connect, one CPU"  # ... and connect + handshake + call, each system's own client


def spawn(argv, role="client", **kw):
    """Start argv (stopped by pid at exit); with --pin, under taskset for its role."""
    if PIN and role in ("server", "client"):
        cpu = "0" if (role == "server" or PIN == "same") else "1"
        argv = ["taskset", "-c", cpu] + list(argv)  # taskset execs: the pid stays the command's
    p = subprocess.Popen(argv, **kw)
    PROCS.append(p)
    return p


def read_line(p, timeout):
    """One stdout line of p, or None after timeout seconds / EOF."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        r, _, _ = select.select([p.stdout], [], [], max(0.0, min(0.5, deadline - time.time())))
        if r:
            line = p.stdout.readline()
            return line.decode() if line else None
        if p.poll() is not None:
            return None
    return None


class Server(object):
    """A server process: kind floor | floor-handoff | pyro-thread | pyro-multiplex | springrun."""

    def __init__(self, kind, logdir, threads=40):
        self.kind = kind
        self.log = open(os.path.join(logdir, "server-%s-%d.log" % (kind, int(time.time() * 1000))), "wb")
        if kind == "floor":
            argv = [FLOOR, "server"]
        elif kind == "floor-handoff":
            argv = [FLOOR, "server", "--handoff"]
        elif kind.startswith("pyro-"):
            argv = [PY, os.path.join(BENCH, "pyro_server.py"), "--servertype", kind[5:],
                    "--threads", str(threads)]
        elif kind == "springrun":
            argv = [SR, os.path.join(BENCH, "sr_server.lua"), "0"]
        else:
            raise ValueError(kind)
        self.threads = threads
        self.p = spawn(argv, role="server", stdout=subprocess.PIPE, stderr=self.log, stdin=subprocess.DEVNULL, cwd=ROOT)
        line = read_line(self.p, 20)
        if not line or not line.startswith("PORT "):
            stop(self.p)
            raise RuntimeError("%s server did not start (see %s)" % (kind, self.log.name))
        self.port = int(line.split()[1])
        self.pid = self.p.pid
        for _ in range(200):  # ready means: accepts a connection
            try:
                socket.create_connection(("127.0.0.1", self.port), 1).close()
                break
            except OSError:
                time.sleep(0.05)
        self.uri = "PYRO:bench@127.0.0.1:%d" % self.port

    def stop(self):
        stop(self.p)
        self.log.close()


# ---- clients ----
FLOOR_CMD = {"seq": "seq", "oneway": "oneway", "echo": "echo", "table": "echo",
             "connect": "connect", "timed": "timed"}


def client_argv(client, server, scenario, n=1000, size=0, serializer="json"):
    if client == "c":
        argv = [FLOOR, FLOOR_CMD[scenario], "--port", str(server.port), "--pid", str(server.pid),
                "--n", str(n)]
        if scenario == "echo":
            argv += ["--size", str(size)]
        if scenario == "table":
            argv += ["--size", str(TABLE_BYTES)]
        return argv
    if client == "pyro":
        head = [PY, os.path.join(BENCH, "pyro_client.py")]
    else:
        head = [SR, os.path.join(BENCH, "sr_client.lua")]
    return head + ["--uri", server.uri, "--scenario", scenario, "--n", str(n),
                   "--size", str(size), "--pid", str(server.pid), "--serializer", serializer]


def parse_lines(text):
    res, samples = None, []
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            d = json.loads(line)
        except ValueError:
            continue
        if "lat_us" in d:
            samples.extend(d["lat_us"])
        elif "scenario" in d:
            res = d
    return res, samples


def run_client(argv, timeout=300):
    p = spawn(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, cwd=ROOT)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        stop(p)
        return {"error": "timed out after %ss: %s" % (timeout, " ".join(argv[:4]))}
    finally:
        if p in PROCS:
            PROCS.remove(p)
    res, _ = parse_lines(out.decode(errors="replace"))
    if p.returncode != 0 or res is None:
        tail = err.decode(errors="replace").strip().splitlines()[-3:]
        return {"error": "exit %s: %s" % (p.returncode, " | ".join(tail))}
    return res


def pct(sorted_vals, q):
    if not sorted_vals:
        return None
    return sorted_vals[int(q * (len(sorted_vals) - 1) + 0.5)]


def run_timed(client, server, nclients, dur, serializer="json"):
    """nclients client processes, each one connection making sequential calls for dur
    seconds between the same two wall-clock instants."""
    argv = client_argv(client, server, "timed", n=1, serializer=serializer)
    procs = []
    try:
        for _ in range(nclients):
            procs.append(spawn(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, cwd=ROOT))
        for p in procs:
            line = read_line(p, 60)
            if line is None or line.strip() != "READY":
                raise RuntimeError("a client did not get ready: %s" % (p.stderr.read(2000) if p.poll() is not None else "timeout"))
        t0 = time.time() + 0.2
        for p in procs:
            p.stdin.write(("%.6f %.3f\n" % (t0, dur)).encode())
            p.stdin.flush()
        time.sleep(max(0, t0 - time.time()))
        cpu0 = proc_cpu(server.pid)
        time.sleep(max(0, t0 + dur - time.time()))
        cpu1 = proc_cpu(server.pid)
        rate, calls, samples = 0.0, 0, []
        for p in procs:
            out, err = p.communicate(timeout=dur + 60)
            res, s = parse_lines(out.decode(errors="replace"))
            if res is None:
                raise RuntimeError("a client failed: %s" % err.decode(errors="replace")[-300:])
            rate += res["calls"] / res["secs"] if res["secs"] > 0 else 0
            calls += res["calls"]
            samples.extend(s)
        samples.sort()
        r = {"scenario": "timed", "calls": calls, "secs": dur, "rate": round(rate, 1),
             "p50_us": pct(samples, 0.5), "p99_us": pct(samples, 0.99)}
        if cpu0 is not None and cpu1 is not None:
            r["server_cpu_s"] = round(cpu1 - cpu0, 4)
        return r
    except (RuntimeError, subprocess.TimeoutExpired, OSError) as e:
        return {"error": str(e)}
    finally:
        for p in procs:
            stop(p)


# ---- combinations ----
def combos(cfg, have_sr):
    c = [("floor", "c", "floor", None),
         (FLOOR2, "c", "floor-handoff", None),
         ("pyro4 json thread", "pyro", "pyro-thread", "json"),
         ("pyro4 json multiplex", "pyro", "pyro-multiplex", "json")]
    if cfg["serpent"]:
        c += [("pyro4 serpent thread", "pyro", "pyro-thread", "serpent"),
              ("pyro4 serpent multiplex", "pyro", "pyro-multiplex", "serpent")]
    if have_sr:
        c += [("springrun", "sr", "springrun", "json"),
              ("pyro4 json -> springrun", "pyro", "springrun", "json"),
              ("springrun -> pyro4 thread", "sr", "pyro-thread", "json")]
    return c


MAIN = ["floor", "pyro4 json thread", "pyro4 json multiplex", "springrun"]
# The floor's reader handing every message to a second thread, which sends the reply
# (floor.c `server --handoff`): springrun's two-thread design with no work in it, i.e.
# the most that design can reach on one connection. Measured in the one-connection and
# one-CPU parts; not under load, where springrun's daemon thread batches the replies of
# many connections into one hand-over and writes them itself, which this server does not.
FLOOR2 = "floor, two threads"

# 100 concurrent calls from one springrun client process (futures): the
# servers it calls, and the two ways of calling (bench/sr_client.lua)
ASYNC_COMBOS = [("springrun", "springrun"), ("springrun -> pyro4 multiplex", "pyro-multiplex"),
                ("springrun -> pyro4 thread", "pyro-thread")]
ASYNC_ROWS = [("100 concurrent, one proxy", "async_one"), ("100 concurrent, 100 proxies", "async_many")]


def scenarios(cfg):
    # "seq, pool of one": springrun's client only, through springrun.pool (issue 15)
    s = [("seq", "seq", cfg["seq_n"], 0), ("seq, pool of one", "pool_seq", cfg["seq_n"], 0),
         ("oneway", "oneway", cfg["oneway_n"], 0)]
    for size, label, n in cfg["echo"]:
        s.append(("echo " + label, "echo", n, size))
    s += [("table", "table", cfg["table_n"], 0), ("connect", "connect", cfg["connect_n"], 0)]
    return s


def machine():
    info = {"kernel": platform.release(), "cpus": os.cpu_count(), "python": platform.python_version()}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
        with open("/proc/meminfo") as f:
            info["mem_mb"] = int(f.readline().split()[1]) // 1024
    except OSError:
        pass
    try:
        import Pyro4
        info["pyro4"] = Pyro4.__version__
    except ImportError:
        pass
    for key, argv in (("gcc", ["gcc", "-dumpfullversion"]), ("commit", ["git", "-C", ROOT, "rev-parse", "--short", "HEAD"])):
        try:
            info[key] = subprocess.check_output(argv, stderr=subprocess.DEVNULL).decode().strip()
        except (OSError, subprocess.CalledProcessError):
            pass
    info["date"] = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    return info


# ---- summary ----
def metric(rec, key):
    """rate (calls/s, or MB/s for the echo rows), p50, p99, cpu_us (server CPU per call)."""
    if "error" in rec:
        return None
    if key == "rate":
        if rec.get("bytes") and rec["row"].startswith("echo "):
            return rec["bytes"] / rec["secs"] / 1e6
        return rec["rate"]
    if key == "cpu_us":
        if rec.get("server_cpu_s") is None or not rec.get("calls"):
            return None
        return rec["server_cpu_s"] / rec["calls"] * 1e6
    return rec.get(key + "_us")


def summarize(raw):
    groups = {}
    for r in raw:
        groups.setdefault((r["combo"], r["row"]), []).append(r)
    out = {}
    for (combo, row), recs in groups.items():
        d = {"runs": len(recs), "errors": [r["error"] for r in recs if "error" in r][:2]}
        for key in ("rate", "p50", "p99", "cpu_us"):
            vals = [v for v in (metric(r, key) for r in recs) if v is not None]
            if vals:
                d[key] = {"median": statistics.median(vals), "min": min(vals), "max": max(vals)}
        out.setdefault(row, {})[combo] = d
    return out


def fmt(v):
    if v is None:
        return "—"
    if v >= 100000:
        return "%.0fk" % (v / 1000)
    if v >= 1000:
        return "{:,.0f}".format(v)
    if v >= 10:
        return "%.0f" % v
    return "%.2f" % v


def cell(d, key, spread=True):
    if not d or key not in d:
        if d and d.get("errors"):
            return "error"
        return "—"
    m = d[key]
    if spread and d["runs"] > 1:
        return "%s (%s–%s)" % (fmt(m["median"]), fmt(m["min"]), fmt(m["max"]))
    return fmt(m["median"])


def ratio(summary, row, key, a, b, invert=False):
    da, db = summary.get(row, {}).get(a), summary.get(row, {}).get(b)
    if not da or not db or key not in da or key not in db or not db[key]["median"]:
        return "—"
    return "%.2f×" % (da[key]["median"] / db[key]["median"])


def table(summary, rows, cols, key, title, unit_of, ratios=True):
    lines = ["", "**%s**" % title, ""]
    head = ["scenario"] + cols
    rcols = []
    if ratios and "springrun" in cols:
        rcols = [c for c in ("pyro4 json thread", "pyro4 json multiplex", "floor") if c in cols]
        head += ["springrun / " + c for c in rcols]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + " --- |" * len(head))
    for row in rows:
        if row not in summary:
            continue
        cells = [row + unit_of(row)] + [cell(summary[row].get(c), key) for c in cols]
        cells += [ratio(summary, row, key, "springrun", c) for c in rcols]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def report(res):
    s = res["summary"]
    cols = [c for c in res["combos"]]
    single = [r[0] for r in res["scenarios"]]
    unit = lambda row: " (MB/s)" if row.startswith("echo ") and "table" not in row else ""
    out = ["### Results (%s mode, %s)" % (res["mode"], res["machine"]["date"]), "",
           "Machine: %(cpu)s, %(cpus)s vCPUs, %(mem_mb)s MB, Linux %(kernel)s; Python %(python)s, "
           "Pyro4 %(pyro4)s, gcc %(gcc)s; commit %(commit)s." % dict(
               {k: "?" for k in ("cpu", "cpus", "mem_mb", "kernel", "python", "pyro4", "gcc", "commit")},
               **res["machine"]),
           "Medians over %d runs (min–max in brackets; every run of the one-connection "
           "scenarios against freshly started servers); %s. "
           "Echo rows are MB/s of payload moved (request + reply); others are calls/s. "
           "Pyro4 threadpool servers run with THREADPOOL_SIZE=%d." % (
               res["config"]["reps"], PIN_TEXT[res.get("pin")], res["config"]["pyro_threads"])]
    out.append(table(s, single, cols, "rate", "Throughput, one connection", unit))
    timed = [r for r in single if r != "oneway"]
    out.append(table(s, timed, cols, "p50", "Latency p50 (µs), one connection", lambda r: "", ratios=True))
    out.append(table(s, timed, cols, "p99", "Latency p99 (µs), one connection", lambda r: "", ratios=True))
    out.append(table(s, single, cols, "cpu_us", "Server CPU per call (µs, utime+stime of the server process)", lambda r: ""))
    conc_rows = ["procs %d" % n for n in res["config"]["conc"]] + ["load %d" % n for n in res["config"]["load"]]
    ccols = [c for c in MAIN if c in cols]
    out.append(table(s, conc_rows, ccols, "rate",
                     "Concurrent connections, calls/s (procs N: N client processes, one connection "
                     "each; load N: one C epoll client, N connections, a prerecorded Pyro4 json "
                     "get_data call or a 64-byte floor message)", lambda r: ""))
    out.append(table(s, conc_rows, ccols, "p50", "Concurrent connections, latency p50 (µs)", lambda r: ""))
    out.append(table(s, conc_rows, ccols, "cpu_us", "Concurrent connections, server CPU per call (µs)", lambda r: ""))
    if ONECPU_ROW in s:
        rows = [r for r in (ONECPU_ROW, ONECPU_CONNECT) if r in s]
        for key, title in (("rate", "calls/s"), ("p50", "latency p50 (µs)"), ("cpu_us", "server CPU per call (µs)")):
            ocols = ccols[:1] + [c for c in (FLOOR2,) if c in cols] + ccols[1:]
            out.append(table(s, rows, ocols, key,
                             "Every process on CPU 0 (seq: C load client, one connection; connect: "
                             "each system's own client), " + title,
                             lambda r: ""))
    arows = [r for r, _ in ASYNC_ROWS if r in s]
    if arows:
        out += ["", "**100 concurrent calls from one springrun client process** (rounds of 100 futures "
                "waited for with springrun.gather, through one shared proxy with its default "
                "max_connections, or through 100 proxies; p99 from a call's start to its end)", ""]
        head = ["scenario"]
        for c, _ in ASYNC_COMBOS:
            head += [c + " calls/s", c + " p99 (µs)"]
        out.append("| " + " | ".join(head) + " |")
        out.append("|" + " --- |" * len(head))
        for row in arows:
            cells = [row]
            for c, _ in ASYNC_COMBOS:
                cells += [cell(s[row].get(c), "rate"), cell(s[row].get(c), "p99")]
            out.append("| " + " | ".join(cells) + " |")
    if res.get("idle"):
        out += ["", "**%d idle connections held open** (handshake done on each; server RSS "
                "before/after; sequential get_data p50 without and with them: the lowest of five runs each)" % res["config"]["idle"], "",
                "| server | RSS before (KB) | RSS with idle conns (KB) | KB per connection | p50 unloaded (µs) | p50 loaded (µs) | loaded / unloaded | server CPU/call unloaded → loaded (µs) |",
                "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        for name, d in res["idle"].items():
            if "error" in d:
                out.append("| %s | error: %s | | | | | |" % (name, d["error"][:120]))
                continue
            cpu = [metric(dict(d[k], row="seq"), "cpu_us") for k in ("seq_before", "seq_after")]
            out.append("| %s | %s | %s | %.2f | %s | %s | %s | %s → %s |" % (
                name, d["rss0_kb"], d["rss1_kb"], d["kb_per_conn"], fmt(d.get("p50_before")),
                fmt(d.get("p50_after")),
                "%.2f×" % (d["p50_after"] / d["p50_before"]) if d.get("p50_before") and d.get("p50_after") else "—",
                fmt(cpu[0]), fmt(cpu[1])))
    if res.get("ha") is not None:
        out.append(ha_report(res))
    if res.get("soak"):
        out += ["", "**Server memory over a long run** (C load client, 8 connections)", "",
                "| server | calls | RSS after the first second (KB) | RSS at end (KB) | growth |", "| --- | --- | --- | --- | --- |"]
        for name, d in res["soak"].items():
            if "error" in d:
                out.append("| %s | error: %s | | | |" % (name, d["error"][:120]))
                continue
            out.append("| %s | {:,} | %s | %s | %+.1f%% |".format(d["calls"]) % (
                name, d["rss_first_kb"], d["rss_last_kb"], d["growth_pct"]))
    if res.get("hessian"):
        import hessian as hessian_bench
        out.append(hessian_bench.report(res["hessian"]))
    if res.get("codec"):
        import codec as codec_bench
        out.append(codec_bench.report(res["codec"]))
    out.append(targets(res))
    out.append(targets18(res))
    return "\n".join(out) + "\n"


def ha_report(res):
    """The pool rows of issue 15 (bench/ha.lua's lines, and the seq rows)."""
    s = res["summary"]
    lines = ["", "**Pools (issue 15)**: springrun.pool over bench/sr_server.lua processes "
             "(each its own process), the callers springrun tasks in one client process", "",
             "| measurement | figure |", "| --- | --- |"]
    seq, pool1 = med(s, "seq", "springrun", "rate"), med(s, "seq, pool of one", "springrun", "rate")
    if seq and pool1:
        lines.append("| sequential calls: pool of one / plain proxy (goal ≥ 0.95×) | %s / %s calls/s = %.2f× |" % (
            fmt(pool1), fmt(seq), pool1 / seq))
    conc = {r.get("members"): r for r in res["ha"] if r.get("row") == "conc" and "rate" in r}
    if 3 in conc and 1 in conc:
        lines.append("| 32 concurrent task callers: pool of three servers / pool of one | %s / %s calls/s = %.2f× |" % (
            fmt(conc[3]["rate"]), fmt(conc[1]["rate"]), conc[3]["rate"] / conc[1]["rate"]))
    for r in res["ha"]:
        if r.get("row") == "kill" and "stall_ms" in r:
            lines.append("| kill -9 of one of three members under 8 task callers, %d runs (idempotent get_data; %s): "
                         "calls lost / longest stall / restarted member's first call after it listens, median (max) | "
                         "%d of %s / %.0f ms / %.0f ms (%.0f) |" % (
                             r["runs"], r["probe"], r["lost"], "{:,}".format(r["calls"] + r["lost"]),
                             r["stall_ms"], r["rejoin_ms"], r["rejoin_max_ms"]))
        elif r.get("row") == "etcd" and "reg_to_call_ms" in r:
            lines.append("| etcd: registration (key put) to the member's first call, median of %d (max) | %.1f ms (%.1f) |" % (
                r["runs"], r["reg_to_call_ms"], r["reg_to_call_max_ms"]))
            lines.append("| etcd: kill -9 to removal from the pool, lease TTL %d s, median of %d (max) | %.0f ms (%.0f) |" % (
                r["ttl"], r["runs"], r["kill_to_removal_ms"], r["kill_to_removal_max_ms"]))
        if "error" in r:
            lines.append("| %s | error: %s |" % (r.get("row"), str(r["error"])[:160].replace("|", "/")))
    return "\n".join(lines)


def run_ha(quick):
    """bench/ha.lua's JSON lines (its servers and etcd are its own, stopped by pid)."""
    argv = [SR, os.path.join(BENCH, "ha.lua")] + (["--quick"] if quick else [])
    p = spawn(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, cwd=ROOT)
    try:
        out, err = p.communicate(timeout=900)
    except subprocess.TimeoutExpired:
        stop(p)
        return [{"row": "ha", "error": "bench/ha.lua timed out"}]
    finally:
        if p in PROCS:
            PROCS.remove(p)
    rows = []
    for line in out.decode(errors="replace").splitlines():
        if line.startswith("{"):
            try:
                rows.append(json.loads(line))
            except ValueError:
                pass
    if p.returncode != 0:
        tail = err.decode(errors="replace").strip().splitlines()[-3:]
        rows.append({"row": "ha", "error": "exit %s: %s" % (p.returncode, " | ".join(tail))})
    return rows


PIN_TEXT = {None: "free scheduling (no CPU pinning)",
            "same": "pinned: servers and clients all on CPU 0 (taskset)",
            "split": "pinned: servers on CPU 0, clients on CPU 1 (taskset)"}


def med(s, row, combo, key):
    d = s.get(row, {}).get(combo)
    if d and key in d:
        return d[key]["median"]
    return None


def targets(res):
    s = res["summary"]
    if "springrun" not in res["combos"]:
        return "\n(springrun was not measured: targets not evaluated)"
    lines = ["", "**Issue 7 targets** (ratios from this run)", "", "| target | figure | met |", "| --- | --- | --- |"]

    def add(name, fig, ok):
        lines.append("| %s | %s | %s |" % (name, fig, "—" if ok is None else ("yes" if ok else "no")))

    def r(a, b):
        return a / b if a is not None and b else None

    x = r(med(s, "seq", "springrun", "rate"), med(s, "seq", "floor", "rate"))
    add("sequential calls ≥ 0.75× floor", "%.2f×" % x if x else "—", x >= 0.75 if x else None)
    x = r(med(s, "seq", "springrun", "cpu_us"), med(s, "seq", "pyro4 json thread", "cpu_us"))
    add("server CPU per sequential call ≤ 0.5× Pyro4", "%.2f×" % x if x else "—", x <= 0.5 if x else None)
    x = r(med(s, ONECPU_ROW, "springrun", "cpu_us"), med(s, ONECPU_ROW, "pyro4 json thread", "cpu_us"))
    f = r(med(s, ONECPU_ROW, "floor", "cpu_us"), med(s, ONECPU_ROW, "pyro4 json thread", "cpu_us"))
    if x:
        add("server CPU per sequential call ≤ 0.5× Pyro4, all on one CPU (the floor: %s)" % (
            "%.2f×" % f if f else "—"), "%.2f×" % x, x <= 0.5)
    for kind in ("load", "procs"):
        row = "%s 32" % kind
        x = r(med(s, row, "springrun", "rate"), med(s, row, "floor", "rate"))
        y = r(med(s, row, "springrun", "rate"), med(s, row, "pyro4 json multiplex", "rate"))
        add("32 connections (%s) ≥ 0.6× floor" % kind, "%.2f×" % x if x else "—", x >= 0.6 if x else None)
        add("32 connections (%s) ≥ 2× Pyro4 multiplex" % kind, "%.2f×" % y if y else "—", y >= 2 if y else None)
    mb = med(s, "echo 1MB", "springrun", "rate")
    y = r(mb, med(s, "echo 1MB", "pyro4 json thread", "rate"))
    add("1 MB echo ≥ 1 GB/s moved and ≥ 6× Pyro4", "%s MB/s, %s" % (fmt(mb), "%.1f×" % y if y else "—"),
        (mb >= 1000 and y >= 6) if mb and y else None)
    x = r(med(s, "connect", "springrun", "rate"), med(s, "connect", "floor", "rate"))
    add("connect + handshake + call ≥ 0.7× floor", "%.2f×" % x if x else "—", x >= 0.7 if x else None)
    x = r(med(s, ONECPU_CONNECT, "springrun", "rate"), med(s, ONECPU_CONNECT, "floor", "rate"))
    if x:
        add("connect + handshake + call ≥ 0.7× floor, all on one CPU", "%.2f×" % x, x >= 0.7)
    d = (res.get("idle") or {}).get("springrun")
    if d and "kb_per_conn" in d:
        lat = d["p50_after"] / d["p50_before"] if d.get("p50_before") and d.get("p50_after") else None
        add("%d idle conns: < 10 KB each, latency ≤ 1.5×" % res["config"]["idle"],
            "%.2f KB, %s" % (d["kb_per_conn"], "%.2f×" % lat if lat else "—"),
            d["kb_per_conn"] < 10 and lat is not None and lat <= 1.5)
    d = (res.get("soak") or {}).get("springrun")
    if d and "growth_pct" in d:
        add("memory flat (±5%%) over %s calls" % "{:,}".format(d["calls"]), "%+.1f%%" % d["growth_pct"],
            abs(d["growth_pct"]) <= 5)
    return "\n".join(lines)


def targets18(res):
    """Issue 18's per-call targets: springrun against the floor (and Pyro4 for the nested table)."""
    s = res["summary"]
    if "springrun" not in res["combos"]:
        return ""
    lines = ["", "**Issue 18 targets** (ratios from this run; the floor's own figures are in the tables above)",
             "", "| target | figure | met |", "| --- | --- | --- |"]

    def r(a, b):
        return a / b if a is not None and b else None

    def add(name, x, ok, unit="×"):
        lines.append("| %s | %s | %s |" % (name, "%.2f%s" % (x, unit) if x is not None else "—",
                                           "—" if x is None else ("yes" if ok(x) else "no")))

    def vs_floor(row, key="rate"):
        return r(med(s, row, "springrun", key), med(s, row, "floor", key))

    add("sequential calls ≥ 0.85× floor", vs_floor("seq"), lambda x: x >= 0.85)
    add("sequential calls ≥ 0.85× floor, all on one CPU", vs_floor(ONECPU_ROW), lambda x: x >= 0.85)
    add("server CPU per sequential call ≤ 1.4× the floor's", vs_floor("seq", "cpu_us"), lambda x: x <= 1.4)
    add("connect + handshake + call ≥ 0.8× floor", vs_floor("connect"), lambda x: x >= 0.8)
    for n in (32, 128):
        add("%d connections (C load client) ≥ 0.85× floor" % n, vs_floor("load %d" % n), lambda x: x >= 0.85)
        add("server CPU per call, %d connections, ≤ 1.25× the floor's" % n, vs_floor("load %d" % n, "cpu_us"),
            lambda x: x <= 1.25)
    add("oneway calls ≥ 0.5× floor", vs_floor("oneway"), lambda x: x >= 0.5)
    add("1 MB echo ≥ 0.5× the floor's bandwidth", vs_floor("echo 1MB"), lambda x: x >= 0.5)
    add("nested-table echo ≥ 2.5× Pyro4 json",
        r(med(s, "table", "springrun", "rate"), med(s, "table", "pyro4 json thread", "rate")), lambda x: x >= 2.5)
    # What the two-thread design can reach at most: the floor with the hand-over and no work.
    lines += ["", "**The design's ceiling** (the floor's reader handing each message to a second thread "
              "that sends the reply, floor.c `server --handoff`: springrun's two-thread design doing no "
              "work; ratios from this run)", "",
              "| row | two threads / floor | springrun / two threads | springrun / floor |", "| --- | --- | --- | --- |"]
    for row, key in (("seq", "rate"), ("seq", "cpu_us"), (ONECPU_ROW, "rate"), (ONECPU_ROW, "cpu_us"),
                     ("connect", "rate"), (ONECPU_CONNECT, "rate"), ("oneway", "rate"), ("echo 1MB", "rate")):
        f2, fl, sr = (med(s, row, c, key) for c in (FLOOR2, "floor", "springrun"))
        if f2 is None or fl is None:
            continue
        x = lambda v: "%.2f×" % v if v is not None else "—"
        lines.append("| %s%s | %s | %s | %s |" % (row, ", server CPU per call" if key == "cpu_us" else "",
                                                  x(r(f2, fl)), x(r(sr, f2)), x(r(sr, fl))))
    return "\n".join(lines)


def plot(res, outdir):
    s = res["summary"]
    ns = sorted(set(res["config"]["conc"]) | set(res["config"]["load"]))
    series = [("load", c) for c in MAIN] + [("procs", c) for c in MAIN]
    series = [x for x in series if x[1] in res["combos"]]
    dat = os.path.join(outdir, "throughput.dat")
    with open(dat, "w") as f:
        f.write("# conns " + " ".join("%s:%s" % (k, c.replace(" ", "_")) for k, c in series) + "\n")
        for n in ns:
            vals = []
            for k, c in series:
                v = med(s, "%s %d" % (k, n), c, "rate")
                vals.append("NaN" if v is None else "%.1f" % v)
            f.write("%d %s\n" % (n, " ".join(vals)))
    gp = os.path.join(outdir, "throughput.gp")
    png = os.path.join(outdir, "throughput.png")
    colors = {"floor": "#555555", "pyro4 json thread": "#d95f02", "pyro4 json multiplex": "#e6ab02", "springrun": "#1b9e77"}
    plots = []
    for i, (k, c) in enumerate(series):
        dash = "dt 1" if k == "load" else "dt 2"
        title = "%s (%s)" % (c, "C load client" if k == "load" else "client processes")
        plots.append("'%s' using 1:%d with linespoints lw 2 %s lc rgb '%s' title '%s'" % (
            dat, i + 2, dash, colors[c], title))
    with open(gp, "w") as f:
        f.write("set terminal pngcairo size 1000,620 noenhanced\n" if terminal_ok("pngcairo") else "set terminal png size 1000,620 noenhanced\n")
        f.write("set output '%s'\n" % png)
        f.write("set datafile missing 'NaN'\nset logscale x 2\nset xtics (1,8,32,128)\nset xrange [0.8:170]\n")
        f.write("set xlabel 'concurrent connections'\nset ylabel 'calls per second'\nset grid\n")
        f.write("set key below\nset title 'Throughput vs concurrent connections (%s, %s)'\n" % (
            res["mode"], res["machine"]["date"]))
        f.write("plot " + ", \\\n     ".join(plots) + "\n")
    try:
        subprocess.check_call(["gnuplot", gp])
        return png
    except (OSError, subprocess.CalledProcessError) as e:
        log("gnuplot failed: %s" % e)
        return None


def terminal_ok(name):
    try:
        out = subprocess.run(["gnuplot", "-e", "set terminal"], capture_output=True, timeout=10)
        return (" " + name + " ") in (out.stdout + out.stderr).decode(errors="replace")
    except (OSError, subprocess.TimeoutExpired):
        return False


# ---- the run ----
def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", default="", help="comma list of parts: single,conc,load,async,onecpu,idle,soak,ha,hessian,codec")
    ap.add_argument("--out", default=None,
                    help="default bench/results (full run) or build/bench/quick (--quick: "
                         "development runs do not overwrite the committed results)")
    ap.add_argument("--no-springrun", action="store_true")
    ap.add_argument("--pin", choices=["same", "split"], default=os.environ.get("BENCH_PIN") or None,
                    help="same: servers and clients on CPU 0; split: servers on CPU 0, clients on CPU 1")
    a = ap.parse_args()
    global PIN
    PIN = a.pin
    mode = "quick" if a.quick else "full"
    if a.out is None:
        a.out = os.path.join(ROOT, os.environ.get("BUILD", "build"), "bench", "quick") if a.quick \
            else os.path.join(BENCH, "results")
    cfg = dict(MODES[mode])
    parts = set(a.only.split(",")) if a.only else {"single", "conc", "load", "async", "onecpu", "idle", "soak", "ha", "hessian", "codec"}
    os.makedirs(a.out, exist_ok=True)
    logdir = tempfile.mkdtemp(prefix="springrun-bench-")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if not os.access(FLOOR, os.X_OK):
        raise SystemExit("bench: %s is missing: run make bench" % FLOOR)
    t_start = time.time()
    wire = os.path.join(logdir, "wire")
    os.makedirs(wire)
    subprocess.check_call([PY, os.path.join(BENCH, "pyro_client.py"), "--scenario", "wire", "--out", wire])

    servers = {}
    have_sr = False
    try:
        servers["floor"] = Server("floor", logdir)
        servers["floor-handoff"] = Server("floor-handoff", logdir)
        servers["pyro-thread"] = Server("pyro-thread", logdir, cfg["pyro_threads"])
        servers["pyro-multiplex"] = Server("pyro-multiplex", logdir)
        if not a.no_springrun and os.access(SR, os.X_OK):
            try:
                servers["springrun"] = Server("springrun", logdir)
                probe = run_client(client_argv("sr", servers["springrun"], "seq", n=10), timeout=30)
                have_sr = "error" not in probe
                if not have_sr:
                    log("springrun client/server not working yet, skipped: %s" % probe["error"])
            except RuntimeError as e:
                log("springrun skipped: %s" % e)
        cmb = combos(cfg, have_sr)
        scen = scenarios(cfg)
        raw = []

        def record(combo, row, rep, rec):
            rec = dict(rec, combo=combo, row=row, rep=rep)
            raw.append(rec)
            if "error" in rec:
                log("%s / %s: %s" % (combo, row, rec["error"]))

        if "single" in parts:
            for rep in range(cfg["reps"]):
                log("single-connection scenarios, run %d/%d (%.0fs)" % (rep + 1, cfg["reps"], time.time() - t_start))
                if rep > 0:
                    # Fresh servers for every run: where the kernel puts a server's threads
                    # relative to its client is mostly settled when they start and then
                    # persists (a round trip is 3-5x faster with both on one CPU), so runs
                    # against one long-lived server would repeat one placement, not sample it.
                    for kind in list(servers):
                        servers[kind].stop()
                        servers[kind] = Server(kind, logdir, servers[kind].threads)
                for row, sc, n, size in scen:
                    for name, client, skind, ser in cmb:
                        if sc == "pool_seq" and name != "springrun":
                            continue
                        srv = servers[skind]
                        record(name, row, rep, run_client(client_argv(client, srv, sc, n=n, size=size, serializer=ser or "json")))
        main_combos = [c for c in cmb if c[0] in MAIN]
        if "conc" in parts:
            for rep in range(cfg["conc_reps"]):
                for n in cfg["conc"]:
                    log("%d client processes, run %d/%d (%.0fs)" % (n, rep + 1, cfg["conc_reps"], time.time() - t_start))
                    for name, client, skind, ser in main_combos:
                        record(name, "procs %d" % n, rep, run_timed(client, servers[skind], n, cfg["conc_dur"]))
        if "load" in parts:
            for rep in range(cfg["load_reps"]):
                log("C load client, run %d/%d (%.0fs)" % (rep + 1, cfg["load_reps"], time.time() - t_start))
                for n in cfg["load"]:
                    for name, client, skind, ser in main_combos:
                        record(name, "load %d" % n, rep, run_client(load_argv(servers[skind], n, cfg["load_dur"], wire)))
        if "async" in parts and have_sr:
            for rep in range(cfg["async_reps"]):
                log("100 concurrent calls from one process, run %d/%d (%.0fs)" % (
                    rep + 1, cfg["async_reps"], time.time() - t_start))
                for name, skind in ASYNC_COMBOS:
                    for row, sc in ASYNC_ROWS:
                        record(name, row, rep, run_client(client_argv("sr", servers[skind], sc, n=cfg["async_n"])))
    finally:
        for srv in servers.values():
            srv.stop()

    if "onecpu" in parts and not PIN:
        # Sequential calls with every process on CPU 0 (server threads and the C load client,
        # one connection): no cross-CPU wake-ups, so server CPU per call is the server's own
        # work plus same-CPU context switches. Fresh servers, started pinned. Then connect +
        # handshake + call the same way, each system with its own client (as the connect row):
        # the one comparison of that scenario that does not depend on where the kernel puts
        # the client and the server's threads relative to each other.
        PIN = "same"
        pinned = {}
        try:
            for kind in ("floor", "floor-handoff", "pyro-thread", "pyro-multiplex", "springrun"):
                if kind == "springrun" and not have_sr:
                    continue
                pinned[kind] = Server(kind, logdir, cfg["pyro_threads"])
            names = {"floor": "floor", "floor-handoff": FLOOR2, "pyro-thread": "pyro4 json thread",
                     "pyro-multiplex": "pyro4 json multiplex", "springrun": "springrun"}
            clients = {skind: client for name, client, skind, ser in cmb if name in MAIN or name == FLOOR2}
            for rep in range(cfg["load_reps"]):
                log("one CPU, sequential calls and connects, run %d/%d (%.0fs)" % (
                    rep + 1, cfg["load_reps"], time.time() - t_start))
                for kind, srv in pinned.items():
                    record(names[kind], ONECPU_ROW, rep, run_client(load_argv(srv, 1, cfg["load_dur"], wire)))
                    record(names[kind], ONECPU_CONNECT, rep,
                           run_client(client_argv(clients[kind], srv, "connect", n=cfg["connect_n"])))
        finally:
            for srv in pinned.values():
                srv.stop()
            PIN = None

    idle = {}
    if "idle" in parts:
        for name, client, skind, ser in [c for c in cmb if c[0] in MAIN]:
            log("%d idle connections on %s (%.0fs)" % (cfg["idle"], skind, time.time() - t_start))
            idle[name] = run_idle(client, skind, cfg, logdir, wire)
    soak = {}
    if "soak" in parts and cfg["soak"]:
        for name, client, skind, ser in [c for c in cmb if c[0] in ("floor", "pyro4 json multiplex", "springrun")]:
            log("memory over %d calls on %s (%.0fs)" % (cfg["soak"], skind, time.time() - t_start))
            soak[name] = run_soak(skind, cfg, logdir, wire)

    ha = None
    if "ha" in parts and have_sr:
        log("pools: 32 task callers, kill -9 of a member, etcd (%.0fs)" % (time.time() - t_start))
        ha = run_ha(a.quick)
        for r in ha:
            if "error" in r:
                log("pools / %s: %s" % (r.get("row"), r["error"]))
    codec = None
    if "codec" in parts:
        import codec as codec_bench  # bench/codec.py: payload codecs, no sockets
        log("codecs side by side (%.0fs)" % (time.time() - t_start))
        codec = codec_bench.run(quick=a.quick)
    hessian = None
    if "hessian" in parts:
        import hessian as hessian_bench  # bench/hessian.py: springrun vs Caucho's Java
        log("hessian against Java (%.0fs)" % (time.time() - t_start))
        hessian = hessian_bench.run(quick=a.quick)
    res = {"mode": mode, "machine": machine(), "config": cfg, "combos": [c[0] for c in cmb],
           "scenarios": scen, "raw": raw, "summary": summarize(raw), "idle": idle, "soak": soak, "ha": ha,
           "seconds": round(time.time() - t_start, 1), "pin": PIN, "hessian": hessian, "codec": codec}
    res["config"]["echo"] = [list(x) for x in cfg["echo"]]
    with open(os.path.join(a.out, "latest.json"), "w") as f:
        json.dump(res, f, indent=1, sort_keys=True)
    text = report(res)
    with open(os.path.join(a.out, "latest.md"), "w") as f:
        f.write(text)
    sys.stdout.write(text)
    png = plot(res, a.out) if ("conc" in parts or "load" in parts) else None
    sys.stdout.write("\nraw results: %s\nplot: %s\nlogs: %s\ntook %.0f s\n" % (
        os.path.join(a.out, "latest.json"), png or "(none)", logdir, time.time() - t_start))


def load_argv(srv, conns, dur, wire):
    argv = [FLOOR, "load", "--port", str(srv.port), "--pid", str(srv.pid), "--conns", str(conns),
            "--dur", str(dur)]
    if not srv.kind.startswith("floor"):
        argv += ["--proto", "pyro", "--req", os.path.join(wire, "req.bin"),
                 "--hello", os.path.join(wire, "hello.bin")]
    return argv


def run_idle(client, skind, cfg, logdir, wire):
    n = cfg["idle"]
    try:
        srv = Server(skind, logdir, threads=n + 100)
    except RuntimeError as e:
        return {"error": str(e)}
    hold = None
    try:
        def seq():
            # five short sequential runs; the one with the lowest p50 stands: on this VM a
            # run's p50 is bimodal (client and server threads on one CPU or across CPUs,
            # decided per process start), and the best-placed run compares like with like
            runs = [run_client(client_argv(client, srv, "seq", n=max(1000, cfg["seq_n"] // 4)))
                    for _ in range(5)]
            ok = sorted((r for r in runs if "p50_us" in r), key=lambda r: r["p50_us"])
            best = dict(ok[0]) if ok else dict(runs[0])
            best["all_p50_us"] = [r.get("p50_us") for r in runs]
            return best
        before = seq()
        rss0 = proc_rss_kb(srv.pid)
        argv = [FLOOR, "hold", "--port", str(srv.port), "--pid", str(srv.pid), "--conns", str(n)]
        if skind != "floor":
            argv += ["--proto", "pyro", "--hello", os.path.join(wire, "hello.bin")]
        hold = spawn(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        line = read_line(hold, 180)
        if not line:
            return {"error": "holder failed: %s" % (hold.stderr.read(500).decode(errors="replace") if hold.poll() is not None else "timeout")}
        time.sleep(0.5)
        rss1 = proc_rss_kb(srv.pid)
        after = seq()
        d = {"conns": n, "rss0_kb": rss0, "rss1_kb": rss1, "kb_per_conn": (rss1 - rss0) / n,
             "p50_before": before.get("p50_us"), "p50_after": after.get("p50_us"),
             "seq_before": before, "seq_after": after, "holder": json.loads(line)}
        if skind == "pyro-thread":
            d["threadpool_size"] = n + 100
        return d
    finally:
        if hold is not None:
            try:
                hold.stdin.close()
            except OSError:
                pass
            stop(hold)
        srv.stop()


def run_soak(skind, cfg, logdir, wire):
    try:
        srv = Server(skind, logdir, threads=cfg["pyro_threads"])
    except RuntimeError as e:
        return {"error": str(e)}
    try:
        calls, first, samples = 0, None, []
        for _ in range(600):
            rec = run_client(load_argv(srv, 8, 1.0, wire))
            if "error" in rec:
                return {"error": rec["error"], "calls": calls}
            calls += rec["calls"]
            rss = proc_rss_kb(srv.pid)
            samples.append((calls, rss))
            if first is None:
                first = rss
            if calls >= cfg["soak"]:
                break
        last = samples[-1][1]
        return {"calls": calls, "rss_first_kb": first, "rss_last_kb": last,
                "growth_pct": (last - first) * 100.0 / first, "samples": samples}
    finally:
        srv.stop()


if __name__ == "__main__":
    try:
        main()
    finally:
        for p in list(PROCS):
            stop(p)
