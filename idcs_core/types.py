"""The plain data objects that cross the hook boundary.

Engines receive and return only these (and builtins): they never see the
database, HTTP requests or the core's internals. Every object is a frozen or
plain dataclass so an engine written in its own repository depends on nothing
but ``idcs_core.types``, ``idcs_core.errors`` and ``idcs_core.hookspecs``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Protocol


class PowerAction(enum.StrEnum):
    """The four power actions of the contract (API words in parentheses).

    Compatibility words (``start``, ``hard_stop``, ``S_RESUME``, ...) are mapped to
    these by the API layer; ``STOP`` (graceful shut-down) and ``RESUME`` are the two
    extra actions an engine may receive.
    """

    START = "S_START"
    HARD_OFF = "H_CLOSE"
    RESET = "S_RESET"
    PAUSE = "S_PAUSE"
    RESUME = "S_RESUME"
    STOP = "S_CLOSE"


class VMStatus(enum.StrEnum):
    """Status words of the contract. Engines report running / stopped / paused;
    creating and deleting are set by the core while a task runs."""

    RUNNING = "running"
    STOPPED = "stopped"
    PAUSED = "paused"
    CREATING = "creating"
    DELETING = "deleting"


class OptionType(enum.StrEnum):
    """The value types a ``HostOption`` may declare."""

    STR = "str"
    INT = "int"
    BOOL = "bool"
    CHOICE = "choice"


@dataclass(frozen=True)
class HostOption:
    """One host option an engine understands, declared in ``engine_describe()["options"]``.

    The core validates a host's ``options`` against these on create and update (400
    naming the option, nothing saved), fills in ``default`` for options left out,
    shows them in ``/api/system/engine/detail`` and the OpenAPI document, and keeps
    ``secret`` ones encrypted at rest and out of every answer. ``choices`` lists the
    allowed values of a ``CHOICE`` option.
    """

    name: str
    type: OptionType = OptionType.STR
    default: Any = None
    help: str = ""
    secret: bool = False
    required: bool = False
    choices: tuple[str, ...] = ()


@dataclass(frozen=True)
class HostSpec:
    """How to reach one host: what the operator entered for it.

    ``options`` holds engine-specific settings (``verify_tls``, ``datastore``,
    ``ports_start``/``ports_close``, ``public_addr``...). The object is hashable
    (``options`` excluded), so an engine may key a connection cache on it.
    """

    name: str
    server_type: str
    addr: str
    user: str
    password: str = field(repr=False)
    options: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)


@dataclass
class HostStatus:
    """Live usage of a host. Percentages are floats 0-100; None when unknown."""

    online: bool = True
    cpu_usage: float | None = None
    memory_usage: float | None = None
    disk_usage: float | None = None
    vms_count: int | None = None
    version: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class VMSpec:
    """What a VM should be. ``ram_num`` in MB, ``hdd_num`` in GB.

    ``config`` carries the optional extras of the billing dialect (``os_pass``,
    ``vc_pass``, ``nic_all``, ``speed_u``/``speed_d`` in Mbit/s, ``cpu_per``...);
    an engine applies those it can and ignores the rest.
    """

    vm_uuid: str
    os_name: str
    cpu_num: int
    ram_num: int
    hdd_num: int
    vm_name: str | None = None
    config: dict[str, Any] = field(default_factory=dict)
    ref: str | None = None
    """The engine's own id for an existing VM (update, reinstall); None on create."""


@dataclass
class VMInfo:
    """A VM as the engine sees it right now.

    ``status`` is one of running / stopped / paused; ``power_state`` is the engine's
    own word (``poweredOn``, ``Frozen``, ``exited``...). ``None`` fields are unknown
    and leave the core's record as it is.
    """

    vm_uuid: str
    status: str
    power_state: str = ""
    vm_name: str | None = None
    os_name: str | None = None
    cpu_num: int | None = None
    ram_num: int | None = None
    hdd_num: int | None = None
    cpu_usage: float | None = None
    memory_usage: float | None = None
    ip_addresses: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    ref: str | None = None
    """How the back end addresses this VM (vSphere instance UUID, vmrest id, libvirt
    UUID...). The core stores it and hands it back as ``ref`` on every VM hook. None
    means the back end addresses the VM by ``vm_uuid`` (the core then passes that)."""


