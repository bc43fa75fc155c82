"""A requests session that trusts one CA bundle, whatever the environment says.

``Session.verify`` loses to ``REQUESTS_CA_BUNDLE``/``CURL_CA_BUNDLE`` in
requests' settings merge, so an operator's explicit CALSYNC_MS_CA_BUNDLE
would be silently ignored on hosts that set those. Pinning ``verify`` in the
transport adapter keeps the bundle and still honours proxy variables.
"""

from __future__ import annotations

from typing import Any

import requests
from requests.adapters import HTTPAdapter


class PinnedCAAdapter(HTTPAdapter):
    def __init__(self, ca_file: str) -> None:
        super().__init__()
        self.ca_file = ca_file

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        kwargs["verify"] = self.ca_file
        return super().send(request, **kwargs)


def session_trusting(ca_file: str | None) -> requests.Session:
    session = requests.Session()
    if ca_file:
        session.verify = ca_file
        session.mount("https://", PinnedCAAdapter(ca_file))
    return session
