"""Imported only by the hospital workers' fork server (``worker_pool``'s preload list).

Importing it is what makes the fork server leave without tearing down torch
(``process_exit.skip_teardown_at_exit``). The workers it forks inherit the handler but never
run it: multiprocessing ends them with ``os._exit``. Nothing else may import this module.
"""

from fedsilo.process_exit import skip_teardown_at_exit

skip_teardown_at_exit()
