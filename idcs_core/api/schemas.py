"""Request bodies, validated before anything is touched.

Names follow ``API.md``; where the billing modules' dialect uses another name
for the same field (``mem_num`` for ``ram_num``, ``wan_port`` for
``host_port``...), it is accepted as an alias. Unknown fields are ignored;
wrong types, out-of-range numbers and unsafe names are refused with 400.
"""

from __future__ import annotations

import secrets
from typing import Annotated, Any, Literal, get_args, get_origin

from pydantic import (
    AfterValidator,
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    StrictBool,
    StringConstraints,
    ValidationInfo,
    field_validator,
    model_validator,
)

from idcs_core.proxy.endpoint import normalise as normal_proxy_endpoint
from idcs_core.services.limits import BILLING_LIMITS
from idcs_core.validation import (
    Domain,
    Email,
    HostUser,
    ImageRef,
    SafeName,
    ServerAddr,
    Text,
    UserName,
    printable,
)


def alias(*names: str) -> Any:
    return AliasChoices(*names)


class Body(BaseModel):
    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True, populate_by_name=True)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        """``true`` is not a number: lax validation would take it as 1 CPU or port 1."""
        if isinstance(value, bool) and info.field_name is not None:
            types = _base_types(cls.model_fields[info.field_name].annotation)
            if int in types and bool not in types:
                raise ValueError("must be a number, not true/false")
        return value


def _base_types(annotation: Any) -> set[Any]:
    """The plain types an annotation admits (through Optional, unions and Annotated)."""
    args = get_args(annotation)
    if get_origin(annotation) is Annotated:
        return _base_types(args[0])
    if args and get_origin(annotation) is not Literal:
        return set().union(*(_base_types(a) for a in args))
    return {annotation}


# what the integer columns hold (32-bit on PostgreSQL): every integer field is bounded by it,
# so an oversized number is a 400 at the door, never a stored value that breaks later reads
INT32 = 2**31 - 1
Limit = Annotated[int, Field(ge=-1, le=INT32)]
Amount = Annotated[int, Field(ge=0, le=INT32)]

# passwords are taken exactly as typed: never stripped of spaces
Password = Annotated[str, StringConstraints(strip_whitespace=False), AfterValidator(printable),
                     Field(min_length=1, max_length=128)]
Port = Annotated[int, Field(ge=1, le=65535)]
Tips = Annotated[Text, Field(max_length=255)]


def _bounded_numbers(value: Any) -> Any:
    """Free-form JSON (host options, plans): integers must fit 64 bits (the JSON encoder's limit)."""
    if isinstance(value, int) and not isinstance(value, bool) and not -(2**63) <= value < 2**63:
        raise ValueError("numbers must lie within 64-bit integers")
    if isinstance(value, dict):
        for item in value.values():
            _bounded_numbers(item)
    elif isinstance(value, list):
        for item in value:
            _bounded_numbers(item)
    return value


def _blank_to_none(value: Any) -> Any:
    return None if value == "" else value


# ---------------------------------------------------------------------- auth and users


class LoginBody(Body):
    username: Annotated[str, Field(min_length=1, max_length=64)] | None = None
    password: Annotated[str, StringConstraints(strip_whitespace=False),
                        Field(min_length=1, max_length=128)] | None = None
    login_type: Literal["user", "token"] = "user"
    token: Annotated[str, Field(max_length=512)] | None = None

    @model_validator(mode="after")
    def _needs_credentials(self) -> LoginBody:
        if self.login_type == "token" and not self.token:
            raise ValueError("token is required when login_type is token")
        if self.login_type == "user" and not (self.username and self.password):
            raise ValueError("username and password are required")
        return self


class QuotaBody(Body):
    """Quota limits: -1 means unlimited."""

    max_vms: Limit | None = None
    max_cpu: Limit | None = None
    max_ram: Limit | None = None
    max_hdd: Limit | None = None
    max_nat: Limit | None = None
    max_ips: Limit | None = None
    max_backups: Limit | None = None


class UserCreate(Body):
    username: UserName
    password: Password
    email: Email
    is_admin: StrictBool = False
    quota: QuotaBody | None = None


class UserUpdate(Body):
    username: UserName | None = None
    password: Password | None = None
    email: Email | None = None
    is_admin: StrictBool | None = None
    quota: QuotaBody | None = None


