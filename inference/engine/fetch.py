"""Fetch an image URL without letting API users reach private addresses (the SSRF guard).

Image URLs come from API users, so fetching them is a server-side request forgery risk: a URL could point at
the cloud metadata service, at an internal admin interface or at the worker itself. The fetcher here is
therefore deny-by-default ("private address refused" lives in :func:`blocked_reason`):

* only http and https; every other scheme (file:, ftp:, gopher:, ...) is refused without any I/O;
* the host is resolved once, by us, and refused if any address it resolves to is not public (loopback,
  private, link-local, multicast, reserved, unspecified, or such an address embedded in IPv6);
* the connection goes to exactly the address that was checked (with the original Host header and TLS SNI /
  certificate name), so a DNS answer that changes between check and use (DNS rebinding) cannot bypass it;
* redirects are followed by hand, and every hop is checked again before anything connects to it;
* DNS, connect and read timeouts, an overall deadline and a byte cap bound every fetch.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import http.client
import ipaddress
import logging
import socket
import ssl
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from urllib.parse import quote, urljoin, urlsplit

from .types import EngineError, ImageFetchError

logger = logging.getLogger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_OK_STATUSES = frozenset({200, 203})
_CHUNK = 64 * 1024
_USER_AGENT = "inference-console-image-fetcher/1"

# Ranges `ipaddress` (as of Python 3.11) still reports as global although nobody should fetch from them.
_EXTRA_BLOCKED_V4 = (
    ipaddress.IPv4Network("192.0.0.0/24"),  # IETF protocol assignments
    ipaddress.IPv4Network("192.0.2.0/24"),  # documentation ranges
    ipaddress.IPv4Network("198.51.100.0/24"),
    ipaddress.IPv4Network("203.0.113.0/24"),
)
_NAT64_PREFIX = ipaddress.IPv6Network("64:ff9b::/96")


@dataclass(frozen=True)
class FetchPolicy:
    """Limits for fetching and decoding one image.

    `allow_hosts` lists "host" or "host:port" entries that may be fetched even though they resolve to a
    non-public address (an operator's internal image store, or a test's own 127.0.0.1 server). Every other
    limit applies to allowed hosts too.
    """

    allow_hosts: frozenset[str] = frozenset()
    connect_timeout: float = 5.0  # DNS resolution, TCP connect and TLS handshake, per hop
    read_timeout: float = 10.0  # longest wait for any single read
    total_timeout: float = 30.0  # the whole fetch, all hops; stops servers that trickle bytes
    max_bytes: int = 10 * 1024 * 1024  # encoded image size, for URLs and inline data alike
    max_pixels: int = 40_000_000  # decoded width x height
    max_edge: int = 20_000  # longest side, so a 1 x 40M strip cannot blow up preprocessing
    max_redirects: int = 3
    ca_file: str | None = None  # CA bundle to verify https with instead of the system store


def fetch_url(url: str, policy: FetchPolicy) -> bytes:
    """Fetch an http(s) URL under `policy` and return the response body.

    Every hop is validated (scheme, resolved addresses) before it is connected to, and the connection is
    pinned to the validated address. Raises :class:`ImageFetchError` with a user-safe message.
    """
    deadline = time.monotonic() + policy.total_timeout
    current = url
    for hop in range(policy.max_redirects + 1):
        if time.monotonic() >= deadline:
            raise ImageFetchError("Image URL timed out.")
        target = _check_url(current, policy, redirected=hop > 0, deadline=deadline)
        connection = target.connection
        # Socket timeouts bound each read, not the sum of them: a server sending one byte every few seconds
        # would never trip them. This watchdog shuts the socket down when the overall deadline passes.
        watchdog = threading.Timer(max(deadline - time.monotonic(), 0.0), connection.abort)
        watchdog.daemon = True
        watchdog.start()
        try:
            response = _request(target, policy)
            try:
                if response.status in _REDIRECT_STATUSES:
                    location = response.getheader("Location")
                    if not location:
                        raise ImageFetchError(
                            f"Image URL returned HTTP {response.status} without a Location."
                        )
                    current = urljoin(current, location.strip())
                    logger.debug("Image URL on %s redirects (HTTP %s)", target.host, response.status)
                    continue
                if response.status not in _OK_STATUSES:
                    raise ImageFetchError(f"Image URL returned HTTP {response.status}.")
                return _read_body(response, connection, policy)
            finally:
                response.close()
        finally:
            watchdog.cancel()
            connection.close()
    raise ImageFetchError(f"Too many redirects (the limit is {policy.max_redirects}).")


@dataclass
class _Target:
    """One validated hop: where to connect and what to ask for."""

    host: str  # IDNA-encoded host name or IP literal, as the Host header and TLS server name
    path: str  # request target: path and query
    connection: _PinnedHTTPConnection


def _check_url(url: str, policy: FetchPolicy, *, redirected: bool, deadline: float) -> _Target:
    """Validate one URL (scheme, host, port, resolved addresses) and build a connection pinned to it.

    Nothing is connected to here; the connection opens on the first request.
    """
    what = "Image URL redirects to" if redirected else "Image URL has"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ImageFetchError(f"{what} an invalid URL.") from exc
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise ImageFetchError(
            f"{what} an unsupported scheme {scheme[:20]!r}: only http and https are allowed."
        )
    if parts.username is not None or parts.password is not None:
        raise ImageFetchError(f"{what} credentials in it, which are not supported.")
    hostname = parts.hostname
    if not hostname:
        raise ImageFetchError(f"{what} no host.")
    try:
        host = hostname if hostname.isascii() else hostname.encode("idna").decode("ascii")
    except UnicodeError as exc:
        raise ImageFetchError(f"{what} an invalid host name.") from exc
    port = port or (443 if scheme == "https" else 80)

    addresses = _resolve(host, port, max(min(policy.connect_timeout, deadline - time.monotonic()), 0.0))
    if not _host_allowed(host, port, policy.allow_hosts):
        for address in addresses:
            reason = blocked_reason(address)
            if reason is not None:
                logger.info("Refused image URL host %s: resolves to a %s address", host, reason)
                # The host the caller gave, never the address it resolved to (that would map our network).
                raise ImageFetchError(f"Image URL host {host!r} resolves to a {reason} address.")

    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    # Re-quote what users paste unencoded (spaces, non-ASCII); existing %XX escapes are kept as they are.
    path = quote(path, safe="!#$%&'()*+,/:;=?@[]~")
    connection: _PinnedHTTPConnection
    try:
        if scheme == "https":
            context = _ssl_context(policy.ca_file)
            connection = _PinnedHTTPSConnection(
                host, port, addresses, policy.connect_timeout, policy.read_timeout, context
            )
        else:
            connection = _PinnedHTTPConnection(
                host, port, addresses, policy.connect_timeout, policy.read_timeout
            )
    except http.client.InvalidURL as exc:
        raise ImageFetchError(f"{what} an invalid host name.") from exc
    return _Target(host=host, path=path, connection=connection)


def _request(target: _Target, policy: FetchPolicy) -> http.client.HTTPResponse:
    """Send a GET for one hop and return the response with its status and headers read."""
    connection = target.connection
    try:
        connection.putrequest("GET", target.path, skip_accept_encoding=True)
        connection.putheader("User-Agent", _USER_AGENT)
        connection.putheader("Accept", "image/*")
        # Compressed bodies would slip past the byte cap (and images are compressed already).
        connection.putheader("Accept-Encoding", "identity")
        connection.putheader("Connection", "close")
        connection.endheaders()
        return connection.getresponse()
    except ssl.SSLError as exc:
        if connection.aborted:
            raise ImageFetchError("Image URL timed out.") from exc
        raise ImageFetchError(f"Image URL TLS error: {exc.reason or 'handshake failed'}.") from exc
    except http.client.InvalidURL as exc:
        raise ImageFetchError("Image URL has an invalid path.") from exc
    except (OSError, http.client.HTTPException) as exc:
        if connection.aborted or isinstance(exc, TimeoutError):
            raise ImageFetchError("Image URL timed out.") from exc
        raise ImageFetchError(f"Image URL could not be fetched: {type(exc).__name__}.") from exc


def _read_body(
    response: http.client.HTTPResponse, connection: _PinnedHTTPConnection, policy: FetchPolicy
) -> bytes:
    """Read a response body, refusing text responses and anything over `policy.max_bytes`."""
    content_type = (response.getheader("Content-Type") or "").split(";")[0].strip().lower()
    if content_type.startswith("text/"):
        # An HTML error page or the like: refuse before reading it.
        raise ImageFetchError(f"Image URL returned {content_type[:50]}, which is not a valid image.")
    length_header = response.getheader("Content-Length")
    if length_header is not None:
        try:
            declared = int(length_header)
        except ValueError:
            declared = -1  # unparsable: ignore it, the streaming cap below still holds
        if declared > policy.max_bytes:
            raise ImageFetchError(f"Image is larger than {policy.max_bytes} bytes.")
    encoding = (response.getheader("Content-Encoding") or "identity").strip().lower()
    if encoding not in ("identity", ""):
        raise ImageFetchError(f"Image URL returned an unsupported Content-Encoding {encoding[:30]!r}.")

    body = bytearray()
    try:
        while True:
            # Ask for one byte past the cap, so a body of exactly max_bytes passes and one more does not.
            # (http.client never reads past a declared Content-Length, so a lying header cannot push more.)
            chunk = response.read(min(_CHUNK, policy.max_bytes + 1 - len(body)))
            if not chunk:
                break
            body += chunk
            if len(body) > policy.max_bytes:
                raise ImageFetchError(f"Image is larger than {policy.max_bytes} bytes.")
    except ImageFetchError:
        raise
    except (OSError, http.client.HTTPException, ValueError) as exc:
        if connection.aborted or isinstance(exc, TimeoutError):
            raise ImageFetchError("Image URL timed out while sending the image.") from exc
        if isinstance(exc, http.client.IncompleteRead):
            raise ImageFetchError("Image URL closed the connection before sending the whole image.") from exc
        raise ImageFetchError(f"Image URL could not be read: {type(exc).__name__}.") from exc
    if connection.aborted:  # the watchdog's shutdown can look like a normal end of the body
        raise ImageFetchError("Image URL timed out while sending the image.")
    return bytes(body)


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """An HTTP connection for a host name that connects only to addresses already checked for that name.

    The Host header still carries the name (http.client builds it from `host`), so virtual hosts work.
    """

    def __init__(
        self,
        host: str,
        port: int,
        addresses: list[IPAddress],
        connect_timeout: float,
        read_timeout: float,
    ) -> None:
        super().__init__(host, port, timeout=connect_timeout)
        self._addresses = addresses
        self._read_timeout = read_timeout
        self._raw_socket: socket.socket | None = None
        self._lock = threading.Lock()
        self.aborted = False

    def connect(self) -> None:
        """Open TCP to the first checked address that accepts (no second DNS lookup); set read timeouts."""
        self.sock = self._wrap(self._open_socket())
        self.sock.settimeout(self._read_timeout)

    def _open_socket(self) -> socket.socket:
        last_error: OSError | None = None
        for address in self._addresses:
            try:
                sock = socket.create_connection((str(address), self.port), timeout=self.timeout)
            except OSError as exc:
                last_error = exc
                continue
            with self._lock:
                if self.aborted:
                    sock.close()
                    raise TimeoutError("deadline passed while connecting")
                self._raw_socket = sock
            return sock
        raise last_error if last_error is not None else OSError("no address to connect to")

    def _wrap(self, sock: socket.socket) -> socket.socket:
        return sock

    def abort(self) -> None:
        """Stop the fetch now (from another thread): unblock any read by shutting the socket down."""
        with self._lock:
            self.aborted = True
            sock = self._raw_socket
        if sock is not None:
            with contextlib.suppress(OSError):  # already closed
                sock.shutdown(socket.SHUT_RDWR)


class _PinnedHTTPSConnection(_PinnedHTTPConnection):
    """A pinned connection speaking TLS; SNI and certificate verification use the URL's host name."""

    default_port = http.client.HTTPS_PORT

    def __init__(
        self,
        host: str,
        port: int,
        addresses: list[IPAddress],
        connect_timeout: float,
        read_timeout: float,
        context: ssl.SSLContext,
    ) -> None:
        super().__init__(host, port, addresses, connect_timeout, read_timeout)
        self._tls_context = context

    def _wrap(self, sock: socket.socket) -> socket.socket:
        try:
            return self._tls_context.wrap_socket(sock, server_hostname=self.host)
        except BaseException:
            sock.close()
            raise


