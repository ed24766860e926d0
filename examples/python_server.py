# A plain Python Pyro4 daemon serving the seed's Service as "ServiceName", for
# springrun clients (README "Calling Python"): examples/client.lua calls it
# unchanged.
#
#   /usr/bin/python3 examples/python_server.py                      # 127.0.0.1:7000
#   /usr/bin/python3 examples/python_server.py 127.0.0.1 7001 127.0.0.1 9090
#       (host, port, and a name server to register "ServiceName" with)
import sys

import Pyro4


@Pyro4.expose
class Service(object):
    def get_data(self, param):
        return "You got remote data => %s" % param


host = sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1"
port = int(sys.argv[2]) if len(sys.argv) > 2 else 7000
daemon = Pyro4.Daemon(host=host, port=port)
uri = daemon.register(Service(), "ServiceName")
if len(sys.argv) > 4:
    Pyro4.locateNS(sys.argv[3], int(sys.argv[4])).register("ServiceName", uri)
print("URI = %s" % uri, flush=True)
daemon.requestLoop()
