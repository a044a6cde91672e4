"""``python -m psd_gs``: the command line (psd_gs/cli.py)."""

from .cli import main

raise SystemExit(main())
