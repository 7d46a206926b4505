"""Client profiles: which billing module an API token speaks for.

A profile decides, where the published billing modules disagree with each other,
how a call made with that token is read and answered: the unit of ``hdd_num`` and
``flu_num`` on the way in and out, the shapes of some answers (see
``idcs_core.api.dialects``) and how long a call waits for its task before it answers
(always below the module's own HTTP time-out, so the module never gives up first).

``openidcs`` is the behaviour of the global API token before profiles existed
(GB, plain numbers, 300 s wait); it is the default.
"""

from __future__ import annotations

from dataclasses import dataclass

MB_PER_GB = 1024


@dataclass(frozen=True)
class Profile:
    name: str
    # what a call waits for its task before answering (a create still running answers "creating")
    wait_seconds: float
    # the module sends and reads hdd_num in MB (else GB, the contract's unit)
    hdd_in_mb: bool
    # the module sends and reads flu_num (monthly traffic) in MB (else GB)
    flu_in_mb: bool
    description: str


PROFILES: dict[str, Profile] = {p.name: p for p in (
    Profile("openidcs", 300.0, False, False,
            "the current OpenIDCS server's dialect: hdd_num and flu_num in GB, calls wait up to 300 s"),
    Profile("idcsmart", 25.0, True, True,
            "ZJMF / IDCSmart module idcserver.php (30 s time-out): hdd_num and flu_num in MB, status as a list "
            "of samples, detail with hostname/ipv4/config.cpus..., NAT rules with external_port/internal_port"),
    Profile("swapidc", 50.0, True, False,
            "SwapIDC module openidc.php (60 s time-out): hdd_num in MB, flu_num in GB"),
    Profile("xiaoheifs", 12.0, True, True,
            "xiaoheiFS plugin automation_openidc (15 s time-out at the least): hdd_num and flu_num in MB, "
            "public_addr as a list, plans keyed by name, images_maps/system_maps, the VM in data.config"),
)}
DEFAULT_PROFILE = "openidcs"


def get_profile(name: str | None) -> Profile | None:
    """The profile called ``name``; None for callers without one (logins, one-VM tokens)."""
    return PROFILES.get(name) if name else None


def mb_to_gb(value: int) -> int:
    """MB to whole GB, rounded up: a module asking for 500 MB of disk gets 1 GB, not 0."""
    return -(-value // MB_PER_GB)
