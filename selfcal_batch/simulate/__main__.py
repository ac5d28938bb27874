"""``python -m selfcal_batch.simulate SPEC.json OUT.ms [--force]`` (the simulator child)."""
from __future__ import annotations

import sys

from .msbuild import main

if __name__ == "__main__":
    sys.exit(main())
