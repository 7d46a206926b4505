"""Traffic accounting and bandwidth caps.

``TrafficSampler`` (one loop per serving core) asks every host whose engine has ``vm_traffic``
for its VMs' byte counters every ``traffic_sample_seconds``, in one call per host, and adds what
each VM moved since the last sample to its period (``vm_traffic``) and its day (``traffic_daily``):

- the last counters and their ``epoch`` are stored: the next sample adds the difference, so the
  same bytes are never added twice, also across restarts of the server;
- a new ``epoch`` (the VM restarted: its counters began again from zero), or a counter that went
  down, adds the new counters whole; a difference is never negative;
- the first sample of a VM adds its counters whole (they count from when its network started).

A period is a calendar month (UTC), or runs from ``POST /api/traffic/reset``. What counts against
``flu_num`` (GiB per period) is setting ``traffic_count`` (both / out / in); ``vms.traffic_bytes``
mirrors it. A VM that passes its ``flu_num`` is handled once per period as setting
``traffic_over_action`` says (none / throttle / suspend), with the ``vm_traffic_over`` event; a new
period (month or reset) lifts a throttle and resumes a VM this suspended.

Caps: ``speed_u`` / ``speed_d`` of a VM's ``config`` (Mbit/s) go to the engine's ``vm_bandwidth``
after a create or update, when the counters' epoch changes (a restarted container may have a new
host-side interface) and when a throttle starts or ends.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from idcs_core import errors
from idcs_core.db.models import VM, Host, TrafficDay, VMTraffic, utcnow
from idcs_core.engines import VMTarget
from idcs_core.types import PowerAction, TrafficCounters, VMInfo, VMStatus

if TYPE_CHECKING:
    from idcs_core.context import CoreContext

log = logging.getLogger("idcs.traffic")

GIB = 1024**3
SKIPPED_STATES = (VMStatus.CREATING, VMStatus.DELETING)
DAYS_SHOWN = 31
MONTHS_SHOWN = 12
RECHECK_SECONDS = 2.0


def month_start(moment: datetime) -> datetime:
    return moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def counted(rx: int, tx: int, mode: str) -> int:
    """Bytes that count against ``flu_num``: both directions, only ``out`` (tx) or only ``in`` (rx)."""
    return tx if mode == "out" else rx if mode == "in" else rx + tx


def delta(row: VMTraffic | None, now: TrafficCounters) -> tuple[int, int, bool]:
    """(rx, tx) moved since ``row``'s sample, and whether the counters started again (or are new)."""
    if row is None or row.sampled_at is None:
        return max(0, now.rx_bytes), max(0, now.tx_bytes), True
    if now.epoch != row.epoch or now.rx_bytes < row.rx_last or now.tx_bytes < row.tx_last:
        return max(0, now.rx_bytes), max(0, now.tx_bytes), True
    return now.rx_bytes - row.rx_last, now.tx_bytes - row.tx_last, False


def limit_bytes(config: dict[str, Any] | None) -> int | None:
    """``flu_num`` (GiB per period) in bytes; None when the VM has no allowance."""
    value = (config or {}).get("flu_num")
    try:
        gib = float(value) if value is not None else 0.0
    except (TypeError, ValueError):
        return None
    return int(gib * GIB) if gib > 0 else None


def caps_of(config: dict[str, Any] | None) -> tuple[int, int]:
    """(up, down) Mbit/s from ``speed_u`` / ``speed_d``; 0 = no cap."""
    def mbit(key: str) -> int:
        try:
            return max(0, int((config or {}).get(key) or 0))
        except (TypeError, ValueError):
            return 0

    return mbit("speed_u"), mbit("speed_d")


@dataclass
class _Follow:
    """What a sample asks to do on the back end, after its transaction."""

    vm_id: int
    vm_uuid: str
    caps: bool = False  # apply the caps again (new epoch)
    over: tuple[int, int, str] | None = None  # (used, limit, action): passed flu_num now
    lift: str = ""  # a new period lifts this over_action


