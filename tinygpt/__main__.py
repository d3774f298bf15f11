"""``python -m tinygpt`` runs the command line."""

from .cli import run

run()
