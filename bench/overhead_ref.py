"""The bare-FastAPI reference of bench/overhead.py: `python -m bench.overhead_ref`.

POST /classify takes the service's own request model (`app.schemas.ClassifyRequest`, validated
the same way) and answers a constant prediction of the service's response shape; GET /readyz
answers 200. No middleware, no dependencies, no engine. It runs under uvicorn with the call
`python -m app` makes (`uvicorn.run(app, host=, port=, log_level=, access_log=)`), its values
read from the same APP_HOST, APP_PORT, APP_LOG_LEVEL and APP_ACCESS_LOG variables, so both
servers of a run get the same HTTP implementation and event loop (uvicorn's "auto" choice).
"""

import os
import sys

CONSTANT = [[{"label": "positive", "score": 0.5}]]


def create_reference_app():
    from fastapi import FastAPI

    from app.schemas import ClassifyRequest  # the annotation below is evaluated here

    app = FastAPI(title="bare reference")

    @app.post("/classify")
    async def classify(body: ClassifyRequest) -> dict:
        return {"adapter": body.adapter, "version": 1, "predictions": CONSTANT}

    @app.get("/readyz")
    async def readyz() -> dict:
        return {"status": "ready"}

    return app


def main() -> int:
    import uvicorn

    env = os.environ
    uvicorn.run(
        create_reference_app(),
        host=env.get("APP_HOST", "127.0.0.1"),
        port=int(env.get("APP_PORT", "8000")),
        log_level=env.get("APP_LOG_LEVEL", "info"),
        access_log=env.get("APP_ACCESS_LOG", "true").lower() in ("1", "true", "yes", "on"),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
