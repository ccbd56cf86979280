"""``python -m pycorefile``: the same as the ``pycorefile`` command."""

from .cli import main

raise SystemExit(main())
