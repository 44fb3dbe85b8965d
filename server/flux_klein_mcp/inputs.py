"""Input images: where they may come from, and how they are cleaned before they are sent.

A reference is a local path (absolute, or relative to the working directory), a `file://` URI, an `https://`
URL (passed to the provider untouched) or a `data:image/...;base64,` URL. Local files are read only from the
allowed folders, after resolving symlinks; local and data-URL images are decoded, size-capped, stripped of
metadata and downscaled (see `images.prepare_input`) before they leave the machine.
"""

from __future__ import annotations

import base64
import binascii
import errno
import os
import re
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

import httpx

from .errors import InputError
from .images import NotAnImage, b64decode, prepare_input, split_data_url
from .request import InputImage
from .words import arg, item

_SCHEME = re.compile(r"^(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]+):")


@dataclass(frozen=True)
class InputPolicy:
    """Where local input images may be read from, and how big they may be."""

    cwd: Path
    allowed_dirs: tuple[Path, ...]
    max_bytes: int

    #: Set when the working directory was left out for being the whole disk or the home folder.
    cwd_too_broad: bool = False
    #: Set when serving clients on other machines: the working directory is left out too.
    remote: bool = False

    @classmethod
    def build(cls, cwd: Path, dirs: Iterable[Path], max_bytes: int, *, remote: bool = False) -> InputPolicy:
        """The given folders (the output folder, FLUX_KLEIN_INPUT_DIRS, the client's roots) and the working
        directory, unless it is `/` or the home folder (as when a host starts servers there) or the clients are
        remote (over HTTP a client's paths name nothing on this machine it should read)."""
        real_cwd = _real(cwd)
        too_broad = _too_broad(real_cwd)
        seen: dict[Path, None] = {} if too_broad or remote else {real_cwd: None}
        for d in dirs:
            seen.setdefault(_real(d if d.is_absolute() else cwd / d), None)
        return cls(cwd=cwd, allowed_dirs=tuple(seen), max_bytes=max_bytes, cwd_too_broad=too_broad, remote=remote)

    def refusal(self, shown: str) -> str:
        folders = ", ".join(str(d) for d in self.allowed_dirs) or "none"
        why = (f" The working directory {self.cwd} is not one of them: it is the whole disk or the home folder."
               if self.cwd_too_broad and not self.remote else "")
        if self.remote:
            why = (" Over HTTP only the output folder and FLUX_KLEIN_INPUT_DIRS are readable: the client's own "
                   "folders are on another machine. Send the image as an https:// URL or a data URL instead.")
        return (
            f"{shown} is outside the folders input images may be read from ({folders}).{why} "
            "Move or copy the image into one of them, or add its folder to FLUX_KLEIN_INPUT_DIRS."
        )


def _too_broad(folder: Path) -> bool:
    home = _real(Path.home())
    return folder == Path(folder.anchor) or home.is_relative_to(folder)


def resolve_inputs(refs: Sequence[str], policy: InputPolicy, parameter: str) -> tuple[InputImage, ...]:
    """Turn every reference into what the provider receives; the first bad one raises `InputError`."""
    many = len(refs) > 1
    return tuple(
        resolve_input(ref, policy, item(parameter, i) if many else arg(parameter)) for i, ref in enumerate(refs)
    )


def resolve_input(ref: str, policy: InputPolicy, parameter: str) -> InputImage:
    ref = ref.strip()
    if ref[:5].lower() == "data:":
        return _from_data_url(ref, policy, parameter)
    scheme = _scheme(ref)
    if scheme == "https":
        return InputImage(url=_https_url(ref, parameter), source=ref)
    if scheme == "file":
        try:
            path = path_from_file_uri(ref)
        except InputError as exc:
            raise InputError(f"{parameter}: {exc}") from None
        return _from_file(path, ref, policy, parameter)
    if scheme is not None:
        raise InputError(
            f"{parameter}: {scheme[:20]}:// URLs are not accepted. Use an https:// URL, a local file path, "
            "a file:// URI or a data:image/...;base64 URL."
        )
    try:
        path = Path(ref).expanduser()
    except RuntimeError:  # "~someone/..." for a user this machine does not know
        raise InputError(f"{parameter}: {shown(ref)} names the home folder of an unknown user. Use an absolute "
                         "path.") from None
    return _from_file(path, ref, policy, parameter)


