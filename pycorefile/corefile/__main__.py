"""``python -m pycorefile.corefile``: the child that ``parse_corefile_apart`` runs."""

from ._apart import child_main

raise SystemExit(child_main())
