"""UTF-8 text files: decoding bytes strictly, and saying why a file is not UTF-8 when it is not.

Spreadsheet programs and Windows tools often save CSV files as UTF-16 or as Latin-1 / Windows-1252;
Python then fails with a bare ``UnicodeDecodeError`` that names neither the file nor what to do.
:func:`decode_utf8` raises :class:`NotUtf8Error` instead, naming the file, the line and byte, and the
encoding the bytes look like. NUL bytes alone are valid UTF-8 (Python's ``csv`` reads them), so they are
no error here.
"""

from __future__ import annotations

from pathlib import Path

UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")


class NotUtf8Error(ValueError):
    """A file that is not UTF-8 text; the message names the file, where, and what to do."""


def _decode_error(data: bytes) -> UnicodeDecodeError | None:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return exc
    return None


def bad_byte(data: bytes) -> int | None:
    """The offset of the first byte that is not UTF-8 (None when ``data`` is UTF-8 text)."""
    error = _decode_error(data)
    return None if error is None else error.start


def is_utf16(data: bytes) -> bool:
    """Bytes that are not UTF-8 and look like UTF-16: a UTF-16 byte-order mark, or NUL bytes."""
    return bad_byte(data) is not None and (data.startswith(UTF16_BOMS) or b"\x00" in data[:4096])


def not_utf8_reason(data: bytes) -> str | None:
    """Why ``data`` is not UTF-8 text, in words that end with what to do (None when it is UTF-8)."""
    error = _decode_error(data)
    if error is None:
        return None
    if is_utf16(data):
        sign = "starts with a UTF-16 byte-order mark" if data.startswith(UTF16_BOMS) else "holds NUL bytes"
        return f"the file is UTF-16 (it {sign}), not UTF-8; save it as UTF-8"
    return (f"byte {error.start} (0x{data[error.start]:02x}) is not UTF-8 ({error.reason}); the file must be "
            "UTF-8 (is it Latin-1 or Windows-1252?): save it as UTF-8")


def decode_utf8(data: bytes, source: str | Path) -> str:
    """The text of a UTF-8 file's bytes (a leading byte-order mark kept, for the caller to judge).

    Raises:
        NotUtf8Error: the bytes are not UTF-8; the message names ``source`` and the line, and says why.
    """
    reason = not_utf8_reason(data)
    if reason is None:
        return data.decode("utf-8")
    if is_utf16(data):
        raise NotUtf8Error(f"{source}: {reason}")
    line = data[: bad_byte(data)].count(b"\n") + 1
    raise NotUtf8Error(f"{source} line {line}: {reason}")


def read_utf8(path: str | Path) -> str:
    """The text of a UTF-8 file (see :func:`decode_utf8`)."""
    return decode_utf8(Path(path).read_bytes(), path)