MAX_URL_CHARS = 8192


def _https_url(ref: str, parameter: str) -> str:
    """An https:// URL the provider can fetch, checked here so a typo costs nothing."""
    problem = None
    try:
        parts = urlsplit(ref)
        parts.port  # noqa: B018 - raises on a port that is not a number from 0 to 65535
    except ValueError as exc:
        problem = str(exc)
    else:
        if not parts.hostname:
            problem = "it names no host"
        elif any(c.isspace() or ord(c) < 32 or ord(c) == 127 or c in "<>\"{}|\\^`" for c in ref):
            problem = "it contains spaces or characters a URL cannot hold (percent-encode them)"
        elif len(ref) > MAX_URL_CHARS:
            problem = f"it is {len(ref)} characters long; the limit is {MAX_URL_CHARS}"
        elif "%" in parts.hostname:
            problem = "its host is not a public name or address"
        elif not _host_shaped(parts.hostname):
            problem = "its host has an empty part or a part over 63 characters"
        else:
            try:
                httpx.Request("GET", ref)  # the host must encode (IDNA), as the provider will need it to
            except (httpx.InvalidURL, ValueError) as exc:
                problem = f"its host is not valid ({exc})"
    if problem:
        raise InputError(f"{parameter}: {shown(ref)} is not a valid https:// URL ({problem}). Check the URL, or pass "
                         "a local file path instead.")
    return ref


def _host_shaped(host: str) -> bool:
    """A name every resolver takes: dot-separated parts of 1 to 63 characters (one trailing dot allowed), 253 in
    all; an IP literal passes."""
    if host.startswith("[") or host.replace(".", "").isdigit() or ":" in host:
        return True
    labels = host[:-1].split(".") if host.endswith(".") else host.split(".")
    return len(host) <= 253 and all(0 < len(label) <= 63 for label in labels)


def shown(ref: str, limit: int = 120) -> str:
    """A reference as a message quotes it: clipped, so a path of thousands of characters stays readable."""
    return repr(ref if len(ref) <= limit else ref[: limit - 1] + "…")


def _scheme(ref: str) -> str | None:
    match = _SCHEME.match(ref)
    if not match or (len(match["scheme"]) == 1):  # "C:\\..." is a Windows drive, not a scheme
        return None
    return match["scheme"].lower()


def path_from_file_uri(ref: str) -> Path:
    """The local path of a `file://` URI; another host, or another scheme, is an `InputError`."""
    try:
        parts = urlsplit(ref)
    except ValueError as exc:
        raise InputError(f"{shown(ref)} is not a valid file:// URI ({exc}).") from None
    if parts.scheme.lower() != "file":
        raise InputError(f"{shown(ref)} is not a file:// URI.")
    if parts.netloc not in ("", "localhost") or parts.path.startswith("//"):
        raise InputError(f"{shown(ref)} names another host; only local file:// URIs are accepted.")
    path = unquote(parts.path)
    if os.name == "nt" and re.match(r"^/[A-Za-z]:", path):
        path = path[1:]
    return Path(path)


