"""Every hook of OpenIDCS, documented where it is declared.

Two kinds of hooks live here:

**Engine hooks** (class ``EngineSpec``) drive one kind of host: Docker, LXD,
vSphere... Each engine is loaded into a plugin manager of its own, so a call
for a host of type ``LXD`` reaches the LXD engine and nothing else; no
engine ever checks the host type itself. Every engine hook is
``firstresult``: the engine's answer is the answer. An engine implements the
hooks it can; the set it implements *is* its capability list (see
``idcs_core.plugins.CAPABILITIES``), and calling a hook it lacks answers
"not supported by this engine" (business code 1006) without reaching it.

Engine hooks may be plain functions (the core runs them in a worker thread
with a timeout, so synchronous SDKs such as pyvmomi, pylxd and docker are
fine) or ``async def`` (awaited on the event loop; they must not block).
They receive a ``host: HostSpec`` (address, credentials, options) and plain
data objects from ``idcs_core.types``; they never see the database or HTTP.
They signal failure by raising ``idcs_core.errors`` exceptions:
``HostUnreachable`` (1003) when the host cannot be reached or refuses the
credentials, ``VMNotFound`` (1002) when the VM is not on the host,
``NotSupported`` (1006) for an action the engine cannot do, ``BadRequest``
(400) for a value the back end rejects, and ``VMOperationFailed`` for
anything else. Other exceptions become 1004 (create) or 1005 (everything
else) with their message.

Long operations (create, update, delete, reinstall, backups) and every
change a task makes on the back end (NAT add/remove, disk attach/detach/delete)
receive ``progress``: call ``progress(percent, message)`` as work advances (it is
thread-safe); the core stores it on the task the API exposes, and the first thing
a NAT or disk hook says stays in the task's final message. Say there, before it
happens, anything the customer notices (e.g. "the container is recreated to
attach the disk": one restart). A hook may leave the ``progress`` parameter out
of its signature (pluggy then does not pass it); it must not give it a default
value (pluggy never passes a parameter that has one).

**Event hooks** (class ``EventSpec``) tell plugins that are not engines
(audit, billing, webhooks) what happened. They are called after the fact on
the global plugin manager, in a worker thread, never with secrets, and an
exception in one is logged and otherwise ignored.
"""

from __future__ import annotations

from typing import Any

import pluggy

from idcs_core.types import (
    BackupInfo,
    ConsoleEndpoint,
    DiskSpec,
    HostSpec,
    HostStatus,
    IPAddress,
    NatRule,
    OSImage,
    PowerAction,
    Progress,
    ProxyRule,
    TerminalChannel,
    TrafficCounters,
    VMInfo,
    VMSpec,
)

PROJECT = "idcs"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)
"""Decorate each hook implementation with ``@hookimpl`` (import it from here)."""


