"""The outbound URL guard (sms_pipeline.http): which URLs and addresses a producer may make us call.

Private, link-local and metadata addresses are checked through the validation and
resolution functions with a stub resolver: nothing here ever connects.
"""

from __future__ import annotations

import ipaddress

import pytest

from sms_pipeline import http


def stub(*addresses: str) -> http.Resolver:
    def resolve(_host: str, _port: int) -> list[str]:
        return list(addresses)

    return resolve


def never_called(_host: str, _port: int) -> list[str]:
    raise AssertionError("an IP literal must not be resolved")


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:6379/",
        "http://[::1]:5555/",
        "http://169.254.169.254/latest/meta-data/",
        "http://[fd00:ec2::254]/",
        "http://10.0.0.5/",
        "http://172.16.3.4/",
        "http://192.168.1.1/",
        "http://100.64.0.1/",
        "http://169.254.10.10/",
        "http://[fe80::1]/",
        "http://[fc00::1]/",
        "http://0.0.0.0/",
        "http://[::]/",
        "http://224.0.0.1/",
        "http://240.0.0.1/",
        "http://[::ffff:127.0.0.1]/",
        "http://[::ffff:169.254.169.254]/",
        "http://[2002:7f00:1::]/",
        "http://[64:ff9b::a00:1]/",
    ],
)
def test_forbidden_address_literals_are_refused(url: str) -> None:
    with pytest.raises(http.UnsafeUrlError):
        http.check_url(url, allow_private=False, resolver=stub("93.184.215.14"))


@pytest.mark.parametrize("url", ["http://2130706433/", "http://0x7f.1/", "http://127.1/"])
def test_numeric_spellings_of_loopback_are_refused_after_resolution(url: str) -> None:
    # getaddrinfo reads these numeric forms locally (no DNS query): they become 127.0.0.1.
    with pytest.raises(http.UnsafeUrlError):
        http.check_url(url, allow_private=False)


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.org/",
        "file:///etc/passwd",
        "gopher://example.org/",
        "http://localhost@evil.example/",
        "http://user:pw@example.org/",
        "http:///nohost",
        "http://example.org:99999/",
        "http://exa mple.org/",
        "https://example.org/\r\nX-Injected: 1",
        "http://example.org/" + "a" * 2000,
    ],
)
def test_urls_that_are_not_plain_http_are_refused(url: str) -> None:
    with pytest.raises(http.UnsafeUrlError):
        http.check_url(url, allow_private=False, resolver=stub("93.184.215.14"))


@pytest.mark.parametrize(
    "resolved",
    [
        ("127.0.0.1",),
        ("10.1.2.3",),
        ("169.254.169.254",),
        ("93.184.215.14", "127.0.0.1"),  # one bad address is enough
        ("::ffff:10.0.0.1",),
        ("fe80::1%eth0",),
    ],
)
def test_a_name_resolving_to_a_forbidden_address_is_refused(resolved: tuple[str, ...]) -> None:
    # Compose service names (postgres, redis) resolve to private addresses this way.
    with pytest.raises(http.UnsafeUrlError):
        http.check_url("http://postgres:5432/", allow_private=False, resolver=stub(*resolved))


def test_a_public_name_and_public_literals_are_accepted() -> None:
    target = http.check_url(
        "https://hooks.example.org/sms?token=abc",
        allow_private=False,
        resolver=stub("93.184.215.14"),
    )
    assert (target.scheme, target.host, target.port, target.path) == (
        "https",
        "hooks.example.org",
        443,
        "/sms?token=abc",
    )
    http.check_url("http://8.8.8.8/x", allow_private=False, resolver=never_called)
    http.check_url("http://[2606:4700::1111]/x", allow_private=False, resolver=never_called)


def test_allow_private_lets_on_premise_receivers_through_but_never_the_metadata_address() -> None:
    for url in ("http://127.0.0.1:9000/", "http://10.0.0.5/", "http://[::1]/"):
        http.check_url(url, allow_private=True, resolver=never_called)
    for url in ("http://169.254.169.254/", "http://0.0.0.0/", "http://[::ffff:127.0.0.1]/"):
        with pytest.raises(http.UnsafeUrlError):
            http.check_url(url, allow_private=True, resolver=never_called)


# Metadata and provider-internal services, in every spelling that reaches them: refused
# whatever SMS_CALLBACK_ALLOW_PRIVATE says (issue 32: 192.0.0.192 and 168.63.129.16 passed
# the interpreter's tables; 169.254.170.2 and 100.100.100.200 passed with allow_private).
PROVIDER_INTERNAL = [
    "192.0.0.192",  # Oracle Cloud metadata
    "168.63.129.16",  # Azure WireServer
    "169.254.170.2",  # AWS ECS task credentials
    "100.100.100.200",  # Alibaba Cloud metadata
    "169.254.169.254",  # AWS, GCP, Azure IMDS
    "169.254.170.23",  # AWS EKS pod identity
]
PROVIDER_INTERNAL_V6 = ["fd00:ec2::254", "fd00:ec2::23"]


def _ipv6_forms(v4: str) -> list[str]:
    packed = int(ipaddress.IPv4Address(v4))
    return [
        f"::ffff:{v4}",  # IPv4-mapped
        str(ipaddress.IPv6Address((0xFFFF << 32) | packed)),  # the same, hex spelling
        f"64:ff9b::{v4}",  # NAT64 well-known prefix
        str(ipaddress.IPv6Address((0x0064FF9B0001 << 80) | packed)),  # NAT64 local-use
        str(ipaddress.IPv6Address((0x2002 << 112) | (packed << 80))),  # 6to4
        f"::{v4}",  # IPv4-compatible (deprecated)
    ]


@pytest.mark.parametrize(
    "address",
    PROVIDER_INTERNAL
    + PROVIDER_INTERNAL_V6
    + [form for v4 in PROVIDER_INTERNAL for form in _ipv6_forms(v4)],
)
@pytest.mark.parametrize("allow_private", [False, True])
def test_metadata_and_provider_internal_addresses_are_refused_even_with_allow_private(
    address: str, allow_private: bool
) -> None:
    with pytest.raises(http.UnsafeUrlError):
        http.check_address(address, allow_private=allow_private)
    literal = f"[{address}]" if ":" in address else address
    with pytest.raises(http.UnsafeUrlError):
        http.check_url(f"http://{literal}/", allow_private=allow_private, resolver=never_called)
    with pytest.raises(http.UnsafeUrlError):  # a name resolving to it (stub: never connects)
        http.check_url("http://hooks.example/", allow_private=allow_private, resolver=stub(address))


def test_an_unresolvable_host_is_a_transient_failure_not_an_unsafe_url() -> None:
    def fails(_host: str, _port: int) -> list[str]:
        raise OSError("no such host")

    with pytest.raises(http.OutboundError) as caught:
        http.check_url("http://nowhere.invalid/", allow_private=False, resolver=fails)
    assert not isinstance(caught.value, http.UnsafeUrlError)
    assert not caught.value.permanent


def test_delivery_refuses_a_private_address_without_connecting() -> None:
    # DNS rebinding: the name resolved to a public address at enqueue, now to metadata.
    with pytest.raises(http.UnsafeUrlError):
        http.post(
            "http://rebind.example/",
            b"{}",
            {},
            deadline_seconds=1,
            resolver=stub("169.254.169.254"),
        )