# ------------------------------------------------------------------ reading


async def usage_of(core: CoreContext, vm_id: int, config: dict[str, Any] | None,
                   days: int = DAYS_SHOWN) -> dict[str, Any]:
    """The VM's ``traffic_used``: this period, the last ``days`` days and the last 12 months."""
    mode = str(core.settings.get("traffic_count"))
    today = utcnow().date()
    since = min(today - timedelta(days=days - 1), today.replace(day=1) - timedelta(days=366))
    async with core.db.session() as s:
        row = await s.get(VMTraffic, vm_id)
        rows = list((await s.execute(select(TrafficDay).where(TrafficDay.vm_id == vm_id, TrafficDay.day >= since)
                                     .order_by(TrafficDay.day))).scalars())
    months: dict[str, list[int]] = {}
    for d in rows:
        months.setdefault(d.day.strftime("%Y-%m"), [0, 0])
        months[d.day.strftime("%Y-%m")][0] += d.rx
        months[d.day.strftime("%Y-%m")][1] += d.tx
    first_day = today - timedelta(days=days - 1)
    rx, tx = (row.period_rx, row.period_tx) if row is not None else (0, 0)
    return {
        "period_start": row.period_start if row is not None else month_start(utcnow()),
        "rx_bytes": rx, "tx_bytes": tx, "used_bytes": counted(rx, tx, mode), "count": mode,
        "limit_bytes": limit_bytes(config), "over_action": row.over_action if row is not None else "",
        "sampled_at": row.sampled_at if row is not None else None,
        "days": [{"day": d.day.isoformat(), "rx_bytes": d.rx, "tx_bytes": d.tx, "total_bytes": d.rx + d.tx}
                 for d in rows if d.day >= first_day],
        "months": [{"month": m, "rx_bytes": v[0], "tx_bytes": v[1], "total_bytes": v[0] + v[1]}
                   for m, v in sorted(months.items())[-MONTHS_SHOWN:]],
    }


# ------------------------------------------------------------------ caps


async def apply_caps(core: CoreContext, vm_id: int) -> bool:
    """Give the VM the caps it should have now (its ``speed_u`` / ``speed_d``, or the throttle);
    False when its engine has no ``vm_bandwidth`` (or nothing needs saying). Errors are logged."""
    async with core.db.session() as s:
        vm = await s.get(VM, vm_id)
        if vm is None or vm.host is None:
            return False
        row = await s.get(VMTraffic, vm_id)
        host, vm_uuid, config = vm.host, vm.vm_uuid, dict(vm.config or {})
        target = VMTarget(host, vm.vm_uuid, vm.ref)
    up, down = caps_of(config)
    if row is not None and row.over_action == "throttle":
        limit = int(core.settings.get("traffic_throttle_mbit"))
        up, down = min(up, limit) if up else limit, min(down, limit) if down else limit
    if not core.supports(host, "vm_bandwidth"):
        if up or down:
            log.warning("%s on %s: speed caps set, but the %s engine cannot apply them", vm_uuid,
                        host.server_name, host.server_type)
        return False
    retry = core.ops.traffic.retry_caps if core.ops is not None else set()
    try:
        await core.engines.vm_bandwidth(target, up, down)
    except errors.IDCSError as exc:
        log.warning("caps %s/%s Mbit/s of %s on %s not applied (tried again at the next sample): %s", up, down,
                    vm_uuid, host.server_name, exc.msg)
        if not isinstance(exc, errors.NotSupported):
            retry.add(vm_id)
        return False
    retry.discard(vm_id)
    return True


# ------------------------------------------------------------------ periods


