"""``GET /api/client/detail``: every VM the caller may see on every host (the panel's customer home)."""

from __future__ import annotations

from collections.abc import Callable

from helpers import create_vm

from idcs_core.testing.server import ApiClient


def test_each_caller_sees_exactly_the_vms_it_may_act_on(admin: ApiClient, host: str,
                                                        user_factory: Callable[[], ApiClient]) -> None:
    alice, bob = user_factory(), user_factory()
    alice_id = alice.get("/api/users/current")["id"]
    bob_id = bob.get("/api/users/current")["id"]
    create_vm(admin, host, "mine-a1", owner_id=alice_id)
    create_vm(admin, host, "mine-a2", owner_id=alice_id)
    create_vm(admin, host, "mine-b1", owner_id=bob_id)

    def names(client: ApiClient) -> set[str]:
        return {(v["server_name"], v["vm_uuid"]) for v in client.get("/api/client/detail")}

    assert names(alice) == {(host, "mine-a1"), (host, "mine-a2")}
    assert names(bob) == {(host, "mine-b1")}
    assert {(host, "mine-a1"), (host, "mine-a2"), (host, "mine-b1")} <= names(admin)
    # a one-VM token (billing temp login) sees its VM alone
    temp = admin.get(f"/api/client/temptoken/{host}/mine-a2")["temp_token"]
    assert names(admin.with_token(temp)) == {(host, "mine-a2")}
    status, body = admin.with_token(None).call("GET", "/api/client/detail")
    assert status == 401 and body["code"] in (401, 3001), body
    for vm in ("mine-a1", "mine-a2", "mine-b1"):
        admin.run_task("DELETE", f"/api/client/delete/{host}/{vm}")
