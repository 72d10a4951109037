"""Command line: ``python -m core {train,evaluate,screen,bench,download,explain,...}``."""
from core.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
