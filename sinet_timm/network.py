"""Reaching the Hugging Face Hub, or saying at once that it cannot be reached.

Without a network, huggingface_hub retries each request with growing waits (about 25 s per file, and timm asks
for two files), so an offline ``timm.create_model(..., pretrained=True)`` took about 50 s to fail.
:func:`hub_or_cache` asks the network once, quickly (name resolution, then a TCP connection, both within
:data:`PROBE_TIMEOUT` in all), and when the Hub's endpoint cannot be reached runs the download in huggingface_hub's
offline mode: a cached file is used at once, a missing one fails at once. With a proxy configured for the endpoint
(``HTTPS_PROXY`` and the like, unless ``NO_PROXY`` names the host) the proxy is what must answer, so the proxy is
probed instead; a proxy that answers but cannot reach the Hub is left to huggingface_hub's own retries.
"""
import contextlib
import contextvars
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator
from urllib.parse import urlsplit

from huggingface_hub import constants

__all__ = ['PROBE_TIMEOUT', 'hub_or_cache', 'hub_unreachable']

PROBE_TIMEOUT = 5.0  # seconds for resolving the Hub's (or the proxy's) name and connecting to it, in all
# the finding of the hub_or_cache block running now (None outside one)
_ACTIVE: contextvars.ContextVar[tuple[str | None] | None] = contextvars.ContextVar('hub_or_cache', default=None)


def _resolve(host: str, port: int, timeout: float) -> list[tuple]:
    """socket.getaddrinfo with a deadline (a resolver that gets no answer can take half a minute)."""
    found: list = []
    failed: list[BaseException] = []

    def ask() -> None:
        try:
            found.extend(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))
        except (OSError, UnicodeError) as e:
            failed.append(e)

    t = threading.Thread(target=ask, daemon=True)
    t.start()
    t.join(timeout)
    if failed:
        raise failed[0]
    if t.is_alive():
        raise socket.gaierror(f'no answer within {timeout:g} s')
    return found


def _target(url) -> tuple[str, str, int]:
    """(what, host, port) to probe: the endpoint itself, or the proxy that requests to it go through."""
    host = url.hostname or ''
    port = url.port or (443 if url.scheme == 'https' else 80)
    proxy = urllib.request.getproxies().get(url.scheme) or urllib.request.getproxies().get('all')
    if proxy and not urllib.request.proxy_bypass(host):
        p = urlsplit(proxy if '://' in proxy else f'http://{proxy}')
        return 'the proxy ', p.hostname or '', p.port or (443 if p.scheme == 'https' else 80)
    return '', host, port


def hub_unreachable(endpoint: str | None = None) -> str | None:
    """Why the Hub's endpoint (or the proxy in front of it) cannot be reached now: its name does not resolve, or
    no connection within :data:`PROBE_TIMEOUT`; None when it answers, or in offline mode."""
    if constants.HF_HUB_OFFLINE:
        return None
    what, host, port = _target(urlsplit(endpoint or constants.ENDPOINT))
    deadline = time.monotonic() + PROBE_TIMEOUT
    try:
        addresses = _resolve(host, port, PROBE_TIMEOUT)
    except (OSError, UnicodeError) as e:
        return f'the name {what}{host} does not resolve ({getattr(e, "strerror", None) or e})'
    error: OSError | None = None
    for family, kind, proto, _, address in addresses:  # e.g. IPv6 then IPv4; one deadline for all of them
        left = deadline - time.monotonic()
        if left <= 0:
            break
        try:
            with socket.socket(family, kind, proto) as s:
                s.settimeout(left)
                s.connect(address)
            return None
        except OSError as e:
            error = e
    why = (error.strerror or str(error)) if error else f'nothing within {PROBE_TIMEOUT:g} s'
    return f'no connection to {what}{host}:{port} ({why})'


@contextlib.contextmanager
def hub_or_cache() -> Iterator[str | None]:
    """Run the block online when the Hub answers; otherwise in huggingface_hub's offline mode (cached files only,
    no retries), yielding why the Hub cannot be reached. Inside another such block (reid_eval around timm around
    a family's builder) the outer finding holds: one probe, and the reason reaches the innermost error."""
    outer = _ACTIVE.get()
    if outer is not None:
        yield outer[0]
        return
    why = hub_unreachable()
    token = _ACTIVE.set((why,))
    previous = constants.HF_HUB_OFFLINE
    if why is not None:
        constants.HF_HUB_OFFLINE = True  # read by huggingface_hub at each request
    try:
        yield why
    finally:
        constants.HF_HUB_OFFLINE = previous
        _ACTIVE.reset(token)
