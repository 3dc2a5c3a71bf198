#!/usr/bin/env python3
"""An independent floodgate client: Python grpcio, stubs compiled from proto/ at run time.

Usage: test_rate_limiter.py --server HOST:PORT

Drives floodgate.v1.RateLimiter and Admin over plain gRPC (no Rust involved) and checks the
contract: exact admission per algorithm, honest retry_after, leases (acquire, renew, release,
expiry), all-or-nothing, request ids, shadow policies, Status, validation errors naming the
field, and the health and reflection services. The server must have a configured policy
`api` (token bucket, 3 per hour) and inline policies enabled, as tests/tests/python_client.rs
starts it. Prints "N passed, M failed" last and exits non-zero on any failure.

Needs: python3 -m pip install -r tests/python/requirements.txt
"""
import time
import uuid

from floodgate_stubs import compile_protos, run_suite  # noqa: E402 (this folder)

compile_protos()

import grpc  # noqa: E402
from google.protobuf import descriptor_pb2, duration_pb2  # noqa: E402
from floodgate.v1 import admin_pb2 as admin  # noqa: E402
from floodgate.v1 import admin_pb2_grpc as admin_grpc  # noqa: E402
from floodgate.v1 import rate_limiter_pb2 as rl  # noqa: E402
from floodgate.v1 import rate_limiter_pb2_grpc as rl_grpc  # noqa: E402

TIMEOUT = 10
DAY = 86400
HOUR = 3600


def dur(seconds, nanos=0):
    return duration_pb2.Duration(seconds=seconds, nanos=nanos)


def secs(d):
    return d.seconds + d.nanos / 1e9


def ns():
    """A namespace no other run uses."""
    return "py-" + uuid.uuid4().hex[:12]


def policy(algorithm, limit, period=HOUR, **kw):
    return rl.Policy(algorithm=algorithm, limit=limit, period=dur(period), **kw)


def check(key, pol, cost=0):
    return rl.LimitCheck(key=key, cost=cost, inline=pol)


def lease_policy(limit, ttl=None):
    p = rl.Policy(algorithm=rl.ALGORITHM_CONCURRENCY, limit=limit)
    if ttl is not None:
        p.lease_ttl.CopyFrom(dur(int(ttl), int(round((ttl - int(ttl)) * 1e9))))
    return p


