"""A local stand-in for the Hugging Face Hub API: just what huggingface_hub 2.4's `create_repo` and
`create_commit` need (repo create, README metadata check, preupload, NDJSON commit), recording every
request (method, path, headers, body) so tests can assert on what a real Hub would have received.

Preupload answers `uploadMode: "regular"` for every file, so contents come inline (base64) in the
commit: no LFS/Xet storage to stand in for. Unknown routes answer 404 and are recorded too.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from pydantic import BaseModel

_REPO = r"(?P<kind>models|datasets|spaces)/(?P<repo>[^/]+/[^/]+)"
PREUPLOAD = re.compile(rf"^/api/{_REPO}/preupload/(?P<rev>[^/?]+)")
COMMIT = re.compile(rf"^/api/{_REPO}/commit/(?P<rev>[^/?]+)")


class Recorded(BaseModel):
    """One request as the stub received it (header names lower-cased)."""

    method: str
    path: str  # with the query string
    headers: dict[str, str]
    body: bytes

    def json_body(self) -> Any:
        return json.loads(self.body)


class Commit(BaseModel):
    """One commit the stub accepted: the NDJSON header and the files (path -> contents)."""

    kind: str  # "datasets", "models", "spaces"
    repo_id: str
    revision: str
    summary: str
    files: dict[str, bytes]


class HubStub:
    """`with HubStub() as hub:` a Hub API on 127.0.0.1 (a free port) at `hub.url`; `hub.requests`,
    `hub.repos` (repo id -> the create payload), `hub.commits`."""

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self.repos: dict[str, dict[str, Any]] = {}
        self.commits: list[Commit] = []
        self._lock = threading.Lock()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    out = b""
                    while size := int(self.rfile.readline().split(b";")[0].strip(), 16):
                        out += self.rfile.read(size)
                        self.rfile.readline()
                    self.rfile.readline()
                    return out
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _handle(self) -> None:
                rec = Recorded(method=self.command, path=self.path,
                               headers={k.lower(): v for k, v in self.headers.items()}, body=self._body())  # fmt: skip
                with stub._lock:
                    stub.requests.append(rec)
                    status, answer = stub._answer(rec, f"http://{self.headers.get('Host')}")
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_HEAD = do_DELETE = _handle

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def _answer(self, rec: Recorded, base: str) -> tuple[int, Any]:
        path = rec.path.split("?", 1)[0]
        if rec.method == "GET" and path == "/api/agent-harnesses":  # huggingface_hub's user-agent lookup
            return 200, {"standardEnvVars": [], "harnesses": {}}
        if rec.method == "POST" and path == "/api/repos/create":
            body = rec.json_body()
            kind = (body.get("type") or "model") + "s"
            repo_id = f"{body.get('organization')}/{body['name']}"
            url = f"{base}/{'' if kind == 'models' else kind + '/'}{repo_id}"
            if f"{kind}/{repo_id}" in self.repos:
                return 409, {"error": "You already created this dataset repo", "url": url}
            self.repos[f"{kind}/{repo_id}"] = body
            return 200, {"url": url, "name": repo_id, "id": repo_id}
        if rec.method == "POST" and path == "/api/validate-yaml":
            return 200, {"errors": [], "warnings": []}
        if rec.method == "POST" and (m := PREUPLOAD.match(path)):
            if f"{m['kind']}/{m['repo']}" not in self.repos:
                return 404, {"error": "Repository not found"}
            files = rec.json_body()["files"]
            return 200, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                                   for f in files]}  # fmt: skip
        if rec.method == "POST" and (m := COMMIT.match(path)):
            if f"{m['kind']}/{m['repo']}" not in self.repos:
                return 404, {"error": "Repository not found"}
            lines = [json.loads(line) for line in rec.body.splitlines() if line.strip()]
            header = next(x["value"] for x in lines if x["key"] == "header")
            files = {x["value"]["path"]: base64.b64decode(x["value"]["content"])
                     for x in lines if x["key"] == "file"}  # fmt: skip
            self.commits.append(Commit(kind=m["kind"], repo_id=m["repo"], revision=m["rev"],
                                       summary=header["summary"], files=files))  # fmt: skip
            oid = hashlib.sha1(rec.body).hexdigest()
            return 200, {"commitUrl": f"{base}/{m['kind']}/{m['repo']}/commit/{oid}", "commitOid": oid,
                         "pullRequestUrl": None, "success": True}  # fmt: skip
        return 404, {"error": f"hub stub: no route for {rec.method} {path}"}

    def api_requests(self) -> list[Recorded]:
        """The requests of the push itself (without huggingface_hub's agent-registry lookup)."""
        return [r for r in self.requests if not r.path.startswith("/api/agent-harnesses")]

    def __enter__(self) -> HubStub:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
