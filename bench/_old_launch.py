"""Start the previous OpenIDCS server (OpenIDCS-Client, Flask) on 127.0.0.1 for cheap_reads.py.

Runs inside that server's own virtualenv with the working directory set to a copy of its
source. It does what ``python HostServer.py`` does (``init_app()`` then ``app.run``) with
three differences: the address is 127.0.0.1 and a chosen port instead of 0.0.0.0:5000,
the access token is the one in ``OLD_TOKEN`` (instead of a random one), and
``OLD_DEBUG=0`` turns Flask's debug mode (reloader + debugger) off. The file
``HostServer.py`` is run by path because the package ``HostServer/`` beside it shadows
it as a module name.
"""

import os
import runpy
import sys

sys.path.insert(0, os.getcwd())
server = runpy.run_path("HostServer.py", run_name="openidcs_old")
server["init_app"]()
server["hs_manage"].set_pass(os.environ["OLD_TOKEN"])
server["app"].run(host="127.0.0.1", port=int(os.environ["OLD_PORT"]), debug=os.environ.get("OLD_DEBUG", "1") == "1")
