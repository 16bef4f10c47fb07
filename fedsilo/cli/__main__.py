"""``python -m fedsilo.cli``: what mpirun starts on every rank."""

from fedsilo.cli.main import main

main()
