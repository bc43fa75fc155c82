"""Shipped test doubles: local provider emulators, the settings that point calsync at them, a mail reader.

Product code never imports this package. The demo is the one deliberate exception: ``calsync
demo`` runs the real channels against the emulators, so they ship with the wheel instead of
living under ``tests/``.
"""
