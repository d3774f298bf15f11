"""``python -m tinygpt`` runs the command line."""

from .cli import main

raise SystemExit(main())
