# A FastAPI service, run by uvicorn on 127.0.0.1:PORT, as the Python API of
# Aspire's production patterns. GET /trace answers the traceparent header
# it received (FastAPI does not continue a trace by itself: without
# opentelemetry-instrumentation-fastapi the header is only readable).
#
# usage: fastapi_service.py PORT
import sys

import uvicorn
from fastapi import FastAPI, Request

app = FastAPI()


@app.get("/health")
def health():
    return {"status": "Healthy"}


@app.get("/trace")
def trace(request: Request):
    return {"traceparent": request.headers.get("traceparent")}


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
