"""The body of `invoke tls.renew`: a new server certificate (and with --ca a new CA)."""

from __future__ import annotations

from cryptography import x509

from mlflow_stack import tls
from mlflow_stack.errors import StackError
from mlflow_stack.profile import load_profile
from mlflow_stack.render import render_profile


def renew(profile_name: str, new_ca: bool = False) -> None:
    profile = load_profile(profile_name)
    if profile.tls != "self-signed":
        raise StackError(
            f"profile {profile.name} has tls = {profile.tls!r}: tls.renew issues certificates "
            'for tls = "self-signed" only'
        )
    files = tls.ensure_self_signed(
        profile.layout.tls_dir, profile.name, profile.allowed_hosts, renew=True, new_ca=new_ca
    )
    # The compose file carries the certificate to the container: render it again.
    render_profile(profile)
    leaf = x509.load_pem_x509_certificate(files.certificate.read_bytes())
    hosts = ", ".join(sorted(tls.names_of(leaf)))
    print(
        f"issued a server certificate for {hosts}, valid until "
        f"{leaf.not_valid_after_utc:%Y-%m-%d}; `invoke restart -p {profile.name}` serves it"
    )
    if new_ca:
        print(
            f"new CA {files.trust}: clients must trust it again "
            f'(`eval "$(invoke env -p {profile.name})"` exports MLFLOW_TRACKING_SERVER_CERT_PATH)'
        )
