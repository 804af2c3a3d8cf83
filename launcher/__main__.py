"""`python -m dtrain.launcher ...` is the `dtrain` command."""
import sys

from dtrain.launcher.cli import main

sys.exit(main())
