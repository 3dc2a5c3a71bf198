#!/usr/bin/env python3
"""An independent dead-letter client: Python grpcio, stubs compiled from proto/ at run time.

Usage: test_dead_letters.py --server HOST:PORT

Drives floodgate.v1.DeadLetters over plain gRPC (no Rust involved) and checks the contract:
idempotent publish (duplicate answers the first id), a 1 MiB random payload byte for byte
and 1 MiB + 1 refused with INVALID_ARGUMENT, paging that walks every entry once in both
orders, claim / ack / nack and claims that expire, stats by reason, archive and restore,
purge, and errors naming the field. The server must configure queue `orders` (default
limits) and no [queues.default], as tests/tests/python_client.rs starts it. Prints
"N passed, M failed" last and exits non-zero on any failure.

Needs: python3 -m pip install -r tests/python/requirements.txt
"""
import os
import time
import uuid

from floodgate_stubs import compile_protos, run_suite  # noqa: E402 (this folder)

compile_protos()

import grpc  # noqa: E402
from google.protobuf import duration_pb2  # noqa: E402
from floodgate.v1 import dead_letters_pb2 as dl  # noqa: E402
from floodgate.v1 import dead_letters_pb2_grpc as dl_grpc  # noqa: E402

TIMEOUT = 10
MIB = 1 << 20
QUEUE = "orders"


def ns():
    """A namespace no other run uses."""
    return "pydlq-" + uuid.uuid4().hex[:12]


def expect_code(code, fn, *args, field=None):
    """Calls fn(*args) and asserts it fails with `code` (and names `field` first)."""
    try:
        fn(*args)
    except grpc.RpcError as e:
        assert e.code() == code, f"expected {code}, got {e.code()}: {e.details()}"
        if field is not None:
            assert e.details().startswith(field), f"{e.details()!r} does not name {field}"
        return e
    raise AssertionError(f"expected {code}, the call succeeded")