async def reset_period(core: CoreContext, vm_id: int) -> None:
    """Start a new period for the VM now (``POST /api/traffic/reset``): counted bytes back to 0, a
    throttle or suspension for passing ``flu_num`` lifted."""
    async with core.db.session() as s:
        vm = await s.get(VM, vm_id)
        if vm is None:
            return
        row = await s.get(VMTraffic, vm_id)
        if row is None:
            row = VMTraffic(vm_id=vm_id, epoch="", rx_last=0, tx_last=0, period_rx=0, period_tx=0, over_action="")
            s.add(row)
        lift = row.over_action
        row.period_start, row.period_rx, row.period_tx, row.over_action = utcnow(), 0, 0, ""
        vm.traffic_bytes = 0
        vm_uuid = vm.vm_uuid
    await _lift(core, vm_id, vm_uuid, lift)


async def _lift(core: CoreContext, vm_id: int, vm_uuid: str, action: str) -> None:
    if action == "throttle":
        await apply_caps(core, vm_id)
    elif action == "suspend":
        await _power(core, vm_id, PowerAction.RESUME, only_if=VMStatus.PAUSED)


async def _power(core: CoreContext, vm_id: int, action: PowerAction, only_if: str | None = None) -> None:
    from idcs_core.services.vms import apply_live

    async with core.db.session() as s:
        vm = await s.get(VM, vm_id)
        if vm is None or vm.host is None or (only_if is not None and vm.status != only_if):
            return
        target = VMTarget(vm.host, vm.vm_uuid, vm.ref)
        vm_uuid, owner_id, hs_name = vm.vm_uuid, vm.owner_id, vm.host.server_name
    if core.tasks.busy(hs_name, vm_uuid):
        log.warning("%s on %s is busy: %s for traffic not done", vm_uuid, hs_name, action.value)
        return
    try:
        info: VMInfo = await core.engines.vm_power(target, action)
    except errors.IDCSError as exc:
        log.warning("%s of %s on %s for traffic failed: %s", action.value, vm_uuid, hs_name, exc.msg)
        return
    await apply_live(core, vm_id, info)
    await core.plugins.emit("vm_powered", vm={"server_name": hs_name, "vm_uuid": vm_uuid, "owner_id": owner_id,
                                              "status": info.status}, action=action.value)


# ------------------------------------------------------------------ sampling


