"""``python -m jitort``: the command line (see ``jitort.cli``)."""
from jitort.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
