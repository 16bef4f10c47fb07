"""``python -m bench [--quick] [--only NAME ...]``: run every benchmark script in ``bench/``.

Scripts are discovered, not listed, so that engineers add benchmarks without touching this
file. One script failing (at import or while running) must not hide the others' numbers: its
traceback is printed, the run goes on, and the exit status is non-zero at the end.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import os
import pkgutil
import platform
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from typing import cast

import psutil
from rich.console import Console

import bench
from bench import _timing

BenchMain = Callable[[bool], None]


def discover_benchmarks() -> list[str]:
    """Module names in ``bench/`` (sorted, private ``_*`` modules excluded)."""
    return sorted(
        info.name
        for info in pkgutil.iter_modules(bench.__path__)
        if not info.name.startswith("_") and not info.ispkg
    )


def _version_of(distribution: str) -> str:
    """Installed version without importing the package (importing torch costs seconds)."""
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_header() -> str:
    """One block that says what the numbers below were measured on."""
    memory = psutil.virtual_memory()
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return "\n".join(
        [
            f"machine : {platform.node()} {platform.system()} {platform.release()} "
            f"{platform.machine()}",
            f"cpu     : {_cpu_model()}, {os.cpu_count()} logical cores ({usable} usable), "
            f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}",
            f"memory  : {memory.total / 2**30:.1f} GiB total, "
            f"{memory.available / 2**30:.1f} GiB available",
            f"python  : {platform.python_version()} ({sys.executable})",
            f"numpy {_version_of('numpy')}, torch {_version_of('torch')}, "
            f"safetensors {_version_of('safetensors')}, fedsilo {_version_of('fedsilo')}",
        ]
    )


def _load_main(name: str) -> BenchMain | None:
    """The module's ``main``, or None for a helper module that is not a benchmark."""
    module = importlib.import_module(f"{bench.__name__}.{name}")
    entry = getattr(module, "main", None)
    return cast(BenchMain, entry) if callable(entry) else None


def run_all(names: Sequence[str], quick: bool, console: Console) -> list[str]:
    """Run each named benchmark; return the names of those that failed."""
    failed: list[str] = []
    for name in names:
        console.rule(f"bench.{name}")
        started = time.perf_counter()
        try:
            entry = _load_main(name)
            if entry is None:
                console.print(f"bench.{name} defines no main(quick); skipped")
                continue
            entry(quick)
        except Exception:  # one broken benchmark must not hide the others' numbers
            failed.append(name)
            console.print(f"[bold red]bench.{name} failed[/]")
            console.print(traceback.format_exc(), markup=False, highlight=False)
        console.print(f"bench.{name}: {time.perf_counter() - started:.1f} s")
    return failed


def selected(only: Sequence[str], available: Sequence[str]) -> list[str]:
    """The modules ``--only`` names, in discovery order; a module whose name ends in
    ``_bench`` may be named without it (``--only scale``)."""
    wanted = {name if name in available else f"{name}_bench" for name in only}
    return [name for name in available if name in wanted]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a small grid (a minute or so)")
    parser.add_argument(
        "--only", nargs="+", metavar="NAME", help="run only these modules, e.g. aggregation"
    )
    args = parser.parse_args(argv)
    available = discover_benchmarks()
    names = available
    if args.only:
        unknown = sorted(
            n for n in args.only if n not in available and f"{n}_bench" not in available
        )
        if unknown:
            parser.error(f"no benchmark module {unknown}; choose from {available}")
        names = selected(args.only, available)
    console = _timing.table_console()
    console.print(machine_header(), markup=False, highlight=False)
    console.print(f"benchmarks: {', '.join(names)}{' (quick)' if args.quick else ''}")
    failed = run_all(names, args.quick, console)
    if failed:
        console.print(f"[bold red]{len(failed)} benchmark(s) failed: {', '.join(failed)}[/]")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
