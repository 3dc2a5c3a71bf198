#!/usr/bin/env python3
"""An independent Envoy rate limit client: PyPI's xds-protos (generated from envoyproxy's
data-plane-api, not from floodgate's vendored copy) driving ShouldRateLimit.

Usage: test_rls.py --server HOST:PORT

The server must read the rate limit files of tests/fixtures/rls/ (envoyproxy/ratelimit's
format) with the default settings (all-or-nothing counting, no limit override, no headers),
as tests/tests/python_client.rs starts it. Checks nested descriptors, exact, wildcard and
key-only values, hits_addend (request and descriptor), shadow mode, unlimited, replaces, the
ignored override, all-or-nothing counting, unknown descriptors and domains, bad input, and
that health and reflection list envoy.service.ratelimit.v3.RateLimitService. Prints
"N passed, M failed" last and exits non-zero on any failure.

Needs: python3 -m pip install -r tests/python/requirements.txt
"""
import argparse
import sys
import time
import traceback
import uuid

try:
    import grpc
    from envoy.extensions.common.ratelimit.v3 import ratelimit_pb2 as common
    from envoy.service.ratelimit.v3 import rls_pb2 as rls
    from envoy.service.ratelimit.v3 import rls_pb2_grpc as rls_grpc
    from google.protobuf import wrappers_pb2
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
except ImportError as e:
    raise SystemExit(f"{e}: run `python3 -m pip install -r tests/python/requirements.txt`")

TIMEOUT = 10
OK = rls.RateLimitResponse.OK
OVER = rls.RateLimitResponse.OVER_LIMIT
SERVICE = "envoy.service.ratelimit.v3.RateLimitService"


