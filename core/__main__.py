"""Command line: ``python -m core {train,evaluate,screen,bench,download,explain,...}``."""
from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's start-up chatter out of reports

from core.cli import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
