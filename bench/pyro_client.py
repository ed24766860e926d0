"""bench/pyro_client.py -- the Pyro4 client side of the benchmark (one scenario per run).

    /usr/bin/python3 bench/pyro_client.py --uri PYRO:bench@127.0.0.1:P --scenario S
        [--serializer json|serpent] [--n N] [--size BYTES] [--pid SERVERPID]
        [--start EPOCH --dur SECONDS]

Scenarios: seq (get_data("Hello") on one connection), oneway (N oneway ping() then one
get_data to wait for the server), echo (a SIZE-byte string), table (the nested table of
~1,100 elements, see nested_table), connect (new proxy, connect + handshake + one call,
release; repeated), timed (seq between two wall-clock instants: one of N client
processes: prints READY once connected, then reads "START_EPOCH DURATION" on stdin,
and prints a {"lat_us": [...]} line of latency samples first). Prints one JSON object on stdout, the same fields as bench/floor.c.
"wire" writes the Pyro4 bytes of a CONNECT and of one get_data("Hello") INVOKE into
--out DIR (hello.bin, req.bin) for the C load generator.
"""
import argparse
import json
import os
import sys
import time

import Pyro4
import Pyro4.message
import Pyro4.util

CLK = os.sysconf("SC_CLK_TCK")
CONNECT_WARM = 50  # connect: warm-up connections (as in bench/sr_client.lua, floor.c)

def proc_cpu(pid):
    if not pid:
        return None
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK
    except OSError:
        return None


def nested_table():
    """100 records of 11 values each (1,100 elements in all); bench/sr_client.lua builds
    the same structure."""
    return [{"id": i, "name": "item-%d" % i, "score": i * 0.5 + 0.25, "ok": i % 2 == 0,
             "tags": ["red", "green", "blue"], "pos": {"x": i, "y": -i}}
            for i in range(100)]


def result(scenario, calls, secs, lat, cpu0, cpu1, nbytes=0):
    r = {"scenario": scenario, "calls": calls, "secs": round(secs, 6),
         "rate": round(calls / secs, 1) if secs > 0 else 0}
    if lat:
        lat.sort()
        r["p50_us"] = round(lat[int(0.5 * (len(lat) - 1) + 0.5)] * 1e6, 2)
        r["p99_us"] = round(lat[int(0.99 * (len(lat) - 1) + 0.5)] * 1e6, 2)
    if cpu0 is not None and cpu1 is not None:
        r["server_cpu_s"] = round(cpu1 - cpu0, 4)
    if nbytes:
        r["bytes"] = nbytes
    sys.stdout.write(json.dumps(r) + "\n")
    sys.stdout.flush()


def loop_calls(fn, arg, n, pid, scenario, nbytes_per_call=0):
    lat = []
    clock = time.perf_counter
    cpu0 = proc_cpu(pid)
    t0 = clock()
    for _ in range(n):
        a = clock()
        fn(arg)
        lat.append(clock() - a)
    t1 = clock()
    cpu1 = proc_cpu(pid)
    result(scenario, n, t1 - t0, lat, cpu0, cpu1, nbytes_per_call * n)


def write_wire(serializer, out):
    ser = Pyro4.util.get_serializer(serializer)
    hello, _ = ser.serializeData({"handshake": "hello", "object": "bench"}, False)
    msg = Pyro4.message.Message(Pyro4.message.MSG_CONNECT, hello, ser.serializer_id,
                                Pyro4.message.FLAGS_META_ON_CONNECT, 0)
    with open(os.path.join(out, "hello.bin"), "wb") as f:
        f.write(msg.to_bytes())
    data, _ = ser.serializeCall("bench", "get_data", ("Hello",), {}, False)
    msg = Pyro4.message.Message(Pyro4.message.MSG_INVOKE, data, ser.serializer_id, 0, 1)
    with open(os.path.join(out, "req.bin"), "wb") as f:
        f.write(msg.to_bytes())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--uri")
    ap.add_argument("--scenario", required=True)
    ap.add_argument("--serializer", default="json")
    ap.add_argument("--n", type=int, default=10000)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--warm", type=int, default=200)  # connect: at most CONNECT_WARM
    ap.add_argument("--pid", type=int, default=0)
    ap.add_argument("--start", type=float, default=0)
    ap.add_argument("--dur", type=float, default=1.0)
    ap.add_argument("--out", default=".")
    a = ap.parse_args()
    Pyro4.config.SERIALIZER = a.serializer
    if a.scenario == "wire":
        write_wire(a.serializer, a.out)
        return
    if a.scenario == "connect":
        for _ in range(min(a.warm, CONNECT_WARM)):
            p = Pyro4.Proxy(a.uri)
            p.get_data("Hello")
            p._pyroRelease()
        lat = []
        clock = time.perf_counter
        cpu0 = proc_cpu(a.pid)
        t0 = clock()
        for _ in range(a.n):
            s = clock()
            p = Pyro4.Proxy(a.uri)
            p.get_data("Hello")
            p._pyroRelease()
            lat.append(clock() - s)
        t1 = clock()
        result("connect", a.n, t1 - t0, lat, cpu0, proc_cpu(a.pid))
        return
    p = Pyro4.Proxy(a.uri)
    p._pyroBind()
    for _ in range(min(a.warm, a.n)):
        p.get_data("Hello")
    if a.scenario == "seq":
        loop_calls(p.get_data, "Hello", a.n, a.pid, "seq")
    elif a.scenario == "oneway":
        clock = time.perf_counter
        cpu0 = proc_cpu(a.pid)
        t0 = clock()
        for _ in range(a.n):
            p.ping()
        p.get_data("Hello")
        t1 = clock()
        result("oneway", a.n, t1 - t0, None, cpu0, proc_cpu(a.pid))
    elif a.scenario == "echo":
        s = "x" * a.size
        if len(p.echo(s)) != a.size:
            raise SystemExit("echo returned a different string")
        loop_calls(p.echo, s, a.n, a.pid, "echo", 2 * a.size)
    elif a.scenario == "table":
        t = nested_table()
        if p.echo(t) != t:
            raise SystemExit("echo returned a different table")
        loop_calls(p.echo, t, a.n, a.pid, "table")
    elif a.scenario == "timed":
        lat = []
        clock = time.perf_counter
        if a.start <= 0:
            # barrier: say READY, then the harness writes "START_EPOCH DURATION"
            sys.stdout.write("READY\n")
            sys.stdout.flush()
            a.start, a.dur = (float(x) for x in sys.stdin.readline().split())
        while time.time() < a.start:
            time.sleep(min(0.01, max(0.0, a.start - time.time())))
        t0 = clock()
        end = t0 + a.dur
        calls = 0
        while calls < 100000000:
            s = clock()
            if s >= end:
                break
            p.get_data("Hello")
            lat.append(clock() - s)
            calls += 1
        secs = clock() - t0
        step = max(1, len(lat) // 2000)
        sys.stdout.write(json.dumps({"lat_us": [round(x * 1e6, 2) for x in lat[::step][:2000]]}) + "\n")
        result("timed", calls, secs, lat, None, None)
    else:
        raise SystemExit("unknown scenario %r" % a.scenario)
    p._pyroRelease()


if __name__ == "__main__":
    main()
