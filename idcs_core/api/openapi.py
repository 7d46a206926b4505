"""The OpenAPI 3.1 document (``/openapi.json``) and a human-readable API page (``/docs``),
both generated from the route declarations, so they cannot drift from the code."""

from __future__ import annotations

import copy
import html
import re
from typing import Any

from pydantic import AliasChoices, BaseModel

from idcs_core import errors
from idcs_core.api.routing import PUBLIC, Endpoint

ENVELOPE = {"type": "object", "required": ["code", "msg", "data"], "properties": {
    "code": {"type": "integer", "description": "200 on success, else an HTTP or business code"},
    "msg": {"type": "string"}, "data": {}, "timestamp": {"type": "integer", "description": "epoch seconds"}}}

DECISIONS = """
Decisions where API.md is silent (kept consistently across the API):

* Every answer is the envelope; the HTTP status is the code's closest HTTP status.
  Extra business codes: 1006 not supported by this engine (HTTP 501), 2004 user name
  locked after repeated failed logins (429), 4001 quota exceeded (403), 4002 resource
  conflict such as a taken host port, domain, name, or a VM busy with another task (409).
* Bodies may be JSON or form-encoded; GET and DELETE parameters may come in the query
  string (the billing modules send them so). Unknown fields are ignored.
* Names that reach hosts (server_name, vm_uuid, hdd_name, backup names...) are 1-64
  characters of letters, digits, `_`, `-`, `.`, starting with a letter or digit, never `..`.
* `os_name` (create, reinstall) must be one of the host's images or templates and `iso_name`
  (ISO mount) one of its ISOs, exactly as `GET /api/client/os-images/{hs_name}` lists them
  with their `kind` (`image`, `template`, `iso`); datastore paths such as
  `[datastore1] iso/debian 12.iso` are fine, `..`, `//`, control characters and local
  absolute paths never are. Anything else is a 400 before the engine is asked.
* A VM's `ref` (how the engine's back end addresses it: vSphere instance UUID, libvirt
  UUID...) is stored by the core and handed to the engine on every call; it is internal
  and never appears in an answer (customers see `vm_uuid` only).
* Host `options` are the engine's (see `x-idcs-engine-options` on the hosts' `options`
  field and `GET /api/system/engine/detail`): typed, defaulted, unknown names refused for
  engines that declare their options, secret ones encrypted at rest and answered as
  `"set"` (or `""`). The core's own per-host settings (`ports_start`, `ports_close`,
  `public_addr`, `server_plan`, `proxy_endpoint`, and `token_any_port` also accepted
  inside `options`) are shown apart, in the host's `config`.
* Create, update, delete, reinstall, backup and restore are tasks: the answer carries
  `task_id` at once (`GET /api/tasks/{task_id}`); `?wait=N` waits up to N seconds for the
  end and answers the task's error if it failed. Calls made with an API token wait by
  default as long as the token's client profile allows (below the module's own time-out):
  openidcs 300 s, idcsmart 25 s, swapidc 50 s, xiaoheifs 12 s; a create still running
  then answers success with status `creating` (the module polls the status). NAT adds and
  removals and disk attach / detach / delete run as tasks too (kinds `nat_add`, `nat_delete`,
  `disk_add`, `disk_remove`, `disk_delete`), answered when they end with the usual result;
  the task (`GET /api/tasks`) keeps the engine's progress, and its final message states a
  restart the change caused (e.g. the container recreated to attach a disk).
* API tokens: the global one (`/api/token/*`, profile from setting `api_token_profile`,
  default `openidcs` = the current server's dialect) and named ones (`/api/tokens`, one per
  billing module, with a profile, optional scopes and expiry; secret shown once, stored
  hashed). The profile decides the dialect where the modules disagree: `hdd_num` (and
  `flu_num`) in MB for idcsmart / swapidc / xiaoheifs (converted before validation, so every
  limit applies to the converted value), GB for openidcs; the status as a list of samples
  with `vm_status` (idcsmart); the VM detail with `hostname`, `ipv4`, `config.cpus`, `used`...
  (idcsmart) or the VM in `config` with `vm_flag` (xiaoheifs); NAT rules with
  `external_port`/`internal_port` (idcsmart); host `public_addr` as a list and `server_plan`
  keyed by plan name (xiaoheifs); OS images as `system_maps`/`images_maps` (xiaoheifs).
* A retried create with an API token never makes a second VM: the same `vm_uuid` answers the
  existing VM (waiting on its running create); without `vm_uuid`, the same `vm_name` from
  the same token on the same host within 10 minutes answers the first VM.
* A reinstall through `PUT /api/client/update` happens only when `os_name` differs from the
  VM's current system. A `bridge` NIC is a `pub` NIC where the engine can give a VM its own
  address, else 1006. An explicit NAT host port from an API token must lie in the host's
  `ports_start..ports_close` unless the host's option `token_any_port` is true.
* `/api/client/templogin?token=T` uses T up and answers 303 to the web panel:
  `/#temp=<session token>&hs=<host>&vm=<vm_uuid>` (a session limited to that VM).
* After a crash, every task left running is settled against the host before the server
  answers (a host that does not answer: its task stays `running` and its VM busy until it
  does): a create whose VM is complete, a delete, an update, reinstall or restore run again,
  and a backup the host holds whole succeed with a message starting "recovered after a
  restart"; a create that never reached the host or was half made (removed), a backup not
  made (its remains removed) and a NAT, IP or proxy add that never answered (undone, so a
  retry finds the port, address or domain free) fail with the reason. ISO mounts/unmounts and
  NAT/IP/proxy removals are finished; a power action succeeds if the VM is in the state it
  asked for (its recorded status is the host's either way); a password change fails (the
  password is never stored: set it again). No VM stays `creating`/`deleting` once its task ended;
  the audit log and `task_finished` hear each outcome once.
* `*_index` of IPs, NAT rules and proxies are stable per VM and do not shift.
* Security (issue 10): every integer field is bounded by what its column holds (32-bit;
  larger: 400). Per-VM maxima are operator settings that hold for every caller, the global
  API token and admins included: `max_vm_cpu_num` (default 64), `max_vm_ram_num` MB
  (262144), `max_vm_hdd_num` GB (4096, also per extra disk): more answers 400 although the
  schema's static maximum is higher. New users get small quotas (setting `default_quota`)
  and may create VMs only on hosts an administrator granted them
  (`POST/DELETE /api/users/{user_id}/hosts/{hs_name}`, 403 otherwise). A customer's proxy
  domain may not equal, contain or lie under another user's proxy domain, and must end with
  one of `proxy_domain_suffixes` when the operator sets them (403); NAT and proxy `lan_addr`
  of a customer must be one of the VM's own addresses (403). `?wait=` is checked before
  anything runs. Secrets (`password`, `old_password`, `new_password`, `os_pass`, `vc_pass`,
  `server_pass`, `token`) in the query string of a call with a body answer 400. A new
  `server_addr` needs `server_pass` again (400). Logins are throttled per source address
  (`login_address_max_failures`) and per account for the addresses that failed for it
  (`login_max_failures`): 2004 / HTTP 429. 405 answers carry `Allow`. A record changed or
  deleted by a parallel request (an update racing a delete) answers 409.
* Normal users see and act on their own VMs only; hosts, users, settings and the API
  token are for administrators (403 otherwise). A temporary token
  (`/api/client/temptoken`) acts on one VM only.
* The billing modules' dialect is accepted beside API.md's names: alias routes are tagged
  `compat` and marked `x-idcs-alias-of`; alias fields (`mem_num`, `wan_port`, `lan_port`,
  `nat_tips`, `port_tips`, `web_addr`, `vm_tips`, `vm_back`, ...) are marked `x-idcs-aliases`.
  Answers carry both names. The host list is a list for `/login` sessions and an object
  keyed by server_name for the global API token and `/api/login` sessions (`?format=`
  chooses). Power words also: S_RESUME, start, stop, hard_stop, reset, hard_reset, pause,
  resume. `hdd_num` is GB in the contract and for the `openidcs` profile.
* Reverse proxies (`proxys`) work on every host: an engine with its own `proxy_add` serves
  them, otherwise the core's Caddy does, driven live through its admin API. Where that Caddy
  is, is the host's `config.proxy_endpoint`: `local` (default: a Caddy this server starts,
  data in `<data dir>/caddy`, stopped by PID at shut-down), `off` (proxys answer 1006) or
  `http://HOST:PORT` (a Caddy dedicated to OpenIDCS). It listens on the settings
  `proxy_http_port` (80) and `proxy_https_port` (443); `is_https` rules are served with TLS
  (certificates from Caddy's internal CA, or ACME with `proxy_tls_issuer` = acme) and their
  plain-HTTP side redirects (308) to HTTPS; unknown domains get 404. Caddy dials `lan_addr`
  when given (a normal user may only name the VM's own addresses), else the host's
  `public_addr` and the host port of a NAT rule forwarding TCP to `lan_port`, else the VM's own
  address; with none of them the rule is refused (400). A rule Caddy refuses (1005) or cannot
  take (1003) is not recorded. Rules are reloaded from the database at start and whenever
  the Caddy restarted or differs from the records (e.g. a deleted VM's rules go).
"""

