"""``calsync worker`` (Dramatiq worker processes) and ``calsync sweep`` (repair lagging sessions now)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from sync.cli.delivery import delivering
from sync.cli.output import emit_json, json_option
from sync.cli.usage import OneLineCommand

#: Imported by each worker process after the broker when ``--log-config`` is given.
LOGGING_MODULE = "sync.engine.worker_logging"


def _usable_log_config(ctx: click.Context, param: click.Parameter, path: Path | None) -> Path | None:
    """Apply the file here once, so one that logging refuses is a one-line usage error, exit 2.

    Otherwise every worker process would die importing it, each with a
    traceback, after Dramatiq had started. Applying it in this process is
    harmless: the command replaces itself with Dramatiq right after.
    """
    if path is None:
        return None
    from sync.engine.worker_logging import LogConfigError, apply

    try:
        apply(path)
    except LogConfigError as exc:
        raise click.BadParameter(f"{path}: {exc}", ctx=ctx, param=param) from None
    return path


@click.command(cls=OneLineCommand, context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.option("--processes", "-p", type=click.IntRange(min=1), help="Worker processes (default: one per CPU).")
@click.option("--threads", "-t", type=click.IntRange(min=1), help="Threads per process (default: 8).")
@click.option("--log-config", type=click.Path(exists=True, dir_okay=False, path_type=Path), callback=_usable_log_config,
              help="A logging dictConfig JSON file (see config/logging.json) applied in every worker process.")
@click.argument("dramatiq_args", nargs=-1, type=click.UNPROCESSED)
def worker(processes: int | None, threads: int | None, log_config: Path | None,
           dramatiq_args: tuple[str, ...]) -> None:
    """Run Dramatiq worker processes on the Redis broker (wraps `dramatiq worker`).

    Any further arguments go to dramatiq unchanged, e.g. `--queues calsync`.
    """
    from sync.config import get_settings, uses_redis
    from sync.errors import ConfigError

    settings = get_settings()
    if not uses_redis(settings.broker_url):
        raise ConfigError("CALSYNC_BROKER_URL is memory://, which delivers inside each calsync command; "
                          "a separate worker needs a redis:// broker")
    # Checked here so a misconfigured deploy fails at start, not on every message.
    settings.require("smtp_url")
    settings.require("mail_from")

    if settings.metrics_port:
        _prepare_metrics(settings.metrics_host, settings.metrics_port)
    # The packaged entry module (the root worker.py is a checkout convenience, not installed).
    argv = [sys.executable, "-m", "dramatiq", "sync.engine.workers:broker"]
    if log_config is not None:
        os.environ["CALSYNC_LOG_CONFIG"] = str(log_config.resolve())
        argv += [LOGGING_MODULE, "--skip-logging"]
    if processes is not None:
        argv += ["--processes", str(processes)]
    if threads is not None:
        argv += ["--threads", str(threads)]
    argv += dramatiq_args
    sys.stdout.flush()
    os.execvp(argv[0], argv)


def _prepare_metrics(host: str, port: int) -> None:
    """A fresh multiprocess folder for this run, set before any worker process imports prometheus_client.

    Dramatiq's exposition server reads dramatiq_prom_* once at import and never
    clears its folder, so counters from an earlier run would be served again.
    """
    import shutil
    import tempfile

    folder = os.path.join(tempfile.gettempdir(), f"calsync-metrics-{port}")
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder)
    os.environ.update({"dramatiq_prom_host": host, "dramatiq_prom_port": str(port), "dramatiq_prom_db": folder,
                       "PROMETHEUS_MULTIPROC_DIR": folder})


@click.command(cls=OneLineCommand)
@json_option
def sweep(as_json: bool) -> None:
    """Re-enqueue every session whose placements lag its latest change.

    The periodic sweep in each worker does this on its own; run it by hand
    after restoring Redis or to settle sessions before a check.
    """
    from sync.engine.runtime import get_runtime
    from sync.engine.sweep import sweep as sweep_lagging
    from sync.engine.tasks import enqueue

    with delivering():
        ids = sweep_lagging(get_runtime(), enqueue)
    if as_json:
        emit_json({"enqueued": len(ids), "sessions": ids})
    else:
        click.echo(f"enqueued {len(ids)} lagging session{'s' if len(ids) != 1 else ''}")
        for session_id in ids:
            click.echo(session_id)