@functools.lru_cache(maxsize=8)
def _ssl_context(ca_file: str | None) -> ssl.SSLContext:
    # Certificate and host name verification stay on: pinning the IP must not weaken TLS.
    return ssl.create_default_context(cafile=ca_file)


def _host_allowed(host: str, port: int, allow_hosts: frozenset[str]) -> bool:
    host = host.lower()
    candidates = {host, f"{host}:{port}", f"[{host}]", f"[{host}]:{port}"}
    return any(entry.lower() in candidates for entry in allow_hosts)


def _resolve(host: str, port: int, timeout: float) -> list[IPAddress]:
    """Resolve `host` to its addresses, within `timeout` seconds (getaddrinfo itself has no timeout)."""
    try:
        return [ipaddress.ip_address(host)]  # a literal needs no lookup
    except ValueError:
        pass
    answers: list[list[str]] = []
    failures: list[OSError] = []

    def lookup() -> None:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
            answers.append([str(info[4][0]) for info in infos])
        except OSError as exc:
            failures.append(exc)

    # A daemon thread rather than an executor: fork-safe (workers may be forked) and abandoned on timeout.
    thread = threading.Thread(target=lookup, name="image-url-dns", daemon=True)
    thread.start()
    thread.join(timeout)
    if failures:
        raise ImageFetchError("Image URL host name could not be resolved.")
    if not answers:
        raise ImageFetchError("Image URL host name could not be resolved in time.")
    addresses: list[IPAddress] = []
    for text in answers[0]:
        try:
            address = ipaddress.ip_address(text.split("%")[0])  # drop an IPv6 zone id
        except ValueError:
            continue
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise ImageFetchError("Image URL host name could not be resolved.")
    return addresses


