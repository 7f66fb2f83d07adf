"""``python -m failover``: the command line (see ``failover --help``)."""

from ._cli import main

raise SystemExit(main())
