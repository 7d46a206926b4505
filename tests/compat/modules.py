"""The published billing modules' HTTP requests, as recorded from their sources.

Each class sends exactly what its module sends (method, path, query, body encoding,
headers) and returns the decoded answer the way the module decodes it; the tests
then assert on exactly the fields the module reads. Sources (read, never copied):
OpenIDCSTeam/FSPlugins@5ba35cbc OpenIDC-IDCSmart/idcserver.php and
OpenIDC-SwapIDC/openidc.php; OpenIDCSTeam/xiaoheiFS@3a47176b
backend/plugin-demo/pluginv1/automation_openidc/{main.go,http_client.go}.
"""

from __future__ import annotations

import itertools
import json
import random
from dataclasses import dataclass
from typing import Any

import httpx

from idcs_core.testing.server import ApiClient, LiveServer


class IDCSmart:
    """idcserver.php: ``idcserver_Curl`` (GET/DELETE/POST with a form Content-Type and no
    body) and ``idcserver_JSONCurl`` (json_encode body); cURL time-out 30 s; HTTPS, not verified."""

    TIMEOUT = 30.0

    def __init__(self, url: str, token: str) -> None:
        self.http = httpx.Client(base_url=url, verify=False, timeout=self.TIMEOUT)
        self.token = token

    def curl(self, method: str, path: str) -> Any:
        headers = {"Authorization": f"Bearer {self.token}", "Content-Type": "application/x-www-form-urlencoded"}
        resp = self.http.request(method, path, headers=headers, content=b"")
        return json.loads(resp.content)

    def json_curl(self, method: str, path: str, data: Any) -> Any:
        headers = {"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"}
        resp = self.http.request(method, path, headers=headers, content=json.dumps(data).encode())
        return json.loads(resp.content)


class SwapIDC:
    """openidc.php ``openidc_api_request``: JSON Content-Type and Accept on every call, a
    JSON body (or ``{}``) on POST/PUT, none on GET/DELETE; cURL time-out 60 s."""

    TIMEOUT = 60.0

    def __init__(self, url: str, token: str) -> None:
        self.http = httpx.Client(base_url=url, verify=False, timeout=self.TIMEOUT)
        self.token = token

    def request(self, method: str, path: str, data: Any = None) -> Any:
        headers = {"Authorization": f"Bearer {self.token}", "Content-Type": "application/json",
                   "Accept": "application/json"}
        content = (json.dumps(data) if data else "{}").encode() if method in ("POST", "PUT") else None
        resp = self.http.request(method, path, headers=headers, content=content)
        return json.loads(resp.content)


class XiaoheiFS:
    """http_client.go ``doRequest``: Bearer token, JSON body with its Content-Type only when
    there is a body; any code but 200 is an error. The client's time-out is the operator's
    ``timeout_sec`` (default 60, lowest 1): 15 s in these tests."""

    TIMEOUT = 15.0

    def __init__(self, url: str, token: str) -> None:
        self.http = httpx.Client(base_url=url, verify=False, timeout=self.TIMEOUT)
        self.token = token

    def request(self, method: str, path: str, body: Any = None) -> Any:
        headers = {"Authorization": f"Bearer {self.token}"}
        content = None
        if body is not None:
            headers["Content-Type"] = "application/json"
            content = json.dumps(body).encode()
        resp = self.http.request(method, path, headers=headers, content=content)
        parsed = json.loads(resp.content)
        assert parsed["code"] == 200, (method, path, parsed)  # doRequest: anything else is an error
        return parsed["data"]


_hosts = itertools.count(1)


@dataclass
class DockerWorld:
    server: LiveServer
    admin: ApiClient
    addr: str
    options: dict[str, Any]
    image: str
    docker: Any

    def token(self, name: str, profile: str, **extra: Any) -> str:
        """A named API token for a module, created as an operator would."""
        return self.admin.post("/api/tokens", {"name": name, "profile": profile, **extra})["token"]

    def add_host(self, prefix: str, **config: Any) -> tuple[str, int, int]:
        """A Docker host with its own NAT port range: (name, ports_start, ports_close)."""
        name = f"{prefix}{next(_hosts)}"
        start = random.randrange(40000, 49000, 50)
        self.admin.post("/api/server/create", {
            "server_name": name, "server_type": "OCInterface", "server_addr": self.addr, "server_user": "",
            "server_pass": "", "options": self.options,
            "config": {"ports_start": start, "ports_close": start + 19, "public_addr": "127.0.0.1"} | config})
        return name, start, start + 19

    def containers(self) -> list[str]:
        return [c.name for c in self.docker.containers.list(all=True)]