def blocked_reason(address: IPAddress) -> str | None:
    """Why an address must not be fetched from ("loopback", "private", ...), or None if it is public.

    IPv6 forms that carry an IPv4 address (IPv4-mapped, 6to4, Teredo, NAT64) are judged by that address.
    """
    if isinstance(address, ipaddress.IPv6Address):
        embedded: list[ipaddress.IPv4Address] = []
        if address.ipv4_mapped is not None:
            embedded.append(address.ipv4_mapped)
        if address.sixtofour is not None:
            embedded.append(address.sixtofour)
        if address.teredo is not None:
            embedded.extend(address.teredo)
        if address in _NAT64_PREFIX:
            embedded.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
        for inner in embedded:
            reason = blocked_reason(inner)
            if reason is not None:
                return reason
        if address.ipv4_mapped is not None:
            return None  # the mapped IPv4 address is public; the IPv6 range itself says nothing more
    if address.is_unspecified:
        return "unspecified"
    if address.is_loopback:
        return "loopback"
    if address.is_link_local:
        return "link-local"
    if address.is_multicast:
        return "multicast"
    if address.is_private:
        return "private"
    if isinstance(address, ipaddress.IPv6Address) and address.is_site_local:
        return "site-local"
    if isinstance(address, ipaddress.IPv4Address) and any(address in net for net in _EXTRA_BLOCKED_V4):
        return "reserved"
    if address.is_reserved:
        return "reserved"
    if not address.is_global:
        return "non-public"
    return None


