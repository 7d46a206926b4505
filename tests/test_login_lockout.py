"""Failed logins are counted atomically: parallel guesses never answer 500 and do lock the name."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx

from idcs_core.testing.server import ApiClient, LiveServer


def test_parallel_wrong_passwords_lock_without_errors(server: LiveServer, user_factory: object) -> None:
    user: ApiClient = user_factory()  # type: ignore[operator]
    name = user.get("/api/users/current")["username"]

    def guess(i: int) -> tuple[int, int]:
        r = httpx.post(f"{server.url}/login", json={"username": name, "password": f"wrong-{i}"}, timeout=60)
        return r.status_code, r.json()["code"]

    with ThreadPoolExecutor(40) as pool:
        answers = list(pool.map(guess, range(40)))
    assert set(answers) <= {(401, 2003), (429, 2004)}, answers
    status, body = server.client().call("POST", "/login", {"username": name, "password": "pw-" + name})
    assert (status, body["code"]) == (429, 2004), body  # locked, even for the right password


def test_parallel_guesses_for_an_unknown_name_lock_it_too(server: LiveServer) -> None:
    def guess(i: int) -> tuple[int, int]:
        r = httpx.post(f"{server.url}/login", json={"username": "nobody-here", "password": f"x{i}"}, timeout=60)
        return r.status_code, r.json()["code"]

    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(guess, range(20)))
    assert set(answers) <= {(404, 2002), (429, 2004)}, answers
    assert guess(99) == (429, 2004)


def test_a_success_clears_earlier_failures(server: LiveServer, user_factory: object) -> None:
    user: ApiClient = user_factory()  # type: ignore[operator]
    name = user.get("/api/users/current")["username"]
    c = server.client()
    for _round in range(3):  # 3 x (4 failures + 1 success): never 5 failures in a row, never locked
        for _ in range(4):
            assert c.call("POST", "/login", {"username": name, "password": "wrong"})[1]["code"] == 2003
        c.login(name, "pw-" + name)
