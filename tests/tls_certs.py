"""A throw-away PKI for the mutual-TLS tests, made with the ``openssl`` command (as ``fhir_server.make_pki``):

    pki = make_tls_pki(tmp_path)
    pki.server_cert, pki.server_key          # for 127.0.0.1 and localhost, issued by pki.ca_cert
    pki.good                                 # a client certificate the CA issued, valid now
    pki.revoked, pki.crl                     # one the CA revoked, and the CA's CRL that says so
    pki.crl_before_revocation                # the CA's CRL from before that revocation (lists nothing)
    pki.expired                              # one the CA issued, valid only in 2020
    pki.other_ca_client                      # one from pki.other_ca_cert, a CA the server does not trust
    pki.unlisted                             # one the CA issued whose subject is on no allow-list

The revoked, expired and other-CA clients have the good client's subject, so that only revocation, expiry or
the issuer can explain their refusal. Certificates are issued with ``openssl ca``, whose ``-startdate`` and
``-enddate`` take any dates (``openssl x509 -days`` cannot go into the past), and whose database of issued
certificates is what ``-revoke`` and ``-gencrl`` work from. Keys are P-256; everything valid now lasts three days.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from unavailable import unavailable

#: The DN of the good client, and of the revoked, expired and other-CA clients (``openssl -subj`` form).
CLIENT_SUBJECT = "/C=GB/O=NHS111 adaptor tests/CN=good-client.test"
#: The same name as RFC 4514 writes it: the form ``PEM111_TLS_CLIENT_SUBJECTS`` takes.
CLIENT_DN = "CN=good-client.test,O=NHS111 adaptor tests,C=GB"
UNLISTED_SUBJECT = "/C=GB/O=NHS111 adaptor tests/CN=unlisted-client.test"
UNLISTED_DN = "CN=unlisted-client.test,O=NHS111 adaptor tests,C=GB"

EXPIRED_START, EXPIRED_END = "20200101000000Z", "20200102000000Z"

_CA_CONFIG = """\
[ca]
default_ca = this_ca

[this_ca]
dir = {dir}
certificate = $dir/ca.pem
private_key = $dir/ca.key
database = $dir/index.txt
new_certs_dir = $dir/issued
serial = $dir/serial
crlnumber = $dir/crlnumber
default_md = sha256
default_days = 3
default_crl_days = 3
policy = any_name
preserve = yes
unique_subject = no
copy_extensions = none
email_in_dn = no

[any_name]
countryName = optional
organizationName = optional
organizationalUnitName = optional
commonName = supplied

[req]
distinguished_name = dn
prompt = no
[dn]
CN = unused

[ca_extensions]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash

[server]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1, DNS:localhost
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid

[client]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
"""


@dataclass(frozen=True)
class KeyPair:
    """A certificate and its private key (PEM files)."""

    cert: Path
    key: Path

    def as_requests_cert(self) -> tuple[str, str]:
        """The form ``requests``' ``cert=`` takes."""
        return (str(self.cert), str(self.key))


@dataclass(frozen=True)
class TlsPki:
    ca_cert: Path
    other_ca_cert: Path
    server_cert: Path
    server_key: Path
    good: KeyPair
    revoked: KeyPair
    expired: KeyPair
    unlisted: KeyPair
    other_ca_client: KeyPair
    crl: Path
    crl_before_revocation: Path


class _Ca:
    """One CA: a folder with its key, certificate, ``openssl ca`` configuration and database."""

    def __init__(self, openssl: str, folder: Path, name: str) -> None:
        self.openssl = openssl
        self.folder = folder / name
        (self.folder / "issued").mkdir(parents=True)
        (self.folder / "index.txt").write_text("")
        (self.folder / "serial").write_text("1000\n")
        (self.folder / "crlnumber").write_text("1000\n")
        self.config = self.folder / "openssl.cnf"
        self.config.write_text(_CA_CONFIG.format(dir=self.folder))
        self.cert = self.folder / "ca.pem"
        self.key = self.folder / "ca.key"
        self.run("req", "-x509", "-new", "-config", str(self.config), "-extensions", "ca_extensions",
                 *_new_key(self.key), "-days", "3", "-subj", f"/O=NHS111 adaptor tests/CN={name}",
                 "-out", str(self.cert))  # fmt: skip

    def run(self, *args: str) -> None:
        subprocess.run([self.openssl, *args], check=True, capture_output=True, cwd=self.folder)

    def issue(
        self, folder: Path, name: str, subject: str, extensions: str, dates: tuple[str, str] | None = None
    ) -> KeyPair:
        pair = KeyPair(folder / f"{name}.pem", folder / f"{name}.key")
        request = folder / f"{name}.csr"
        self.run(
            "req", "-new", "-config", str(self.config), *_new_key(pair.key), "-subj", subject, "-out", str(request)
        )
        validity = ["-startdate", dates[0], "-enddate", dates[1]] if dates else ["-days", "3"]
        self.run("ca", "-batch", "-config", str(self.config), "-extensions", extensions, "-notext", *validity,
                 "-in", str(request), "-out", str(pair.cert))  # fmt: skip
        return pair

    def revoke(self, pair: KeyPair) -> None:
        self.run("ca", "-config", str(self.config), "-revoke", str(pair.cert), "-crl_reason", "keyCompromise")

    def crl(self, path: Path) -> Path:
        self.run("ca", "-config", str(self.config), "-gencrl", "-out", str(path))
        return path


def _new_key(path: Path) -> list[str]:
    return ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", str(path)]


def openssl_command() -> str:
    """The ``openssl`` command; a test that needs it fails under CI and is skipped elsewhere when it is missing."""
    openssl = shutil.which("openssl")
    if openssl is None:
        unavailable("the openssl command is needed to create test certificates")
    return openssl


def make_tls_pki(folder: Path) -> TlsPki:
    """Create the :class:`TlsPki` in ``folder``."""
    openssl = openssl_command()
    folder.mkdir(parents=True, exist_ok=True)
    ca = _Ca(openssl, folder, "nhs111-adaptor-test-ca")
    other_ca = _Ca(openssl, folder, "another-test-ca")
    server = ca.issue(folder, "server", "/CN=127.0.0.1", "server")
    good = ca.issue(folder, "good", CLIENT_SUBJECT, "client")
    revoked = ca.issue(folder, "revoked", CLIENT_SUBJECT, "client")
    expired = ca.issue(folder, "expired", CLIENT_SUBJECT, "client", dates=(EXPIRED_START, EXPIRED_END))
    unlisted = ca.issue(folder, "unlisted", UNLISTED_SUBJECT, "client")
    other_ca_client = other_ca.issue(folder, "other_ca_client", CLIENT_SUBJECT, "client")
    crl_before = ca.crl(folder / "crl-before-revocation.pem")
    ca.revoke(revoked)
    crl = ca.crl(folder / "crl.pem")
    return TlsPki(
        ca_cert=ca.cert,
        other_ca_cert=other_ca.cert,
        server_cert=server.cert,
        server_key=server.key,
        good=good,
        revoked=revoked,
        expired=expired,
        unlisted=unlisted,
        other_ca_client=other_ca_client,
        crl=crl,
        crl_before_revocation=crl_before,
    )