class TrafficSampler:
    """The loop that reads every host's VM counters each ``traffic_sample_seconds``."""

    def __init__(self, core: CoreContext) -> None:
        self.core = core
        self.wake = asyncio.Event()
        self.rounds = 0
        self.retry_caps: set[int] = set()  # VMs whose caps failed to apply: tried again at their next sample

    async def run(self) -> None:
        while True:
            started = time.monotonic()
            try:
                if self.core.leader.leads():  # once per cluster: the leading node samples
                    await self.sample_all()
            except Exception:  # the database away for a moment: next round
                log.exception("traffic sampling: a round failed")
            self.wake.clear()
            # the interval is read again every few seconds, so a changed setting takes effect soon
            while (left := started + float(self.core.settings.get("traffic_sample_seconds")) - time.monotonic()) > 0:
                try:
                    await asyncio.wait_for(self.wake.wait(), min(left, RECHECK_SECONDS))
                    break
                except TimeoutError:
                    pass

    async def sample_all(self) -> int:
        """One round over every host; return how many VMs had counters."""
        async with self.core.db.session() as s:
            hosts = [h.id for h in (await s.execute(select(Host).where(Host.enabled.is_(True)))).scalars()
                     if self.core.supports(h, "vm_traffic")]
        results = await asyncio.gather(*(self.sample_host(h) for h in hosts), return_exceptions=True)
        self.rounds += 1
        total = 0
        for host_id, result in zip(hosts, results, strict=True):
            if isinstance(result, BaseException):
                log.warning("traffic of host %s not read: %s", host_id, getattr(result, "msg", result))
            else:
                total += result
        return total

    async def sample_host(self, host_id: int) -> int:
        core = self.core
        async with core.db.session() as s:
            host = await s.get(Host, host_id)
            if host is None:
                return 0
            vms = {vm.vm_uuid: vm.id for vm in (await s.execute(select(VM).where(VM.host_id == host_id))).scalars()
                   if vm.status not in SKIPPED_STATES}
        if not vms:
            return 0
        sample: dict[str, TrafficCounters] = await core.engines.vm_traffic(host, sorted(vms))
        follow = await self._record(host_id, {vms[k]: v for k, v in (sample or {}).items() if k in vms})
        for item in follow:
            await self._act(item)
        return len(sample or {})

    async def _record(self, host_id: int, sample: dict[int, TrafficCounters]) -> list[_Follow]:
        mode, action = str(self.core.settings.get("traffic_count")), str(self.core.settings.get("traffic_over_action"))
        now = utcnow()
        today, period = now.date(), month_start(now)
        follow: list[_Follow] = []
        async with self.core.db.session() as s:
            for vm_id, counters in sample.items():
                vm = await s.get(VM, vm_id)
                if vm is None or vm.host_id != host_id:
                    continue
                # locked on PostgreSQL: two serving nodes sampling at once add each byte once
                row = await s.get(VMTraffic, vm_id, with_for_update=True)
                rx, tx, restarted = delta(row, counters)
                item = _Follow(vm_id, vm.vm_uuid, caps=restarted or vm_id in self.retry_caps)
                if row is None:
                    row = VMTraffic(vm_id=vm_id, period_start=period, period_rx=0, period_tx=0, over_action="")
                    s.add(row)
                if row.period_start < period:  # a new month: a new period
                    item.lift, row.over_action = row.over_action, ""
                    row.period_start, row.period_rx, row.period_tx = period, 0, 0
                row.epoch, row.rx_last, row.tx_last, row.sampled_at = counters.epoch, counters.rx_bytes, \
                    counters.tx_bytes, now
                row.period_rx += rx
                row.period_tx += tx
                await self._add_day(s, vm_id, today, rx, tx)
                used = counted(row.period_rx, row.period_tx, mode)
                vm.traffic_bytes = used
                limit = limit_bytes(vm.config)
                if limit is not None and used >= limit and not row.over_action:
                    row.over_action = action
                    item.over = (used, limit, action)
                if item.caps or item.over or item.lift:
                    follow.append(item)
        return follow

    @staticmethod
    async def _add_day(s: Any, vm_id: int, day: date, rx: int, tx: int) -> None:
        if not rx and not tx:
            return
        row = await s.get(TrafficDay, (vm_id, day))
        if row is None:
            s.add(TrafficDay(vm_id=vm_id, day=day, rx=rx, tx=tx))
        else:
            row.rx += rx
            row.tx += tx

    async def _act(self, item: _Follow) -> None:
        core = self.core
        if item.lift:
            await _lift(core, item.vm_id, item.vm_uuid, item.lift)
        if item.over is not None:
            used, limit, action = item.over
            if action == "throttle":
                await apply_caps(core, item.vm_id)
            elif action == "suspend":
                await _power(core, item.vm_id, PowerAction.PAUSE, only_if=VMStatus.RUNNING)
            async with core.db.session() as s:
                vm = await s.get(VM, item.vm_id)
                data = {"server_name": vm.host.server_name, "vm_uuid": vm.vm_uuid, "owner_id": vm.owner_id,
                        "status": vm.status} if vm is not None else {"vm_uuid": item.vm_uuid}
            log.warning("%s passed its traffic allowance (%d of %d bytes): %s", item.vm_uuid, used, limit, action)
            await core.plugins.emit("vm_traffic_over", vm=data, used_bytes=used, limit_bytes=limit, action=action)
        elif item.caps and not item.lift:
            async with core.db.session() as s:
                vm = await s.get(VM, item.vm_id)
                row = await s.get(VMTraffic, item.vm_id)
                wanted = vm is not None and (any(caps_of(vm.config)) or (row is not None
                                                                        and row.over_action == "throttle"))
            if wanted:
                await apply_caps(core, item.vm_id)
