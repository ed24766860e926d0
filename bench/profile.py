#!/usr/bin/python3
"""bench/profile.py -- where a springrun server's time goes per call.

    /usr/bin/python3 bench/profile.py [--scenario seq|load32|echo1m|connect] [--calls N] [--freq HZ]
                                      [--server springrun|pyro-thread|pyro-multiplex|floor]

1. Starts the server (as bench/run.py does), runs the scenario once without perf and
   takes server CPU per call from /proc/<pid>/stat (utime+stime).
   (echo1m: calls/100 echoes of a 1 MB string; connect: calls/10 connect+handshake+call.)
2. Runs it again under `perf record -e cpu-clock -g -p <pid>` (software clock: this VM
   has no hardware counters), then classifies every sample by thread (the main thread
   is the Lua thread; others are the daemon thread) and by what it was doing:
   the syscall it was in (socket send/receive, eventfd = uv_async wake-ups, epoll_wait,
   sched_yield), preemption at syscall exit, libuv's async hand-off spin, the Lua VM,
   springrun's C core (codec, daemon, queue), malloc/free, other user code.
3. Prints a markdown table: share of samples and the estimated microseconds per call
   (share x CPU per call measured in step 1, so perf's own overhead is left out).
Stops every process it started, by pid.
"""
import argparse
import collections
import os
import signal
import subprocess
import sys
import tempfile
import time

sys.dont_write_bytecode = True  # no bench/__pycache__ in the checkout
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run  # noqa: E402  (Server, client_argv, load_argv, run_client, proc_cpu)

USER_SPIN = None  # (lo, hi) offsets of libuv's uv__async_spin loop, found at run time


def libuv_spin_range():
    """Offsets of the pause/cmpxchg loop in libuv 1.44's uv__async_spin (997 rounds),
    found by disassembling the installed libuv: `mov $0x3e5,%edx` starts it."""
    try:
        path = os.path.realpath("/lib/x86_64-linux-gnu/libuv.so.1")
        out = subprocess.check_output(["objdump", "-d", path], stderr=subprocess.DEVNULL).decode()
    except (OSError, subprocess.CalledProcessError):
        return None
    lines = out.splitlines()
    for i, line in enumerate(lines):
        if "mov    $0x3e5,%edx" in line:
            lo = int(line.split(":")[0], 16)
            return (lo, lo + 0x40)
    return None


def classify(frames, tid, pid):
    """frames: [(addr, sym, dso)] leaf first. Returns a category name."""
    leaf_addr, leaf_sym, leaf_dso = frames[0]
    if "kernel" not in leaf_dso:
        if "libuv" in leaf_dso:
            if USER_SPIN and USER_SPIN[0] <= leaf_addr < USER_SPIN[1]:
                return "libuv uv_async hand-off: spin (uv__async_spin)"
            return "libuv loop / streams (user)"
        if "liblua" in leaf_dso:
            return "Lua VM (liblua5.4)"
        if "core.so" in leaf_dso:
            return "springrun C core (codec, daemon, queue)"
        if "libc" in leaf_dso:
            s = leaf_sym
            if any(k in s for k in ("malloc", "free", "realloc", "calloc", "_int_", "unlink_chunk", "tcache")):
                return "malloc/free"
            return "libc other (memcpy, strcmp, locks)"
        return "other user code (%s)" % os.path.basename(leaf_dso)
    syms = [f[1] for f in frames]
    joined = " ".join(syms)
    if "do_syscall_64" in syms:
        i = syms.index("do_syscall_64")
        call = syms[i - 1] if i > 0 else "?"
        if "sched_yield" in joined:
            return "kernel: sched_yield (libuv async spin)"
        if "eventfd_write" in joined or "eventfd_read" in joined:
            return "kernel: eventfd read/write (uv_async wake-ups)"
        if "tcp_sendmsg" in joined or "sock_write_iter" in joined:
            return "kernel: socket send (incl. loopback delivery to the peer)"
        if "tcp_recvmsg" in joined or "sock_read_iter" in joined:
            return "kernel: socket receive"
        if "epoll_wait" in joined:
            return "kernel: epoll_wait (sleep / wake-up)"
        if "epoll_ctl" in joined:
            return "kernel: epoll_ctl"
        if "syscall_exit_to_user_mode" in joined or "exit_to_user_mode_loop" in joined:
            return "kernel: rescheduled at syscall exit"
        return "kernel: syscall %s" % call
    if "exit_to_user_mode_loop" in joined or "irqentry_exit" in joined:
        return "kernel: rescheduled at syscall exit"
    if "asm_exc_page_fault" in joined:
        return "kernel: page faults"
    if "handle_softirqs" in joined or "asm_sysvec" in joined or "asm_common_interrupt" in joined:
        return "kernel: interrupts / softirq"
    return "kernel: other (%s)" % leaf_sym


