"""The self-signed CA and server certificate, checked by real TLS handshakes in memory (ssl's
MemoryBIO: no socket, no process): valid for exactly the allowed hosts, stable, renewable."""

from __future__ import annotations

import ssl
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509

from mlflow_stack import tls
from mlflow_stack.errors import StackError

HOSTS = ("localhost", "127.0.0.1", "mlflow.internal")


def handshake(files: tls.TlsFiles, server_name: str, **client_options) -> None:
    """A TLS handshake between a server using `files` and a client trusting files.trust."""
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(files.certificate, files.key)
    client = ssl.create_default_context(cafile=str(files.trust))
    for key, value in client_options.items():
        setattr(client, key, value)
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    client_side = client.wrap_bio(c_in, c_out, server_hostname=server_name)
    server_side = server.wrap_bio(s_in, s_out, server_side=True)
    for _ in range(10):
        done = 0
        for side, outgoing, incoming in ((client_side, c_out, s_in), (server_side, s_out, c_in)):
            try:
                side.do_handshake()
                done += 1
            except ssl.SSLWantReadError:
                pass
            incoming.write(outgoing.read())
        if done == 2:
            return
    raise AssertionError("handshake did not finish")


def test_the_certificate_names_exactly_the_allowed_hosts(tmp_path):
    files = tls.ensure_self_signed(tmp_path, "demo", HOSTS)
    for host in HOSTS:
        handshake(files, host)
    with pytest.raises(ssl.SSLCertVerificationError, match="match|mismatch"):
        handshake(files, "evil.example")
    leaf = x509.load_pem_x509_certificate(files.certificate.read_bytes())
    assert tls.names_of(leaf) == set(HOSTS)
    assert (leaf.not_valid_after_utc - leaf.not_valid_before_utc).days <= 398
    for path, mode in ((files.key, 0o600), (tmp_path / "ca.key", 0o600), (files.trust, 0o644)):
        assert path.stat().st_mode & 0o777 == mode, path


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning")
def test_tls_below_1_2_is_refused(tmp_path):
    files = tls.ensure_self_signed(tmp_path, "demo", HOSTS)
    with pytest.raises(ssl.SSLError):
        handshake(
            files,
            "localhost",
            minimum_version=ssl.TLSVersion.TLSv1,
            maximum_version=ssl.TLSVersion.TLSv1_1,
        )


def test_stable_across_renders_reissued_when_hosts_change_or_on_renew(tmp_path):
    first = tls.ensure_self_signed(tmp_path, "demo", HOSTS)
    ca, cert = first.trust.read_bytes(), first.certificate.read_bytes()
    again = tls.ensure_self_signed(tmp_path, "demo", HOSTS)
    assert again.certificate.read_bytes() == cert and again.trust.read_bytes() == ca

    more = tls.ensure_self_signed(tmp_path, "demo", (*HOSTS, "mlflow.example.com"))
    assert more.certificate.read_bytes() != cert and more.trust.read_bytes() == ca
    handshake(more, "mlflow.example.com")

    renewed = tls.ensure_self_signed(tmp_path, "demo", HOSTS, renew=True)
    assert renewed.trust.read_bytes() == ca
    later = datetime.now(UTC) + timedelta(days=tls.SERVER_DAYS - 10)
    assert tls.needs_new_server_certificate(renewed.certificate.read_bytes(), HOSTS, later)

    new_ca = tls.ensure_self_signed(tmp_path, "demo", HOSTS, new_ca=True)
    assert new_ca.trust.read_bytes() != ca
    handshake(new_ca, "localhost")


def test_user_files_must_be_a_certificate_and_its_key(tmp_path):
    mine = tls.ensure_self_signed(tmp_path / "a", "x", HOSTS)
    other = tls.ensure_self_signed(tmp_path / "b", "y", HOSTS)
    assert tls.user_files(str(mine.certificate), str(mine.key)).key == mine.key
    with pytest.raises(StackError, match="is not the key of"):
        tls.user_files(str(mine.certificate), str(other.key))
    with pytest.raises(StackError, match="No such file"):
        tls.user_files(str(tmp_path / "none.crt"), str(mine.key))
    with pytest.raises(StackError, match="no allowed_hosts"):
        tls.issue_server(b"", b"", (), datetime.now(UTC))


def test_a_tls_profile_renders_https_on_both_runtimes_with_keys_out_of_argv(
    stack_home, monkeypatch
):
    import yaml

    from mlflow_stack.endpoints import Endpoints
    from tests.rendering import render_with, service_argv

    profile = render_with(stack_home, monkeypatch, "ci", MLFLOW_STACK_TLS="self-signed")
    folder = profile.layout.tls_dir
    key = (folder / "server.key").read_text()
    assert (folder / "server.key").stat().st_mode & 0o777 == 0o600
    endpoints = Endpoints.of(profile)
    assert endpoints.mlflow_url.startswith("https://127.0.0.1:")
    assert endpoints.server_certificate == str(folder / "ca.crt")

    compose = yaml.safe_load(profile.layout.compose_file.read_text())
    mlflow = compose["services"]["mlflow"]
    argv = service_argv(mlflow)
    assert "--ssl-keyfile /mlflow/config/tls.key --ssl-certfile /mlflow/config/tls.crt" in argv
    assert "https://127.0.0.1:" in argv and key not in argv
    assert mlflow["environment"]["MLFLOW_STACK_TLS_KEY_PEM"] == key
    supervisord = profile.layout.supervisord_conf.read_text()
    assert f"--ssl-keyfile {folder / 'server.key'}" in supervisord and key not in supervisord

    # Stable across renders: the CA clients trust does not change.
    ca = (folder / "ca.crt").read_bytes()
    render_with(stack_home, monkeypatch, "ci", MLFLOW_STACK_TLS="self-signed")
    assert (folder / "ca.crt").read_bytes() == ca


def _answer(scheme: str, headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """The response headers SecureTransport lets out, around an app answering `headers`."""
    import asyncio

    from mlflow_stack.auth.transport import SecureTransport

    sent: list[dict] = []

    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"OK"})

    async def send(message):
        sent.append(message)

    async def receive():
        return {"type": "http.request"}

    scope = {"type": "http", "scheme": scheme, "path": "/health", "method": "GET"}
    asyncio.run(SecureTransport(app)(scope, receive, send))
    return sent[0]["headers"]


def test_every_https_answer_has_hsts_and_only_secure_cookies():
    cookie = (b"set-cookie", b"session=abc; Path=/; HttpOnly")
    secured = dict(_answer("https", [cookie]))
    assert secured[b"strict-transport-security"] == b"max-age=31536000"
    assert secured[b"set-cookie"] == b"session=abc; Path=/; HttpOnly; Secure"
    already = _answer("https", [(b"set-cookie", b"a=1; Secure"), *[]])
    assert dict(already)[b"set-cookie"] == b"a=1; Secure"
    # Plain HTTP (a profile without TLS): nothing is added.
    assert _answer("http", [cookie]) == [cookie]
