"""What the hospital workers' fork server holds before it forks them (``worker_pool``).

Imported only by the fork server, as its one preload module:
- torch, torch._dynamo (``torch.optim`` imports it in every optimizer's first step), pandas
  (pyarrow imports it on a worker's first column conversion, else paid again in every worker)
  and the worker's own code, so each worker starts with them loaded;
- with the collector off while they load and frozen afterwards (``gc_policy``); the fork server
  keeps collection off, each worker turns it back on;
- and the fork server leaves without tearing all of that down again (``process_exit``).
"""

import gc
import signal

# Ctrl-C reaches the fork server with the rest of the terminal's group: while it preloads it
# must not print a KeyboardInterrupt traceback (its own loop ignores SIGINT afterwards)
signal.signal(signal.SIGINT, signal.SIG_IGN)

from fedsilo.engine.gc_policy import start_up  # noqa: E402
from fedsilo.engine.process_exit import skip_teardown_at_exit  # noqa: E402

with start_up():
    import pandas  # noqa: F401
    import torch
    import torch._dynamo
    import torch.optim  # noqa: F401

    import fedsilo.engine.process_engine  # noqa: F401

gc.disable()  # the fork server allocates next to nothing; its workers enable collection
skip_teardown_at_exit()