class ImageKind(enum.StrEnum):
    """What an ``OSImage`` is: VMs are created from images and templates; ISOs are mounted."""

    IMAGE = "image"  # a disk or container image a VM is created from
    TEMPLATE = "template"  # a template VM that is cloned
    ISO = "iso"  # an installer / CD-ROM image: offered by ISO mount (and by create on engines that boot from it)


@dataclass
class OSImage:
    """An image, template or ISO the host has. ``file`` is what a client passes back."""

    name: str
    file: str
    family: str = "other"
    kind: ImageKind = ImageKind.IMAGE


@dataclass
class IPAddress:
    """One address of a VM. ``nic`` names the interface where known."""

    address: str
    version: int = 4
    nic: str = ""
    mac_addr: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class NatRule:
    """A port forward: ``host_port`` on the host to ``vm_port`` in the VM."""

    host_port: int
    vm_port: int
    protocol: str = "tcp"
    lan_addr: str = ""


@dataclass
class ProxyRule:
    """A reverse-proxy entry: requests for ``domain`` go to the VM's ``lan_port``."""

    domain: str
    lan_port: int
    lan_addr: str = ""
    is_https: bool = False


@dataclass
class DiskSpec:
    """An extra disk: ``size_gb`` gigabytes named ``name`` (unique per VM)."""

    name: str
    size_gb: int


@dataclass(frozen=True)
class TrafficCounters:
    """A VM's network byte counters as its host reports them now, from the VM's side.

    ``rx_bytes``: received by the VM (download); ``tx_bytes``: sent by the VM (upload); both
    summed over the VM's NICs (loopback excluded) and counting up from when its network came up.
    ``epoch`` names that start (the container's PID, its network endpoint, a boot id): a new
    ``epoch`` means the counters began again from zero (a restart), so the core adds the new values
    whole instead of a difference. Leave it "" when the back end has no such id; a counter that
    went down is then taken as a restart too.
    """

    rx_bytes: int
    tx_bytes: int
    epoch: str = ""


@dataclass
class BackupInfo:
    """A backup as it exists on the host (or in the engine's store)."""

    backup_name: str
    vm_uuid: str
    description: str = ""
    size_bytes: int | None = None
    created_at: str | None = None


class ConsoleKind(enum.StrEnum):
    """What speaks at a ``ConsoleEndpoint``."""

    VNC = "vnc"  # RFB over TCP: the core serves noVNC and bridges its websocket to it
    WEBMKS = "webmks"  # VMware's WebMKS (a websocket at the endpoint, opened with the ticket)
    SERIAL = "serial"  # a raw byte stream over TCP (a serial port): shown in the core's terminal page


@dataclass(frozen=True)
class ConsoleEndpoint:
    """Where a VM's graphical (or serial) console listens, as returned by ``vm_console``.

    The core, not the engine, serves the page a user opens: it connects to
    ``address``:``port`` (from the core's machine) with ``password`` (a VNC password)
    or ``ticket`` (a one-time ticket of the back end), over TLS when ``tls`` is true.
    ``expires_at`` (epoch seconds) is when a ticket or password stops working; None
    for endpoints that do not expire. The password and ticket never reach the browser.
    """

    kind: ConsoleKind
    address: str
    port: int
    password: str | None = None
    ticket: str | None = None
    tls: bool = False
    expires_at: float | None = None


class Progress(Protocol):
    """Handed to long operations so they can report how far they are.

    Thread-safe: a synchronous hook running in a worker thread may call it.
    """

    def __call__(self, percent: int, message: str = "") -> None: ...


class TerminalChannel(Protocol):
    """An interactive terminal into a VM, as returned by ``vm_terminal_open``.

    The core bridges it to a browser websocket. Methods may be plain or ``async``;
    plain ones are run in a worker thread. ``read`` returns b"" at end of stream.
    """

    def read(self) -> bytes: ...

    def write(self, data: bytes) -> None: ...

    def resize(self, cols: int, rows: int) -> None: ...

    def close(self) -> None: ...