class EngineSpec:
    """Hooks an engine implements to drive one kind of host.

    Every hook about one VM receives ``vm_uuid`` (the VM's name in the API) and
    ``ref`` (how the back end addresses it: the ``VMInfo.ref`` the engine returned
    from create, list or status, stored by the core; ``vm_uuid`` itself when the
    engine never returned one). An implementation declares only the arguments it
    uses: an engine whose back end addresses VMs by name may leave ``ref`` out.
    """

    # ------------------------------------------------------------------ lifecycle

    @hookspec(firstresult=True)
    def engine_describe(self) -> dict[str, Any]:
        """Describe the engine for ``idcs plugins`` and ``GET /api/system/engine/detail``.

        Return a dict with any of ``title`` (human name, e.g. "Docker / Podman"),
        ``description``, ``homepage`` and ``options`` (a mapping of the host
        ``options`` keys the engine understands to a one-line explanation).
        Optional; called once at load time.
        """

    @hookspec(firstresult=True)
    def host_connect(self, host: HostSpec) -> HostStatus:
        """Check that ``host`` can be reached with its credentials, and return its status.

        Called when a host is created or its address/credentials change, before
        the change is saved: raise ``HostUnreachable`` (1003) with a clear message
        ("connection refused", "login failed") to refuse it. An engine that keeps
        a session per host may open it here.
        """

    @hookspec(firstresult=True)
    def host_status(self, host: HostSpec) -> HostStatus:
        """Return the host's live status and usage (CPU/memory/disk percent, VM count, version).

        Called for host lists and system stats, concurrently for all hosts and
        with a short timeout (setting ``host_timeout``): answer quickly, ideally
        in one round trip. Raise ``HostUnreachable`` when the host is down; the
        core shows it as ``offline``.
        """

    @hookspec(firstresult=True)
    def host_power(self, host: HostSpec, action: str) -> None:
        """Start, stop or restart the host itself (``action``: start / stop / restart).

        Few engines can: leave it unimplemented and the API answers 1006.
        """

    @hookspec(firstresult=True)
    def host_close(self, host: HostSpec) -> None:
        """Release what the engine holds for ``host`` (sessions, connection pools).

        Called when the host is deleted or its connection settings change, and at
        server shut-down. Must not raise.
        """

    @hookspec(firstresult=True)
    def os_images(self, host: HostSpec) -> list[OSImage]:
        """List the images, templates or ISO files the host can create VMs from.

        ``OSImage.family`` groups them in the API (``ubuntu``, ``debian``,
        ``centos``, ``windows``, ``other``...); derive it from image properties or
        names. ``OSImage.file`` is what a client passes back as ``os_name``.
        """

    # ------------------------------------------------------------------ VMs

    @hookspec(firstresult=True)
    def vm_list(self, host: HostSpec) -> list[VMInfo]:
        """List every VM/container on the host, managed by OpenIDCS or not.

        Used by scans (``/api/client/scaner``) to import unknown VMs and by the
        host detail to count them. List all VMs in a constant number of round
        trips, not one per VM.
        """

    @hookspec(firstresult=True)
    def vm_create(self, host: HostSpec, spec: VMSpec, progress: Progress) -> VMInfo:
        """Create the VM ``spec.vm_uuid`` from ``spec.os_name`` with the spec's CPU/RAM/disk.

        Leave it stopped or running as the engine's custom is; return its
        ``VMInfo``. ``spec.config`` may carry ``os_pass`` (initial root password):
        set it if you can. If creation fails half-way, remove what was made
        before raising, so the host is as before. Raise ``Conflict`` if a VM of
        that name already exists on the host, ``BadRequest`` for an unknown image.
        """

    @hookspec(firstresult=True)
    def vm_update(self, host: HostSpec, spec: VMSpec, progress: Progress) -> VMInfo:
        """Change an existing VM to match ``spec`` (CPU, RAM, disk size, limits in ``config``).

        Apply live where the back end allows, else raise ``VMOperationFailed``
        saying the VM must be stopped. Shrinking a disk may be refused with
        ``BadRequest``. Return the VM as it is afterwards.
        """

    @hookspec(firstresult=True)
    def vm_delete(self, host: HostSpec, vm_uuid: str, ref: str, progress: Progress) -> None:
        """Destroy the VM and its own disks (power it off first if needed).

        Deleting a VM that is already gone must succeed (idempotent): the core
        may retry a delete that failed half-way.
        """

    @hookspec(firstresult=True)
    def vm_reinstall(self, host: HostSpec, spec: VMSpec, progress: Progress) -> VMInfo:
        """Reinstall the VM from ``spec.os_name`` keeping its id, limits and, where the
        engine can, its network identity. Data on the system disk is lost.

        Optional: without it the core reinstalls by ``vm_delete`` then ``vm_create``.
        """

    @hookspec(firstresult=True)
    def vm_power(self, host: HostSpec, vm_uuid: str, ref: str, action: PowerAction) -> VMInfo:
        """Apply a power action and return the VM's state afterwards.

        ``START`` (S_START), ``HARD_OFF`` (H_CLOSE, immediate power off), ``STOP``
        (graceful shut-down), ``RESET`` (S_RESET), ``PAUSE`` (S_PAUSE: suspend or
        freeze) and ``RESUME`` (leave paused/suspended). Starting a running VM or
        stopping a stopped one is not an error. Raise ``NotSupported`` for an
        action the engine cannot do.
        """

    @hookspec(firstresult=True)
    def vm_status(self, host: HostSpec, vm_uuid: str, ref: str) -> VMInfo:
        """Return the VM's live state: status word, engine power state, usage, IPs.

        Raise ``VMNotFound`` if it is not on the host.
        """

    @hookspec(firstresult=True)
    def vm_set_password(self, host: HostSpec, vm_uuid: str, ref: str, username: str, password: str) -> None:
        """Set the password of ``username`` (root/Administrator) inside the guest.

        The VM is usually running. Raise ``VMOperationFailed`` with a clear
        message when the guest lacks the tools (no ``chpasswd``, no guest agent).
        Never log the password.
        """

    # ------------------------------------------------------------------ console

    @hookspec(firstresult=True)
    def vm_console(self, host: HostSpec, vm_uuid: str, ref: str) -> ConsoleEndpoint:
        """Return where the VM's graphical console listens: a ``ConsoleEndpoint`` (kind
        ``vnc``, ``webmks`` or ``serial``; address and port reachable from the core; the
        password or one-time ticket it needs; TLS yes/no; when it expires).

        Called each time a user asks for ``/api/client/remote``; the core serves the
        page (noVNC for ``vnc``) and bridges its websocket to the endpoint over TCP, so
        the engine serves nothing itself and the password or ticket never reaches the
        browser. Raise ``VMOperationFailed`` when the VM has no console right now.
        """

    @hookspec(firstresult=True)
    def vm_terminal_open(self, host: HostSpec, vm_uuid: str, ref: str, cols: int, rows: int) -> TerminalChannel:
        """Open an interactive shell in the VM and return a ``TerminalChannel``.

        The core bridges it to the browser over a websocket and closes it when
        the browser leaves. Raise ``VMOperationFailed`` if the VM is not running.
        """

    # ------------------------------------------------------------------ network

    @hookspec(firstresult=True)
    def vm_ip_list(self, host: HostSpec, vm_uuid: str, ref: str) -> list[IPAddress]:
        """Return the VM's IP addresses as the back end or guest reports them."""

    @hookspec(firstresult=True)
    def vm_ip_add(self, host: HostSpec, vm_uuid: str, ref: str, request: dict[str, Any]) -> IPAddress:
        """Give the VM one more address (``request`` may name ``nic_type`` nat/pub,
        ``ip4_addr``, ``ip6_addr``, ``mac_addr``); return what was assigned."""

    @hookspec(firstresult=True)
    def vm_ip_remove(self, host: HostSpec, vm_uuid: str, ref: str, address: IPAddress) -> None:
        """Take ``address`` (as returned by ``vm_ip_add``) off the VM. Idempotent."""

    @hookspec(firstresult=True)
    def nat_add(self, host: HostSpec, vm_uuid: str, ref: str, rule: NatRule, progress: Progress) -> NatRule:
        """Forward ``rule.host_port`` on the host to ``rule.vm_port`` in the VM, for real.

        The core has already checked the port is free among its own records;
        raise ``Conflict`` if the host has it taken by something else. The rule
        must take effect on a running VM and keep the VM's data. Return the rule
        as applied (``lan_addr`` filled in where known).

        ``progress`` (optional in the implementation's signature) is the ``nat_add``
        task's: if the change restarts the VM (e.g. a one-time move of an earlier
        release's forwards), say so through it before the restart.
        """

    @hookspec(firstresult=True)
    def nat_remove(self, host: HostSpec, vm_uuid: str, ref: str, rule: NatRule, progress: Progress) -> None:
        """Remove a forward added by ``nat_add``. Removing one that is gone succeeds.

        ``progress`` (optional in the signature): as for ``nat_add``, the task's."""

    @hookspec(firstresult=True)
    def nat_sync(self, host: HostSpec, vm_uuid: str, ref: str, rules: list[NatRule]) -> None:
        """Make the VM's forwards on the host exactly ``rules`` (the core's records).

        Called after a server restart or host reconnection, for engines whose
        rules do not survive a host reboot (nftables, iptables). Optional.
        """

    @hookspec(firstresult=True)
    def proxy_add(self, host: HostSpec, vm_uuid: str, ref: str, rule: ProxyRule) -> None:
        """Serve ``rule.domain`` from the VM's ``rule.lan_port`` through a reverse proxy.

        Optional: without it the core serves the host's ``proxys`` through its own Caddy
        (``idcs_core.proxy``), reaching the VM through its NAT rules or its address. Implement
        it only when the back end has a reverse proxy of its own.
        """

    @hookspec(firstresult=True)
    def proxy_remove(self, host: HostSpec, vm_uuid: str, ref: str, rule: ProxyRule) -> None:
        """Remove a reverse-proxy entry added by ``proxy_add``. Idempotent."""

    @hookspec(firstresult=True)
    def vm_traffic(self, host: HostSpec, vm_uuids: list[str]) -> dict[str, TrafficCounters]:
        """Return the network byte counters of the listed VMs of ``host`` (``vm_uuid`` -> ``TrafficCounters``).

        Called for traffic accounting every ``traffic_sample_seconds``, once per host for all of its
        VMs: answer in a constant number of round trips (or concurrent ones), not one call per VM in
        a row. Leave out VMs that are stopped or unknown (they add nothing). The counters count up
        from when the VM's network started; the core keeps the last sample and adds differences,
        so a restart (a new ``epoch``, or counters that went down) is never counted twice.
        """

    @hookspec(firstresult=True)
    def vm_bandwidth(self, host: HostSpec, vm_uuid: str, ref: str, up_mbit: int, down_mbit: int) -> None:
        """Cap the VM's network rate: ``up_mbit`` for what it sends, ``down_mbit`` for what it
        receives, in Mbit/s; 0 lifts that cap. Applying the same caps again must succeed.

        Called after a create or update whose ``config`` has ``speed_u`` / ``speed_d``, when a
        VM passes its traffic allowance and the ``traffic_over_action`` is ``throttle``, when a
        new period lifts that, and after the counters' ``epoch`` changed (a restart may have given
        the VM a new host-side interface). Raise ``NotSupported`` when this VM cannot be capped.
        """

    # ------------------------------------------------------------------ storage

    @hookspec(firstresult=True)
    def disk_attach(self, host: HostSpec, vm_uuid: str, ref: str, disk: DiskSpec, progress: Progress) -> None:
        """Create the extra disk ``disk.name`` of ``disk.size_gb`` GB if it does not exist,
        and attach it to the VM. Attaching an attached disk succeeds.

        ``progress`` (optional in the signature) is the ``disk_add`` task's: an engine
        that must restart or recreate the VM to attach says so through it first."""

    @hookspec(firstresult=True)
    def disk_detach(self, host: HostSpec, vm_uuid: str, ref: str, disk_name: str, progress: Progress) -> None:
        """Detach the disk from the VM and keep its data for a later attach. Idempotent.

        ``progress`` (optional in the signature): the ``disk_remove`` task's, as for
        ``disk_attach``."""

    @hookspec(firstresult=True)
    def disk_delete(self, host: HostSpec, vm_uuid: str, ref: str, disk_name: str, progress: Progress) -> None:
        """Detach if needed and destroy the disk and its data. Idempotent.

        ``progress`` (optional in the signature): the ``disk_delete`` task's, as for
        ``disk_attach``."""

    @hookspec(firstresult=True)
    def iso_mount(self, host: HostSpec, vm_uuid: str, ref: str, iso_name: str) -> None:
        """Insert the ISO image ``iso_name`` (one of ``os_images``) into the VM's CD-ROM."""

    @hookspec(firstresult=True)
    def iso_unmount(self, host: HostSpec, vm_uuid: str, ref: str, iso_name: str) -> None:
        """Eject ``iso_name`` from the VM's CD-ROM. Idempotent."""

    # ------------------------------------------------------------------ backups

    @hookspec(firstresult=True)
    def backup_create(
        self, host: HostSpec, vm_uuid: str, ref: str, backup_name: str, description: str, progress: Progress
    ) -> BackupInfo:
        """Make a restorable backup named ``backup_name`` (chosen by the core, unique per VM).

        A backup holds the VM's disk data and configuration as they are now
        (a snapshot, an export archive...). Return its ``BackupInfo``.
        """

    @hookspec(firstresult=True)
    def backup_restore(self, host: HostSpec, vm_uuid: str, ref: str, backup_name: str, progress: Progress) -> VMInfo:
        """Bring the VM back to the state of ``backup_name``: afterwards its data is what
        it was when the backup was made. Return the VM as it is afterwards."""

    @hookspec(firstresult=True)
    def backup_delete(self, host: HostSpec, vm_uuid: str, ref: str, backup_name: str) -> None:
        """Delete the backup. Deleting one that is gone succeeds."""

    @hookspec(firstresult=True)
    def backup_list(self, host: HostSpec) -> list[BackupInfo]:
        """List every backup on the host (all VMs), for ``/api/server/backup/scan``."""


