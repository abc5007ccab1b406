"""``python -m respmask``: the command line (``respmask --help``)."""

from ._cli import main

raise SystemExit(main())
