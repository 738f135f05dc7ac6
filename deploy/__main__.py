"""`python -m deploy COMMAND` (see deploy/ops/cli.py)."""
import sys

from deploy.ops.cli import main

sys.exit(main())
