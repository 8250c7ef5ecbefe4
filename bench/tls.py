"""A throw-away certificate so that the fakes can serve HTTPS and WSS (``bench.burst --tls``).

Discord and 1min.ai are reached over TLS, and every new connection then costs the bot a handshake on its event
loop. On plain loopback HTTP that cost is missing; with ``--tls`` it is measured. The certificate is made with
the ``openssl`` command (Debian's and the Python images have it) and trusted by the bot through
``SSL_CERT_FILE``, which the default SSL context of aiohttp (so of discord.py too) reads.
"""

from __future__ import annotations

import ssl
import subprocess
from pathlib import Path


def make_certificate(directory: Path, host: str = "127.0.0.1") -> tuple[Path, Path]:
    """A self-signed ECDSA P-256 certificate for ``host`` (an IP address) and its key, written into
    ``directory``: (certificate, key). Like Discord's, the certificate is ECDSA."""
    certificate, key = directory / "fakes-certificate.pem", directory / "fakes-key.pem"
    command = [
        "openssl", "req", "-x509", "-nodes", "-days", "2",
        "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
        "-keyout", str(key), "-out", str(certificate),
        "-subj", f"/CN={host}", "-addext", f"subjectAltName=IP:{host}",
    ]  # fmt: skip
    try:
        subprocess.run(command, check=True, capture_output=True, text=True)
    except FileNotFoundError:
        raise RuntimeError("--tls needs the openssl command (Debian: apt-get install openssl)") from None
    except subprocess.CalledProcessError as error:
        raise RuntimeError(f"openssl could not make a certificate: {error.stderr.strip()}") from None
    return certificate, key


def server_context(certificate: Path, key: Path) -> ssl.SSLContext:
    """The fakes' side of TLS with that certificate."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certificate, key)
    return context
