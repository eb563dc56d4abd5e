"""``python -m naila_graph.cli`` is the ``naila`` command."""

import sys

from naila_graph.cli import main

sys.exit(main())
