"""``python -m chaos.shim ARGS``: the ``fedsilo`` command line with the chaos hooks in.

The same entry point as the ``fedsilo`` console script (``fedsilo.cli.main``), so the
process under test is the real command; only the store classes and the trainer step are
wrapped (``chaos.hooks``), and only in this process.
"""

from __future__ import annotations

import sys

from chaos import hooks


def main() -> None:
    hooks.install()
    from fedsilo.cli import main as fedsilo_main

    sys.argv = ["fedsilo", *sys.argv[1:]]
    fedsilo_main()


if __name__ == "__main__":
    main()
