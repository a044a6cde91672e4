"""``python -m psd_gs``: the command line (psd_gs/cli/main.py)."""

from .cli.main import main

raise SystemExit(main())
