"""The ``mmguard`` command line (Typer)."""
