#!/usr/bin/env python3
"""An independent floodgate client: Python grpcio, stubs compiled from proto/ at run time.

Usage: test_rate_limiter.py --server HOST:PORT

Drives floodgate.v1.RateLimiter and Admin over plain gRPC (no Rust involved) and checks the
contract: exact admission per algorithm, leases, all-or-nothing, request ids, shadow
policies, Status, validation errors naming the field, and the health and reflection
services. Prints "N passed, M failed" and exits non-zero on any failure.
"""
import argparse
import os
import sys
import tempfile
import traceback
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
PROTO_ROOT = os.path.join(HERE, "..", "..", "proto")


def compile_protos():
    from grpc_tools import protoc
    import grpc_tools

    out = tempfile.mkdtemp(prefix="floodgate-py-")
    includes = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    files = [
        os.path.join("floodgate", "v1", f)
        for f in sorted(os.listdir(os.path.join(PROTO_ROOT, "floodgate", "v1")))
        if f.endswith(".proto")
    ]
    code = protoc.main(
        ["grpc_tools.protoc", f"-I{PROTO_ROOT}", f"-I{includes}", f"--python_out={out}", f"--grpc_python_out={out}"]
        + files
    )
    if code != 0:
        raise SystemExit(f"protoc failed with {code} for {files}")
    sys.path.insert(0, out)


compile_protos()

import grpc  # noqa: E402
from google.protobuf import duration_pb2  # noqa: E402
from floodgate.v1 import rate_limiter_pb2 as rl  # noqa: E402
from floodgate.v1 import rate_limiter_pb2_grpc as rl_grpc  # noqa: E402
from floodgate.v1 import admin_pb2 as admin  # noqa: E402
from floodgate.v1 import admin_pb2_grpc as admin_grpc  # noqa: E402

HOUR = duration_pb2.Duration(seconds=3600)


def ns():
    return "py-" + uuid.uuid4().hex[:12]


def policy(algorithm, limit, period=HOUR, **kw):
    return rl.Policy(algorithm=algorithm, limit=limit, period=period, **kw)


def check(key, pol, cost=0):
    return rl.LimitCheck(key=key, cost=cost, inline=pol)


