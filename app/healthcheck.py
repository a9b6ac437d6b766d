"""`python -m app.healthcheck`: exit 0 when the service answers GET /healthz with 200.

The Docker image's HEALTHCHECK runs this (the slim image has no curl). The URL comes from the
same settings as the server (APP_HOST / APP_PORT); a wildcard bind address is probed on
127.0.0.1.
"""

from __future__ import annotations

import argparse
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence

WILDCARDS = ("", "0.0.0.0", "::", "[::]")


def health_url(host: str, port: int) -> str:
    if host in WILDCARDS:
        host = "127.0.0.1"
    elif ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{port}/healthz"


def probe(url: str, *, timeout_s: float) -> str | None:
    """None when healthy, else why not."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            if response.status != 200:
                return f"HTTP {response.status}"
    except urllib.error.HTTPError as exc:
        return f"HTTP {exc.code}"
    except (OSError, ValueError) as exc:
        return str(getattr(exc, "reason", exc))
    return None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app.healthcheck", description=__doc__)
    parser.add_argument("--url", help="probe this URL instead of the configured server")
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds (default 3)")
    args = parser.parse_args(argv)
    url = args.url
    if url is None:
        from app.config import Settings

        try:
            settings = Settings()
        except Exception as exc:  # invalid APP_* settings: say so in one line
            print(f"unhealthy: invalid settings: {exc}", file=sys.stderr)
            return 1
        url = health_url(settings.host, settings.port)
    problem = probe(url, timeout_s=args.timeout)
    if problem is not None:
        print(f"unhealthy: {url}: {problem}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
