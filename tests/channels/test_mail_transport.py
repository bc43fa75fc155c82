"""Mail transports against a real SMTP server on 127.0.0.1 (aiosmtpd) and a real directory."""

from __future__ import annotations

import email
import email.policy
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from sync.errors import ConfigError, PermanentError, TransientError
from sync.mail.transport import (
    FileTransport,
    SmtpTransport,
    parse_smtp_url,
    transport_from_url,
)
from tests.support.smtpserver import free_port

SENDER = "sessions@calsync.example"
RECIPIENT = "mentee@example.com"
USER, PASSWORD = "calsync", "s3cr:t/p@ss word"
PASSWORD_IN_URL = "s3cr%3At%2Fp%40ss%20word"


@dataclass
class Handler:
    """Records deliveries with the connection they came over; replies can be scripted."""

    delivered: list[tuple[str, list[str], bytes, object]] = field(default_factory=list)
    rcpt_replies: dict[str, str] = field(default_factory=dict)
    data_reply: str = "250 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        reply = self.rcpt_replies.get(address, "250 OK")
        if reply.startswith("250"):
            envelope.rcpt_tos.append(address)
        return reply

    async def handle_DATA(self, server, session, envelope):
        if self.data_reply.startswith("250"):
            self.delivered.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content, session.peer))
        return self.data_reply

    @property
    def connections(self) -> int:
        return len({peer for *_, peer in self.delivered})


def _authenticate(server, session, envelope, mechanism, auth_data) -> AuthResult:
    ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (
        USER.encode(), PASSWORD.encode())
    return AuthResult(success=ok, handled=False)  # handled=False: aiosmtpd then replies 535


class LocalSmtp:
    """An aiosmtpd server that can be stopped and started again on the same port."""

    def __init__(self, **smtp_options: Any) -> None:
        self.handler = Handler()
        self.port = free_port()
        self.options = smtp_options
        self.controller: Controller | None = None

    def start(self) -> None:
        self.controller = Controller(self.handler, hostname="127.0.0.1", port=self.port, **self.options)
        self.controller.start()

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None

    def url(self, userinfo: str = "", query: str = "") -> str:
        return f"smtp://{userinfo}127.0.0.1:{self.port}{query}"


@pytest.fixture
def smtp() -> Iterator[LocalSmtp]:
    server = LocalSmtp()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def transport(smtp: LocalSmtp) -> Iterator[SmtpTransport]:
    t = SmtpTransport(smtp.url(), timeout=5)
    yield t
    t.close()


def message(subject: str = "Invitation", to: str = "someone.else@example.com") -> EmailMessage:
    msg = EmailMessage(policy=email.policy.SMTP)
    msg["From"], msg["To"], msg["Subject"] = SENDER, to, subject
    msg.set_content("hello\n")
    return msg


def test_delivers_to_the_explicit_envelope_recipient_only(smtp: LocalSmtp, transport: SmtpTransport):
    # Given a message whose To header names someone else
    # When it is sent to the mentee
    transport.send(message(), sender=SENDER, recipient=RECIPIENT)
    # Then the envelope is exactly sender → mentee, and the content arrived intact
    ((mail_from, rcpt_tos, raw, _),) = smtp.handler.delivered
    assert (mail_from, rcpt_tos) == (SENDER, [RECIPIENT])
    received = email.message_from_bytes(raw, policy=email.policy.default)
    assert received["Subject"] == "Invitation" and received.get_content().splitlines() == ["hello"]


def test_sends_reuse_one_connection(smtp: LocalSmtp, transport: SmtpTransport):
    # Given one transport
    # When two messages are sent
    transport.send(message("one"), sender=SENDER, recipient=RECIPIENT)
    transport.send(message("two"), sender=SENDER, recipient="mentor@example.com")
    # Then both went over the same SMTP session
    assert len(smtp.handler.delivered) == 2 and smtp.handler.connections == 1


def test_concurrent_sends_share_the_connection_safely(smtp: LocalSmtp, transport: SmtpTransport):
    # Given eight worker threads sharing the transport
    threads = [threading.Thread(target=transport.send, args=(message(f"m{i}"),),
                                kwargs={"sender": SENDER, "recipient": f"p{i}@example.com"}) for i in range(8)]
    # When they all send at once
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # Then every message arrived, addressed to its own recipient, over one connection
    assert sorted(rcpts[0] for _, rcpts, _, _ in smtp.handler.delivered) == sorted(
        f"p{i}@example.com" for i in range(8))
    assert smtp.handler.connections == 1