class ChangePassword(Body):
    old_password: Annotated[str, Field(max_length=128)] = Field(
        default="", validation_alias=alias("old_password", "current_password"))
    new_password: Password = Field(validation_alias=alias("new_password", "password"))


class ChangeEmail(Body):
    email: Email


class TokenSet(Body):
    token: Annotated[str, Field(min_length=16, max_length=256, pattern=r"^[A-Za-z0-9_.\-~+/=]+$")]


class SettingsBody(Body):
    model_config = ConfigDict(extra="allow")


# ---------------------------------------------------------------------- hosts


class HostFields(Body):
    server_area: Tips | None = None
    options: dict[str, Any] | None = None
    ports_start: Annotated[int, Field(ge=1, le=65535)] | None = None
    ports_close: Annotated[int, Field(ge=1, le=65535)] | None = None
    # one address, or (xiaoheiFS) a list of them: stored comma-separated
    public_addr: Annotated[Text, Field(max_length=255)] | None = None
    server_plan: dict[str, Any] | list[Any] | None = None
    proxy_endpoint: Annotated[str, Field(max_length=255), AfterValidator(normal_proxy_endpoint)] | None = None
    enabled: StrictBool | None = None

    @model_validator(mode="before")
    @classmethod
    def _flatten_config(cls, data: Any) -> Any:
        """The billing dialect nests ports/public address in ``config``."""
        if isinstance(data, dict) and isinstance(data.get("config"), dict):
            data = {**data["config"], **{k: v for k, v in data.items() if k != "config"}}
        if isinstance(data, dict):
            data = {k: _blank_to_none(v) if k in ("ports_start", "ports_close") else v for k, v in data.items()}
            addr = data.get("public_addr")
            if isinstance(addr, list) and all(isinstance(a, str) for a in addr):
                data["public_addr"] = ",".join(a.strip() for a in addr if a.strip())
        return data

    @field_validator("options")
    @classmethod
    def _options_small(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None and (len(value) > 50 or len(str(value)) > 8192):
            raise ValueError("too many or too large options")
        return _bounded_numbers(value)

    @field_validator("server_plan")
    @classmethod
    def _plan_numbers(cls, value: Any) -> Any:
        return _bounded_numbers(value)


class HostCreate(HostFields):
    server_name: SafeName
    server_type: SafeName
    server_addr: ServerAddr
    server_user: HostUser
    server_pass: Annotated[str, Field(max_length=1024)]


class HostUpdate(HostFields):
    server_name: SafeName | None = None
    server_type: SafeName | None = None
    server_addr: ServerAddr | None = None
    server_user: HostUser | None = None
    server_pass: Annotated[str, Field(max_length=1024)] | None = None


class HostPower(Body):
    action: Literal["start", "stop", "restart"] | None = None
    enable: StrictBool | None = None

    @model_validator(mode="before")
    @classmethod
    def _enable_words(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("enable"), str | int) and \
                not isinstance(data.get("enable"), bool):
            words = {"1": True, "true": True, "on": True, "0": False, "false": False, "off": False}
            key = str(data["enable"]).lower()
            if key in words:
                data = {**data, "enable": words[key]}
        return data

    @model_validator(mode="after")
    def _one_of(self) -> HostPower:
        if self.action is None and self.enable is None:
            raise ValueError("give action (start / stop / restart) or enable (true / false)")
        return self


class PlanConfig(Body):
    """One sale plan as xiaoheiFS sends it (hdd_num / flu_num already converted to GB)."""

    model_config = ConfigDict(extra="forbid")
    cpu_num: Annotated[int, Field(ge=0, le=1024)] = 0
    mem_num: Annotated[int, Field(ge=0, le=16 * 1024 * 1024)] = 0
    hdd_num: Annotated[int, Field(ge=0, le=1024 * 1024)] = 0
    speed_u: Annotated[int, Field(ge=0, le=10**6)] = 0
    speed_d: Annotated[int, Field(ge=0, le=10**6)] = 0
    flu_num: Annotated[int, Field(ge=0, le=10**9)] = 0
    nat_num: Annotated[int, Field(ge=-1, le=65535)] = 0
    gpu_mem: Annotated[int, Field(ge=0, le=10**7)] = 0


class HostPlan(Body):
    """``{"plans": [...]}`` or one plan object replaces the plans; ``plan_name`` +
    ``plan_config`` adds or replaces that one plan (xiaoheiFS UpsertPlan)."""

    model_config = ConfigDict(extra="allow")
    plans: list[dict[str, Any]] | None = None
    plan_name: SafeName | None = None
    plan_config: PlanConfig | None = None

    @model_validator(mode="after")
    def _numbers(self) -> HostPlan:
        _bounded_numbers(self.model_dump())
        return self


# ---------------------------------------------------------------------- VMs

CPU = Annotated[int, Field(ge=1, le=1024)]
RAM = Annotated[int, Field(ge=16, le=16 * 1024 * 1024)]
HDD = Annotated[int, Field(ge=0, le=1024 * 1024)]
LIMIT_KEYS = BILLING_LIMITS


class NicSpec(Body):
    # "bridge" (the billing modules' word for a NIC with its own public address) is "pub"
    # where the engine can give a VM its own address, else refused with 1006
    nic_type: Literal["nat", "pub", "bridge"] = "nat"
    mac_addr: Annotated[str, Field(max_length=17, pattern=r"^([0-9A-Fa-f]{2}[:-]){5}[0-9A-Fa-f]{2}$|^$")] = ""
    ip4_addr: Annotated[str, Field(max_length=18, pattern=r"^[0-9./]*$")] = ""
    ip6_addr: Annotated[str, Field(max_length=50, pattern=r"^[0-9A-Fa-f:./]*$")] = ""


class VMLimits(Body):
    """The billing dialect's per-VM limits (stored; enforced where the engine can). All but
    vc_port may be set by administrators only (403 for others)."""

    cpu_per: Annotated[int, Field(ge=0, le=100)] | None = None
    gpu_num: Annotated[int, Field(ge=0, le=64)] | None = None
    gpu_mem: Amount | None = None
    speed_u: Amount | None = None
    speed_d: Amount | None = None
    flu_num: Amount | None = None
    nat_num: Limit | None = None
    web_num: Limit | None = None
    vc_port: Annotated[int, Field(ge=0, le=65535)] | None = None
    nic_all: dict[Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,16}$")], NicSpec] | None = None

    @model_validator(mode="before")
    @classmethod
    def _blanks(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return {k: _blank_to_none(v) for k, v in data.items()}
        return data

    def config(self) -> dict[str, Any]:
        data = self.model_dump(exclude_none=True, include=set(LIMIT_KEYS) | {"vc_port", "nic_all"})
        return data


class VMCreate(VMLimits):
    vm_uuid: SafeName | None = None
    vm_name: SafeName | None = None
    os_name: ImageRef
    cpu_num: CPU
    ram_num: RAM = Field(validation_alias=alias("ram_num", "mem_num"))
    hdd_num: HDD
    os_pass: Password | None = None
    vc_pass: Password | None = None
    owner_id: Annotated[int, Field(ge=1, le=INT32)] | None = None

    @property
    def uuid_was_given(self) -> bool:
        return not self._generated_uuid

    _generated_uuid: bool = PrivateAttr(default=False)

    @model_validator(mode="after")
    def _an_id(self) -> VMCreate:
        if not self.vm_uuid:
            self._generated_uuid = True
            # the billing dialect may send only vm_name: make a safe unique id
            base = (self.vm_name or "vm")[:48]
            self.vm_uuid = f"{base}-{secrets.token_hex(4)}"
        return self


class VMUpdate(VMLimits):
    vm_name: SafeName | None = None
    os_name: ImageRef | None = None
    cpu_num: CPU | None = None
    ram_num: RAM | None = Field(default=None, validation_alias=alias("ram_num", "mem_num"))
    hdd_num: HDD | None = None
    os_pass: Password | None = None
    password: Password | None = None


class PowerBody(Body):
    action: Annotated[str, Field(min_length=1, max_length=16, pattern=r"^[A-Za-z_]+$")]


class PasswordBody(Body):
    password: Password = Field(validation_alias=alias("password", "os_pass", "new_password"))
    username: Annotated[str, Field(pattern=r"^[a-z_][a-z0-9_-]{0,31}$|^Administrator$")] = "root"


class ReinstallBody(Body):
    os_name: ImageRef | None = None
    os_pass: Password | None = Field(default=None, validation_alias=alias("os_pass", "password"))


# ---------------------------------------------------------------------- network


class NatAdd(Body):
    host_port: Annotated[int, Field(ge=0, le=65535)] | None = Field(default=None,
                                                                  validation_alias=alias("host_port", "wan_port"))
    vm_port: Port = Field(validation_alias=alias("vm_port", "lan_port"))
    protocol: Literal["tcp", "udp"] = "tcp"
    lan_addr: Annotated[str, Field(max_length=45, pattern=r"^[0-9A-Fa-f.:]*$")] = ""
    tips: Tips = Field(default="", validation_alias=alias("tips", "nat_tips", "port_tips"))

    @model_validator(mode="before")
    @classmethod
    def _auto_port(cls, data: Any) -> Any:
        if isinstance(data, dict):
            data = dict(data)
            for key in ("host_port", "wan_port"):
                if data.get(key) in ("", 0, "0"):
                    data[key] = None
            if isinstance(data.get("protocol"), str):
                data["protocol"] = data["protocol"].lower()
        return data


class IPAdd(Body):
    nic_type: Literal["nat", "pub", "bridge"] = "nat"
    mac_addr: Annotated[str, Field(max_length=17, pattern=r"^([0-9A-Fa-f]{2}[:-]){5}[0-9A-Fa-f]{2}$|^$")] = ""
    ip4_addr: Annotated[str, Field(max_length=18, pattern=r"^[0-9./]*$")] = ""
    ip6_addr: Annotated[str, Field(max_length=50, pattern=r"^[0-9A-Fa-f:./]*$")] = ""
    tips: Tips = Field(default="", validation_alias=alias("tips", "nic_tips"))

    @field_validator("nic_type", mode="after")
    @classmethod
    def _bridge_is_pub(cls, value: str) -> str:
        """IDCSmart's "bridge" (an address of the VM's own) is a public address here."""
        return "pub" if value == "bridge" else value


class ProxyAdd(Body):
    domain: Domain = Field(validation_alias=alias("domain", "web_addr"))
    lan_port: Port = Field(default=80, validation_alias=alias("lan_port", "vm_port"))
    lan_addr: Annotated[str, Field(max_length=45, pattern=r"^[0-9A-Fa-f.:]*$")] = ""
    wan_addr: Annotated[str, Field(max_length=45, pattern=r"^[0-9A-Fa-f.:]*$")] = ""
    is_https: StrictBool | Literal[0, 1, "0", "1", "true", "false"] = False
    tips: Tips = Field(default="", validation_alias=alias("tips", "web_tips"))

    @field_validator("is_https", mode="after")
    @classmethod
    def _bool(cls, value: Any) -> bool:
        return value in (True, 1, "1", "true")


# ---------------------------------------------------------------------- storage and backups


class DiskMount(Body):
    hdd_name: SafeName
    hdd_size: Annotated[int, Field(ge=1, le=1024 * 1024)]


class DiskPick(Body):
    hdd_name: SafeName | None = None


class IsoMount(Body):
    iso_name: ImageRef


class BackupCreate(Body):
    description: Tips = Field(default="", validation_alias=alias("description", "vm_tips"))


class BackupRestore(Body):
    backup_name: SafeName = Field(validation_alias=alias("backup_name", "vm_back"))
    power_on_after_restore: bool | None = None  # true/false, 1/0, "1"/"0", "true"/"false" (PHP forms)


class BackupPick(Body):
    backup_name: SafeName = Field(validation_alias=alias("backup_name", "vm_back"))


class Empty(Body):
    pass


class TrafficReset(Body):
    # IDCSmart sends only ?hostname=<vm_uuid>: the VM is then found by its id on any host
    hs_name: SafeName | None = Field(default=None, validation_alias=alias("hs_name", "server_name"))
    vm_uuid: SafeName = Field(validation_alias=alias("vm_uuid", "hostname"))


class LimitQuery(Body):
    limit: Annotated[int, Field(ge=1, le=1000)] = 100
    state: Literal["pending", "running", "success", "failed"] | None = None


class HistoryQuery(Body):
    limit: Annotated[int, Field(ge=1, le=24 * 60)] = 30


class WaitQuery(Body):
    wait: Annotated[float, Field(ge=0, le=600)] = 0


class PortCheck(Body):
    port: Port = Field(validation_alias=alias("port", "wan_port", "host_port"))
    protocol: Literal["tcp", "udp"] = "tcp"
    hs_name: SafeName | None = Field(default=None, validation_alias=alias("hs_name", "server_name"))


class DomainCheck(Body):
    domain: Domain = Field(validation_alias=alias("domain", "web_addr"))
