#!/usr/bin/env python3
"""Shared circuit breakers from an independent client: Python grpcio, stubs compiled from
proto/ at run time.

Usage: test_breakers.py --server HOST:PORT

Drives floodgate.v1.CircuitBreakers and RateLimiter.Acquire (`breakers: [...]`) over plain
gRPC (no Rust involved) and checks the contract: a breaker nobody reported to admits and
reads as CLOSED without being created; failures open it; late reports of an old generation
are ignored; half-open grants exactly half_open_calls trial permits and a released permit
is granted again; successful trials close it; operator overrides; Watch starts with the
current state and then sees transitions; History newest first; List; validation errors
naming the field; NOT_FOUND for an unconfigured breaker; reflection. Every check runs in a
fresh namespace. Prints "N passed, M failed" last and exits non-zero on any failure.

The server must run with this configuration (tests/tests/python_client.rs starts it so),
and without a [breakers.default] template:

    [breakers.py]
    window = "count"
    window_size = 10
    minimum_calls = 4
    failure_rate_threshold = 50.0
    wait_in_open = "1s"
    half_open_calls = 2
    half_open_max_wait = "2s"

Needs: python3 -m pip install -r tests/python/requirements.txt
"""
import queue
import threading
import time
import uuid

from floodgate_stubs import compile_protos, run_suite  # noqa: E402 (this folder)

compile_protos()

import grpc  # noqa: E402
from floodgate.v1 import circuit_breakers_pb2 as cb  # noqa: E402
from floodgate.v1 import circuit_breakers_pb2_grpc as cb_grpc  # noqa: E402
from floodgate.v1 import common_pb2 as common  # noqa: E402
from floodgate.v1 import rate_limiter_pb2 as rl  # noqa: E402
from floodgate.v1 import rate_limiter_pb2_grpc as rl_grpc  # noqa: E402

TIMEOUT = 10
BREAKER = "py"
HALF_OPEN_CALLS = 2

UNSPECIFIED = common.BREAKER_STATE_UNSPECIFIED
CLOSED = common.BREAKER_STATE_CLOSED
OPEN = common.BREAKER_STATE_OPEN
HALF_OPEN = common.BREAKER_STATE_HALF_OPEN
FORCED_OPEN = common.BREAKER_STATE_FORCED_OPEN
DISABLED = common.BREAKER_STATE_DISABLED
METRICS_ONLY = common.BREAKER_STATE_METRICS_ONLY


def name(state):
    return common.BreakerState.Name(state)


def secs(d):
    return d.seconds + d.nanos / 1e9


def ns():
    """A namespace no other run uses."""
    return "pyb-" + uuid.uuid4().hex[:12]


def connect(target):
    channel = grpc.insecure_channel(target)
    try:
        grpc.channel_ready_future(channel).result(timeout=TIMEOUT)
    except grpc.FutureTimeoutError:
        raise SystemExit(f"no gRPC server answers at {target} within {TIMEOUT} s")
    return channel


