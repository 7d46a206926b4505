"""Typed host options: validated on create and update (400 naming the option, nothing saved), defaulted,
coerced, secret ones encrypted at rest and never answered, shown in the engine detail and the OpenAPI
document, and kept apart from the core's own per-host settings. Engines of the first contract (options
as a mapping of help texts) keep working untyped."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from testlab import PASSWORD, TestLabEngine

from idcs_core.hookspecs import hookimpl
from idcs_core.plugins import PluginRegistry
from idcs_core.testing.databases import database_url, drop_postgres_schema
from idcs_core.testing.server import ApiClient, LiveServer
from idcs_core.types import HostOption, HostSpec, HostStatus, OptionType

SECRET = "s3cret-api-key"
OPTIONS = [
    HostOption("datastore", OptionType.STR, "datastore1", "datastore new VMs go to"),
    HostOption("verify_tls", OptionType.BOOL, True, "check the host's certificate"),
    HostOption("max_vms", OptionType.INT, 10, "VMs the host may run"),
    HostOption("mode", OptionType.CHOICE, "thin", "disk provisioning", choices=("thin", "thick")),
    HostOption("api_key", OptionType.STR, None, "the back end's API key", secret=True),
    HostOption("region", OptionType.STR, None, "the back end's region", required=True),
]


class TypedLab(TestLabEngine):
    """TestLab declaring typed options; it keeps the options each host's status call received."""

    __test__ = False

    def __init__(self) -> None:
        super().__init__()
        self.seen: dict[str, dict[str, Any]] = {}

    @hookimpl
    def engine_describe(self) -> dict[str, Any]:
        return {"title": "TypedLab", "options": OPTIONS}

    @hookimpl
    def host_status(self, host: HostSpec) -> HostStatus:
        self.seen[host.addr] = dict(host.options)
        return super().host_status(host)


class LegacyLab(TestLabEngine):
    """TestLab of the first contract: options described as a mapping of help texts (untyped)."""

    __test__ = False

    def __init__(self) -> None:
        super().__init__()
        self.seen: dict[str, dict[str, Any]] = {}

    @hookimpl
    def engine_describe(self) -> dict[str, Any]:
        return {"title": "LegacyLab", "options": {"pool": "storage pool of new VMs"}}

    @hookimpl
    def host_status(self, host: HostSpec) -> HostStatus:
        self.seen[host.addr] = dict(host.options)
        return super().host_status(host)


@pytest.fixture(scope="module")
def typed() -> TypedLab:
    return TypedLab()


