"""API keys enforced at the entry node, with real node processes and the official openai SDK:
401/403/429 with the SDK's exception classes and OpenAI's codes; a revocation seen by a second
entry node on the same PostgreSQL within 1 s; a --tpm limit holding across two entry nodes
under concurrent streamed load (overshoot bounded as docs/frontend.md states)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import openai
import pytest
from conftest import Cluster, Node, http_json, wait_for

from opentela.store import open_store
from opentela.store.usage import UsageRow

MODEL = "swiss-ai/apertus"
CHAT = [{"role": "user", "content": "hi"}]


def client(node: Node, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{node.url}/v1", api_key=key, max_retries=0, timeout=20)


def pool(cluster: Cluster, db: str, heads: int = 1, *up_args: str) -> list[Node]:
    """``heads`` entry nodes with --auth required on store ``db`` and one worker."""
    _, port = cluster.upstream("up", MODEL, "127.0.0.1", 0, *up_args)
    first = cluster.node("head0", "127.0.0.2", "--auth", "required", "--db", db)
    nodes = [first]
    for i in range(1, heads):
        nodes.append(
            cluster.node(
                f"head{i}", f"127.0.0.{2 + i}", "--auth", "required", "--db", db,
                "--bootstrap", first.maddr,
            )
        )  # fmt: skip
    cluster.node("w", "127.0.0.9", "--bootstrap", first.maddr, "--service.port", str(port))
    for n in nodes:
        wait_for(lambda n=n: n.models() == [MODEL], 20, what=f"{MODEL} routable via {n.url}")
    return nodes


def sqlite_db(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'keys.db'}"


def test_codes_and_exception_classes(cluster: Cluster, tmp_path: Path) -> None:
    db = sqlite_db(tmp_path)
    with open_store(db) as store:
        plain, _ = store.create_key("alice@example.org")
        scoped, _ = store.create_key("bob@example.org", models=["meta/*"])
        slow, _ = store.create_key("carol@example.org", rpm=2)
        broke, info = store.create_key("dave@example.org", budget_tokens=10, budget_period="day")
        now = time.time()
        store.add_usage(
            [UsageRow(time.strftime("%Y-%m-%d", time.gmtime(now)), int(now // 60), info.id,
                      info.owner, MODEL, 1, 5, 5)]
        )  # fmt: skip
        revoked, _ = store.create_key("eve@example.org")
        store.revoke_key(revoked)
    (head,) = pool(cluster, db)

    ok = client(head, plain).chat.completions.create(model=MODEL, messages=CHAT)
    assert ok.choices[0].message.content
    for key in ("", "sk-otela-" + "x" * 32, revoked):
        with pytest.raises(openai.AuthenticationError) as e:
            client(head, key or "none").chat.completions.create(model=MODEL, messages=CHAT)
        assert e.value.code == "invalid_api_key"
    with pytest.raises(openai.PermissionDeniedError) as e:
        client(head, scoped).chat.completions.create(model=MODEL, messages=CHAT)
    assert e.value.code == "model_not_allowed"
    for _ in range(2):
        client(head, slow).chat.completions.create(model=MODEL, messages=CHAT)
    with pytest.raises(openai.RateLimitError) as e:
        client(head, slow).chat.completions.create(model=MODEL, messages=CHAT)
    assert e.value.code == "rate_limit_exceeded"
    h = e.value.response.headers
    assert int(h["retry-after"]) >= 1
    assert h["x-ratelimit-limit-requests"] == "2" and h["x-ratelimit-remaining-requests"] == "0"
    with pytest.raises(openai.RateLimitError) as e:
        client(head, broke).chat.completions.create(model=MODEL, messages=CHAT)
    assert e.value.code == "insufficient_quota"
    # Open routes stay open; the rest needs a key.
    assert http_json(f"{head.url}/v1/health")[0] == 200
    assert http_json(f"{head.url}/v1/models")[0] == 200
    assert http_json(f"{head.url}/v1/dnt/table")[0] == 401


@pytest.mark.real_component
def test_revocation_seen_by_a_second_entry_node_within_1s(cluster: Cluster, pg_url: str) -> None:
    with open_store(pg_url) as store:
        key, info = store.create_key("alice@example.org")
    a, b = pool(cluster, pg_url, heads=2)
    for n in (a, b):
        client(n, key).chat.completions.create(model=MODEL, messages=CHAT)
    with open_store(pg_url) as store:
        store.revoke_key(info.id)
        revoked_at = time.monotonic()

    def refused() -> bool:
        try:
            client(b, key).chat.completions.create(model=MODEL, messages=CHAT)
        except openai.AuthenticationError:
            return True
        return False

    wait_for(refused, 5, interval_s=0.02, what="revoked key refused by the second entry node")
    assert time.monotonic() - revoked_at <= 1.0
    with pytest.raises(openai.AuthenticationError):
        client(a, key).chat.completions.create(model=MODEL, messages=CHAT)


TPM = 600
COMPLETION = 20
WORKERS = 8


@pytest.mark.real_component
def test_tpm_holds_across_two_entry_nodes_under_streamed_load(
    cluster: Cluster, pg_url: str
) -> None:
    with open_store(pg_url) as store:
        key, _ = store.create_key("alice@example.org", tpm=TPM)
    heads = pool(cluster, pg_url, 2, "--tokens", str(COMPLETION), "--token-delay-ms", "5")
    served, refused, failed, lock = [0], [0], [0], threading.Lock()
    stop_at = time.monotonic() + 6

    def load(i: int) -> None:
        c = client(heads[i % 2], key)
        while time.monotonic() < stop_at:
            try:
                stream = c.chat.completions.create(
                    model=MODEL, messages=CHAT, stream=True,
                    stream_options={"include_usage": True},
                )  # fmt: skip
                total = 0
                for chunk in stream:
                    if chunk.usage is not None:
                        total = chunk.usage.total_tokens
                with lock:
                    served[0] += total
            except openai.RateLimitError as exc:
                assert exc.code == "rate_limit_exceeded"
                with lock:
                    refused[0] += 1
                time.sleep(0.05)  # a client backing off; not synchronisation
            except openai.InternalServerError:
                # Seen once in CI in the first second after the worker joined: the one
                # connection to it was replaced under the first requests (503, one replica,
                # nothing to retry on). Counted and bounded below, not what this test is about.
                with lock:
                    failed[0] += 1
                time.sleep(0.05)

    threads = [threading.Thread(target=load, args=(i,)) for i in range(WORKERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert failed[0] <= 2 * WORKERS, f"{failed[0]} requests failed"
    assert refused[0] > 0, "the limit never fired"
    # docs/frontend.md: each entry node stops at the limit from what it sees (the database's
    # window plus its own unflushed and running requests); it sees the other node's tokens
    # only after that node's flush (<= 1 s) and its own cache (<= 0.5 s). At this load each
    # node alone can fill the limit in that time, so the bound is: the limit, plus what the
    # other node admitted meanwhile (at most the limit), plus one request per client in flight.
    per_request = COMPLETION + 10  # the fake upstream counts a few prompt tokens
    bound = TPM + (len(heads) - 1) * TPM + WORKERS * per_request
    assert served[0] <= bound, f"served {served[0]} tokens in 6 s; tpm {TPM}, bound {bound}"
    assert served[0] >= TPM // 2, f"served only {served[0]}: the limit fired too early"