INDEX_SCHEMA = {"type": "integer", "minimum": 0, "maximum": 999_999_999}  # ASCII digits, at most 9
_CONVERTER = re.compile(r"{(\w+):\w+}")


def _path(p: str) -> str:
    return _CONVERTER.sub(r"{\1}", p)


def _params(ep: Endpoint) -> list[dict[str, Any]]:
    params = [{"name": n, "in": "path", "required": True,
               "schema": {"type": "string", "pattern": r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"}
               if not n.endswith("_index") and n != "user_id" else INDEX_SCHEMA}
              for n in re.findall(r"{(\w+)", ep.path)]
    if ep.method in ("GET", "DELETE") and ep.body is not None:
        schema = ep.body.model_json_schema()
        for name, prop in (schema.get("properties") or {}).items():
            params.append({"name": name, "in": "query", "required": name in schema.get("required", []),
                           "schema": prop})
    documented = {p["name"] for p in params}
    params += [{"name": n, "in": "query", "required": False, "description": d, "schema": {"type": "string"}}
               for n, d in ep.query.items() if n not in documented]
    return params


def _mark_aliases(model: type[BaseModel], schema: dict[str, Any]) -> dict[str, Any]:
    """Say on each property which other names the billing dialect may send for it."""
    for name, info in model.model_fields.items():
        alias = info.validation_alias
        prop = (schema.get("properties") or {}).get(name)
        if isinstance(alias, AliasChoices) and prop is not None:
            others = [c for c in alias.choices if isinstance(c, str) and c != name]
            if others:
                prop["x-idcs-aliases"] = others
                note = f"Also accepted as {', '.join(others)} (billing dialect alias)."
                prop["description"] = f"{prop.get('description', '')} {note}".strip()
    return schema


def build(endpoints: list[Endpoint], version: str) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    schemas: dict[str, Any] = {}
    for ep in endpoints:
        op: dict[str, Any] = {
            "operationId": f"{ep.tag}_{ep.handler.__name__}",
            "summary": ep.summary,
            "description": ep.description,
            "tags": ["compat"] if ep.alias_of else [ep.tag],
            "parameters": _params(ep),
            "responses": {
                "200": {"description": "success", "content": {"application/json": {"schema": {
                    "allOf": [{"$ref": "#/components/schemas/Envelope"},
                              {"properties": {"data": ep.data_schema or {}}}]}}}},
                "default": {"description": "error: the envelope with an HTTP or business code",
                            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Envelope"}}}},
            },
        }
        if ep.alias_of:
            op["x-idcs-alias-of"] = ep.alias_of
            op["description"] = f"Alias (billing dialect) of `{ep.alias_of}`. {ep.description}".strip()
        if ep.auth == PUBLIC:
            op["security"] = []
        else:
            op["x-idcs-auth"] = ep.auth
        if ep.body is not None and ep.method not in ("GET",):
            name = ep.body.__name__
            raw_schema = ep.body.model_json_schema(ref_template="#/components/schemas/{model}")
            model_schema = _mark_aliases(ep.body, raw_schema)
            for def_name, definition in model_schema.pop("$defs", {}).items():
                schemas[def_name] = definition
            schemas[name] = model_schema
            op["requestBody"] = {"required": ep.method in ("POST", "PUT"), "content": {
                "application/json": {"schema": {"$ref": f"#/components/schemas/{name}"}},
                "application/x-www-form-urlencoded": {"schema": {"$ref": f"#/components/schemas/{name}"}}}}
        paths.setdefault(_path(ep.path), {})[ep.method.lower()] = op
    codes = "\n".join(f"* {code}: {msg} (HTTP {status})"
                      for code, (status, msg) in sorted(errors.BUSINESS_CODES.items()))
    return {
        "openapi": "3.1.0",
        "info": {"title": "OpenIDCS API", "version": version,
                 "description": "One control plane for many hypervisor and container hosts.\n"
                                f"{DECISIONS}\nCodes:\n{codes}\n"},
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
                       "schemas": {"Envelope": ENVELOPE, **schemas}},
    }


def with_engines(doc: dict[str, Any], engine_options: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """``doc`` plus each installed engine's host options: a schema ``EngineOptions_<type>`` per
    engine (typed, with defaults; secret ones ``writeOnly``), listed on the hosts' ``options`` field
    as ``x-idcs-engine-options`` (engine type -> schema reference)."""
    schemas = dict(doc["components"]["schemas"])
    refs = {}
    for name, schema in sorted(engine_options.items()):
        key = "EngineOptions_" + re.sub(r"[^A-Za-z0-9_.-]", "_", name)
        schemas[key] = schema | {"title": f"Host options of the {name} engine"}
        refs[name] = {"$ref": f"#/components/schemas/{key}"}
    for body in ("HostCreate", "HostUpdate"):
        if body not in schemas:
            continue
        schemas[body] = copy.deepcopy(schemas[body])
        prop = schemas[body].get("properties", {}).get("options")
        if isinstance(prop, dict):
            prop["x-idcs-engine-options"] = refs
            prop["description"] = ("The engine's options, checked against what the host's engine declares "
                                   "(x-idcs-engine-options: one schema per engine type); secret ones are "
                                   "stored encrypted and answered as \"set\".")
    return doc | {"components": doc["components"] | {"schemas": schemas}}


def render_page(doc: dict[str, Any]) -> str:
    rows = []
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            auth = "public" if op.get("security") == [] else op.get("x-idcs-auth", "user")
            alias = f" <em>(alias of {html.escape(op['x-idcs-alias-of'])})</em>" if "x-idcs-alias-of" in op else ""
            rows.append(f"<tr><td><b>{method.upper()}</b></td><td><code>{html.escape(path)}</code></td>"
                        f"<td>{html.escape(auth)}</td><td>{html.escape(op['summary'])}{alias}</td></tr>")
    decisions = html.escape(DECISIONS)
    return ("<!doctype html><html><head><meta charset='utf-8'><title>OpenIDCS API</title>"
            "<style>body{font-family:sans-serif;margin:2em}td{padding:2px 8px;border-bottom:1px solid #ddd}"
            "code{font-size:90%}</style></head><body>"
            f"<h1>OpenIDCS API {html.escape(doc['info']['version'])}</h1>"
            "<p>Machine-readable: <a href='/openapi.json'>/openapi.json</a>. Authenticate with "
            "<code>Authorization: Bearer &lt;token&gt;</code> from <code>POST /login</code>.</p>"
            f"<pre>{decisions}</pre><table>{''.join(rows)}</table></body></html>")
