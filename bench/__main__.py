"""python -m bench [--quick] [--only gateway,mint,...] [--out DIR]

A full run writes to bench/results/ (committed); a quick run to
bench/results-quick/ (gitignored), so it never overwrites the full results.

Every process the harness starts (Envoy, authserver, nginx, wrk) is stopped
when its measurement ends, on errors and on Ctrl-C / SIGTERM too; children
also get SIGTERM if this process is killed outright (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
import traceback
from pathlib import Path

from . import report, suites
from ._common import machine_info
from .suites import SUITES

QUICK_DEFAULT = ["gateway", "server_memory", "jwks_serving", "mint", "propagation"]
# default outputs, beside this package whatever the working directory: the
# committed full-run results, and a gitignored folder for quick runs
RESULTS_DIR = Path(__file__).resolve().parent / "results"
QUICK_RESULTS_DIR = Path(__file__).resolve().parent / "results-quick"


def _sigterm(signum, frame):  # run the context managers that stop our children
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small sizes, short runs (under 2 minutes)")
    p.add_argument("--only", help=f"comma-separated suites: {', '.join(SUITES)}")
    p.add_argument("--out", default=None,
                   help="output directory (default bench/results, with --quick bench/results-quick)")
    p.add_argument("--merge", action="store_true",
                   help="keep the other suites of an earlier run in --out (re-run some suites only)")
    p.add_argument("--cache-duration", type=int, metavar="S",
                   help="Envoy JWKS cache_duration for the propagation suite (default 2 s quick, 5 s full; "
                        "the server's default is 300 s)")
    p.add_argument("--max-keys", type=int, metavar="N",
                   help="reduced scale: measure key counts up to N only (gateway, server memory, JWKS serving, "
                        "rebuild, million)")
    args = p.parse_args(argv)
    names = [n.strip() for n in args.only.split(",") if n.strip()] if args.only else (
        QUICK_DEFAULT if args.quick else list(SUITES))
    unknown = [n for n in names if n not in SUITES]
    if unknown:
        p.error(f"unknown suite(s) {unknown}; choose from {list(SUITES)}")
    if args.cache_duration is not None and args.cache_duration < 1:
        p.error("--cache-duration must be at least 1 second")
    suites.OPTIONS["cache_duration"] = args.cache_duration
    suites.OPTIONS["max_keys"] = args.max_keys
    signal.signal(signal.SIGTERM, _sigterm)
    # everything is on loopback: never send it through a proxy from the environment
    for var in ("NO_PROXY", "no_proxy"):
        os.environ[var] = ",".join(filter(None, [os.environ.get(var), "127.0.0.1", "localhost"]))

    out = Path(args.out) if args.out else QUICK_RESULTS_DIR if args.quick else RESULTS_DIR
    started = time.perf_counter()
    results = {"quick": args.quick, "machine": machine_info(), "suites": {}, "seconds": {}, "errors": {},
               "options": {"only": names, "cache_duration": args.cache_duration, "max_keys": args.max_keys}}
    earlier = out / "results.json"
    if args.merge and earlier.exists():
        old = json.loads(earlier.read_text())
        results["suites"], results["seconds"] = old["suites"], old["seconds"]
        results["machine"]["earlier_runs"] = [*old["machine"].get("earlier_runs", []), old["machine"]["date"]]
    for name in names:
        t0 = time.perf_counter()
        print(f"[bench] {name} ...", file=sys.stderr, flush=True)
        try:
            results["suites"][name] = SUITES[name](args.quick)
        except Exception as exc:  # record it, go on with the other suites, fail at the end
            traceback.print_exc()
            results["suites"].pop(name, None)
            results["errors"][name] = f"{type(exc).__name__}: {exc}"[:2000]
        results["seconds"][name] = round(time.perf_counter() - t0, 1)
        print(f"[bench] {name} {'FAILED' if name in results['errors'] else 'done'} in "
              f"{results['seconds'][name]} s", file=sys.stderr, flush=True)
    results["total_seconds"] = round(time.perf_counter() - started, 1)
    for path in report.write(results, out):
        print(path)
    print(f"[bench] total {results['total_seconds']} s", file=sys.stderr)
    return 1 if results["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
