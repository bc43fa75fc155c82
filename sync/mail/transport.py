"""Getting a built message out of the process: over SMTP, or into a directory.

Callers get only :mod:`sync.errors` types back. Every SMTP refusal, even a
5xx, is a :class:`TransientError`: the engine bounds the attempts and then
fails the placement with the reason, which carries the server's code and
text so an operator can tell a bad address from a full mailbox. Only a
rejected login or a server that cannot meet the configured security is
permanent, because no retry can fix those.

The password from ``CALSYNC_SMTP_URL`` never appears in an error: messages
name the host and port, never the URL.
"""

from __future__ import annotations

import os
import re
import smtplib
import ssl
import tempfile
import threading
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Protocol
from urllib.parse import parse_qs, unquote, urlsplit

from sync.errors import ChannelError, ConfigError, PermanentError, TransientError

SETTING = "CALSYNC_SMTP_URL"
_DEFAULT_PORTS = {"smtp": 25, "smtps": 465}
_TRUE, _FALSE = {"true", "1", "yes"}, {"false", "0", "no"}


class Transport(Protocol):
    """Sends one message to one envelope recipient; the email channel needs nothing more."""

    def send(self, message: EmailMessage, *, sender: str, recipient: str) -> None:
        """Deliver ``message`` to ``recipient`` only, whatever its headers say.

        Raises TransientError or PermanentError.
        """

    def close(self) -> None:
        """Release any connection; a later ``send`` may open a new one."""


def transport_from_url(url: str, *, timeout: float) -> Transport:
    """The transport ``CALSYNC_SMTP_URL`` asks for: ``smtp://``, ``smtps://`` or ``file://``."""
    scheme = urlsplit(url).scheme.lower()
    if scheme in _DEFAULT_PORTS:
        return SmtpTransport(url, timeout)
    if scheme == "file":
        return FileTransport(_file_directory(url))
    raise ConfigError(f"{SETTING}: unsupported scheme {scheme!r}; use smtp://, smtps:// or file://")


@dataclass(frozen=True)
class SmtpEndpoint:
    """Where and how to connect, parsed from the URL; ``password`` is kept out of ``repr``."""

    host: str
    port: int
    implicit_tls: bool
    starttls: bool
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


