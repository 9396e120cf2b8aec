"""`tls:` at load (what `-t` and a reload check): files, the key against its certificate,
expiry, servers sharing an address; and the contexts built from it."""

from __future__ import annotations

import datetime
import ssl
from pathlib import Path

import pytest
import yaml

from edgeproxy.config import parse_config
from edgeproxy.config.model import TlsConfig
from edgeproxy.config.tls import expired_certificates, not_after
from edgeproxy.errors import ConfigError
from edgeproxy.server.tls import server_context
from tests.tls_certs import TestCA, first_der


@pytest.fixture
def ca(tmp_path: Path) -> TestCA:
    return TestCA(tmp_path)


def config(tls: str, more: str = "") -> str:
    # tls: is on line 5
    return (
        "upstreams: {}\nservers:\n  - listen: '127.0.0.1:8443'\n    server_name: [a.example]\n"
        f"    tls: {tls}\n    locations: [{{path: /, return: {{status: 204}}}}]\n{more}"
    )


def error(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "t.yaml")
    return str(info.value)


def test_a_certificate_chain_and_its_key_load(ca: TestCA) -> None:
    pair = ca.issue("a.example")
    loaded = parse_config(config(pair.yaml()), "t.yaml")
    assert loaded.servers[0].tls == TlsConfig(str(pair.certificate), str(pair.key))


def test_a_missing_or_unreadable_file_is_an_error_at_its_key(ca: TestCA, tmp_path: Path) -> None:
    pair = ca.issue("a.example")
    missing = tmp_path / "missing.pem"
    text = config(f"{{certificate: {missing}, key: {pair.key}}}")
    assert error(text) == (
        f"t.yaml:5: servers[0].tls.certificate: cannot read {missing}: No such file or directory"
    )
    text = config(f"{{certificate: {pair.certificate}, key: {tmp_path}}}")  # a directory
    assert error(text) == f"t.yaml:5: servers[0].tls.key: cannot read {tmp_path}: Is a directory"
    text = config(f"{{certificate: {pair.certificate}}}")
    assert error(text) == "t.yaml:5: servers[0].tls.key: required"


def test_a_key_that_does_not_match_its_certificate_is_an_error(ca: TestCA) -> None:
    a, b = ca.issue("a.example"), ca.issue("b.example")
    text = config(f"{{certificate: {a.certificate},\n          key: {b.key}}}")
    assert error(text) == (
        f"t.yaml:6: servers[0].tls.key: {b.key} does not match the certificate {a.certificate}"
    )


def test_a_file_without_a_certificate_is_an_error(ca: TestCA) -> None:
    a = ca.issue("a.example")
    text = config(f"{{certificate: {a.key}, key: {a.key}}}")
    assert error(text) == f"t.yaml:5: servers[0].tls.certificate: no PEM certificate in {a.key}"


def test_an_expired_certificate_loads_and_is_found_with_its_key_and_line(ca: TestCA) -> None:
    past = datetime.datetime(2020, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)
    expired = ca.issue("a.example", not_after=past)
    assert not_after(first_der(expired.leaf_pem)) == past.timestamp()
    loaded = parse_config(config(expired.yaml()), "t.yaml")  # not refused
    assert expired_certificates(loaded) == [
        f"t.yaml:5: servers[0].tls.certificate: {expired.certificate} expired on "
        "2020-01-02 03:04:05 UTC"
    ]
    valid = parse_config(config(ca.issue("b.example").yaml()), "t.yaml")
    assert expired_certificates(valid) == []
    assert expired_certificates(valid, now=datetime.datetime(3001, 1, 1).timestamp()) != []


def test_not_after_reads_both_time_encodings(ca: TestCA) -> None:
    # X.509 writes dates before 2050 as UTCTime (two-digit year), later as GeneralizedTime.
    for year in (2049, 2050, 2061):
        when = datetime.datetime(year, 6, 7, 8, 9, 10, tzinfo=datetime.UTC)
        pair = ca.issue("a.example", not_after=when, tag=str(year))
        assert not_after(first_der(pair.leaf_pem)) == when.timestamp()
    assert not_after(b"\x30\x03\x02\x01\x00") is None  # not a certificate: no date


def test_tls_and_plain_servers_cannot_share_an_address(ca: TestCA) -> None:
    plain = (
        "  - listen: '127.0.0.1:8443'\n    server_name: [b.example]\n"
        "    locations: [{path: /, return: {status: 204}}]\n"
    )
    assert error(config(ca.issue("a.example").yaml(), plain)) == (
        "t.yaml:7: servers[1].listen: 127.0.0.1:8443 is served with tls by another server"
    )


def test_the_context_follows_the_intermediate_policy(ca: TestCA) -> None:
    pair = ca.issue("a.example")
    context = server_context(TlsConfig(str(pair.certificate), str(pair.key)))
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert context.options & ssl.OP_NO_COMPRESSION
    assert not context.options & ssl.OP_NO_TICKET  # session tickets for resumption
    tls12 = {c["name"] for c in context.get_ciphers() if c["protocol"] == "TLSv1.2"}
    assert tls12 and all(name.startswith("ECDHE-") for name in tls12)
    assert not any("CBC" in name or name[-3:] == "SHA" for name in tls12)


def test_the_contracts_tls_server_loads_with_real_files(ca: TestCA, tmp_path: Path) -> None:
    from tests.unit.test_config import EXAMPLE

    contract = yaml.safe_load(EXAMPLE.read_text())
    server = next(s for s in contract["servers"] if "tls" in s)
    assert set(server["tls"]) == {"certificate", "key"}
    pair = ca.issue("example.com")
    server["tls"] = {"certificate": str(pair.certificate), "key": str(pair.key)}
    doc = {"upstreams": {"app": {"servers": ["127.0.0.1:8001"]}}, "servers": [server]}
    loaded = parse_config(yaml.safe_dump(doc), "t.yaml")
    assert loaded.servers[0].tls == TlsConfig(str(pair.certificate), str(pair.key))
    assert loaded.servers[0].server_name == ("example.com",)