class FetchesBusy(EngineError):
    """Every fetch slot is taken by other requests: refused at once, retry shortly (503, Retry-After)."""

    status_code = 503
    retry_after = 2


class FetchGate:
    """Image URLs are fetched here: on threads of their own, for at most `requests` requests at once.

    A slow image server cannot tie up the web threads or the ONNX workers: a request fetches only once it
    got one of the gate's slots (refused at once with :class:`FetchesBusy` when none is free), its images
    are fetched on the gate's threads, and every fetch ends by the policy's total deadline, however slowly
    the server drips. Sized below the web server's threads, so health checks and other clusters' requests
    always find a thread.
    """

    def __init__(self, requests: int, per_request: int = 4) -> None:
        self._slots = threading.BoundedSemaphore(requests)
        self._per_request = per_request
        self._pool = ThreadPoolExecutor(requests * per_request, thread_name_prefix="image-fetch")

    def fetch_all(self, urls: list[str], policy: FetchPolicy) -> list[bytes]:
        """The bodies of `urls`, in order; FetchesBusy when no slot is free, ImageFetchError on failure."""
        if not urls:
            return []
        if not self._slots.acquire(blocking=False):
            raise FetchesBusy("Too many image fetches are in progress; retry shortly.")
        try:
            # One deadline for the request's whole batch of images, as for a single URL.
            deadline = time.monotonic() + policy.total_timeout
            bodies: list[bytes] = []
            for start in range(0, len(urls), self._per_request):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise ImageFetchError("Image URL timed out.")
                bounded = dataclasses.replace(policy, total_timeout=remaining)
                chunk = urls[start : start + self._per_request]
                futures = [self._pool.submit(fetch_url, url, bounded) for url in chunk]
                bodies += [future.result() for future in futures]  # each ends by its own deadline
            return bodies
        finally:
            self._slots.release()
