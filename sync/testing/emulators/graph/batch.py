"""Graph's JSON batching (``POST /v1.0/$batch``), which the Outlook channel may use to save round trips.

Up to 20 requests (400 beyond), run in order, ``dependsOn`` honoured (424 after a failed
dependency); each item is counted against the mailbox window and logged as its own request.
Injected ``fail_next`` faults apply to items (the ``$batch`` request itself only with
``path_contains``); lost responses and timeouts concern the whole HTTP request.
"""

from __future__ import annotations

import base64
import json
import traceback
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from ..oauth import AccessToken
from ..server import EmulatorServer, Fault, Request, Response
from .schema import GraphError

__all__ = ["MAX_BATCH", "GraphBatch"]

MAX_BATCH = 20


class GraphBatch(EmulatorServer):
    """Runs the items of a ``$batch`` through the calendar's own dispatch, one logged request each."""

    # ---- hooks the calendar side provides --------------------------------------------------

    def _graph_response(self, e: GraphError) -> Response:
        raise NotImplementedError

    def _mailbox_for(self, rest: list[str], at: AccessToken) -> str | None:
        raise NotImplementedError

    def _dispatch(self, req: Request, seg: list[str], at: AccessToken) -> Response:
        raise NotImplementedError

    # ---- $batch ----------------------------------------------------------------------------

    def _batch(self, req: Request, at: AccessToken) -> Response:
        try:
            payload = json.loads(req.body.decode("utf-8")) if req.body else None
        except (ValueError, UnicodeDecodeError):
            payload = None
        items = payload.get("requests") if isinstance(payload, dict) else None
        if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
            raise GraphError(400, "BadRequest", "Invalid batch payload format.")
        if len(items) > MAX_BATCH:
            raise GraphError(400, "BadRequest", f"Number of batch requests exceeds the limit of {MAX_BATCH}.")
        ids = [str(i.get("id", "")) for i in items]
        if any(not i for i in ids) or len(set(ids)) != len(ids):
            raise GraphError(400, "BadRequest", "Each batch request needs a unique 'id'.")
        req.info.update(op="$batch", items=len(items))
        results: dict[str, Response] = {}
        pending = list(items)
        while pending:
            progressed = False
            for item in list(pending):
                deps = [str(d) for d in (item.get("dependsOn") or [])]
                if any(d not in ids for d in deps):
                    raise GraphError(400, "BadRequest", f"dependsOn of request '{item['id']}' names an unknown id.")
                if not all(d in results for d in deps):
                    continue
                pending.remove(item)
                progressed = True
                if any(results[d].status >= 400 for d in deps):
                    results[str(item["id"])] = self._graph_response(GraphError(
                        424, "FailedDependency", "A request this request depends on failed."))
                    continue
                results[str(item["id"])] = self._batch_item(req, item, at)
            if not progressed:
                raise GraphError(400, "BadRequest", "dependsOn contains a cycle.")
        responses = []
        for rid in ids:
            r = results[rid]
            body: Any = None
            if r.body:
                try:
                    body = json.loads(r.body)
                except ValueError:
                    body = base64.b64encode(r.body).decode()
            entry: dict[str, Any] = {"id": rid, "status": r.status, "headers": dict(r.headers)}
            if body is not None:
                entry["body"] = body
            responses.append(entry)
        return Response.json(200, {"responses": responses})

    def _batch_item(self, outer: Request, item: dict[str, Any], at: AccessToken) -> Response:
        url = str(item.get("url") or "")
        if url.startswith(("http://", "https://")) or not url:
            return self._graph_response(GraphError(400, "BadRequest", "Batch request urls must be relative."))
        raw = "/v1.0" + (url if url.startswith("/") else "/" + url)
        split = urlsplit(raw)
        headers = {k.lower(): str(v) for k, v in (item.get("headers") or {}).items()}
        headers["authorization"] = outer.headers.get("authorization", "")
        body = item.get("body")
        if body is not None and "content-type" not in headers:
            return self._graph_response(GraphError(400, "BadRequest", "Content-Type header is required when a "
                                                                      "batch request has a body."))
        sub = Request(method=str(item.get("method", "GET")).upper(), path=unquote(split.path), raw_path=raw,
                      query=parse_qs(split.query, keep_blank_values=True), headers=headers,
                      body=json.dumps(body).encode() if body is not None else b"")
        sub.kind = "api"
        sub.info["batch_id"] = str(item["id"])
        sub.info["app_id"] = at.client_id
        mailbox = self._mailbox_for(sub.segments()[1:], at)
        if mailbox:
            sub.account = sub.info["mailbox"] = mailbox
        fault = self._take_item_fault(sub)
        if fault is not None:
            resp = self._fault_response(sub, fault)
        else:
            try:
                resp = self._dispatch(sub, sub.segments()[1:], at)
            except GraphError as e:
                resp = self._graph_response(e)
            except Exception:  # noqa: BLE001 - emulator bug: visible, answered 500
                self.internal_errors.append(traceback.format_exc())
                resp = self._graph_response(GraphError(500, "InternalServerError", "Emulator internal error."))
        self._record(sub, resp, fault)
        return resp

    def _take_item_fault(self, sub: Request) -> Fault | None:
        """Only "fail" faults apply inside a batch (lost responses and timeouts concern the HTTP request)."""
        with self.lock:
            for i, fault in enumerate(self._faults):
                if fault.kind == "fail" and fault.matches(sub, True):
                    return self._faults.pop(i)
        return None