class EventSpec:
    """Hooks a plugin implements to react to what happened (audit, billing, webhooks).

    Register such a plugin through the entry-point group ``idcs.plugins``. Each
    hook is called after the change is committed, with plain dicts that never
    carry secrets; an exception is logged and ignored.

    The events of a task (``vm_created``, ``vm_deleted``, then ``task_finished``)
    are written with the task's outcome and delivered once it has committed, also
    when the outcome was settled after a restart; times in them are ISO 8601
    strings. A crash in the instant between delivering and noting the delivery
    delivers them again at the next start: use the task id to drop a repeat.
    """

    @hookspec
    def idcs_startup(self, config: dict[str, Any]) -> None:
        """The server has started (``config``: data dir, database driver, listen address)."""

    @hookspec
    def action_recorded(self, entry: dict[str, Any]) -> None:
        """Someone did (or tried) something worth an audit entry. ``entry``: username, action
        (``user.create``, ``login``...), target, result (``success``, ``failed``, or ``started`` for a
        long operation, whose ``task_finished`` tells how it ended), detail, source_ip.
        The core's audit log is the default plugin of this hook."""

    @hookspec
    def user_logged_in(self, user: dict[str, Any], source_ip: str) -> None:
        """``user`` (id, username, is_admin) logged in from ``source_ip``."""

    @hookspec
    def host_changed(self, host: dict[str, Any], change: str) -> None:
        """A host was ``created``, ``updated`` or ``deleted`` (``host``: name, type, addr)."""

    @hookspec
    def vm_created(self, vm: dict[str, Any]) -> None:
        """A VM finished creating (``vm``: host, vm_uuid, owner, spec, status)."""

    @hookspec
    def vm_deleted(self, vm: dict[str, Any]) -> None:
        """A VM was deleted from its host and from the database."""

    @hookspec
    def vm_powered(self, vm: dict[str, Any], action: str) -> None:
        """A power ``action`` (S_START, H_CLOSE...) succeeded on ``vm``."""

    @hookspec
    def task_finished(self, task: dict[str, Any]) -> None:
        """A long operation ended (``task``: id, kind, state success/failed, message)."""

    @hookspec
    def vm_traffic_over(self, vm: dict[str, Any], used_bytes: int, limit_bytes: int, action: str) -> None:
        """``vm`` passed its monthly traffic allowance (``flu_num``): ``used_bytes`` counted this
        period against ``limit_bytes``; ``action`` is what the core did (none / throttle / suspend,
        setting ``traffic_over_action``). Heard once per period."""
