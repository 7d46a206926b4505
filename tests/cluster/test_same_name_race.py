"""Two nodes asked to create a VM of the same name at the same instant: one wins, the other answers
4002 (HTTP 409), and exactly one container of that name exists on Docker."""

from __future__ import annotations

import secrets
import threading
from typing import Any

from clusterlab import World

from idcs_core.testing.server import ApiClient

ROUNDS = 6


def _create_together(clients: list[ApiClient], path: str, body: dict[str, Any]) -> list[tuple[int, dict[str, Any]]]:
    """Each client sends the same create at the same instant (a barrier releases the threads)."""
    barrier = threading.Barrier(len(clients))
    answers: list[tuple[int, dict[str, Any]] | BaseException] = [RuntimeError("no answer")] * len(clients)

    def send(i: int) -> None:
        try:
            barrier.wait(timeout=30)
            answers[i] = clients[i].call("POST", path, body)
        except BaseException as exc:  # reported below, in the test's thread
            answers[i] = exc

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(clients))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    for answer in answers:
        if isinstance(answer, BaseException):
            raise answer
    return answers  # type: ignore[return-value]  # every BaseException was raised just above


def test_same_name_on_two_nodes_at_once_makes_one_vm(world: World) -> None:
    token = world.admin.token
    nodes = [world.cluster.client(token, node=0), world.cluster.client(token, node=1)]
    prefix = f"race{secrets.token_hex(3)}-"
    try:
        for round_ in range(ROUNDS):
            vm = f"{prefix}{round_}"
            answers = _create_together(nodes, f"/api/client/create/{world.hs}", world.vm_body(vm))
            codes = sorted(body.get("code") for _, body in answers)
            assert codes == [200, 4002], f"round {round_}: {answers}"
            (won,) = [body for _, body in answers if body["code"] == 200]
            (lost,) = [(status, body) for status, body in answers if body["code"] == 4002]
            assert lost[0] == 409 and "already exists" in lost[1]["msg"], lost
            task = world.admin.wait_task(won["data"]["task_id"])
            assert task["state"] == "success", task
            assert world.containers(prefix) >= {vm}
            assert world.admin.get(f"/api/client/detail/{world.hs}/{vm}")["vm_uuid"] == vm
        assert world.containers(prefix) == {f"{prefix}{r}" for r in range(ROUNDS)}
    finally:
        for r in range(ROUNDS):
            world.admin.call("DELETE", f"/api/client/delete/{world.hs}/{prefix}{r}", params={"wait": 60})
        for c in nodes:
            c.close()