class Suite:
    def __init__(self, target):
        self.target = target
        self.channel = connect(target)
        self.rl = rl_grpc.RateLimiterStub(self.channel)
        self.cb = cb_grpc.CircuitBreakersStub(self.channel)

    # ---- helpers ----
    def acquire(self, namespace, breaker=BREAKER):
        r = self.rl.Acquire(rl.AcquireRequest(namespace=namespace, breakers=[breaker]), timeout=TIMEOUT)
        assert not r.degraded, f"degraded answer: {r}"
        assert len(r.breakers) == 1 and r.breakers[0].breaker == breaker, r
        assert r.allowed == r.breakers[0].allowed, f"no checks: the breaker alone decides: {r}"
        return r

    def report(self, namespace, breaker=BREAKER, **counts):
        req = cb.ReportRequest(namespace=namespace, reports=[cb.BreakerReport(breaker=breaker, **counts)])
        results = self.cb.Report(req, timeout=TIMEOUT).results
        assert len(results) == 1 and results[0].breaker == breaker, results
        return results[0]

    def get(self, namespace, breaker=BREAKER):
        return self.cb.Get(cb.GetBreakerRequest(namespace=namespace, breaker=breaker), timeout=TIMEOUT)

    def set_state(self, namespace, state, breaker=BREAKER, stub=None):
        req = cb.SetBreakerStateRequest(namespace=namespace, breaker=breaker, state=state)
        return (stub or self.cb).SetState(req, timeout=TIMEOUT)

    def history(self, namespace, breaker=BREAKER, limit=0):
        req = cb.BreakerHistoryRequest(namespace=namespace, breaker=breaker, limit=limit)
        return list(self.cb.History(req, timeout=TIMEOUT).events)

    def expect_error(self, code, contains, call):
        """Runs `call`, which must fail with `code` and a message containing `contains`."""
        try:
            call()
        except grpc.RpcError as e:
            assert e.code() == code, f"want {code}, got {e.code()}: {e.details()}"
            assert contains in e.details(), f"message {e.details()!r} must contain {contains!r}"
            return e.details()
        raise AssertionError(f"want {code} ({contains}...), the call succeeded")

    def opened(self, namespace):
        """Opens the breaker with 4 failures (minimum_calls 4, 100 % over 50 %)."""
        r = self.report(namespace, failures=4)
        assert r.accepted and r.state == OPEN and r.generation == 2, r
        return r

    def until_half_open(self, namespace):
        """Waits out wait_in_open (1 s); Get takes the lazy OPEN -> HALF_OPEN step."""
        time.sleep(1.1)
        deadline = time.monotonic() + 5
        while True:
            info = self.get(namespace)
            if info.state != OPEN or time.monotonic() > deadline:
                assert info.state == HALF_OPEN, f"still {name(info.state)} after wait_in_open: {info}"
                return info
            time.sleep(0.05)

    # ---- CLOSED ----
    def test_unreported_breaker_admits_and_is_not_created(self):
        n = ns()
        info = self.get(n)
        assert not info.exists and info.state == CLOSED and info.calls == 0, info
        a = self.acquire(n)
        d = a.breakers[0]
        assert a.allowed and d.allowed and d.state == CLOSED and d.generation == 1, a
        assert secs(d.retry_after) == 0, a
        info = self.get(n)
        assert not info.exists, f"asking created state: {info}"
        assert info.half_open_calls == HALF_OPEN_CALLS, info

    def test_failures_open_it(self):
        n = ns()
        r = self.report(n, failures=3)
        assert r.accepted and r.state == CLOSED and r.generation == 1, "3 calls < minimum_calls 4"
        info = self.get(n)
        assert info.exists and info.calls == 3 and info.failures == 3, info
        r = self.report(n, successes=1, generation=1)
        assert r.accepted and r.state == OPEN and r.generation == 2, "3 of 4 failed: 75 % >= 50 %"
        info = self.get(n)
        assert info.state == OPEN and info.consecutive_opens == 1, info
        assert 0 < secs(info.retry_after) <= 1, info

    def test_under_the_threshold_stays_closed(self):
        n = ns()
        r = self.report(n, failures=4, successes=6)
        assert r.state == CLOSED, "40 % < 50 %"
        info = self.get(n)
        assert info.calls == 10 and abs(info.failure_rate - 40.0) < 1e-9, info

    # ---- OPEN ----
    def test_open_refuses_with_retry_after(self):
        n = ns()
        self.opened(n)
        a = self.acquire(n)
        d = a.breakers[0]
        assert not a.allowed and not d.allowed and d.state == OPEN, a
        assert 0 < secs(d.retry_after) <= 1, a
        assert 0 < secs(a.retry_after) <= 1, a

    def test_old_generation_report_is_ignored(self):
        n = ns()
        self.opened(n)
        r = self.report(n, successes=50, generation=1)
        assert not r.accepted and r.state == OPEN and r.generation == 2, r
        info = self.get(n)
        assert info.state == OPEN, info

    # ---- HALF_OPEN ----
    def test_half_open_grants_exact_permits_then_closes(self):
        n = ns()
        self.opened(n)
        self.until_half_open(n)
        answers = [self.acquire(n) for _ in range(10)]
        allowed = [a.allowed for a in answers]
        assert sum(allowed) == HALF_OPEN_CALLS, allowed
        assert allowed == [True] * HALF_OPEN_CALLS + [False] * (10 - HALF_OPEN_CALLS), allowed
        assert all(a.breakers[0].state == HALF_OPEN for a in answers), answers
        assert all(secs(a.breakers[0].retry_after) > 0 for a in answers if not a.allowed), answers
        generation = answers[0].breakers[0].generation
        assert generation == 3, answers[0]
        info = self.get(n)
        assert info.state == HALF_OPEN and info.trial_permits_in_flight == HALF_OPEN_CALLS, info

        # A released permit is granted again, exactly once.
        r = self.report(n, released=1, generation=generation)
        assert r.accepted and r.state == HALF_OPEN, r
        assert self.get(n).trial_permits_in_flight == HALF_OPEN_CALLS - 1
        again = [self.acquire(n).allowed for _ in range(5)]
        assert again == [True, False, False, False, False], again

        # Both trials succeed: CLOSED with an empty window, for the next caller too.
        r = self.report(n, successes=2, generation=generation)
        assert r.accepted and r.state == CLOSED and r.generation == generation + 1, r
        info = self.get(n)
        assert info.state == CLOSED and info.calls == 0 and info.consecutive_opens == 0, info
        a = self.acquire(n)
        assert a.allowed and a.breakers[0].state == CLOSED, a

    def test_failed_trials_reopen_it(self):
        n = ns()
        self.opened(n)
        generation = self.until_half_open(n).generation
        assert [self.acquire(n).allowed for _ in range(3)] == [True, True, False]
        r = self.report(n, failures=2, generation=generation)
        assert r.accepted and r.state == OPEN and r.generation == generation + 1, r
        assert self.get(n).consecutive_opens == 2

    # ---- operator overrides ----
    def test_set_state_overrides(self):
        n = ns()
        info = self.set_state(n, FORCED_OPEN)
        assert info.state == FORCED_OPEN and info.exists, info
        a = self.acquire(n)
        assert not a.allowed and a.breakers[0].state == FORCED_OPEN, a
        # Failures do not move a forced state.
        self.report(n, successes=10)
        assert self.get(n).state == FORCED_OPEN
        for state in (DISABLED, METRICS_ONLY):
            assert self.set_state(n, state).state == state
            a = self.acquire(n)
            assert a.allowed and a.breakers[0].state == state, a
        info = self.set_state(n, CLOSED)
        assert info.state == CLOSED and info.calls == 0, info
        self.expect_error(grpc.StatusCode.INVALID_ARGUMENT, "state:", lambda: self.set_state(n, UNSPECIFIED))

    # ---- Watch ----
    def test_watch_sees_current_state_then_transitions(self):
        n = ns()
        other = connect(self.target)
        events = queue.Queue()
        call = self.cb.Watch(cb.WatchBreakersRequest(namespace=n, breakers=[BREAKER]), timeout=30)

        def read():
            try:
                for e in call:
                    events.put(e)
            except grpc.RpcError as e:
                if e.code() != grpc.StatusCode.CANCELLED:
                    events.put(e)

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        try:
            first = events.get(timeout=5)
            assert not isinstance(first, Exception), first
            assert (first.breaker, first.namespace) == (BREAKER, n), first
            assert getattr(first, "from") == UNSPECIFIED, first  # `from` is a Python keyword
            assert (first.to, first.reason, first.generation) == (CLOSED, "current", 1), first
            # A transition made through another connection reaches this stream.
            started = time.monotonic()
            self.set_state(n, FORCED_OPEN, stub=cb_grpc.CircuitBreakersStub(other))
            try:
                e = events.get(timeout=2)
            except queue.Empty:
                raise AssertionError("no transition on the Watch stream within 2 s") from None
            assert not isinstance(e, Exception), e
            assert (e.breaker, getattr(e, "from"), e.to, e.reason) == (BREAKER, CLOSED, FORCED_OPEN, "set_state"), e
            assert e.generation == 2 and e.at.seconds > 0, e
            assert time.monotonic() - started < 2
            # And transitions made by reports, with the time until trials are let through.
            self.set_state(n, CLOSED, stub=cb_grpc.CircuitBreakersStub(other))
            e = events.get(timeout=2)
            assert (getattr(e, "from"), e.to) == (FORCED_OPEN, CLOSED), e
            self.report(n, failures=4)
            e = events.get(timeout=2)
            assert (getattr(e, "from"), e.to, e.reason) == (CLOSED, OPEN, "failure_rate"), e
            assert 0 < secs(e.retry_after) <= 1, e
        finally:
            call.cancel()
            other.close()
            reader.join(timeout=5)

    def test_watch_refuses_bad_requests(self):
        def watch(breakers):
            return lambda: next(iter(self.cb.Watch(cb.WatchBreakersRequest(namespace=ns(), breakers=breakers), timeout=TIMEOUT)))

        self.expect_error(grpc.StatusCode.INVALID_ARGUMENT, "breakers:", watch([]))
        self.expect_error(grpc.StatusCode.INVALID_ARGUMENT, "breakers[1]", watch([BREAKER, BREAKER]))
        self.expect_error(grpc.StatusCode.NOT_FOUND, "breakers[0]", watch(["nope"]))

    # ---- History and List ----
    def test_history_newest_first(self):
        n = ns()
        assert self.history(n) == [], "no transitions yet"
        self.opened(n)  # CLOSED -> OPEN (failure_rate)
        for state in (FORCED_OPEN, DISABLED, CLOSED):
            self.set_state(n, state)
        events = self.history(n)
        got = [(getattr(e, "from"), e.to, e.reason) for e in events]
        assert got == [
            (DISABLED, CLOSED, "set_state"),
            (FORCED_OPEN, DISABLED, "set_state"),
            (OPEN, FORCED_OPEN, "set_state"),
            (CLOSED, OPEN, "failure_rate"),
        ], got
        assert [e.generation for e in events] == [5, 4, 3, 2], events
        at = [e.at.seconds * 10**9 + e.at.nanos for e in events]
        assert at == sorted(at, reverse=True), at
        assert all(e.breaker == BREAKER and e.namespace == n for e in events), events
        assert [e.to for e in self.history(n, limit=2)] == [CLOSED, DISABLED]

    def test_list_includes_configured_breakers(self):
        n = ns()
        listed = self.cb.List(cb.ListBreakersRequest(namespace=n), timeout=TIMEOUT).breakers
        by_name = {b.breaker: b for b in listed}
        assert BREAKER in by_name, listed
        assert by_name[BREAKER].state == CLOSED and not by_name[BREAKER].exists, listed
        self.opened(n)
        listed = self.cb.List(cb.ListBreakersRequest(namespace=n), timeout=TIMEOUT).breakers
        by_name = {b.breaker: b for b in listed}
        assert by_name[BREAKER].state == OPEN and by_name[BREAKER].exists, listed
        # Every transition starts an empty window (README, "Generations").
        assert by_name[BREAKER].generation == 2 and by_name[BREAKER].calls == 0, listed

    # ---- errors ----
    def test_invalid_reports_name_the_field(self):
        n = ns()
        report = lambda **kw: lambda: self.report(n, **kw)  # noqa: E731
        self.expect_error(
            grpc.StatusCode.INVALID_ARGUMENT, "reports[0].slow_calls", report(successes=1, failures=1, slow_calls=3)
        )
        self.expect_error(grpc.StatusCode.INVALID_ARGUMENT, "reports[0].breaker", report(breaker="bad name"))
        empty = cb.ReportRequest(namespace=n, reports=[])
        self.expect_error(grpc.StatusCode.INVALID_ARGUMENT, "reports", lambda: self.cb.Report(empty, timeout=TIMEOUT))
        bad_ns = cb.GetBreakerRequest(namespace="bad:ns", breaker=BREAKER)
        self.expect_error(grpc.StatusCode.INVALID_ARGUMENT, "namespace:", lambda: self.cb.Get(bad_ns, timeout=TIMEOUT))
        assert not self.get(n).exists, "a refused report wrote state"

    def test_unconfigured_breaker_is_not_found(self):
        n = ns()
        for call in (
            lambda: self.get(n, breaker="nope"),
            lambda: self.report(n, breaker="nope", failures=1),
            lambda: self.set_state(n, FORCED_OPEN, breaker="nope"),
            lambda: self.history(n, breaker="nope"),
        ):
            details = self.expect_error(grpc.StatusCode.NOT_FOUND, "nope", call)
            assert "[breakers.nope]" in details, details
        self.expect_error(grpc.StatusCode.NOT_FOUND, "breakers[0]", lambda: self.acquire(n, breaker="nope"))

    # ---- standard services ----
    def test_reflection_lists_circuit_breakers(self):
        from google.protobuf import descriptor_pool
        from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

        db = ProtoReflectionDescriptorDatabase(self.channel)
        services = set(db.get_services())
        assert "floodgate.v1.CircuitBreakers" in services, services
        # The service's descriptor, fetched through reflection, lists every method.
        pool = descriptor_pool.DescriptorPool(db)
        service = pool.FindServiceByName("floodgate.v1.CircuitBreakers")
        methods = {m.name for m in service.methods}
        assert {"Report", "Get", "List", "SetState", "Watch", "History"} <= methods, methods


def main():
    run_suite(Suite, __doc__)


if __name__ == "__main__":
    main()
