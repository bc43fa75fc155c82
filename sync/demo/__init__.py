"""``calsync demo``: a small mentoring program run end to end on the emulators (scenario, runner, read-back)."""