class Suite:
    def __init__(self, target):
        self.channel = grpc.insecure_channel(target)
        try:
            grpc.channel_ready_future(self.channel).result(timeout=TIMEOUT)
        except grpc.FutureTimeoutError:
            raise SystemExit(f"no gRPC server answers at {target} within {TIMEOUT} s")
        self.rl = rl_grpc.RateLimiterStub(self.channel)
        self.admin = admin_grpc.AdminStub(self.channel)

    # ---- helpers ----
    def acquire(self, namespace, *checks, request_id=""):
        req = rl.AcquireRequest(namespace=namespace, checks=list(checks), request_id=request_id)
        r = self.rl.Acquire(req, timeout=TIMEOUT)
        assert not r.degraded, f"degraded answer: {r}"
        assert len(r.checks) == len(checks), f"{len(checks)} checks, {len(r.checks)} results"
        return r

    def status(self, namespace, c):
        return self.rl.Status(rl.StatusRequest(namespace=namespace, check=c), timeout=TIMEOUT)

    def release(self, namespace, key, lease_id):
        req = rl.ReleaseRequest(namespace=namespace, key=key, lease_id=lease_id)
        return self.rl.Release(req, timeout=TIMEOUT)

    def renew(self, namespace, key, lease_id, ttl=None):
        req = rl.RenewRequest(namespace=namespace, key=key, lease_id=lease_id)
        if ttl is not None:
            req.ttl.CopyFrom(dur(ttl))
        return self.rl.Renew(req, timeout=TIMEOUT)

    def expect_error(self, code, starts, call):
        """Runs `call`, which must fail with `code` and a message starting with `starts`."""
        try:
            call()
        except grpc.RpcError as e:
            assert e.code() == code, f"want {code}, got {e.code()}: {e.details()}"
            assert e.details().startswith(starts), f"message {e.details()!r} must start with {starts!r}"
            return e.details()
        raise AssertionError(f"want {code} ({starts}...), the call succeeded")

    def invalid_acquire(self, starts, *checks, namespace=None, request_id=""):
        req = rl.AcquireRequest(
            namespace=ns() if namespace is None else namespace, checks=list(checks), request_id=request_id
        )
        return self.expect_error(
            grpc.StatusCode.INVALID_ARGUMENT, starts, lambda: self.rl.Acquire(req, timeout=TIMEOUT)
        )

    # ---- admission per algorithm ----
    def test_token_bucket_exact(self):
        n = ns()
        p = policy(rl.ALGORITHM_TOKEN_BUCKET, 5)
        answers = [self.acquire(n, check("user:1", p)) for _ in range(8)]
        allowed = [a.allowed for a in answers]
        assert allowed == [True] * 5 + [False] * 3, allowed
        assert [a.checks[0].allowed for a in answers] == allowed
        assert [a.checks[0].remaining for a in answers] == [4, 3, 2, 1, 0, 0, 0, 0]
        assert all(a.checks[0].limit == 5 for a in answers)
        denied = answers[5]
        # One token comes back every 3600/5 = 720 s; the bucket is full again after 3600 s.
        assert 700 < secs(denied.retry_after) <= 720, denied
        assert secs(denied.checks[0].retry_after) == secs(denied.retry_after), denied
        assert 3580 < secs(denied.checks[0].reset_after) <= 3600, denied
        assert not answers[0].checks[0].lease_id

    def test_token_bucket_burst_is_capacity(self):
        n = ns()
        p = policy(rl.ALGORITHM_TOKEN_BUCKET, 10, burst=3)
        answers = [self.acquire(n, check("k", p)) for _ in range(5)]
        assert [a.allowed for a in answers] == [True, True, True, False, False]
        assert all(a.checks[0].limit == 3 for a in answers), answers[0]
        # One token every 360 s.
        assert 340 < secs(answers[3].retry_after) <= 360, answers[3]

    def test_token_bucket_refills(self):
        n = ns()
        p = policy(rl.ALGORITHM_TOKEN_BUCKET, 5, period=1)  # a token every 200 ms
        assert sum(self.acquire(n, check("k", p)).allowed for _ in range(7)) == 5
        denied = self.acquire(n, check("k", p))
        assert not denied.allowed and 0 < secs(denied.retry_after) <= 0.2, denied
        time.sleep(secs(denied.retry_after) + 0.05)
        assert self.acquire(n, check("k", p)).allowed

    def test_fixed_window_and_sliding_log_exact(self):
        for algorithm in (rl.ALGORITHM_FIXED_WINDOW, rl.ALGORITHM_SLIDING_LOG):
            n = ns()
            p = policy(algorithm, 4, period=DAY)
            answers = [self.acquire(n, check("k", p)) for _ in range(6)]
            allowed = [a.allowed for a in answers]
            assert allowed == [True] * 4 + [False] * 2, (algorithm, allowed)
            assert [a.checks[0].remaining for a in answers] == [3, 2, 1, 0, 0, 0], (algorithm, answers)
            assert all(a.checks[0].limit == 4 for a in answers)
            r = secs(answers[4].retry_after)
            assert 0 < r <= DAY, (algorithm, answers[4])
            if algorithm == rl.ALGORITHM_SLIDING_LOG:
                # The oldest arrival leaves the log one period after it came.
                assert r > DAY - 60, answers[4]

    def test_sliding_window_bounded(self):
        n = ns()
        p = policy(rl.ALGORITHM_SLIDING_WINDOW, 4, period=DAY)
        answers = [self.acquire(n, check("k", p)) for _ in range(10)]
        allowed = [a.allowed for a in answers]
        admitted = sum(allowed)
        assert 4 <= admitted <= 5, allowed
        assert allowed == [True] * admitted + [False] * (10 - admitted), allowed
        assert all(secs(a.retry_after) > 0 for a in answers if not a.allowed)

    def test_cost(self):
        n = ns()
        p = policy(rl.ALGORITHM_FIXED_WINDOW, 10)
        r = self.acquire(n, check("k", p, cost=7))
        assert r.allowed and r.checks[0].remaining == 3, r
        r = self.acquire(n, check("k", p, cost=4))
        assert not r.allowed and r.checks[0].remaining == 3, r
        r = self.acquire(n, check("k", p, cost=3))
        assert r.allowed and r.checks[0].remaining == 0, r

    def test_cost_zero_means_one(self):
        n = ns()
        p = policy(rl.ALGORITHM_SLIDING_LOG, 3)
        remaining = [self.acquire(n, check("k", p, cost=0)).checks[0].remaining for _ in range(3)]
        assert remaining == [2, 1, 0], remaining

    def test_limits_are_per_key_and_per_policy(self):
        n = ns()
        hourly = policy(rl.ALGORITHM_TOKEN_BUCKET, 2, period=HOUR)
        per_second = policy(rl.ALGORITHM_TOKEN_BUCKET, 100, period=1)
        assert [self.acquire(n, check("k", hourly)).allowed for _ in range(3)] == [True, True, False]
        r = self.acquire(n, check("k", per_second))
        assert r.allowed and r.checks[0].remaining == 99, r
        assert self.acquire(n, check("other-key", hourly)).allowed
        assert self.acquire(ns(), check("k", hourly)).allowed, "namespaces must not share state"
        assert r.checks[0].policy and r.checks[0].policy != self.acquire(n, check("x", hourly)).checks[0].policy

    # ---- leases ----
    def test_concurrency_leases(self):
        n = ns()
        p = lease_policy(2)
        a = self.acquire(n, check("db", p))
        b = self.acquire(n, check("db", p))
        c = self.acquire(n, check("db", p))
        assert a.allowed and b.allowed and not c.allowed
        lease = a.checks[0].lease_id
        assert lease and b.checks[0].lease_id and lease != b.checks[0].lease_id
        assert not c.checks[0].lease_id, c
        assert secs(c.retry_after) > 0, c
        assert self.status(n, check("db", p)).remaining == 0
        renewed = self.renew(n, "db", lease, ttl=5)
        assert secs(renewed.expires_in) == 5, renewed
        assert self.release(n, "db", lease).released
        assert self.status(n, check("db", p)).remaining == 1
        assert not self.release(n, "db", lease).released, "a second release must say released=false"
        self.expect_error(grpc.StatusCode.NOT_FOUND, "lease_id:", lambda: self.renew(n, "db", lease))
        self.expect_error(grpc.StatusCode.NOT_FOUND, "lease_id:", lambda: self.renew(n, "db", lease, ttl=5))
        d = self.acquire(n, check("db", p))
        assert d.allowed and d.checks[0].lease_id not in (lease, b.checks[0].lease_id)

    def test_lease_cost_and_default_renew_ttl(self):
        n = ns()
        p = lease_policy(3, ttl=30)
        a = self.acquire(n, check("db", p, cost=2))
        assert a.allowed and a.checks[0].remaining == 1, a
        assert not self.acquire(n, check("db", p, cost=2)).allowed
        renewed = self.renew(n, "db", a.checks[0].lease_id)  # no ttl: the policy's lease_ttl
        assert 29 <= secs(renewed.expires_in) <= 30, renewed
        assert self.release(n, "db", a.checks[0].lease_id).released
        assert self.status(n, check("db", p)).remaining == 3

    def test_lease_expires_unless_renewed(self):
        n = ns()
        p = lease_policy(1, ttl=0.6)
        a = self.acquire(n, check("expiring", p))
        b = self.acquire(n, check("renewed", p))
        assert a.allowed and b.allowed
        self.renew(n, "renewed", b.checks[0].lease_id, ttl=5)
        time.sleep(1.0)
        assert self.acquire(n, check("expiring", p)).allowed, "an expired lease must free its slot"
        assert not self.acquire(n, check("renewed", p)).allowed, "a renewed lease must keep its slot"
        self.expect_error(
            grpc.StatusCode.NOT_FOUND, "lease_id:", lambda: self.renew(n, "expiring", a.checks[0].lease_id)
        )

    def test_release_of_unknown_lease_is_not_an_error(self):
        n = ns()
        p = lease_policy(1)
        lease = self.acquire(n, check("db", p)).checks[0].lease_id
        assert self.release(n, "db", lease).released
        assert not self.release(n, "other-key", lease).released

    # ---- all-or-nothing, request ids, shadow, status ----
    def test_all_or_nothing(self):
        n = ns()
        big = policy(rl.ALGORITHM_FIXED_WINDOW, 10)
        small = policy(rl.ALGORITHM_TOKEN_BUCKET, 1)
        assert self.acquire(n, check("a", big), check("b", small)).allowed
        r = self.acquire(n, check("a", big), check("b", small))
        assert not r.allowed and r.checks[0].allowed and not r.checks[1].allowed, r
        assert r.checks[0].remaining == 9, f"a denied Acquire reports the first check as it is: {r}"
        s = self.status(n, check("a", big))
        assert s.remaining == 9, f"the denied Acquire consumed the first check: {s}"

    def test_all_or_nothing_every_algorithm(self):
        n = ns()
        firsts = [
            check("fw", policy(rl.ALGORITHM_FIXED_WINDOW, 5)),
            check("sl", policy(rl.ALGORITHM_SLIDING_LOG, 5)),
            check("sw", policy(rl.ALGORITHM_SLIDING_WINDOW, 5)),
            check("tb", policy(rl.ALGORITHM_TOKEN_BUCKET, 5)),
            check("cc", lease_policy(5)),
        ]
        exhausted = check("gate", policy(rl.ALGORITHM_TOKEN_BUCKET, 1))
        assert self.acquire(n, exhausted).allowed
        r = self.acquire(n, *firsts, exhausted)
        assert not r.allowed and not r.checks[-1].allowed, r
        assert all(c.allowed for c in r.checks[:-1]), r
        assert all(not c.lease_id for c in r.checks), f"a denied Acquire handed out a lease: {r}"
        for c in firsts:
            s = self.status(n, c)
            assert s.allowed and s.remaining == 5, f"{c.key} consumed by a denied Acquire: {s}"

    def test_checks_come_back_in_request_order(self):
        n = ns()
        checks = [
            check("c", policy(rl.ALGORITHM_SLIDING_LOG, 9)),
            check("a", policy(rl.ALGORITHM_TOKEN_BUCKET, 7)),
            check("b", lease_policy(3)),
            check("a", policy(rl.ALGORITHM_FIXED_WINDOW, 11)),
        ]
        r = self.acquire(n, *checks)
        assert r.allowed
        assert [c.limit for c in r.checks] == [9, 7, 3, 11], r
        assert [c.remaining for c in r.checks] == [8, 6, 2, 10], r
        assert [bool(c.lease_id) for c in r.checks] == [False, False, True, False], r

    def test_request_id_replays(self):
        n = ns()
        p = lease_policy(3)
        first = self.acquire(n, check("db", p), request_id="req-1")
        again = self.acquire(n, check("db", p), request_id="req-1")
        assert first.allowed and again.allowed
        assert first.checks[0].lease_id == again.checks[0].lease_id
        assert self.status(n, check("db", p)).remaining == 2
        other = self.acquire(n, check("db", p), request_id="req-2")
        assert other.checks[0].lease_id != first.checks[0].lease_id
        assert self.status(n, check("db", p)).remaining == 1

    def test_request_id_consumes_once(self):
        n = ns()
        p = policy(rl.ALGORITHM_TOKEN_BUCKET, 5)
        answers = [self.acquire(n, check("k", p, cost=2), request_id="same") for _ in range(4)]
        assert all(a.allowed and a.checks[0].remaining == 3 for a in answers), answers
        assert self.status(n, check("k", p)).remaining == 3
        # The same id in another namespace is another request.
        n2 = ns()
        assert self.acquire(n2, check("k", p, cost=2), request_id="same").checks[0].remaining == 3
        assert self.status(n2, check("k", p)).remaining == 3
        assert self.status(n, check("k", p)).remaining == 3

    def test_shadow_never_denies(self):
        n = ns()
        p = policy(rl.ALGORITHM_FIXED_WINDOW, 2, shadow=True)
        answers = [self.acquire(n, check("k", p)) for _ in range(4)]
        assert all(a.allowed for a in answers), answers
        assert [a.checks[0].allowed for a in answers] == [True, True, False, False]
        assert all(a.checks[0].shadow for a in answers)
        assert all(secs(a.retry_after) == 0 for a in answers), answers

    def test_shadow_beside_a_real_check(self):
        n = ns()
        shadow = check("s", policy(rl.ALGORITHM_TOKEN_BUCKET, 1, shadow=True))
        real = check("r", policy(rl.ALGORITHM_FIXED_WINDOW, 3))
        answers = [self.acquire(n, shadow, real) for _ in range(4)]
        assert [a.allowed for a in answers] == [True, True, True, False], answers
        assert [a.checks[0].allowed for a in answers[:3]] == [True, False, False], answers
        assert [a.checks[1].remaining for a in answers] == [2, 1, 0, 0], answers
        assert not answers[0].checks[1].shadow and answers[0].checks[0].shadow

    def test_status_reads_without_consuming(self):
        n = ns()
        for p in (
            policy(rl.ALGORITHM_TOKEN_BUCKET, 5),
            policy(rl.ALGORITHM_FIXED_WINDOW, 5),
            policy(rl.ALGORITHM_SLIDING_LOG, 5),
            policy(rl.ALGORITHM_SLIDING_WINDOW, 5),
            lease_policy(5),
        ):
            key = f"k{p.algorithm}"
            for _ in range(3):
                s = self.status(n, check(key, p))
                assert s.allowed and s.remaining == 5 and s.limit == 5, (p.algorithm, s)
                assert not s.lease_id
            assert self.acquire(n, check(key, p, cost=2)).allowed
            s = self.status(n, check(key, p))
            assert s.remaining == 3, (p.algorithm, s)
            s = self.status(n, check(key, p, cost=4))
            assert not s.allowed and secs(s.retry_after) > 0, (p.algorithm, s)
            assert self.status(n, check(key, p)).remaining == 3

    def test_named_policy_and_reset(self):
        n = ns()
        c = rl.LimitCheck(key="cust", policy_name="api")
        try:
            answers = [self.acquire(n, c) for _ in range(4)]
        except grpc.RpcError as e:
            raise AssertionError(
                f"{e.code()}: {e.details()} -- start the server with a --config that has "
                '[policies.api] algorithm = "token_bucket", limit = 3, period = "1h"'
            ) from None
        assert [a.allowed for a in answers] == [True, True, True, False], answers
        assert answers[0].checks[0].policy == "api", answers[0]
        assert self.status(n, c).remaining == 0
        assert self.admin.ResetLimit(admin.ResetLimitRequest(namespace=n, check=c), timeout=TIMEOUT).existed
        assert self.status(n, c).remaining == 3
        assert self.acquire(n, c).allowed
        fresh = rl.LimitCheck(key="never-used", policy_name="api")
        assert not self.admin.ResetLimit(admin.ResetLimitRequest(namespace=n, check=fresh), timeout=TIMEOUT).existed

    # ---- errors ----
    def test_invalid_arguments_name_the_field(self):
        ok = check("k", policy(rl.ALGORITHM_TOKEN_BUCKET, 5))
        tb = rl.ALGORITHM_TOKEN_BUCKET
        for bad_ns in ("bad:ns", "", "x" * 65, "a{b}", "sp ace", "é"):
            self.invalid_acquire("namespace:", ok, namespace=bad_ns)
        assert self.acquire("x" * 64, ok).allowed, "a 64-character namespace is valid"
        self.invalid_acquire("checks[0].cost:", check("k", policy(tb, 5), cost=6))
        self.invalid_acquire("checks[0].cost:", check("k", policy(tb, 10, burst=3), cost=4))
        self.invalid_acquire("checks[0].cost:", check("k", policy(rl.ALGORITHM_FIXED_WINDOW, 5), cost=6))
        self.invalid_acquire("checks[0].cost:", check("k", lease_policy(2), cost=3))
        self.invalid_acquire("checks[0].inline.algorithm:", check("k", rl.Policy(limit=5, period=dur(HOUR))))
        self.invalid_acquire("checks[0].inline.algorithm:", check("k", rl.Policy(algorithm=99, limit=5, period=dur(HOUR))))
        self.invalid_acquire("checks[0].inline.limit:", check("k", policy(tb, 0)))
        self.invalid_acquire("checks[0].inline.period:", check("k", policy(rl.ALGORITHM_FIXED_WINDOW, 1, period=0)))
        self.invalid_acquire("checks[0].inline.period:", check("k", policy(rl.ALGORITHM_SLIDING_LOG, 1, period=367 * DAY)))
        self.invalid_acquire("checks[0].inline.period:", check("k", policy(tb, 1, period=-1)))
        self.invalid_acquire("checks[1].key:", ok, check("", policy(rl.ALGORITHM_FIXED_WINDOW, 1)))
        self.invalid_acquire("checks[0].key:", check("a\nb", policy(tb, 1)))
        self.invalid_acquire("checks[0].key:", check("k" * 513, policy(tb, 1)))
        assert self.acquire(ns(), check("k:" + "x" * 510, policy(tb, 1))).allowed, "a 512-byte key is valid"
        self.invalid_acquire("checks[0]", rl.LimitCheck(key="k"))  # no policy at all
        self.invalid_acquire("checks:", *[check(f"k{i}", policy(tb, 5)) for i in range(17)])
        assert self.acquire(ns(), *[check(f"k{i}", policy(tb, 5)) for i in range(16)]).allowed
        self.invalid_acquire("checks:")  # neither checks nor breakers
        self.invalid_acquire("request_id:", ok, request_id="x" * 10_000)
        st = rl.StatusRequest(namespace="bad:ns", check=ok)
        self.expect_error(grpc.StatusCode.INVALID_ARGUMENT, "namespace:", lambda: self.rl.Status(st, timeout=TIMEOUT))
        rel = rl.ReleaseRequest(namespace="bad:ns", key="k", lease_id="x")
        self.expect_error(grpc.StatusCode.INVALID_ARGUMENT, "namespace:", lambda: self.rl.Release(rel, timeout=TIMEOUT))
        self.expect_error(
            grpc.StatusCode.INVALID_ARGUMENT, "lease_id:", lambda: self.renew(ns(), "k", "not-a-lease")
        )

    def test_unknown_policy_name_is_not_found(self):
        self.expect_error(grpc.StatusCode.NOT_FOUND, "checks[0].policy_name:", lambda: self.rl.Acquire(
            rl.AcquireRequest(namespace=ns(), checks=[rl.LimitCheck(key="k", policy_name="nope")]), timeout=TIMEOUT))
        ok = check("k", policy(rl.ALGORITHM_TOKEN_BUCKET, 5))
        self.expect_error(grpc.StatusCode.NOT_FOUND, "checks[1].policy_name:", lambda: self.rl.Acquire(
            rl.AcquireRequest(namespace=ns(), checks=[ok, rl.LimitCheck(key="k", policy_name="nope")]), timeout=TIMEOUT))
        self.expect_error(grpc.StatusCode.NOT_FOUND, "check.policy_name:", lambda: self.rl.Status(
            rl.StatusRequest(namespace=ns(), check=rl.LimitCheck(key="k", policy_name="nope")), timeout=TIMEOUT))

    # ---- standard services ----
    def test_health_serving(self):
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        stub = health_pb2_grpc.HealthStub(self.channel)
        for service in ("", "floodgate.v1.RateLimiter"):
            r = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert r.status == health_pb2.HealthCheckResponse.SERVING, (service, r)

    def test_reflection_v1alpha_lists_the_services(self):
        from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

        db = ProtoReflectionDescriptorDatabase(self.channel)
        services = set(db.get_services())
        for s in ("floodgate.v1.RateLimiter", "floodgate.v1.Admin", "grpc.health.v1.Health"):
            assert s in services, f"{s} not in {services}"

    def test_reflection_v1_describes_rate_limiter(self):
        # grpcio-reflection ships only v1alpha stubs; v1 has the same messages on the wire,
        # so a raw call to the v1 method with the v1alpha messages is a genuine v1 client.
        from grpc_reflection.v1alpha import reflection_pb2 as refl

        call = self.channel.stream_stream(
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            request_serializer=refl.ServerReflectionRequest.SerializeToString,
            response_deserializer=refl.ServerReflectionResponse.FromString,
        )
        requests = [
            refl.ServerReflectionRequest(list_services=""),
            refl.ServerReflectionRequest(file_containing_symbol="floodgate.v1.RateLimiter"),
        ]
        listed, described = list(call(iter(requests), timeout=5))
        names = {s.name for s in listed.list_services_response.service}
        assert "floodgate.v1.RateLimiter" in names, names
        files = [descriptor_pb2.FileDescriptorProto.FromString(b)
                 for b in described.file_descriptor_response.file_descriptor_proto]
        methods = {
            m.name
            for f in files if f.package == "floodgate.v1"
            for s in f.service if s.name == "RateLimiter"
            for m in s.method
        }
        assert {"Acquire", "Release", "Renew", "Status"} <= methods, methods


def main():
    run_suite(Suite, __doc__)


if __name__ == "__main__":
    main()
