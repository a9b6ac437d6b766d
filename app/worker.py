"""`python -m app.worker` (and `adapter-worker`): one training worker alone.

Reads the settings, builds the queue and the job runner with `app.bootstrap`, and runs the
consumer loop of `app.jobs.worker`.
"""

from __future__ import annotations

import argparse
import logging
import logging.config
import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m app.worker",
        description="The training worker: a Huey consumer that runs queued training jobs.",
    )
    parser.add_argument("--parent-pid", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    from app.config import Settings

    try:
        settings = Settings()
    except Exception as exc:  # pydantic ValidationError: one clear line, no traceback
        print(f"error: invalid settings: {exc}", file=sys.stderr)
        return 2
    from app.bootstrap import worker_parts
    from app.jobs.worker import run_consumer
    from app.observability.logs import logging_config  # APP_LOG_FORMAT, as the API's lines

    logging.config.dictConfig(logging_config(settings.log_format, "info"))
    huey, make_runner, view = worker_parts(settings)
    run_consumer(huey, make_runner, shutdown_s=view.worker_shutdown_s, parent_pid=args.parent_pid)
    return 0


if __name__ == "__main__":
    sys.exit(main())
