"""The fault and attack suite (``make chaos``): real ``fedsilo server run`` and ``client run``
processes, hostile files written straight into their exchange, SIGKILLs at every write of a
round, storage faults against moto_server, and bad tables at ``fedsilo data prepare``."""
