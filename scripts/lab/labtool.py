#!/usr/bin/env python3
"""The lab's one entry point: scripts/lab.sh runs it for every command but up
and down, and inside the client namespace for its probes. The program is the
package next to it, scripts/lab/labkit/."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from labkit.cli import main  # noqa: E402

if __name__ == "__main__":
    main()
