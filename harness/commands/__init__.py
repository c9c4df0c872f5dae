"""Subcommands of the ``harness`` command line."""
