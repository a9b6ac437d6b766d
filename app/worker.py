"""`python -m app.worker`: one training worker alone (the code lives in `app.jobs.worker`)."""

from __future__ import annotations

import sys

if __name__ == "__main__":
    from app.jobs.worker import main

    sys.exit(main())
