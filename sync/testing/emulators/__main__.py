"""Start a local provider emulator by hand: ``python -m sync.testing.emulators google|outlook``.

For trying calsync against a calendar without Google or Microsoft: it prints
the ``CALSYNC_*`` settings that point calsync at it and, for each ``--user``,
a refresh token to hand to ``calsync integrations import``; then it serves
until interrupted.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from sync.testing.emulators.google import GoogleEmulator
from sync.testing.emulators.graph import GraphEmulator
from sync.testing.settings import google_settings, outlook_settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sync.testing.emulators", description=__doc__.splitlines()[0])
    parser.add_argument("provider", choices=["google", "outlook"])
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: any free one)")
    parser.add_argument("--user", action="append", default=[], metavar="EMAIL",
                        help="an account to create; its refresh token is printed (repeatable)")
    args = parser.parse_args(argv)
    if not 0 <= args.port <= 65535:
        parser.error("--port must be between 0 and 65535")
    emulator: GoogleEmulator | GraphEmulator
    if args.provider == "google":
        emulator = GoogleEmulator(port=args.port)
        settings = google_settings(emulator)
    else:
        emulator = GraphEmulator(port=args.port)
        settings = outlook_settings(emulator)
    for name, value in settings.items():
        print(f"export {name}={value}")
    for address in args.user:
        print(f"# refresh token for {address}: {emulator.add_user(address)}")
    # Ctrl-C and a plain kill both stop it, even when started with SIGINT ignored (a shell's
    # background job, a test runner's worker): Python installs no Ctrl-C handler then.
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    print(f"# serving {args.provider} until interrupted (Ctrl-C)", flush=True)
    try:
        while not stop.wait(1):
            pass
    finally:
        emulator.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
