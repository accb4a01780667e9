"""`python -m aggregator` runs the command line."""

from aggregator.cli import main

if __name__ == "__main__":  # worker processes (prepare.py) import this module under another name
    raise SystemExit(main())