class Suite:
    def __init__(self, target):
        # A page may approach the server's 4 MiB budget: receive up to 8 MiB.
        options = [("grpc.max_receive_message_length", 8 * MIB),
                   ("grpc.max_send_message_length", 8 * MIB)]
        self.channel = grpc.insecure_channel(target, options=options)
        try:
            grpc.channel_ready_future(self.channel).result(timeout=TIMEOUT)
        except grpc.FutureTimeoutError:
            raise SystemExit(f"no gRPC server answers at {target} within {TIMEOUT} s")
        self.dl = dl_grpc.DeadLettersStub(self.channel)

    # ---- helpers ----
    def publish(self, namespace, payload=b"x", reason="r", key="", queue=QUEUE, **kw):
        req = dl.PublishRequest(namespace=namespace, queue=queue, payload=payload, reason=reason,
                                idempotency_key=key, **kw)
        return self.dl.Publish(req, timeout=TIMEOUT)

    def stats(self, namespace, queue=QUEUE):
        return self.dl.Stats(dl.StatsRequest(namespace=namespace, queue=queue), timeout=TIMEOUT)

    def get(self, namespace, id_, queue=QUEUE):
        return self.dl.Get(dl.GetDeadLetterRequest(namespace=namespace, queue=queue, id=id_),
                           timeout=TIMEOUT)

    def list_all(self, namespace, page_size=0, **kw):
        """Walks every page; returns (entries, pages)."""
        out, pages, cursor = [], 0, ""
        while True:
            r = self.dl.List(dl.ListDeadLettersRequest(namespace=namespace, queue=QUEUE,
                                                       page_size=page_size, cursor=cursor, **kw),
                             timeout=TIMEOUT)
            pages += 1
            out.extend(r.messages)
            if not r.next_cursor:
                return out, pages
            assert r.next_cursor != cursor or r.messages, "the cursor did not move"
            cursor = r.next_cursor
            assert pages < 10_000, "paging never ends"

    def claim(self, namespace, count, consumer="py", visibility=None):
        req = dl.ClaimRequest(namespace=namespace, queue=QUEUE, consumer=consumer, count=count)
        if visibility is not None:
            req.visibility_timeout.CopyFrom(duration_pb2.Duration(seconds=visibility))
        return self.dl.Claim(req, timeout=TIMEOUT)

    def ack(self, namespace, ids):
        return self.dl.Ack(dl.AckRequest(namespace=namespace, queue=QUEUE, ids=ids),
                           timeout=TIMEOUT).acked

    def nack(self, namespace, ids):
        return self.dl.Nack(dl.NackRequest(namespace=namespace, queue=QUEUE, ids=ids),
                            timeout=TIMEOUT).released

    # ---- tests ----
    def test_publish_and_duplicate(self):
        n = ns()
        first = self.publish(n, b"hello", reason="timeout", key="order-1", attempts=3,
                             error_class="Timeout", source="billing", trace_id="t-1",
                             metadata={"tenant": "acme"})
        assert first.id and not first.duplicate, first
        again = self.publish(n, b"other bytes", reason="other", key="order-1")
        assert again.duplicate and again.id == first.id, again
        other = self.publish(n, b"hello", reason="timeout", key="order-2")
        assert not other.duplicate and other.id != first.id
        unkeyed = [self.publish(n, b"same", key="") for _ in range(2)]
        assert unkeyed[0].id != unkeyed[1].id and not unkeyed[1].duplicate, "no key: no dedup"
        d = self.get(n, first.id)
        assert d.payload == b"hello" and d.reason == "timeout" and d.attempts == 3
        assert (d.error_class, d.source, d.trace_id) == ("Timeout", "billing", "t-1")
        assert dict(d.metadata) == {"tenant": "acme"} and d.idempotency_key == "order-1"
        assert d.payload_size == 5 and d.delivery_count == 0 and not d.archived
        assert d.published_at.seconds > 0
        assert d.first_failed_at.seconds > 0, "defaults to the publish time"
        s = self.stats(n)
        assert s.count == 4 and s.duplicates_total == 1 and s.published_total == 4, s

    def test_one_mib_payload_byte_for_byte(self):
        n = ns()
        payload = os.urandom(MIB)
        p = self.publish(n, payload, key="big")
        d = self.get(n, p.id)
        assert d.payload == payload, "Get changed the payload"
        assert d.payload_size == MIB
        entries, _ = self.list_all(n, include_payload=True)
        assert len(entries) == 1 and entries[0].payload == payload, "List changed the payload"
        claimed = self.claim(n, 1).messages
        assert len(claimed) == 1 and claimed[0].payload == payload, "Claim changed the payload"
        # Several 1 MiB entries with payloads: pages stay under the budget and end early.
        for i in range(5):
            self.publish(n, os.urandom(MIB), key=f"big-{i}")
        entries, pages = self.list_all(n, include_payload=True, page_size=100)
        assert len(entries) == 6 and pages >= 2, (len(entries), pages)
        assert all(e.payload_size == MIB and len(e.payload) == MIB for e in entries)

    def test_payload_over_one_mib_is_invalid(self):
        n = ns()
        e = expect_code(grpc.StatusCode.INVALID_ARGUMENT, self.publish, n, b"\0" * (MIB + 1),
                        field="payload")
        assert str(MIB) in e.details() or "1 MiB" in e.details() or "1048576" in e.details(), \
            e.details()
        assert self.stats(n).count == 0, "nothing was stored"

    def test_list_paging_both_orders(self):
        n = ns()
        ids = [self.publish(n, f"p{i}".encode(), reason="even" if i % 2 == 0 else "odd").id
               for i in range(23)]
        for size in (1, 4, 0):
            entries, pages = self.list_all(n, page_size=size)
            assert [e.id for e in entries] == ids, f"oldest first, pages of {size}"
            if size == 4:
                assert pages >= 6, pages
            entries, _ = self.list_all(n, page_size=size, newest_first=True)
            assert [e.id for e in entries] == ids[::-1], f"newest first, pages of {size}"
        entries, _ = self.list_all(n, page_size=3)
        assert all(e.payload == b"" and e.payload_size > 0 for e in entries), \
            "payloads only when asked for"
        odd, _ = self.list_all(n, page_size=2, filter=dl.DeadLetterFilter(reason="odd"))
        assert [e.id for e in odd] == ids[1::2]

    def test_claim_ack_nack(self):
        n = ns()
        ids = [self.publish(n, f"m{i}".encode()).id for i in range(3)]
        first = self.claim(n, 2, consumer="w1", visibility=60).messages
        assert [m.id for m in first] == ids[:2], first
        assert all(m.delivery_count == 1 and m.payload for m in first)
        assert self.stats(n).in_flight == 2
        assert self.ack(n, [ids[0]]) == 1
        assert self.ack(n, [ids[0]]) == 0, "acked twice"
        assert self.nack(n, [ids[1]]) == 1
        again = self.claim(n, 5, consumer="w2", visibility=60).messages
        by_id = {m.id: m.delivery_count for m in again}
        assert by_id == {ids[1]: 2, ids[2]: 1}, by_id
        assert self.claim(n, 5, consumer="w3").messages == [], "everything is claimed"
        assert self.ack(n, [ids[1], ids[2]]) == 2
        s = self.stats(n)
        assert s.count == 0 and s.in_flight == 0, s

    def test_claim_expires_after_its_visibility_timeout(self):
        n = ns()
        id_ = self.publish(n, b"slow").id
        assert [m.id for m in self.claim(n, 1, visibility=1).messages] == [id_]
        assert self.claim(n, 1).messages == [], "hidden while claimed"
        deadline = time.monotonic() + 5
        while True:
            back = self.claim(n, 1, visibility=60).messages
            if back:
                break
            assert time.monotonic() < deadline, "the expired claim never came back"
            time.sleep(0.1)
        assert back[0].id == id_ and back[0].delivery_count == 2, back[0]
        assert self.ack(n, [id_]) == 1

    def test_stats_by_reason(self):
        n = ns()
        reasons = ["timeout"] * 5 + ["declined"] * 3 + ["fraud"]
        for i, r in enumerate(reasons):
            self.publish(n, b"x", reason=r, key=f"k{i}")
        for i in range(3):
            assert self.publish(n, b"x", reason="timeout", key=f"k{i}").duplicate
        s = self.stats(n)
        assert s.count == 9 and dict(s.by_reason) == {"timeout": 5, "declined": 3, "fraud": 1}, s
        assert s.published_total == 9 and s.duplicates_total == 3, s
        assert s.published_last_hour == 9 and s.oldest_age.seconds < 60, s
        assert not s.over_threshold
        empty = self.stats(ns())
        assert empty.count == 0 and empty.oldest_age.seconds == 0 and not empty.by_reason

    def test_archive_and_restore(self):
        n = ns()
        ids = [self.publish(n, f"a{i}".encode(), reason="r").id for i in range(3)]
        r = self.dl.Archive(dl.ArchiveRequest(namespace=n, queue=QUEUE, ids=ids[:2]),
                            timeout=TIMEOUT)
        assert r.archived == 2
        s = self.stats(n)
        assert s.count == 1 and s.archived == 2, s
        archived, _ = self.list_all(n, archived=True)
        assert [a.original_id for a in archived] == ids[:2] and all(a.archived for a in archived)
        assert self.get(n, archived[0].id).payload == b"a0", "Get looks in the archive"
        assert self.claim(n, 5).messages[0].id == ids[2], "archived entries are not claimable"
        restored = self.dl.Restore(
            dl.RestoreRequest(namespace=n, queue=QUEUE, ids=[archived[1].id, "1-0"]),
            timeout=TIMEOUT).ids
        assert len(restored) == 2 and restored[0] and restored[0] not in ids and restored[1] == ""
        d = self.get(n, restored[0])
        assert d.payload == b"a1" and not d.archived
        s = self.stats(n)
        assert s.count == 2 and s.archived == 1, s

    def test_purge(self):
        n = ns()
        for i in range(6):
            self.publish(n, b"x", reason="keep" if i < 2 else "drop",
                         metadata={"tenant": "acme" if i % 2 else "globex"})
        f = dl.DeadLetterFilter(reason="drop", metadata={"tenant": "acme"})
        r = self.dl.Purge(dl.PurgeRequest(namespace=n, queue=QUEUE, filter=f), timeout=TIMEOUT)
        assert r.purged == 2, r
        s = self.stats(n)
        assert s.count == 4 and dict(s.by_reason) == {"keep": 2, "drop": 2}, s
        one, _ = self.list_all(n, page_size=1)
        self.dl.Archive(dl.ArchiveRequest(namespace=n, queue=QUEUE, ids=[one[0].id]),
                        timeout=TIMEOUT)
        r = self.dl.Purge(dl.PurgeRequest(namespace=n, queue=QUEUE, archived=True),
                          timeout=TIMEOUT)
        assert r.purged == 1 and self.stats(n).archived == 0
        r = self.dl.Purge(dl.PurgeRequest(namespace=n, queue=QUEUE), timeout=TIMEOUT)
        assert r.purged == 3 and self.stats(n).count == 0

    def test_errors_name_the_field(self):
        n = ns()
        expect_code(grpc.StatusCode.INVALID_ARGUMENT, self.publish, n, b"x", "r", "",
                    "bad name!", field="queue")
        expect_code(grpc.StatusCode.NOT_FOUND, self.publish, n, b"x", "r", "", "unconfigured",
                    field="queue")
        expect_code(grpc.StatusCode.INVALID_ARGUMENT, self.publish, "", field="namespace")
        expect_code(grpc.StatusCode.NOT_FOUND, self.get, n, "1-0", field="id")
        expect_code(grpc.StatusCode.INVALID_ARGUMENT, self.get, n, "not-an-id", field="id")
        expect_code(grpc.StatusCode.INVALID_ARGUMENT, self.ack, n, [], field="ids")
        expect_code(grpc.StatusCode.INVALID_ARGUMENT, self.publish, n, b"x", "r" * 257,
                    field="reason")


def main():
    run_suite(Suite, __doc__)


if __name__ == "__main__":
    main()
