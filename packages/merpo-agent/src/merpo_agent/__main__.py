"""``python -m merpo_agent ...`` is ``merpo-agent ...``."""

import sys

from merpo_agent.cli import main

sys.exit(main())
