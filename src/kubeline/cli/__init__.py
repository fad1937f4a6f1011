"""The ``kubeline`` command line (Typer + Rich): commands call bootstrap and services only."""
