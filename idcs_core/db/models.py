"""SQLAlchemy 2 models: the core's records of users, hosts, VMs and what hangs off them.

The database is the source of truth for what OpenIDCS manages (owners, specs,
NAT rules, quotas); the engines are the source of truth for live state
(power, usage). Schema changes go through Alembic (``db/migrations``).
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    func,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


# SQLite: ids are never reused after a delete (a token, task or link naming a deleted row
# must not reach a new row that got its id). PostgreSQL sequences never reuse ids anyway.
AUTOINCREMENT = {"sqlite_autoincrement": True}


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {dict[str, Any]: JSON}


class User(Base):
    __tablename__ = "users"

    __table_args__ = (AUTOINCREMENT,)

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    email: Mapped[str] = mapped_column(String(254), default="")
    password_hash: Mapped[str] = mapped_column(String(255))
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)

    quota: Mapped[Quota] = relationship(back_populates="user", cascade="all, delete-orphan",
                                        uselist=False, lazy="selectin")


# user names are unique without regard to case ("Admin" beside "admin" is refused)
Index("uq_users_username_lower", func.lower(User.username), unique=True)


class Quota(Base):
    """Limits of one user and what they use now (``used_*`` kept in step by the services,
    recounted by ``POST /api/system/recalculate-quotas``). A limit of -1 means unlimited."""

    __tablename__ = "quotas"

    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    max_vms: Mapped[int] = mapped_column(Integer, default=-1)
    max_cpu: Mapped[int] = mapped_column(Integer, default=-1)
    max_ram: Mapped[int] = mapped_column(Integer, default=-1)
    max_hdd: Mapped[int] = mapped_column(Integer, default=-1)
    max_nat: Mapped[int] = mapped_column(Integer, default=-1)
    max_ips: Mapped[int] = mapped_column(Integer, default=-1)
    max_backups: Mapped[int] = mapped_column(Integer, default=-1)
    used_vms: Mapped[int] = mapped_column(Integer, default=0)
    used_cpu: Mapped[int] = mapped_column(Integer, default=0)
    used_ram: Mapped[int] = mapped_column(Integer, default=0)
    used_hdd: Mapped[int] = mapped_column(Integer, default=0)
    used_nat: Mapped[int] = mapped_column(Integer, default=0)
    used_ips: Mapped[int] = mapped_column(Integer, default=0)
    used_backups: Mapped[int] = mapped_column(Integer, default=0)

    user: Mapped[User] = relationship(back_populates="quota")


class Session(Base):
    """One issued login token (its JWT ``jti``). Logout revokes it at once.

    ``vm_id`` set means a temporary token limited to that one VM (its ``user_id`` is the
    VM's owner, or none for a VM without owner). ``dialect`` is ``contract`` for tokens
    from ``/login`` and ``billing`` for tokens from the billing panel's ``/api/login``.
    ``kind``: ``login`` (a login session), ``temp`` (a temporary one-VM token, exchangeable
    once) or ``temp_session`` (the session a temp token was exchanged for)."""

    __tablename__ = "sessions"

    jti: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True,
                                                nullable=True)
    dialect: Mapped[str] = mapped_column(String(16), default="contract", server_default="contract")
    kind: Mapped[str] = mapped_column(String(16), default="login", server_default="login")
    vm_id: Mapped[int | None] = mapped_column(ForeignKey("vms.id", ondelete="CASCADE"), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime)
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)
    source_ip: Mapped[str] = mapped_column(String(64), default="")


class Host(Base):
    __tablename__ = "hosts"

    __table_args__ = (AUTOINCREMENT,)

    id: Mapped[int] = mapped_column(primary_key=True)
    server_name: Mapped[str] = mapped_column(String(64), unique=True)
    server_type: Mapped[str] = mapped_column(String(64))
    server_addr: Mapped[str] = mapped_column(String(512))
    server_user: Mapped[str] = mapped_column(String(128), default="")
    server_pass_enc: Mapped[str] = mapped_column(Text, default="")
    server_area: Mapped[str] = mapped_column(String(128), default="")
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    # The core's own per-host settings (ports_start, ports_close, public_addr, server_plan,
    # proxy_endpoint, token_any_port: idcs_core.services.host_options.CORE_SETTINGS).
    options: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # The engine's options, as declared by its engine_describe (secret ones sealed:
    # {"$secret": <fernet token>}); handed to the engine in HostSpec.options.
    engine_options: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict, server_default="{}")
    # Last status seen, shown when the host does not answer in time.
    last_status: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)

    vms: Mapped[list[VM]] = relationship(back_populates="host", cascade="all, delete-orphan")


class HostGrant(Base):
    """A host a (non-admin) user may create virtual machines on, granted by an administrator."""

    __tablename__ = "host_grants"

    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    host_id: Mapped[int] = mapped_column(ForeignKey("hosts.id", ondelete="CASCADE"), primary_key=True,
                                         index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class VM(Base):
    __tablename__ = "vms"
    __table_args__ = (UniqueConstraint("host_id", "vm_uuid"), AUTOINCREMENT)

    id: Mapped[int] = mapped_column(primary_key=True)
    host_id: Mapped[int] = mapped_column(ForeignKey("hosts.id", ondelete="CASCADE"), index=True)
    vm_uuid: Mapped[str] = mapped_column(String(64))
    # How the engine's back end addresses the VM (``VMInfo.ref``: vSphere instance UUID, libvirt
    # UUID...), handed back as ``ref`` on every VM hook; None: the back end uses ``vm_uuid``.
    # Internal to the core and engines: never shown in an answer.
    ref: Mapped[str | None] = mapped_column(String(255), nullable=True)
    vm_name: Mapped[str] = mapped_column(String(128), default="")
    owner_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"),
                                                 nullable=True, index=True)
    os_name: Mapped[str] = mapped_column(String(255), default="")
    cpu_num: Mapped[int] = mapped_column(Integer, default=1)
    ram_num: Mapped[int] = mapped_column(Integer, default=512)
    hdd_num: Mapped[int] = mapped_column(Integer, default=10)
    status: Mapped[str] = mapped_column(String(16), default="creating")
    power_state: Mapped[str] = mapped_column(String(32), default="")
    # Extras of the billing dialect (os_pass excluded: secrets are not kept here).
    config: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    traffic_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)

    host: Mapped[Host] = relationship(back_populates="vms", lazy="joined")


class IPAddr(Base):
    __tablename__ = "ip_addresses"
    __table_args__ = (UniqueConstraint("vm_id", "idx"), AUTOINCREMENT)

    id: Mapped[int] = mapped_column(primary_key=True)
    vm_id: Mapped[int] = mapped_column(ForeignKey("vms.id", ondelete="CASCADE"), index=True)
    idx: Mapped[int] = mapped_column(Integer)
    nic_type: Mapped[str] = mapped_column(String(16), default="nat")
    address: Mapped[str] = mapped_column(String(64), default="")
    ip6_addr: Mapped[str] = mapped_column(String(64), default="")
    mac_addr: Mapped[str] = mapped_column(String(32), default="")
    tips: Mapped[str] = mapped_column(String(255), default="")
    extra: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class NatRuleRow(Base):
    __tablename__ = "nat_rules"
    __table_args__ = (UniqueConstraint("host_id", "protocol", "host_port"), UniqueConstraint("vm_id", "idx"),
                      AUTOINCREMENT)

    id: Mapped[int] = mapped_column(primary_key=True)
    vm_id: Mapped[int] = mapped_column(ForeignKey("vms.id", ondelete="CASCADE"), index=True)
    host_id: Mapped[int] = mapped_column(ForeignKey("hosts.id", ondelete="CASCADE"))
    idx: Mapped[int] = mapped_column(Integer)
    host_port: Mapped[int] = mapped_column(Integer)
    vm_port: Mapped[int] = mapped_column(Integer)
    protocol: Mapped[str] = mapped_column(String(8), default="tcp")
    lan_addr: Mapped[str] = mapped_column(String(64), default="")
    tips: Mapped[str] = mapped_column(String(255), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class ProxyRow(Base):
    __tablename__ = "proxies"
    __table_args__ = (UniqueConstraint("domain"), UniqueConstraint("vm_id", "idx"), AUTOINCREMENT)

    id: Mapped[int] = mapped_column(primary_key=True)
    vm_id: Mapped[int] = mapped_column(ForeignKey("vms.id", ondelete="CASCADE"), index=True)
    idx: Mapped[int] = mapped_column(Integer)
    domain: Mapped[str] = mapped_column(String(253))
    lan_port: Mapped[int] = mapped_column(Integer)
    lan_addr: Mapped[str] = mapped_column(String(64), default="")
    wan_addr: Mapped[str] = mapped_column(String(64), default="")
    is_https: Mapped[bool] = mapped_column(Boolean, default=False)
    tips: Mapped[str] = mapped_column(String(255), default="")
    # host:port the core's reverse proxy (Caddy) dials, as resolved when the rule was added
    # ("" for engines with their own proxy_add).
    upstream: Mapped[str] = mapped_column(String(300), default="", server_default="")


class Disk(Base):
    __tablename__ = "disks"
    __table_args__ = (UniqueConstraint("vm_id", "name"), AUTOINCREMENT)

    id: Mapped[int] = mapped_column(primary_key=True)
    vm_id: Mapped[int] = mapped_column(ForeignKey("vms.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    size_gb: Mapped[int] = mapped_column(Integer)
    mounted: Mapped[bool] = mapped_column(Boolean, default=True)


class IsoMount(Base):
    __tablename__ = "iso_mounts"
    __table_args__ = (UniqueConstraint("vm_id", "iso_name"), AUTOINCREMENT)

    id: Mapped[int] = mapped_column(primary_key=True)
    vm_id: Mapped[int] = mapped_column(ForeignKey("vms.id", ondelete="CASCADE"), index=True)
    iso_name: Mapped[str] = mapped_column(String(255))


class Backup(Base):
    __tablename__ = "backups"
    __table_args__ = (UniqueConstraint("host_id", "vm_uuid", "backup_name"), AUTOINCREMENT)

    id: Mapped[int] = mapped_column(primary_key=True)
    host_id: Mapped[int] = mapped_column(ForeignKey("hosts.id", ondelete="CASCADE"), index=True)
    vm_uuid: Mapped[str] = mapped_column(String(64))
    backup_name: Mapped[str] = mapped_column(String(128))
    description: Mapped[str] = mapped_column(String(255), default="")
    size_bytes: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    status: Mapped[str] = mapped_column(String(16), default="creating")
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    schedule_id: Mapped[int | None] = mapped_column(Integer, nullable=True)  # made by this backup schedule


class Setting(Base):
    __tablename__ = "settings"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[Any] = mapped_column(JSON)


class Task(Base):
    """A long operation: written before the engine is called, updated as it runs."""

    __tablename__ = "tasks"
    __table_args__ = (Index("ix_tasks_state", "state"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    host_name: Mapped[str] = mapped_column(String(64), default="")
    vm_uuid: Mapped[str] = mapped_column(String(64), default="")
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), nullable=True)
    state: Mapped[str] = mapped_column(String(16), default="pending")
    progress: Mapped[int] = mapped_column(Integer, default=0)
    message: Mapped[str] = mapped_column(Text, default="")
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    result: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # Event hooks to call once the task has ended ({event: kwargs}), written with its outcome
    # and cleared (SQL NULL) once delivered: see ``idcs_core.tasks``.
    outbox: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)


class AuditLog(Base):
    """Who did what, when, and how it ended: ``/api/system/logger/detail``."""

    __tablename__ = "audit_log"

    __table_args__ = (AUTOINCREMENT,)

    id: Mapped[int] = mapped_column(primary_key=True)
    ts: Mapped[datetime] = mapped_column(DateTime, default=utcnow, index=True)
    level: Mapped[str] = mapped_column(String(8), default="INFO")
    username: Mapped[str] = mapped_column(String(64), default="")
    action: Mapped[str] = mapped_column(String(64))
    target: Mapped[str] = mapped_column(String(255), default="")
    result: Mapped[str] = mapped_column(String(16), default="success")
    detail: Mapped[str] = mapped_column(Text, default="")
    source_ip: Mapped[str] = mapped_column(String(64), default="")


class UsageSample(Base):
    """A VM's usage at one moment, kept for the status history of the billing dialect."""

    __tablename__ = "usage_samples"
    __table_args__ = (Index("ix_usage_vm_ts", "vm_id", "ts"), AUTOINCREMENT)

    id: Mapped[int] = mapped_column(primary_key=True)
    vm_id: Mapped[int] = mapped_column(ForeignKey("vms.id", ondelete="CASCADE"))
    ts: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    cpu_usage: Mapped[float | None] = mapped_column(Float, nullable=True)
    memory_usage: Mapped[float | None] = mapped_column(Float, nullable=True)
    status: Mapped[str] = mapped_column(String(16), default="")


class ApiToken(Base):
    """A named API token for a billing module: its secret is shown once and only its
    SHA-256 is kept. ``profile`` is the module's dialect (``idcs_core.profiles``);
    ``scopes`` limit what it may call (empty: everything an administrator may)."""

    __tablename__ = "api_tokens"
    __table_args__ = (AUTOINCREMENT,)

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    profile: Mapped[str] = mapped_column(String(16))
    scopes: Mapped[list[str]] = mapped_column(JSON, default=list)
    secret_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)


