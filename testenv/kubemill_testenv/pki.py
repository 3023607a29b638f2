"""Per-run certificates and keys, made with the openssl command line.

A fresh CA per control plane means no credential outlives its cluster and two clusters on one
machine never trust each other. ECDSA P-256 keys keep generation at a few milliseconds each.
"""

from __future__ import annotations

import ipaddress
import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class KeyPair:
    cert: Path
    key: Path


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_ca(directory: Path, name: str = "kubemill-ca") -> KeyPair:
    directory.mkdir(parents=True, exist_ok=True)
    pair = KeyPair(directory / f"{name}.crt", directory / f"{name}.key")
    _openssl(
        "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", str(pair.key), cwd=directory
    )
    _openssl(
        "req", "-x509", "-new", "-key", str(pair.key), "-sha256", "-days", "30",
        "-subj", f"/CN={name}", "-out", str(pair.cert),
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
        cwd=directory,
    )  # fmt: skip
    return pair


def issue(
    ca: KeyPair,
    directory: Path,
    name: str,
    *,
    common_name: str,
    organizations: tuple[str, ...] = (),
    hosts: tuple[str, ...] = (),
    server: bool = False,
    client: bool = False,
) -> KeyPair:
    """Issue a leaf certificate; ``hosts`` become IP or DNS subject alternative names."""
    directory.mkdir(parents=True, exist_ok=True)
    pair = KeyPair(directory / f"{name}.crt", directory / f"{name}.key")
    csr = directory / f"{name}.csr"
    ext = directory / f"{name}.ext"
    subject = "".join(f"/O={o}" for o in organizations) + f"/CN={common_name}"
    usages = [u for u, on in (("serverAuth", server), ("clientAuth", client)) if on]
    lines = [
        "basicConstraints=critical,CA:FALSE",
        "keyUsage=critical,digitalSignature,keyEncipherment",
        f"extendedKeyUsage={','.join(usages)}",
    ]
    if hosts:
        lines.append("subjectAltName=" + ",".join(_san(h) for h in hosts))
    ext.write_text("\n".join(lines) + "\n")
    _openssl(
        "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", str(pair.key), cwd=directory
    )
    _openssl(
        "req", "-new", "-key", str(pair.key), "-subj", subject, "-out", str(csr), cwd=directory
    )
    _openssl(
        "x509", "-req", "-in", str(csr), "-CA", str(ca.cert), "-CAkey", str(ca.key),
        "-CAcreateserial", "-sha256", "-days", "30", "-extfile", str(ext), "-out", str(pair.cert),
        cwd=directory,
    )  # fmt: skip
    csr.unlink()
    ext.unlink()
    return pair


def make_service_account_keys(directory: Path) -> KeyPair:
    """RSA key pair that signs and verifies ServiceAccount tokens (``cert`` is the public key)."""
    directory.mkdir(parents=True, exist_ok=True)
    pair = KeyPair(directory / "sa.pub", directory / "sa.key")
    _openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048",
             "-out", str(pair.key), cwd=directory)  # fmt: skip
    _openssl("pkey", "-in", str(pair.key), "-pubout", "-out", str(pair.cert), cwd=directory)
    return pair


def _san(host: str) -> str:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return f"DNS:{host}"
    return f"IP:{host}"
