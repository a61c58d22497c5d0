"""A throwaway self-signed certificate: pychromecast never verifies it, but TLS must be real."""

from __future__ import annotations

import ssl
import subprocess
import tempfile
from functools import cache
from pathlib import Path


@cache
def _certificate_dir() -> Path:
    # One key per test process is enough; openssl is part of every Debian base image.
    directory = Path(tempfile.mkdtemp(prefix="fakecast-tls-"))
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=fakecast",
            "-keyout",
            str(directory / "key.pem"),
            "-out",
            str(directory / "cert.pem"),
        ],
        check=True,
        capture_output=True,
    )
    return directory


def server_context() -> ssl.SSLContext:
    directory = _certificate_dir()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(directory / "cert.pem", directory / "key.pem")
    return context
