#!/usr/bin/env python3
"""Vigil command line: `python run.py run|validate|detect|bench ...` (see README)."""

import sys

from pipeline.cli import main

if __name__ == "__main__":
    sys.exit(main())
