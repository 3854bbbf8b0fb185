"""`python -m snmf_jax.cli`: the same entry point as the `snmf-jax` script."""

import sys

from snmf_jax.cli.main import main

sys.exit(main())
