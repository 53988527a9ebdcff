// Package interop holds the interoperability tests of goaspire with
// services in other languages, as Aspire's production patterns mix them:
// real Python clients (pika, redis-py, httpx, grpcio, FastAPI on uvicorn,
// from Debian's python3-* packages) run as processes against goaspire's
// clients and servers on throwaway servers (package testserver). The
// Python scripts are in testdata.
//
// The tests look for a Python interpreter that imports every library they
// use (GOASPIRE_PYTHON, then /usr/bin/python3, then python3 on PATH) and
// skip without one, except under CI=true, where they fail.
package interop