def test_a_dropped_cached_connection_is_replaced_transparently(smtp: LocalSmtp, transport: SmtpTransport):
    # Given a transport holding a connection to a server that then restarts
    transport.send(message("before"), sender=SENDER, recipient=RECIPIENT)
    smtp.stop()
    smtp.start()
    # When it sends again
    transport.send(message("after"), sender=SENDER, recipient=RECIPIENT)
    # Then the message arrived over a new connection, without an error
    assert len(smtp.handler.delivered) == 2 and smtp.handler.connections == 2


def test_server_gone_is_transient(smtp: LocalSmtp, transport: SmtpTransport):
    # Given a cached connection to a server that has since stopped
    transport.send(message(), sender=SENDER, recipient=RECIPIENT)
    smtp.stop()
    # When sending, Then the failure is worth retrying and names the server
    with pytest.raises(TransientError, match=f"127.0.0.1:{smtp.port}"):
        transport.send(message(), sender=SENDER, recipient=RECIPIENT)


def test_nothing_listening_is_transient():
    # Given a port with no server
    transport = SmtpTransport(f"smtp://127.0.0.1:{free_port()}", timeout=5)
    # When sending, Then it is a transient error
    with pytest.raises(TransientError, match="SMTP error with 127.0.0.1"):
        transport.send(message(), sender=SENDER, recipient=RECIPIENT)


def test_a_server_that_never_greets_times_out_as_transient():
    # Given a socket that accepts connections but never speaks SMTP
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        transport = SmtpTransport(f"smtp://127.0.0.1:{silent.getsockname()[1]}", timeout=0.3)
        # When sending, Then the timeout is reported as transient, with the limit
        with pytest.raises(TransientError, match=r"did not answer within 0\.3s"):
            transport.send(message(), sender=SENDER, recipient=RECIPIENT)


def test_a_5xx_refusal_is_transient_and_carries_code_address_and_text(smtp: LocalSmtp, transport: SmtpTransport):
    # Given the server refuses the mentee's mailbox with a 550
    smtp.handler.rcpt_replies[RECIPIENT] = "550 5.1.1 mailbox unavailable"
    # When sending to the mentee
    with pytest.raises(TransientError) as refused:
        transport.send(message(), sender=SENDER, recipient=RECIPIENT)
    # Then the engine gets a retryable error whose reason an operator can act on
    assert str(refused.value) == f"SMTP 550 refused recipient {RECIPIENT}: 5.1.1 mailbox unavailable"
    # And the transport still works for the next recipient
    transport.send(message(), sender=SENDER, recipient="mentor@example.com")
    assert [rcpts for _, rcpts, _, _ in smtp.handler.delivered] == [["mentor@example.com"]]


def test_a_4xx_refusal_is_transient(smtp: LocalSmtp, transport: SmtpTransport):
    # Given the server greylists the recipient
    smtp.handler.rcpt_replies[RECIPIENT] = "451 4.7.1 greylisted, try again later"
    # When sending, Then the error is transient and names the code
    with pytest.raises(TransientError, match="SMTP 451 refused recipient"):
        transport.send(message(), sender=SENDER, recipient=RECIPIENT)


def test_a_rejected_message_body_is_transient_with_the_code(smtp: LocalSmtp, transport: SmtpTransport):
    # Given the server rejects the content after DATA
    smtp.handler.data_reply = "554 5.6.0 message content rejected"
    # When sending, Then the code and the server's text are in the reason
    with pytest.raises(TransientError, match="SMTP 554 from 127.0.0.1:.*: 5.6.0 message content rejected"):
        transport.send(message(), sender=SENDER, recipient=RECIPIENT)


@pytest.fixture
def auth_smtp() -> Iterator[LocalSmtp]:
    server = LocalSmtp(authenticator=_authenticate, auth_require_tls=False, auth_required=False)
    server.start()
    yield server
    server.stop()


def test_logs_in_with_percent_decoded_credentials(auth_smtp: LocalSmtp):
    # Given a URL whose password needs percent-encoding
    transport = SmtpTransport(auth_smtp.url(f"{USER}:{PASSWORD_IN_URL}@"), timeout=5)
    # When sending
    transport.send(message(), sender=SENDER, recipient=RECIPIENT)
    transport.close()
    # Then the server accepted the decoded credentials and the message
    assert len(auth_smtp.handler.delivered) == 1


