"""bench/pyro_server.py -- the Pyro4 side of the benchmark: one daemon exporting the
bench service as object id "bench" on 127.0.0.1, on a port the OS picks.

    /usr/bin/python3 bench/pyro_server.py --servertype thread|multiplex [--threads N]

Prints "PORT <n>" on stdout when ready, then serves until SIGTERM/SIGINT.
--threads sets Pyro4's THREADPOOL_SIZE (default 40: the threadpool server refuses
connections beyond its pool, so the harness raises it for the concurrency and the
idle-connection scenarios and reports the value it used).
"""
import argparse
import signal
import sys

import Pyro4


@Pyro4.expose
class Bench(object):
    def get_data(self, param):
        return "You got remote data => %s" % param

    def echo(self, value):
        return value

    @Pyro4.oneway
    def ping(self):
        pass


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--servertype", choices=["thread", "multiplex"], default="thread")
    ap.add_argument("--threads", type=int, default=40)
    a = ap.parse_args()
    Pyro4.config.SERVERTYPE = a.servertype
    Pyro4.config.THREADPOOL_SIZE = a.threads
    Pyro4.config.SERIALIZERS_ACCEPTED = {"json", "serpent", "marshal"}
    Pyro4.config.SOCK_REUSE = True
    daemon = Pyro4.Daemon(host="127.0.0.1", port=0)
    daemon.register(Bench(), objectId="bench")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    sys.stdout.write("PORT %s\n" % daemon.locationStr.rsplit(":", 1)[1])
    sys.stdout.flush()
    try:
        daemon.requestLoop()
    except (KeyboardInterrupt, SystemExit):
        pass


if __name__ == "__main__":
    main()