class Suite:
    def __init__(self, target):
        self.channel = grpc.insecure_channel(target)
        grpc.channel_ready_future(self.channel).result(timeout=10)
        self.rl = rl_grpc.RateLimiterStub(self.channel)
        self.admin = admin_grpc.AdminStub(self.channel)

    def acquire(self, namespace, *checks, request_id=""):
        r = self.rl.Acquire(rl.AcquireRequest(namespace=namespace, checks=list(checks), request_id=request_id), timeout=10)
        assert not r.degraded, f"degraded answer: {r}"
        return r

    def status(self, namespace, c):
        return self.rl.Status(rl.StatusRequest(namespace=namespace, check=c), timeout=10)

    def expect_error(self, code, starts, call):
        try:
            call()
        except grpc.RpcError as e:
            assert e.code() == code, f"want {code}, got {e.code()}: {e.details()}"
            assert e.details().startswith(starts), f"message {e.details()!r} must start with {starts!r}"
            return e.details()
        raise AssertionError(f"want {code}, the call succeeded")

    # ---- admission per algorithm ----
    def test_token_bucket_exact(self):
        n = ns()
        p = policy(rl.ALGORITHM_TOKEN_BUCKET, 5)
        answers = [self.acquire(n, check("user:1", p)) for _ in range(8)]
        allowed = [a.allowed for a in answers]
        assert allowed == [True] * 5 + [False] * 3, allowed
        assert [a.checks[0].remaining for a in answers[:5]] == [4, 3, 2, 1, 0]
        denied = answers[5]
        assert denied.retry_after.seconds > 0 or denied.retry_after.nanos > 0
        assert denied.checks[0].limit == 5

    def test_burst_is_capacity(self):
        n = ns()
        p = policy(rl.ALGORITHM_TOKEN_BUCKET, 10, burst=3)
        allowed = [self.acquire(n, check("k", p)).allowed for _ in range(5)]
        assert allowed == [True, True, True, False, False], allowed

    def test_fixed_window_and_sliding_log_exact(self):
        for algorithm in (rl.ALGORITHM_FIXED_WINDOW, rl.ALGORITHM_SLIDING_LOG):
            n = ns()
            p = policy(algorithm, 4, period=duration_pb2.Duration(seconds=86400))
            allowed = [self.acquire(n, check("k", p)).allowed for _ in range(6)]
            assert allowed == [True] * 4 + [False] * 2, (algorithm, allowed)

    def test_sliding_window_bounded(self):
        n = ns()
        p = policy(rl.ALGORITHM_SLIDING_WINDOW, 4, period=duration_pb2.Duration(seconds=86400))
        allowed = sum(self.acquire(n, check("k", p)).allowed for _ in range(10))
        assert 4 <= allowed <= 5, allowed

    def test_cost(self):
        n = ns()
        p = policy(rl.ALGORITHM_FIXED_WINDOW, 10)
        assert self.acquire(n, check("k", p, cost=7)).allowed
        r = self.acquire(n, check("k", p, cost=4))
        assert not r.allowed and r.checks[0].remaining == 3

    # ---- leases ----
    def test_concurrency_leases(self):
        n = ns()
        p = rl.Policy(algorithm=rl.ALGORITHM_CONCURRENCY, limit=2)
        a = self.acquire(n, check("db", p))
        b = self.acquire(n, check("db", p))
        c = self.acquire(n, check("db", p))
        assert a.allowed and b.allowed and not c.allowed
        lease = a.checks[0].lease_id
        assert lease and not c.checks[0].lease_id
        renewed = self.rl.Renew(rl.RenewRequest(namespace=n, key="db", lease_id=lease, ttl=duration_pb2.Duration(seconds=5)))
        assert renewed.expires_in.seconds == 5
        assert self.rl.Release(rl.ReleaseRequest(namespace=n, key="db", lease_id=lease)).released
        assert not self.rl.Release(rl.ReleaseRequest(namespace=n, key="db", lease_id=lease)).released
        self.expect_error(
            grpc.StatusCode.NOT_FOUND, "lease_id:",
            lambda: self.rl.Renew(rl.RenewRequest(namespace=n, key="db", lease_id=lease)),
        )
        assert self.acquire(n, check("db", p)).allowed

    # ---- all-or-nothing, request ids, shadow, status ----
    def test_all_or_nothing(self):
        n = ns()
        big = policy(rl.ALGORITHM_FIXED_WINDOW, 10)
        small = policy(rl.ALGORITHM_TOKEN_BUCKET, 1)
        assert self.acquire(n, check("a", big), check("b", small)).allowed
        r = self.acquire(n, check("a", big), check("b", small))
        assert not r.allowed and r.checks[0].allowed and not r.checks[1].allowed
        s = self.status(n, check("a", big))
        assert s.remaining == 9, f"the denied Acquire consumed the first check: {s}"

    def test_request_id_replays(self):
        n = ns()
        p = rl.Policy(algorithm=rl.ALGORITHM_CONCURRENCY, limit=3)
        first = self.acquire(n, check("db", p), request_id="req-1")
        again = self.acquire(n, check("db", p), request_id="req-1")
        assert first.allowed and again.allowed
        assert first.checks[0].lease_id == again.checks[0].lease_id
        assert self.status(n, check("db", p)).remaining == 2

    def test_shadow_never_denies(self):
        n = ns()
        p = policy(rl.ALGORITHM_FIXED_WINDOW, 2, shadow=True)
        answers = [self.acquire(n, check("k", p)) for _ in range(4)]
        assert all(a.allowed for a in answers)
        assert [a.checks[0].allowed for a in answers] == [True, True, False, False]
        assert all(a.checks[0].shadow for a in answers)

    def test_status_reads_without_consuming(self):
        n = ns()
        p = policy(rl.ALGORITHM_TOKEN_BUCKET, 5)
        for _ in range(3):
            s = self.status(n, check("k", p))
            assert s.allowed and s.remaining == 5, s
        self.acquire(n, check("k", p, cost=2))
        assert self.status(n, check("k", p)).remaining == 3

    def test_named_policy_and_reset(self):
        n = ns()
        c = rl.LimitCheck(key="cust", policy_name="api")
        answers = [self.acquire(n, c).allowed for _ in range(4)]
        assert answers == [True, True, True, False], answers
        assert self.admin.ResetLimit(admin.ResetLimitRequest(namespace=n, check=c)).existed
        assert self.acquire(n, c).allowed

    # ---- errors ----
    def test_invalid_arguments_name_the_field(self):
        ok = check("k", policy(rl.ALGORITHM_TOKEN_BUCKET, 5))
        inv = grpc.StatusCode.INVALID_ARGUMENT
        self.expect_error(inv, "namespace:", lambda: self.rl.Acquire(rl.AcquireRequest(namespace="bad:ns", checks=[ok])))
        self.expect_error(inv, "checks[0].cost:", lambda: self.rl.Acquire(
            rl.AcquireRequest(namespace=ns(), checks=[check("k", policy(rl.ALGORITHM_TOKEN_BUCKET, 5), cost=6)])))
        self.expect_error(inv, "checks[0].inline.algorithm:", lambda: self.rl.Acquire(
            rl.AcquireRequest(namespace=ns(), checks=[check("k", rl.Policy(limit=5, period=HOUR))])))
        self.expect_error(inv, "checks[1].key:", lambda: self.rl.Acquire(
            rl.AcquireRequest(namespace=ns(), checks=[ok, check("", policy(rl.ALGORITHM_FIXED_WINDOW, 1))])))
        self.expect_error(inv, "checks[0].inline.period:", lambda: self.rl.Acquire(
            rl.AcquireRequest(namespace=ns(), checks=[check("k", policy(rl.ALGORITHM_FIXED_WINDOW, 1, period=duration_pb2.Duration()))])))
        self.expect_error(inv, "checks:", lambda: self.rl.Acquire(rl.AcquireRequest(namespace=ns(), checks=[ok] * 17)))
        self.expect_error(grpc.StatusCode.NOT_FOUND, "checks[0].policy_name:", lambda: self.rl.Acquire(
            rl.AcquireRequest(namespace=ns(), checks=[rl.LimitCheck(key="k", policy_name="nope")])))

    # ---- standard services ----
    def test_health_serving(self):
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        stub = health_pb2_grpc.HealthStub(self.channel)
        r = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
        assert r.status == health_pb2.HealthCheckResponse.SERVING, r
        r = stub.Check(health_pb2.HealthCheckRequest(service="floodgate.v1.RateLimiter"), timeout=5)
        assert r.status == health_pb2.HealthCheckResponse.SERVING, r

    def test_reflection_lists_the_services(self):
        from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

        db = ProtoReflectionDescriptorDatabase(self.channel)
        services = set(db.get_services())
        for s in ("floodgate.v1.RateLimiter", "floodgate.v1.Admin", "grpc.health.v1.Health"):
            assert s in services, f"{s} not in {services}"


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--server", required=True, help="host:port of a floodgate server")
    args = parser.parse_args()
    suite = Suite(args.server)
    tests = sorted(name for name in dir(suite) if name.startswith("test_"))
    passed = failed = 0
    for name in tests:
        try:
            getattr(suite, name)()
            passed += 1
            print(f"ok   {name}")
        except Exception:  # noqa: BLE001 - report every failure and go on
            failed += 1
            print(f"FAIL {name}")
            traceback.print_exc()
    print(f"{passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
