"""The ``calsync`` command line: one module per command group, registered here.

Command modules import only click at load time and pull in the store, the
broker and the engine inside each command, so ``calsync --help`` stays fast
and a bad ``CALSYNC_BROKER_URL`` surfaces as a one-line error of the command
that needed the broker, not as an import traceback.
"""

from __future__ import annotations

import click

from sync.cli.usage import USAGE_ERROR, OneLineGroup, UsageError
from sync.errors import ChannelError, ConfigError, InvalidInput, NotFound

__all__ = ["USAGE_ERROR", "UsageError", "main"]

class CalsyncGroup(OneLineGroup):
    """The root group: maps calsync's deliberate errors to one line on stderr.

    Subcommands run inside this group's ``invoke``, so one wrapper here covers
    every command, nested groups included.
    """

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except (ConfigError, InvalidInput, NotFound) as exc:
            raise UsageError(one_line(exc)) from None
        except ChannelError as exc:  # a provider refused or is down: the operator's to act on, not a bug
            raise click.ClickException(one_line(exc)) from None
        except Exception as exc:
            message = _unreachable(exc)
            if message is None:
                raise
            raise click.ClickException(message) from None


def one_line(exc: BaseException) -> str:
    """An error on one line; several problems (every invalid setting, say) joined by "; "."""
    return "; ".join(" ".join(line.split()) for line in str(exc).splitlines() if line.strip())


def _unreachable(exc: Exception) -> str | None:
    """One line for a database or broker that is down or not set up: the operator's to fix, not a bug."""
    import redis.exceptions
    from dramatiq.errors import BrokerError
    from sqlalchemy.exc import SQLAlchemyError

    text = str(getattr(exc, "orig", None) or exc).strip()  # the driver's own message, without SQL
    first = text.splitlines()[0] if text else type(exc).__name__
    if isinstance(exc, SQLAlchemyError):
        return f"database error: {first} (check CALSYNC_DATABASE_URL; run `calsync db upgrade`)"
    if isinstance(exc, (BrokerError, redis.exceptions.RedisError)):
        # Whatever was stored before the enqueue failed is not lost: the sweeper re-enqueues it.
        return f"broker error: {first} (check CALSYNC_BROKER_URL; stored sessions are re-enqueued by `calsync sweep`)"
    return None


@click.group(cls=CalsyncGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="calsync")
def main() -> None:
    """Keep mentoring sessions on participants' calendars."""
    import logging

    # Commands report problems in their own one-line words; library warnings
    # would repeat them on stderr. `calsync worker` configures its own logging.
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")


def _register() -> None:
    from sync.cli.db import db
    from sync.cli.deadletters import dead_letters
    from sync.cli.demo import demo
    from sync.cli.diagnose import diagnose
    from sync.cli.doctor import doctor
    from sync.cli.drift import drift
    from sync.cli.integrations import integrations
    from sync.cli.keys import keys
    from sync.cli.resync import resync
    from sync.cli.serve import serve
    from sync.cli.sessions import sessions
    from sync.cli.status import status
    from sync.cli.worker import sweep, worker

    for command in (sessions, integrations, db, worker, sweep, demo, resync, diagnose, drift,
                    status, dead_letters, doctor, keys, serve):
        main.add_command(command)


_register()