def test_a_rejected_login_is_permanent_and_never_shows_the_password(auth_smtp: LocalSmtp):
    # Given the wrong password
    transport = SmtpTransport(auth_smtp.url(f"{USER}:wrong%2Fpassword@"), timeout=5)
    # When sending
    with pytest.raises(PermanentError, match="SMTP authentication failed") as failed:
        transport.send(message(), sender=SENDER, recipient=RECIPIENT)
    # Then retrying is pointless, and the password appears nowhere in the error or its chain
    assert "wrong" not in str(failed.value) and failed.value.__cause__ is None
    assert "wrong" not in repr(transport.server)


def test_starttls_required_but_not_offered_is_permanent(smtp: LocalSmtp):
    # Given starttls=true against a server that does not offer STARTTLS
    transport = SmtpTransport(smtp.url(query="?starttls=true"), timeout=5)
    # When sending, Then nothing is sent in the clear and the error is permanent
    with pytest.raises(PermanentError, match="STARTTLS"):
        transport.send(message(), sender=SENDER, recipient=RECIPIENT)
    assert smtp.handler.delivered == []


@pytest.mark.parametrize(("url", "expected"), [
    ("smtp://mail.example", ("mail.example", 25, False, False, None, None)),
    ("smtps://mail.example", ("mail.example", 465, True, False, None, None)),
    ("smtp://u%40x:p%3Aw@mail.example:587?starttls=true", ("mail.example", 587, False, True, "u@x", "p:w")),
    ("SMTP://mail.example:2525?starttls=false", ("mail.example", 2525, False, False, None, None)),
])
def test_parses_smtp_urls(url: str, expected: tuple[object, ...]):
    # Given a URL, When parsed, Then host, port, TLS mode and decoded credentials come out
    s = parse_smtp_url(url)
    assert (s.host, s.port, s.implicit_tls, s.starttls, s.username, s.password) == expected


@pytest.mark.parametrize("url", [
    "smtp://u:hunter2@mail.example?startls=true",
    "smtps://u:hunter2@mail.example?starttls=true",
    "smtp://u:hunter2@mail.example?starttls=maybe",
    "smtp://u:hunter2@mail.example:99999",
    "smtp://u:hunter2@",
])
def test_bad_smtp_urls_name_the_setting_and_hide_the_password(url: str):
    # Given a malformed URL, When a transport is made from it
    with pytest.raises(ConfigError) as bad:
        transport_from_url(url, timeout=5)
    # Then the error names the variable but not the password
    assert "CALSYNC_SMTP_URL" in str(bad.value) and "hunter2" not in str(bad.value)


def test_transport_is_chosen_by_scheme(tmp_path: Path):
    # Given URLs of each scheme, When transports are made, Then each gets its kind
    assert isinstance(transport_from_url("smtp://mail.example", timeout=5), SmtpTransport)
    assert isinstance(transport_from_url("smtps://mail.example", timeout=5), SmtpTransport)
    file_transport = transport_from_url(f"file://{tmp_path}/out", timeout=5)
    assert isinstance(file_transport, FileTransport) and file_transport.directory == tmp_path / "out"
    # And an unknown scheme is a configuration error naming the variable
    with pytest.raises(ConfigError, match="CALSYNC_SMTP_URL.*'http'"):
        transport_from_url("http://mail.example", timeout=5)


def test_file_transport_writes_one_readable_eml_per_send(tmp_path: Path):
    # Given a file transport into a directory that does not exist yet
    outbox = tmp_path / "outbox"
    transport = FileTransport(outbox)
    # When two messages go to the same recipient
    transport.send(message("one"), sender=SENDER, recipient=RECIPIENT)
    transport.send(message("two"), sender=SENDER, recipient=RECIPIENT)
    # Then two distinct .eml files exist, named for the recipient, and nothing else (no temp files)
    files = sorted(outbox.iterdir())
    assert len(files) == 2 and all(f.suffix == ".eml" and "mentee-example-com" in f.name for f in files)
    subjects = {email.message_from_bytes(f.read_bytes(), policy=email.policy.default)["Subject"] for f in files}
    assert subjects == {"one", "two"}


def test_file_transport_reports_an_unwritable_directory_as_transient(tmp_path: Path):
    # Given a "directory" path that is really a file
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    # When sending, Then the failure is transient and names the path
    with pytest.raises(TransientError, match="not-a-dir"):
        FileTransport(blocker).send(message(), sender=SENDER, recipient=RECIPIENT)