@pytest.fixture(scope="module")
def legacy() -> LegacyLab:
    return LegacyLab()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def srv(request: pytest.FixtureRequest, typed: TypedLab, legacy: LegacyLab,
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    reg = PluginRegistry()
    assert reg.register_engine("TypedLab", typed) and reg.register_engine("LegacyLab", legacy), reg.failures
    folder = tmp_path_factory.mktemp(f"opts-{request.param}")
    url = database_url(request.param, folder)
    server = LiveServer(folder, database_url=url, plugins=reg).start()
    yield server
    server.stop()
    if request.param == "postgresql":
        drop_postgres_schema(url)


@pytest.fixture
def api(srv: LiveServer) -> Iterator[ApiClient]:
    client = srv.admin()
    yield client
    client.close()


def _host(name: str, options: dict[str, Any], engine: str = "TypedLab", **extra: Any) -> dict[str, Any]:
    return {"server_name": name, "server_type": engine, "server_addr": f"lab://{name}", "server_user": "u",
            "server_pass": PASSWORD, "options": options, **extra}


def _stored_engine_options(srv: LiveServer, name: str) -> str:
    url = str(srv.database_url).replace("sqlite+aiosqlite", "sqlite")
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            row = conn.execute(text("SELECT engine_options FROM hosts WHERE server_name = :n"), {"n": name}).one()
            return str(row[0])
    finally:
        engine.dispose()


@pytest.mark.parametrize(("options", "names"), [
    ({"region": "eu", "max_vms": "lots"}, "options.max_vms: must be a whole number"),
    ({"region": "eu", "verify_tls": "maybe"}, "options.verify_tls: must be true or false"),
    ({"region": "eu", "mode": "sparse"}, "options.mode: must be one of thin, thick"),
    ({"region": "eu", "nope": 1}, "options.nope: not an option of the TypedLab engine"),
    ({"max_vms": 3}, "options.region: required by the TypedLab engine"),
    ({"region": ["eu", 5]}, "options.region: must be text"),
])
def test_create_refuses_a_bad_option_and_saves_nothing(api: ApiClient, options: dict[str, Any], names: str) -> None:
    status, body = api.call("POST", "/api/server/create", _host("bad-opts", options))
    assert (status, body["code"]) == (400, 400), body
    assert names in body["msg"], body
    assert api.call("GET", "/api/server/detail/bad-opts")[1]["code"] == 1001


def test_options_are_typed_defaulted_secret_and_apart_from_the_core_settings(
        api: ApiClient, srv: LiveServer, typed: TypedLab) -> None:
    api.post("/api/server/create", _host("typed1", {"region": "eu", "max_vms": "7", "verify_tls": "no",
                                                    "api_key": SECRET, "token_any_port": True},
                                         ports_start=22000, ports_close=22010, public_addr="203.0.113.9"))
    try:
        seen = typed.seen["lab://typed1"]
        assert seen == {"datastore": "datastore1", "verify_tls": False, "max_vms": 7, "mode": "thin",
                        "region": "eu", "api_key": SECRET}  # defaults filled, types coerced, secret decrypted
        detail = api.get("/api/server/detail/typed1")
        assert detail["options"]["api_key"] == "set" and detail["options"]["max_vms"] == 7
        assert detail["config"]["ports_start"] == 22000 and detail["config"]["token_any_port"] is True
        assert "ports_start" not in detail["options"] and "token_any_port" not in detail["options"]
        for answer in (detail, api.get("/api/server/detail"), api.get("/api/system/engine/detail")):
            assert SECRET not in str(answer)
        assert SECRET not in _stored_engine_options(srv, "typed1")  # encrypted at rest

        # a bad update is refused whole: nothing changes, on the engine's side either
        status, body = api.call("PUT", "/api/server/update/typed1", {"options": {"max_vms": "x", "mode": "thick"},
                                                                     "server_area": "moved"})
        assert (status, body["code"]) == (400, 400) and "options.max_vms" in body["msg"], body
        status, body = api.call("PUT", "/api/server/update/typed1", {"options": {"region": None}})
        assert (status, body["code"]) == (400, 400) and "options.region" in body["msg"], body
        assert api.get("/api/server/detail/typed1")["server_area"] == ""

        api.put("/api/server/update/typed1", {"options": {"mode": "thick", "api_key": None}})
        api.get("/api/server/detail/typed1")
        seen = typed.seen["lab://typed1"]
        assert seen["mode"] == "thick" and "api_key" not in seen and seen["max_vms"] == 7
        assert api.get("/api/server/detail/typed1")["options"]["api_key"] == ""
    finally:
        api.call("DELETE", "/api/server/delete/typed1", params={"force": "true"})


def test_engine_detail_and_openapi_show_the_typed_options(api: ApiClient, srv: LiveServer) -> None:
    engines = {e["name"]: e for e in api.get("/api/system/engine/detail")}
    options = {o["name"]: o for o in engines["TypedLab"]["options"]}
    assert engines["TypedLab"]["options_typed"] is True
    assert options["mode"] == {"name": "mode", "type": "choice", "default": "thin", "help": "disk provisioning",
                               "secret": False, "required": False, "choices": ["thin", "thick"]}
    assert options["api_key"]["secret"] is True and options["region"]["required"] is True
    assert engines["LegacyLab"]["options_typed"] is False
    assert engines["LegacyLab"]["options"][0]["help"] == "storage pool of new VMs"

    import httpx

    doc = httpx.get(f"{srv.url}/openapi.json").json()
    schema = doc["components"]["schemas"]["EngineOptions_TypedLab"]
    assert schema["properties"]["max_vms"] == {"type": "integer", "description": "VMs the host may run",
                                               "default": 10}
    assert schema["properties"]["api_key"]["writeOnly"] is True
    assert schema["required"] == ["region"] and schema["additionalProperties"] is False
    refs = doc["components"]["schemas"]["HostCreate"]["properties"]["options"]["x-idcs-engine-options"]
    assert refs["TypedLab"] == {"$ref": "#/components/schemas/EngineOptions_TypedLab"}


def test_an_engine_of_the_first_contract_keeps_free_options(api: ApiClient, legacy: LegacyLab) -> None:
    api.post("/api/server/create", _host("legacy1", {"pool": "fast", "anything": "goes"}, engine="LegacyLab",
                                         ports_start=23000, ports_close=23010))
    try:
        seen = legacy.seen["lab://legacy1"]
        assert seen["pool"] == "fast" and seen["anything"] == "goes"
        assert seen["ports_start"] == 23000  # as before: the first contract's engines also see the core's settings
        assert api.get("/api/server/detail/legacy1")["options"] == {"pool": "fast", "anything": "goes"}
    finally:
        api.call("DELETE", "/api/server/delete/legacy1", params={"force": "true"})
