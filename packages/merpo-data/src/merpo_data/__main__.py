"""``python -m merpo_data ...`` (and ``torchrun ... -m merpo_data generate ...``): the CLI."""

from merpo_data.cli import main

raise SystemExit(main())
