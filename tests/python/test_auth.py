#!/usr/bin/env python3
"""An independent client of floodgate's authentication: Python grpcio, stubs compiled from
proto/ at run time.

Usage: test_auth.py --server HOST:PORT

Checks over plain gRPC (no Rust involved) that bearer tokens in the `authorization`
metadata are required (UNAUTHENTICATED for missing, unknown, expired and malformed ones,
the scheme in any case), that roles limit the RPCs and namespace grants (exact and
`team-b.*` prefixes) limit the namespaces (PERMISSION_DENIED naming what was refused),
that one token's own rate refuses its flood (RESOURCE_EXHAUSTED with `retry-after-ms`)
while another token is served, that operator actions land in the audit trail, and that
health checks need no token. The server must configure the tokens of
tests/tests/python_client.rs (AUTH_TOKENS). Prints "N passed, M failed" last and exits
non-zero on any failure.

Needs: python3 -m pip install -r tests/python/requirements.txt
"""
from floodgate_stubs import compile_protos, run_suite  # noqa: E402 (this folder)

compile_protos()

import grpc  # noqa: E402
from floodgate.v1 import admin_pb2 as admin  # noqa: E402
from floodgate.v1 import admin_pb2_grpc as admin_grpc  # noqa: E402
from floodgate.v1 import circuit_breakers_pb2 as cb  # noqa: E402
from floodgate.v1 import circuit_breakers_pb2_grpc as cb_grpc  # noqa: E402
from floodgate.v1 import common_pb2 as common  # noqa: E402
from floodgate.v1 import rate_limiter_pb2 as rl  # noqa: E402
from floodgate.v1 import rate_limiter_pb2_grpc as rl_grpc  # noqa: E402

TIMEOUT = 10

APP = "fgt_py_app"
OPERATOR = "fgt_py_operator"
PREFIX = "fgt_py_prefix"
EXPIRED = "fgt_py_expired"
FLOOD = "fgt_py_flood"
CALM = "fgt_py_calm"


def bearer(token, scheme="Bearer"):
    return (("authorization", f"{scheme} {token}"),)


def expect_code(code, fn, *args, contains=(), **kw):
    """Calls fn(*args, **kw), asserts it fails with `code` and a message containing each
    of `contains`; returns the error."""
    try:
        fn(*args, **kw)
    except grpc.RpcError as e:
        assert e.code() == code, f"expected {code}, got {e.code()}: {e.details()}"
        for c in contains:
            assert c in e.details(), f"{e.details()!r} does not contain {c!r}"
        return e
    raise AssertionError(f"expected {code}, the call succeeded")


class Suite:
    def __init__(self, target):
        self.channel = grpc.insecure_channel(target)
        try:
            grpc.channel_ready_future(self.channel).result(timeout=TIMEOUT)
        except grpc.FutureTimeoutError:
            raise SystemExit(f"no gRPC server answers at {target} within {TIMEOUT} s")
        self.rl = rl_grpc.RateLimiterStub(self.channel)
        self.cb = cb_grpc.CircuitBreakersStub(self.channel)
        self.admin = admin_grpc.AdminStub(self.channel)

    def acquire(self, ns, metadata=None):
        req = rl.AcquireRequest(namespace=ns, checks=[rl.LimitCheck(key="k", cost=1, policy_name="api")])
        return self.rl.Acquire(req, timeout=TIMEOUT, metadata=metadata)

    def set_state(self, ns, metadata):
        req = cb.SetBreakerStateRequest(namespace=ns, breaker="pay", state=common.BREAKER_STATE_CLOSED)
        return self.cb.SetState(req, timeout=TIMEOUT, metadata=metadata)

    def test_missing_unknown_expired_and_malformed_tokens(self):
        U = grpc.StatusCode.UNAUTHENTICATED
        expect_code(U, self.acquire, "team-a", contains=("missing token",))
        expect_code(U, self.acquire, "team-a", bearer("fgt_nobody"), contains=("unknown token",))
        expect_code(U, self.acquire, "team-a", bearer(EXPIRED), contains=("py-expired", "expired"))
        for value in ("Basic " + APP, APP, "Bearer"):
            expect_code(U, self.acquire, "team-a", (("authorization", value),), contains=("malformed",))

    def test_scheme_in_any_case(self):
        for scheme in ("Bearer", "bearer", "BEARER"):
            assert self.acquire("team-a", bearer(APP, scheme)).allowed

    def test_namespace_outside_the_grant(self):
        D = grpc.StatusCode.PERMISSION_DENIED
        assert self.acquire("team-a", bearer(APP)).allowed
        expect_code(D, self.acquire, "team-b", bearer(APP), contains=('"team-b"', "py-app"))
        # A prefix grant covers the namespaces under it, not the prefix itself.
        assert self.acquire("team-b.x", bearer(PREFIX)).allowed
        assert self.acquire("team-b.x.y", bearer(PREFIX)).allowed
        for ns in ("team-b", "team-bb.x", "team-a"):
            expect_code(D, self.acquire, ns, bearer(PREFIX), contains=(f'"{ns}"',))

    def test_role_limits_the_rpcs(self):
        D = grpc.StatusCode.PERMISSION_DENIED
        expect_code(D, self.set_state, "team-a", bearer(APP),
                    contains=("SetState", "operator role", "py-app"))
        expect_code(D, self.admin.AuditLog, admin.AuditLogRequest(limit=5), timeout=TIMEOUT,
                    metadata=bearer(APP), contains=("AuditLog", "operator role"))
        self.set_state("team-a", bearer(OPERATOR))

    def test_operator_actions_are_audited(self):
        self.set_state("team-a", bearer(OPERATOR))
        expect_code(grpc.StatusCode.PERMISSION_DENIED, self.set_state, "team-b", bearer(OPERATOR))
        entries = self.admin.AuditLog(admin.AuditLogRequest(limit=50), timeout=TIMEOUT,
                                      metadata=bearer(OPERATOR)).entries
        assert any(e.caller == "py-operator" and e.rpc == "SetState" and e.namespace == "team-a"
                   and e.outcome == "Ok" and e.role == "operator" for e in entries), entries
        # The refusal in team-b is another team's entry: this token does not see it.
        assert all(e.namespace == "team-a" for e in entries), entries

    def test_one_tokens_flood_does_not_starve_another(self):
        served = 0
        for _ in range(10):
            try:
                self.acquire("team-a", bearer(FLOOD))
                served += 1
            except grpc.RpcError as e:
                assert e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, e
                assert "py-flood" in e.details(), e.details()
                trailing = dict(e.trailing_metadata() or ())
                assert int(trailing.get("retry-after-ms", "0")) > 0, trailing
                break
            assert self.acquire("team-a", bearer(CALM)).allowed
        assert served == 3, f"rate 3/h admits 3, served {served}"
        for _ in range(5):
            assert self.acquire("team-a", bearer(CALM)).allowed

    def test_health_needs_no_token(self):
        from grpc_health.v1 import health_pb2, health_pb2_grpc
        stub = health_pb2_grpc.HealthStub(self.channel)
        r = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=TIMEOUT)
        assert r.status == health_pb2.HealthCheckResponse.SERVING, r


if __name__ == "__main__":
    run_suite(Suite, __doc__)
