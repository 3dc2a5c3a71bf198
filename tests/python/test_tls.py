#!/usr/bin/env python3
"""An independent client of floodgate over TLS: Python grpcio, stubs compiled from proto/ at
run time.

Usage: test_tls.py --server HOST:PORT --ca CA.pem --client-cert C.pem --client-key K.pem
                   --other-ca OTHER-CA.pem --other-cert OC.pem --other-key OK.pem

The server serves TLS with a certificate signed by --ca and requires client certificates
signed by --ca (mutual TLS). Checks that a client presenting a certificate of that CA is
served (Acquire, health), and that every other connection is refused before any RPC runs:
no client certificate, a client certificate of --other-ca, a client that does not trust the
server's CA, and plain text to the TLS port. Prints "N passed, M failed" last and exits
non-zero on any failure.

Needs: python3 -m pip install -r tests/python/requirements.txt
"""
from floodgate_stubs import compile_protos, run_suite  # noqa: E402 (this folder)

compile_protos()

import grpc  # noqa: E402
from floodgate.v1 import rate_limiter_pb2 as rl  # noqa: E402
from floodgate.v1 import rate_limiter_pb2_grpc as rl_grpc  # noqa: E402

TIMEOUT = 10


def read(path):
    with open(path, "rb") as f:
        return f.read()


class Suite:
    def __init__(self, target, ca, client_cert, client_key, other_ca, other_cert, other_key):
        self.target = target
        self.ca, self.other_ca = read(ca), read(other_ca)
        self.cert, self.key = read(client_cert), read(client_key)
        self.other_cert, self.other_key = read(other_cert), read(other_key)

    def channel(self, root, key=None, cert=None):
        creds = grpc.ssl_channel_credentials(root_certificates=root, private_key=key,
                                             certificate_chain=cert)
        # The server's certificate names localhost and 127.0.0.1.
        return grpc.secure_channel(self.target, creds,
                                   options=(("grpc.ssl_target_name_override", "localhost"),))

    @staticmethod
    def acquire(channel):
        req = rl.AcquireRequest(namespace="py-tls",
                                checks=[rl.LimitCheck(key="k", cost=1, policy_name="api")])
        return rl_grpc.RateLimiterStub(channel).Acquire(req, timeout=TIMEOUT)

    def refused(self, channel, why):
        try:
            self.acquire(channel)
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.UNAVAILABLE, f"{why}: {e.code()} {e.details()}"
            return
        finally:
            channel.close()
        raise AssertionError(f"{why}: the call was served")

    def test_a_trusted_client_certificate_is_served(self):
        with self.channel(self.ca, self.key, self.cert) as ch:
            r = self.acquire(ch)
            assert r.allowed and not r.degraded, r
            from grpc_health.v1 import health_pb2, health_pb2_grpc
            h = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=""),
                                                    timeout=TIMEOUT)
            assert h.status == health_pb2.HealthCheckResponse.SERVING, h

    def test_no_client_certificate_is_refused(self):
        self.refused(self.channel(self.ca), "no client certificate")

    def test_a_client_certificate_of_another_ca_is_refused(self):
        self.refused(self.channel(self.ca, self.other_key, self.other_cert),
                     "a client certificate the server does not trust")

    def test_a_client_that_does_not_trust_the_server_refuses(self):
        self.refused(self.channel(self.other_ca, self.key, self.cert),
                     "a server certificate the client does not trust")

    def test_plain_text_to_the_tls_port_is_refused(self):
        self.refused(grpc.insecure_channel(self.target), "plain text")


if __name__ == "__main__":
    run_suite(Suite, __doc__, options=(
        ("ca", "CA that signed the server's and the client's certificate (PEM)"),
        ("client_cert", "client certificate signed by --ca"),
        ("client_key", "its key"),
        ("other_ca", "a CA the server does not trust"),
        ("other_cert", "a client certificate signed by --other-ca"),
        ("other_key", "its key"),
    ))
