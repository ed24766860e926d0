# A plain Python Pyro4 client for springrun services (README "Calling from
# Python"). Pyro4's default serializer (serpent) works; so does
# PYRO_SERIALIZER=json.
#
#   /usr/bin/python3 examples/python_client.py                      # PYRO:ServiceName@127.0.0.1:7000
#   /usr/bin/python3 examples/python_client.py PYRONAME:ServiceName@127.0.0.1:9090
import sys

import Pyro4

url = sys.argv[1] if len(sys.argv) > 1 else "PYRO:ServiceName@127.0.0.1:7000"
with Pyro4.Proxy(url) as service:
    print("PYTHON CLIENT: " + service.get_data("Hello"))
