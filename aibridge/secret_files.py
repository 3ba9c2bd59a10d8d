"""Secret settings that may also come from a file: ``AIBRIDGE_X`` or ``AIBRIDGE_X_FILE``.

A secret's ``…_FILE`` form names a file holding the value (a mounted Kubernetes or Compose secret), so
the value itself never sits in the environment or the pod spec. Each settings class lists its secret
fields and declares a ``<field>_file`` path beside each; :func:`resolve_secret_files` fills the
secret from its file once, at start. One trailing newline (what ``echo`` and most editors add) is
dropped; setting both forms, an unreadable file and an empty file are errors that name the variable.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from pydantic import BaseModel, SecretStr


def resolve_secret_files(settings: BaseModel, names: Iterable[str]) -> None:
    """Set each secret in ``names`` that is unset from its ``<name>_file``, if that is set."""
    for name in names:
        path: Path | None = getattr(settings, f"{name}_file")
        if path is None:
            continue
        variable = f"AIBRIDGE_{name.upper()}"
        if getattr(settings, name) is not None:
            raise ValueError(f"set {variable} or {variable}_FILE, not both")
        setattr(settings, name, SecretStr(read_secret_file(path, f"{variable}_FILE")))


def read_secret_file(path: Path, variable: str) -> str:
    """The file's text without one trailing newline; a clear error when it is unreadable or empty."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ValueError(f"{variable}: cannot read {path}: {reason}") from None
    value = text.removesuffix("\n").removesuffix("\r")
    if not value:
        raise ValueError(f"{variable}: {path} is empty")
    return value


def secret_value(secret: SecretStr | None) -> str | None:
    return None if secret is None else secret.get_secret_value()
