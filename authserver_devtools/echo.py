"""``python -m authserver_devtools.echo [HOST:PORT]``: the echo upstream alone
(default 127.0.0.1:9000), until Ctrl-C. Not imported by the package, so that
``-m`` runs it cleanly."""

from __future__ import annotations

import argparse
import sys
import time

from .upstream import EchoUpstream

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """The echo upstream alone, until Ctrl-C."""
    from authserver.gateways import parse_hostport  # the same HOST:PORT rules as the CLI

    parser = argparse.ArgumentParser(prog="python -m authserver_devtools.echo",
                                     description="an HTTP upstream that echoes the x-api-key-* headers as JSON")
    parser.add_argument("listen", nargs="?", default="127.0.0.1:9000", metavar="HOST:PORT")
    try:
        hp = parse_hostport(parser.parse_args(argv).listen)
    except ValueError as exc:
        parser.error(str(exc))
    echo = EchoUpstream(hp.host, hp.port).start()
    print(f"echo upstream on http://{echo.address}  (Ctrl-C to stop)", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        echo.stop()
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