def parse_smtp_url(url: str) -> SmtpEndpoint:
    """``smtp[s]://[user[:password]@]host[:port][?starttls=true]``, user and password percent-encoded.

    Unknown query parameters are rejected so that a typo such as ``startls``
    cannot silently send mail, and credentials, in the clear.
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        raise ConfigError(f"{SETTING}: expected smtp://host[:port] or smtps://host[:port]")
    try:
        port = parts.port or _DEFAULT_PORTS[scheme]
    except ValueError:
        raise ConfigError(f"{SETTING}: the port is not a number between 0 and 65535") from None
    starttls = _starttls_option(parts.query)
    if starttls and scheme == "smtps":
        raise ConfigError(f"{SETTING}: smtps:// is already TLS; drop ?starttls=true or use smtp://")
    return SmtpEndpoint(
        host=parts.hostname,
        port=port,
        implicit_tls=scheme == "smtps",
        starttls=starttls,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password is not None else None,
    )


def _starttls_option(query: str) -> bool:
    options = parse_qs(query, keep_blank_values=True)
    unknown = set(options) - {"starttls"}
    if unknown:
        raise ConfigError(f"{SETTING}: unknown option(s) {', '.join(sorted(unknown))}; only starttls is known")
    value = options.get("starttls", ["false"])[-1].lower()
    if value not in _TRUE | _FALSE:
        raise ConfigError(f"{SETTING}: starttls must be true or false")
    return value in _TRUE


def open_smtp(server: SmtpEndpoint, timeout: float, steps: list[str] | None = None) -> smtplib.SMTP:
    """A connection ready to send: TLS as the URL asks, EHLO, STARTTLS, login.

    ``steps`` collects what was done, for ``calsync doctor``, which opens the
    same connection the worker will and sends nothing on it. A failure closes
    the socket and propagates smtplib's exception.
    """
    done = steps if steps is not None else []
    if server.implicit_tls:
        conn: smtplib.SMTP = smtplib.SMTP_SSL(server.host, server.port, timeout=timeout,
                                              context=ssl.create_default_context())
        done.append("TLS")
    else:
        conn = smtplib.SMTP(server.host, server.port, timeout=timeout)
    try:
        conn.ehlo_or_helo_if_needed()
        done.append("EHLO")
        if server.starttls:
            # Raises SMTPNotSupportedError if the server does not offer it:
            # falling back to plain text is exactly what an attacker would want.
            conn.starttls(context=ssl.create_default_context())
            done.append("STARTTLS")
        if server.username is not None:
            conn.login(server.username, server.password or "")
            done.append(f"login as {server.username}")
    except BaseException:
        conn.close()
        raise
    return conn


class SmtpTransport:
    """One SMTP connection, reused across sends and shared by the process's worker threads.

    Reuse matters because a session fans out into one message per person; a
    lock serialises the sends on that connection. A cached connection the
    server has since closed (idle timeout, restart) is replaced once,
    transparently; a fresh connection that fails is reported.
    """

    def __init__(self, url: str, timeout: float) -> None:
        self.server = parse_smtp_url(url)
        self.timeout = timeout
        self._lock = threading.Lock()
        self._conn: smtplib.SMTP | None = None

    def send(self, message: EmailMessage, *, sender: str, recipient: str) -> None:
        with self._lock:
            try:
                self._send_with_reconnect(message, sender, recipient)
            except OSError as exc:  # SMTPException included
                # After a failure the SMTP session state is unknown; start clean next time.
                self._discard()
                raise _channel_error(exc, self.server, self.timeout) from None

    def close(self) -> None:
        with self._lock:
            conn, self._conn = self._conn, None
            if conn is not None:
                try:
                    conn.quit()
                except OSError:
                    conn.close()

    def _send_with_reconnect(self, message: EmailMessage, sender: str, recipient: str) -> None:
        reused = self._conn is not None
        try:
            self._connection().send_message(message, from_addr=sender, to_addrs=[recipient])
        except OSError as exc:
            if not (reused and _is_stale(exc)):
                raise
            self._discard()
            self._connection().send_message(message, from_addr=sender, to_addrs=[recipient])

    def _connection(self) -> smtplib.SMTP:
        if self._conn is None:
            self._conn = self._connect()
        return self._conn

    def _connect(self) -> smtplib.SMTP:
        return open_smtp(self.server, self.timeout)

    def _discard(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()


def _is_stale(exc: OSError) -> bool:
    """Signs that a cached connection was closed by the server while we were idle.

    A timeout is not one: the server is there but slow, and retrying at once
    would only double the wait.
    """
    if isinstance(exc, smtplib.SMTPResponseException):
        return exc.smtp_code == 421  # "service closing transmission channel"
    return isinstance(exc, (smtplib.SMTPServerDisconnected, ConnectionError)) and not _timed_out(exc)


def _timed_out(exc: BaseException) -> bool:
    """smtplib reports a read timeout as SMTPServerDisconnected raised while handling TimeoutError."""
    return isinstance(exc, TimeoutError) or isinstance(exc.__context__, TimeoutError)


def _channel_error(exc: OSError, server: SmtpEndpoint, timeout: float) -> ChannelError:
    """Most specific first: SMTPAuthenticationError is an SMTPResponseException,
    and every SMTPException is an OSError."""
    where = server.address
    if isinstance(exc, smtplib.SMTPAuthenticationError):
        return PermanentError(f"SMTP authentication failed at {where}: {exc.smtp_code} {_text(exc.smtp_error)}")
    if isinstance(exc, smtplib.SMTPNotSupportedError):
        return PermanentError(f"SMTP server {where} lacks a feature this send needs: {exc}")
    # The server answered with a refusal: the message was not accepted, so nothing reached anyone.
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        return TransientError("; ".join(f"SMTP {code} refused recipient {address}: {_text(text)}"
                                        for address, (code, text) in exc.recipients.items()), refused=True)
    if isinstance(exc, smtplib.SMTPSenderRefused):
        return TransientError(f"SMTP {exc.smtp_code} refused sender {exc.sender}: {_text(exc.smtp_error)}",
                              refused=True)
    if isinstance(exc, smtplib.SMTPResponseException):
        return TransientError(f"SMTP {exc.smtp_code} from {where}: {_text(exc.smtp_error)}", refused=True)
    if _timed_out(exc):
        return TransientError(f"SMTP server {where} did not answer within {timeout:g}s")
    if isinstance(exc, smtplib.SMTPServerDisconnected):
        return TransientError(f"SMTP server {where} closed the connection: {exc}")
    return TransientError(f"SMTP error with {where}: {exc}")


def _text(reply: bytes | str) -> str:
    """A server reply as one line; multi-line replies arrive joined by newlines."""
    text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else reply
    return " ".join(text.split())


class FileTransport:
    """Writes each message as an ``.eml`` file, for demos and for running without a mail server.

    Files appear whole or not at all (written aside, then renamed), so
    anything watching the directory never reads half a message.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def send(self, message: EmailMessage, *, sender: str, recipient: str) -> None:
        try:
            # Created on first send, not at construction: building the runtime must not touch disk.
            self.directory.mkdir(parents=True, exist_ok=True)
            _write_atomically(self.directory / _eml_name(recipient), message.as_bytes())
        except OSError as exc:
            raise TransientError(f"cannot write mail into {self.directory}: {exc.strerror or exc}") from None

    def close(self) -> None:
        """Nothing is held open between sends."""


def _eml_name(recipient: str) -> str:
    """Sortable by time, readable by recipient, unique by a random suffix."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    slug = re.sub(r"[^a-z0-9]+", "-", recipient.lower()).strip("-")[:60] or "recipient"
    return f"{stamp}-{slug}-{uuid.uuid4().hex[:12]}.eml"


def _write_atomically(path: Path, data: bytes) -> None:
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def _file_directory(url: str) -> Path:
    parts = urlsplit(url)
    if parts.netloc not in ("", "localhost") or not parts.path:
        raise ConfigError(f"{SETTING}: expected file:///absolute/path or file:relative/path")
    return Path(unquote(parts.path))