def parse_script(text, pid):
    counts = collections.Counter()
    threads = collections.Counter()
    block = []
    header = None

    def flush():
        if header is None or not block:
            return
        tid = header
        frames = []
        for line in block:
            parts = line.strip().split(None, 1)
            if len(parts) < 2:
                continue
            addr_s, rest = parts
            try:
                addr = int(addr_s, 16)
            except ValueError:
                continue
            sym, _, dso = rest.rpartition(" (")
            sym = sym.split("+0x")[0]
            dso = dso.rstrip(")")
            if sym == "[unknown]" and "libuv" in dso:
                pass
            frames.append((addr, sym, dso))
        if not frames:
            return
        who = "Lua thread" if tid == pid else "daemon thread"
        counts[(who, classify(frames, tid, pid))] += 1
        threads[who] += 1

    for line in text.splitlines():
        if not line.strip():
            flush()
            block, header = [], None
            continue
        if not line.startswith((" ", "\t")):
            flush()
            block = []
            # "springrun 20746  1135.453033:     100000 cpu-clock: "
            try:
                header = int(line.split()[1].split("/")[-1])
            except (IndexError, ValueError):
                header = None
            continue
        block.append(line)
    flush()
    return counts, threads


def run_scenario(srv, scenario, calls, client):
    if scenario == "seq":
        return run.run_client(run.client_argv(client, srv, "seq", n=calls))
    if scenario == "echo1m":
        return run.run_client(run.client_argv(client, srv, "echo", n=max(1, calls // 100), size=1048576))
    if scenario == "connect":
        return run.run_client(run.client_argv(client, srv, "connect", n=max(1, calls // 10)))
    if scenario.startswith("load"):
        return run.run_client(run.load_argv(srv, int(scenario[4:]), 2.0, WIRE))
    raise SystemExit("unknown scenario " + scenario)


def main():
    global USER_SPIN, WIRE
    ap = argparse.ArgumentParser()
    ap.add_argument("--scenario", default="seq")
    ap.add_argument("--server", default="springrun")
    ap.add_argument("--calls", type=int, default=20000)
    ap.add_argument("--freq", type=int, default=2999)
    a = ap.parse_args()
    USER_SPIN = libuv_spin_range()
    tmp = tempfile.mkdtemp(prefix="springrun-profile-")
    WIRE = tmp
    subprocess.check_call([run.PY, os.path.join(run.BENCH, "pyro_client.py"), "--scenario", "wire", "--out", tmp])
    client = {"springrun": "sr", "floor": "c"}.get(a.server, "pyro")
    srv = run.Server(a.server, tmp, threads=200)
    perf = None
    try:
        run_scenario(srv, a.scenario, 2000, client)  # warm up
        base = run_scenario(srv, a.scenario, a.calls, client)
        if "error" in base:
            raise SystemExit("scenario failed: %s" % base["error"])
        cpu_per_call = base["server_cpu_s"] / base["calls"] * 1e6
        data = os.path.join(tmp, "perf.data")
        perf = run.spawn(["perf", "record", "-q", "-e", "cpu-clock", "-F", str(a.freq), "-g",
                          "-p", str(srv.pid), "-o", data], role="tool", stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE)
        time.sleep(0.5)
        prof = run_scenario(srv, a.scenario, a.calls, client)
        perf.send_signal(signal.SIGINT)
        perf.wait(30)
        run.PROCS.remove(perf)
        perf = None
        text = subprocess.check_output(["perf", "script", "-i", data, "-F", "comm,tid,time,event,ip,sym,dso"],
                                       stderr=subprocess.DEVNULL).decode(errors="replace")
    finally:
        if perf is not None:
            run.stop(perf)
        srv.stop()
    counts, threads = parse_script(text, srv.pid)
    total = sum(counts.values())
    print("### Profile: %s server, scenario %s (%s)" % (a.server, a.scenario, time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())))
    print("")
    print("Without perf: %.0f calls/s, server CPU %.1f µs per call (/proc/<pid>/stat). "
          "Under perf (%d Hz cpu-clock, call graphs): %.0f calls/s, %d samples." % (
              base["rate"], cpu_per_call, a.freq, prof.get("rate", 0), total))
    print("")
    print("| thread | what | share of server CPU | ≈ µs per call |")
    print("| --- | --- | --- | --- |")
    for (who, cat), n in sorted(counts.items(), key=lambda kv: (-threads[kv[0][0]], -kv[1])):
        share = n / total
        if share < 0.005:
            continue
        print("| %s | %s | %.1f%% | %.1f |" % (who, cat, share * 100, share * cpu_per_call))
    for who, n in threads.most_common():
        print("| %s | **total** | %.1f%% | %.1f |" % (who, n * 100.0 / total, n / total * cpu_per_call))


if __name__ == "__main__":
    try:
        main()
    finally:
        for p in list(run.PROCS):
            run.stop(p)