class HostSample(Base):
    """A host's usage at one moment: the status history behind the panel's host charts."""

    __tablename__ = "host_samples"
    __table_args__ = (Index("ix_host_samples_host_ts", "host_id", "ts"), AUTOINCREMENT)

    id: Mapped[int] = mapped_column(primary_key=True)
    host_id: Mapped[int] = mapped_column(ForeignKey("hosts.id", ondelete="CASCADE"))
    ts: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    online: Mapped[bool] = mapped_column(Boolean, default=False)
    cpu_usage: Mapped[float | None] = mapped_column(Float, nullable=True)
    memory_usage: Mapped[float | None] = mapped_column(Float, nullable=True)
    disk_usage: Mapped[float | None] = mapped_column(Float, nullable=True)


# ---------------------------------------------------------------- operations (webhooks, schedules)


class Webhook(Base):
    """A URL that hears every event (or those in ``events``), signed with its own secret."""

    __tablename__ = "webhooks"
    __table_args__ = (AUTOINCREMENT,)

    id: Mapped[int] = mapped_column(primary_key=True)
    url: Mapped[str] = mapped_column(String(2000))
    description: Mapped[str] = mapped_column(String(255), default="")
    events: Mapped[list[str]] = mapped_column(JSON, default=list)  # empty: every event
    secret_enc: Mapped[str] = mapped_column(Text)  # encrypted with the installation's fernet key
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class WebhookDelivery(Base):
    """One event sent (or being retried) to one webhook: the delivery log."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (Index("ix_webhook_deliveries_webhook_id_id", "webhook_id", "id"),
                      Index("ix_webhook_deliveries_state", "state"), AUTOINCREMENT)

    id: Mapped[int] = mapped_column(primary_key=True)
    webhook_id: Mapped[int] = mapped_column(ForeignKey("webhooks.id", ondelete="CASCADE"))
    event_id: Mapped[str] = mapped_column(String(36))
    event: Mapped[str] = mapped_column(String(64))
    body: Mapped[str] = mapped_column(Text)  # the exact JSON sent (never carries secrets)
    state: Mapped[str] = mapped_column(String(16), default="pending")  # pending / success / failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_status: Mapped[int | None] = mapped_column(Integer, nullable=True)
    last_error: Mapped[str] = mapped_column(String(500), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    next_try_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)


class BackupSchedule(Base):
    """A backup schedule: a cron expression and how many backups to keep, of one VM (``vm_id``)
    or of every VM on a host (``host_id``; the retention then counts per VM)."""

    __tablename__ = "backup_schedules"
    __table_args__ = (AUTOINCREMENT,)

    id: Mapped[int] = mapped_column(primary_key=True)
    vm_id: Mapped[int | None] = mapped_column(ForeignKey("vms.id", ondelete="CASCADE"), index=True, nullable=True)
    host_id: Mapped[int | None] = mapped_column(ForeignKey("hosts.id", ondelete="CASCADE"), index=True,
                                                nullable=True)
    cron: Mapped[str] = mapped_column(String(100))
    retention: Mapped[int] = mapped_column(Integer)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    next_run_at: Mapped[datetime] = mapped_column(DateTime)
    last_run_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    last_state: Mapped[str] = mapped_column(String(16), default="")
    last_error: Mapped[str] = mapped_column(String(500), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


# ---------------------------------------------------------------- traffic accounting


class VMTraffic(Base):
    """A VM's traffic accounting: the last counters its engine reported (``epoch``, ``rx_last``,
    ``tx_last``) and what the current period (from ``period_start``) has counted."""

    __tablename__ = "vm_traffic"

    vm_id: Mapped[int] = mapped_column(ForeignKey("vms.id", ondelete="CASCADE"), primary_key=True)
    epoch: Mapped[str] = mapped_column(String(128), default="")
    rx_last: Mapped[int] = mapped_column(BigInteger, default=0)
    tx_last: Mapped[int] = mapped_column(BigInteger, default=0)
    sampled_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    period_start: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    period_rx: Mapped[int] = mapped_column(BigInteger, default=0)
    period_tx: Mapped[int] = mapped_column(BigInteger, default=0)
    # what was done when the VM passed its flu_num this period ("" while under it): none/throttle/suspend
    over_action: Mapped[str] = mapped_column(String(16), default="")


class TrafficDay(Base):
    """Bytes a VM received (``rx``) and sent (``tx``) on one UTC day: the traffic charts."""

    __tablename__ = "traffic_daily"

    vm_id: Mapped[int] = mapped_column(ForeignKey("vms.id", ondelete="CASCADE"), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    rx: Mapped[int] = mapped_column(BigInteger, default=0)
    tx: Mapped[int] = mapped_column(BigInteger, default=0)


class ClusterNode(Base):
    """A running ``idcs serve`` or ``idcs worker`` process: written at its start, its ``last_seen``
    renewed every few seconds, removed at a clean stop (``idcs_core.cluster.nodes``)."""

    __tablename__ = "cluster_nodes"

    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    hostname: Mapped[str] = mapped_column(String(255), default="")
    pid: Mapped[int] = mapped_column(Integer, default=0)
    # seconds since the epoch the process started (psutil): a reused pid is not taken for the old process
    pid_started: Mapped[float] = mapped_column(Float, default=0.0)
    role: Mapped[str] = mapped_column(String(16), default="api")  # api, worker, api+worker, cli
    worker_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)  # its procrastinate worker
    started_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    last_seen: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


# ---------------------------------------------------------------- several nodes on one database


class LoginCounter(Base):
    """A failed-login counter of ``services.throttle`` shared by every node (PostgreSQL).

    ``key``: scope and reference (``address:<ip>``, ``account:<hash>``, ``pair:<hash>``); times
    are epoch seconds."""

    __tablename__ = "login_counters"

    key: Mapped[str] = mapped_column(String(96), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    window_start: Mapped[float] = mapped_column(Float)
    locked_until: Mapped[float] = mapped_column(Float, default=0.0)


class ConsoleTicket(Base):
    """An outstanding one-time console/terminal ticket (``services.console_tickets``), so any
    node can redeem what another issued. ``digest``: SHA-256 of the ticket; ``grant``: its
    binding; ``expires``: epoch seconds."""

    __tablename__ = "console_tickets"

    digest: Mapped[str] = mapped_column(String(64), primary_key=True)
    grant: Mapped[Any] = mapped_column(JSON, nullable=False)
    expires: Mapped[float] = mapped_column(Float, index=True)
