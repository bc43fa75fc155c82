"""The connect flow in a real browser: headless Chromium, driven by Selenium, through each provider's emulator.

A person opens the connect link the platform got from the API, clicks their provider on the
choice page, passes the emulator's consent page (it decides at once and redirects back, as a
consent the person approves does), and lands on "connected". Then the worker runs what the
callback queued: the session is on the emulated calendar and the invite they were mailed earlier
got one CANCEL. This is what the HTTP tests cannot show: that a real browser keeps and sends the
``calsync_connect`` cookie (HttpOnly, SameSite=Lax, Path=/oauth/) across the redirects through
another origin, and that the pages work under their CSP without a console error.

Needs Debian's ``chromium`` and ``chromium-driver`` (.ci/run installs them). Without them the
module skips locally, saying so, and fails on CI (CI=true): a browser test that silently skips
there proves nothing.
"""

from __future__ import annotations

import base64
import hashlib
import shutil
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.http.connect_rig import MENTEE, MENTOR, TITLE, Provider, Rig, connect_rig
from tests.support.services import IN_CI

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"

pytestmark = pytest.mark.slow


def _missing() -> str | None:
    """Why the browser cannot run here, or None."""
    for path in (CHROMIUM, CHROMEDRIVER):
        if shutil.which(path) is None:
            return f"{path} is missing (apt-get install -y chromium chromium-driver)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[test]')"
    return None


def spki_pin(provider: Provider) -> str | None:
    """The emulator's server key as Chromium's ``--ignore-certificate-errors-spki-list`` takes it, for Graph.

    The Graph emulator serves https under its own test CA, which no browser trusts. The leaf it
    presents is fetched here through a TLS client that trusts only that CA file (so only a
    certificate the CA vouches for, for this host, is pinned), and Chromium is told to accept that
    one public key and nothing else. This is narrower than --ignore-certificate-errors, which would
    accept any certificate from any host, and cleaner than importing the CA into an NSS database
    the browser would then trust for everything.
    """
    if provider.name != "outlook":
        return None
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    host, port = provider.emu.host, provider.emu.port
    context = ssl.create_default_context(cafile=provider.verify)
    with socket.create_connection((host, port), timeout=5) as raw, \
            context.wrap_socket(raw, server_hostname=host) as tls:
        der = tls.getpeercert(binary_form=True)
    spki = x509.load_der_x509_certificate(der).public_key().public_bytes(Encoding.DER,
                                                                          PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


def chromium(profile: Path, pin: str | None) -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--disable-extensions", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-default-apps", "--disable-sync",
                f"--user-data-dir={profile}", "--window-size=800,600"):
        options.add_argument(arg)
    if pin is not None:
        # Honoured only with --user-data-dir (above); trusts the one emulator key, see spki_pin.
        options.add_argument(f"--ignore-certificate-errors-spki-list={pin}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.set_page_load_timeout(15)
    return driver


@pytest.fixture(params=["google", "outlook"])
def rig(request: pytest.FixtureRequest, sqlite_url: str, tmp_path: Path) -> Iterator[Rig]:
    why = _missing()
    if why is not None:
        if IN_CI:
            pytest.fail(f"the browser tests must run on CI: {why}")
        pytest.skip(why)
    with connect_rig(sqlite_url, tmp_path, request.param) as r:
        yield r


@pytest.fixture
def browser(rig: Rig, tmp_path: Path) -> Iterator[Any]:
    driver = chromium(tmp_path / "profile", spki_pin(rig.provider))
    try:
        yield driver
    finally:
        driver.quit()


def wait_for(driver: Any, title: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while driver.title != title:
        if time.monotonic() > deadline:
            raise AssertionError(f"expected the page {title!r}, at {driver.current_url}: "
                                 f"{driver.page_source[:500]}")
        time.sleep(0.05)


def test_a_person_connects_in_a_real_browser_and_their_invite_is_cancelled(rig: Rig, browser: Any):
    from selenium.webdriver.common.by import By

    started = time.monotonic()
    # Given a session the mentor was mailed an invite for, and the link the platform got for them
    rig.book()
    assert rig.invites(MENTOR) == [("REQUEST", 0)]
    url = rig.new_link("u-1")
    # When the mentor opens it: the choice page
    browser.get(url)
    wait_for(browser, "Connect your calendar")
    # And clicks their provider, and on the provider's consent screen clicks Allow
    rig.provider.emu.consent_decision = "ask"
    browser.find_element(By.ID, f"connect-{rig.provider.name}").click()
    wait_for(browser, "Sign in")
    browser.find_element(By.ID, "allow").click()
    wait_for(browser, "Connected")
    # Then they are on calsync's "connected" page, at the callback
    assert urlsplit(browser.current_url).path == f"/oauth/{rig.provider.name}/callback"
    assert "is connected" in browser.find_element(By.ID, "result").text
    # Having passed through the provider's consent page, in this browser
    consents = [r for r in rig.provider.emu.requests() if r.kind == "consent"]
    assert [c.account for c in consents] == [MENTOR, MENTOR]  # the screen, then the click on Allow
    # And calsync's pages ran clean under their CSP: no console error, no blocked resource
    # (the emulator's own consent screen has no favicon; that 404 is the emulator's, not calsync's)
    ours = urlsplit(rig.base).netloc
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"
              and urlsplit(e["message"].split(" ")[0]).netloc in (ours, "")]
    assert errors == []
    # And the cookie that tied the callback to this browser is gone
    assert browser.get_cookies() == []
    assert rig.integrations() == [("u-1", rig.provider.name, MENTOR, "active")]
    # When the worker runs what the callback queued
    assert "sess-42" in rig.drain()
    # Then the session is on the mentor's emulated calendar, and their emailed invite got one CANCEL
    assert rig.provider.titles(MENTOR) == [TITLE]
    assert rig.invites(MENTOR) == [("REQUEST", 0), ("CANCEL", 1)]
    assert rig.invites(MENTEE) == [("REQUEST", 0)]
    # And opening the link again in the same browser shows it is spent
    browser.get(url)
    wait_for(browser, "Your calendar was not connected")
    assert "already used" in browser.find_element(By.ID, "result").text
    assert time.monotonic() - started < 20
