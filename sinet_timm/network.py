"""Reaching the Hugging Face Hub, or saying at once that it cannot be reached.

Without a network, huggingface_hub retries each request with growing waits (about 25 s per file, and timm asks
for two files), so an offline ``timm.create_model(..., pretrained=True)`` took about 50 s to fail.
:func:`hub_or_cache` asks the network once, quickly (name resolution, then a TCP connection with a 5 s timeout), and
when the Hub's endpoint cannot be reached runs the download in huggingface_hub's offline mode: a cached file is
used at once, a missing one fails at once. With a proxy configured (``HTTPS_PROXY`` and the like) the direct check
means nothing, so it is skipped.
"""
import contextlib
import os
import socket
from collections.abc import Iterator
from urllib.parse import urlsplit

from huggingface_hub import constants

__all__ = ['PROBE_TIMEOUT', 'hub_or_cache', 'hub_unreachable']

PROBE_TIMEOUT = 5.0  # seconds to wait for a TCP connection to the Hub's endpoint
_PROXY_VARS = ('HTTPS_PROXY', 'https_proxy', 'HTTP_PROXY', 'http_proxy', 'ALL_PROXY', 'all_proxy')


def hub_unreachable(endpoint: str | None = None) -> str | None:
    """Why the Hub's endpoint cannot be reached now (its name does not resolve, or no connection in
    :data:`PROBE_TIMEOUT`), or None when it answers (or offline mode is on, or a proxy is configured)."""
    if constants.HF_HUB_OFFLINE or any(os.environ.get(v) for v in _PROXY_VARS):
        return None
    url = urlsplit(endpoint or constants.ENDPOINT)
    host, port = url.hostname or '', url.port or (443 if url.scheme == 'https' else 80)
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as e:
        return f'the name {host} does not resolve ({getattr(e, "strerror", None) or e})'
    error: OSError | None = None
    for family, kind, proto, _, address in addresses[:3]:
        try:
            with socket.socket(family, kind, proto) as s:
                s.settimeout(PROBE_TIMEOUT)
                s.connect(address)
            return None
        except OSError as e:
            error = e
    return f'no connection to {host}:{port} ({error.strerror or error if error else "no address"})'


@contextlib.contextmanager
def hub_or_cache() -> Iterator[str | None]:
    """Run the block online when the Hub answers; otherwise in huggingface_hub's offline mode (cached files only,
    no retries), yielding why the Hub cannot be reached."""
    why = hub_unreachable()
    if why is None:
        yield None
        return
    previous = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True  # read by huggingface_hub at each request
    try:
        yield why
    finally:
        constants.HF_HUB_OFFLINE = previous
