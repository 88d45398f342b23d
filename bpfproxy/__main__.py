"""`python -m bpfproxy`: the same as the `bpfproxy` console script."""

from bpfproxy.cli import main

raise SystemExit(main())
