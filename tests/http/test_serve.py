"""``calsync serve`` as an operator starts it, and ``calsync integrations link`` as support staff use it."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

import pytest
import requests

from sync.store.crypto import new_key
from tests.support.cli import cli_env, command, upgraded_runner


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_serve_answers_health_and_the_api_and_logs_json_without_the_token(tmp_path: Path):
    port = _free_port()
    env = cli_env(tmp_path, CALSYNC_API_TOKENS="serve-test-token", CALSYNC_SECRET_KEYS=new_key(),
                  CALSYNC_HTTP_PORT=str(port))
    upgraded_runner(env, tmp_path)("db", "upgrade")
    proc = subprocess.Popen(command("serve"), env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        base, deadline = f"http://127.0.0.1:{port}", time.monotonic() + 30
        while True:
            try:
                if requests.get(f"{base}/healthz", timeout=1).ok:
                    break
            except requests.ConnectionError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, "calsync serve did not come up"
            time.sleep(0.1)
        assert requests.get(f"{base}/v1/sessions/x", timeout=5).status_code == 401
        ok = requests.get(f"{base}/v1/sessions/x", headers={"Authorization": "Bearer serve-test-token"}, timeout=5)
        assert ok.status_code == 404
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=15)
    assert '"route": "/v1/sessions/{session_id}"' in err and '"status": 404' in err
    assert "serve-test-token" not in err


def test_support_staff_print_a_connect_link(tmp_path: Path):
    env = cli_env(tmp_path, CALSYNC_SECRET_KEYS=new_key(), CALSYNC_PUBLIC_URL="https://calendar.platform.example")
    run = upgraded_runner(env, tmp_path)
    shown = run("integrations", "link", "u-7", "--provider", "outlook")
    assert shown.returncode == 0, shown.stderr
    url, expires = shown.stdout.splitlines()
    assert url.startswith("https://calendar.platform.example/connect/") and expires.startswith("expires ")
    refused = run("integrations", "link", "u-7", "--return-to", "https://elsewhere.example/")
    assert refused.returncode != 0 and "return_to" in refused.stderr and len(refused.stderr.splitlines()) == 1