def fresh(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def desc(*entries, hits=None, override=None):
    d = common.RateLimitDescriptor(
        entries=[common.RateLimitDescriptor.Entry(key=k, value=v) for k, v in entries]
    )
    if hits is not None:
        d.hits_addend.CopyFrom(wrappers_pb2.UInt64Value(value=hits))
    if override is not None:
        d.limit.requests_per_unit, d.limit.unit = override
    return d


def wait_clear_of_hour_edge():
    """Counting tests run in hour windows; keep 20 s clear of the next edge."""
    left = 3600 - time.time() % 3600
    if left < 20:
        time.sleep(left + 0.5)


class Tests:
    def __init__(self, target):
        self.channel = grpc.insecure_channel(target)
        self.rls = rls_grpc.RateLimitServiceStub(self.channel)

    def ask(self, domain, *descriptors, hits_addend=0):
        req = rls.RateLimitRequest(domain=domain, descriptors=descriptors, hits_addend=hits_addend)
        return self.rls.ShouldRateLimit(req, timeout=TIMEOUT)

    def expect_invalid(self, starts, req):
        try:
            self.rls.ShouldRateLimit(req, timeout=TIMEOUT)
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.INVALID_ARGUMENT, e.code()
            assert e.details().startswith(starts), e.details()
            return
        raise AssertionError(f"expected INVALID_ARGUMENT starting {starts!r}")

    def test_nested_descriptors_all_or_nothing(self):
        n = fresh("206")
        for i in range(5):
            r = self.ask("messaging", desc(("message_type", "marketing"), ("to_number", n)),
                         desc(("to_number", n)))
            assert r.overall_code == OK, r
            assert r.statuses[0].limit_remaining == 4 - i, r
            assert r.statuses[0].current_limit.requests_per_unit == 5
            assert r.statuses[0].current_limit.unit == rls.RateLimitResponse.RateLimit.DAY
            assert r.statuses[1].limit_remaining == 99 - i
            assert 0 < r.statuses[0].duration_until_reset.seconds <= 86400
        r = self.ask("messaging", desc(("message_type", "marketing"), ("to_number", n)),
                     desc(("to_number", n)))
        assert r.overall_code == OVER
        assert [s.code for s in r.statuses] == [OVER, OK], r
        # Nothing was counted on the refused request.
        r = self.ask("messaging", desc(("to_number", n)))
        assert r.statuses[0].limit_remaining == 94, r

    def test_unknown_descriptors_and_domains_are_ok(self):
        r = self.ask("messaging", desc(("message_type", "marketing")), desc(("nobody", "x")),
                     desc(("to_number", "1"), ("deeper", "x")))
        assert r.overall_code == OK
        assert all(not s.HasField("current_limit") for s in r.statuses), r
        r = self.ask("no-such-domain", desc(("a", "b")))
        assert r.overall_code == OK and len(r.statuses) == 1

    def test_exact_value_before_key_only(self):
        r = self.ask("edge_proxy_per_ip", desc(("remote_address", "50.0.0.5")))
        assert r.overall_code == OVER
        assert r.statuses[0].current_limit.requests_per_unit == 0
        r = self.ask("edge_proxy_per_ip", desc(("remote_address", fresh("192.0.2"))))
        assert r.overall_code == OK and r.statuses[0].limit_remaining == 9, r

    def test_wildcards(self):
        a = "10.1." + fresh("x")
        for _ in range(3):
            assert self.ask("edge_proxy_per_ip", desc(("remote_address", a))).overall_code == OK
        assert self.ask("edge_proxy_per_ip", desc(("remote_address", a))).overall_code == OVER
        # share_threshold: every 10.2.* address shares one count.
        before = self.ask("edge_proxy_per_ip", desc(("remote_address", "10.2.0.1")))
        after = self.ask("edge_proxy_per_ip", desc(("remote_address", "10.2.7.7")))
        assert after.statuses[0].limit_remaining + 1 == before.statuses[0].limit_remaining

    def test_hits_addend(self):
        ip = fresh("198.51.100")
        r = self.ask("edge_proxy_per_ip", desc(("remote_address", ip)), hits_addend=4)
        assert r.statuses[0].limit_remaining == 6, r
        # The descriptor's own hits_addend wins over the request's.
        r = self.ask("edge_proxy_per_ip", desc(("remote_address", ip), hits=7), hits_addend=1)
        assert r.overall_code == OVER, r
        r = self.ask("edge_proxy_per_ip", desc(("remote_address", ip), hits=6))
        assert r.overall_code == OK and r.statuses[0].limit_remaining == 0, r
        # hits_addend 0 (not set) means 1.
        r = self.ask("edge_proxy_per_ip", desc(("remote_address", fresh("203.0.113"))),
                     hits_addend=0)
        assert r.statuses[0].limit_remaining == 9, r

    def test_shadow_mode_counts_but_never_denies(self):
        svc = fresh("auth")
        for _ in range(12):
            r = self.ask("example6", desc(("service", svc), ("user", "user-a")))
            assert r.overall_code == OK, r
        assert r.statuses[0].limit_remaining == 0, r
        r = self.ask("example6", desc(("service", svc), ("user", "user-b")))
        assert r.statuses[0].limit_remaining == 19

    def test_unlimited(self):
        r = self.ask("internal", desc(("ldap", "x")), desc(("azure", fresh("az"))))
        assert [s.code for s in r.statuses] == [OK, OK]
        assert r.statuses[0].limit_remaining == 2**32 - 1
        assert not r.statuses[0].HasField("current_limit")
        assert r.statuses[1].limit_remaining == 99

    def test_replaces(self):
        user = fresh("bk")
        d1 = desc(("key_1", "value_1"), ("user", user))
        d2 = desc(("key_2", "value_2"), ("user", user))
        for i in range(7):
            r = self.ask("example7", d1, d2)
            assert r.overall_code == OK
            assert not r.statuses[0].HasField("current_limit")
            assert r.statuses[1].limit_remaining == 9 - i
        r = self.ask("example7", d1)
        assert r.statuses[0].limit_remaining == 4, r

    def test_override_ignored_unless_allowed(self):
        hour = 3  # envoy.type.v3.RateLimitUnit.HOUR
        r = self.ask("shop", desc(("user", fresh("u")), override=(1, hour)))
        assert r.statuses[0].current_limit.requests_per_unit == 100, r

    def test_token_bucket_and_sliding_window(self):
        r = self.ask("shop", desc(("api_key", fresh("k"))))
        assert r.statuses[0].limit_remaining == 99
        t = fresh("t")
        for _ in range(3):
            assert self.ask("shop", desc(("tenant", t))).overall_code == OK
        assert self.ask("shop", desc(("tenant", t))).overall_code == OVER

    def test_bad_input_names_the_field(self):
        self.expect_invalid("domain:", rls.RateLimitRequest(domain="", descriptors=[desc(("a", "b"))]))
        self.expect_invalid("descriptors:", rls.RateLimitRequest(domain="shop"))
        self.expect_invalid("descriptors[0].entries:",
                            rls.RateLimitRequest(domain="shop", descriptors=[common.RateLimitDescriptor()]))
        self.expect_invalid("descriptors[1].entries[0].key:",
                            rls.RateLimitRequest(domain="shop", descriptors=[desc(("a", "b")), desc(("", "b"))]))

    def test_health_serving(self):
        health = health_pb2_grpc.HealthStub(self.channel)
        r = health.Check(health_pb2.HealthCheckRequest(service=SERVICE), timeout=TIMEOUT)
        assert r.status == health_pb2.HealthCheckResponse.SERVING

    def test_reflection_lists_the_service(self):
        stub = reflection_pb2_grpc.ServerReflectionStub(self.channel)
        req = reflection_pb2.ServerReflectionRequest(list_services="")
        names = [s.name for r in stub.ServerReflectionInfo(iter([req]), timeout=TIMEOUT)
                 for s in r.list_services_response.service]
        assert SERVICE in names, names


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--server", required=True)
    args = p.parse_args()
    wait_clear_of_hour_edge()
    t = Tests(args.server)
    names = sorted(n for n in dir(t) if n.startswith("test_"))
    passed = failed = 0
    for name in names:
        started = time.monotonic()
        try:
            getattr(t, name)()
            passed += 1
            print(f"ok   {name} ({time.monotonic() - started:.2f}s)", flush=True)
        except Exception:
            failed += 1
            print(f"FAIL {name}", flush=True)
            traceback.print_exc(file=sys.stdout)
    print(f"{passed} passed, {failed} failed", flush=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
