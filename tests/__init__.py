"""calsync test suite: folders mirror the package (unit, store, channels, emulators, engine, cli, e2e, reliability)."""
