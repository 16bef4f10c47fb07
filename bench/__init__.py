"""Benchmarks behind ``make bench``.

Every module here that defines ``main(quick: bool) -> None`` is one benchmark script;
``python -m bench`` finds and runs them all, so adding a benchmark means adding a module and
nothing else. Tests never assert on timings: the numbers are for people to read.
"""
