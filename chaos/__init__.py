"""The fault and attack suite (``make chaos``): real ``fedsilo server run`` and ``client run``
processes, hostile files written straight into their exchange, SIGKILLs at every write of a
round, storage faults against moto_server, and bad tables at ``fedsilo data prepare``.

A pass/fail suite that developers and CI run from a checkout, like ``tests/``; not a benchmark
and not shipped (its kill hooks and hostile writers have no place in an installed package)."""