def _from_file(path: Path, ref: str, policy: InputPolicy, parameter: str) -> InputImage:
    text = str(path)
    if "\x00" in text:
        raise InputError(f"{parameter}: the path contains a NUL character.")
    if text.startswith(("\\\\", "//")):
        # A UNC or device path would make Windows contact another machine before any check could refuse it.
        raise InputError(f"{parameter}: {shown(ref)} is a network path; only local files are accepted.")
    try:
        full = _real(path if path.is_absolute() else policy.cwd / path)
    except (OSError, ValueError) as exc:
        raise InputError(f"{parameter}: {_os_problem(ref, exc)}") from None
    if not any(full.is_relative_to(d) for d in policy.allowed_dirs):
        raise InputError(f"{parameter}: {policy.refusal(shown(ref))}")
    try:
        # Non-blocking, and checked on the open file: a FIFO or device must never hang the read.
        fd = os.open(full, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except OSError as exc:
        raise InputError(f"{parameter}: {_os_problem(ref, exc, full)}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            what = "a folder" if stat.S_ISDIR(info.st_mode) else "a named pipe, device or socket"
            raise InputError(f"{parameter}: {shown(ref)} is {what}, not an image file (looked at {full}).")
        _check_size(info.st_size, policy, parameter, shown(ref))
        with os.fdopen(os.dup(fd), "rb") as fh:
            data = fh.read(policy.max_bytes + 1)
    except OSError as exc:
        raise InputError(f"{parameter}: {_os_problem(ref, exc, full)}") from None
    finally:
        os.close(fd)
    _check_size(len(data), policy, parameter, shown(ref))
    return _prepared(data, str(full), parameter, shown(ref))


def _os_problem(ref: str, exc: Exception, full: Path | None = None) -> str:
    """What an OS error opening an input image means, in words."""
    where = f" (looked for {full})" if full is not None else ""
    code = getattr(exc, "errno", None)
    if code == errno.ENOENT:
        return f"{shown(ref)} does not exist{where}. Check the path."
    if code == errno.ENAMETOOLONG:
        return f"the path is too long for this system ({len(ref)} characters). Check the path."
    if code == errno.EISDIR:
        return f"{shown(ref)} is a folder, not an image file{where}."
    if code == errno.ELOOP:
        return f"{shown(ref)} is a loop of symbolic links{where}."
    if code in (errno.EACCES, errno.EPERM):
        return f"{shown(ref)} cannot be read: permission denied{where}."
    reason = getattr(exc, "strerror", None) or str(exc)
    return f"{shown(ref)} cannot be read ({reason}){where}. Check the path."


def _from_data_url(ref: str, policy: InputPolicy, parameter: str) -> InputImage:
    parsed = split_data_url(ref)
    if parsed is None:
        raise InputError(f"{parameter}: a data URL must look like data:image/png;base64,<data>.")
    mime, encoded = parsed
    if not mime.startswith("image/"):
        raise InputError(f"{parameter}: the data URL holds {mime or 'no MIME type'}, not an image.")
    if len(encoded) * 3 // 4 > policy.max_bytes:
        _check_size(len(encoded) * 3 // 4, policy, parameter, "the data URL")
    try:
        data = b64decode(encoded)
    except (binascii.Error, ValueError):
        raise InputError(f"{parameter}: the data URL's base64 is not valid (malformed or truncated).") from None
    source = f"data:{mime};base64 ({len(data)} bytes)"
    return _prepared(data, source, parameter, "the data URL")


def _check_size(size: int, policy: InputPolicy, parameter: str, shown: str) -> None:
    if size > policy.max_bytes:
        raise InputError(
            f"{parameter}: {shown} is {size / 1048576:.1f} MB; the limit is {policy.max_bytes / 1048576:g} MB "
            "(FLUX_KLEIN_MAX_INPUT_MB). Use a smaller image."
        )


def _prepared(data: bytes, source: str, parameter: str, shown: str) -> InputImage:
    try:
        clean = prepare_input(data)
    except NotAnImage as exc:
        raise InputError(f"{parameter}: {shown} is not a usable image: {exc}. Use a PNG, JPEG, WebP or GIF image.") \
            from exc
    url = f"data:{clean.mime_type};base64,{base64.b64encode(clean.data).decode('ascii')}"
    return InputImage(url=url, source=source, mime_type=clean.mime_type, width=clean.width, height=clean.height)


def _real(path: Path) -> Path:
    return Path(os.path.realpath(path))
