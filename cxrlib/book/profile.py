"""Parameter profiles of the book (``book/params/<profile>.yml``): reading and checking.

:func:`load_profile` reads a profile and checks its structure before anything runs: YAML
syntax, the top-level keys (:data:`PROFILE_KEYS`), the phantom settings
(:data:`PHANTOM_KEYS`, integers) and that ``notebooks`` maps notebook names to mappings of
parameters. Every refusal is a :class:`BookBuildError` that names the file, the line and the
key. :func:`cxrlib.book.runner.validate_profile` then checks the parameter names against the
notebooks' ``parameters`` cells.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cxrlib.errors import CxrlibError

__all__ = ["BookBuildError", "PHANTOM_KEYS", "PROFILE_KEYS", "load_profile"]


class BookBuildError(CxrlibError):
    """The book could not be built; the message names the notebook and cell (or profile)."""


#: The top-level keys of a profile.
PROFILE_KEYS = ("phantoms", "notebooks")
#: The keys of a profile's ``phantoms`` mapping and their smallest values.
PHANTOM_KEYS = {"n": 1, "size": 32, "seed": 0}


def _key_lines(node: Any, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], int]:
    """The line (1-based) of every mapping key of a composed YAML node, by key path."""
    import yaml

    lines: dict[tuple[str, ...], int] = {}
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            path = (*prefix, str(key.value))
            lines[path] = key.start_mark.line + 1
            lines.update(_key_lines(value, path))
    return lines


def _check_profile(path: Path, content: dict[str, Any], lines: Mapping[tuple, int]) -> None:
    """Refuse a profile whose structure or phantom settings are wrong (file, line, key)."""

    def where(*keys: str) -> str:
        line = lines.get(tuple(keys))
        return f"{path}, line {line}" if line else str(path)

    def kind(value: Any) -> str:
        return {list: "a list", str: "a string", dict: "a mapping"}.get(
            type(value), type(value).__name__
        )

    for key in content:
        if key not in PROFILE_KEYS:
            raise BookBuildError(
                f"{where(str(key))}: unknown profile key {key!r} (known keys: "
                f"{', '.join(PROFILE_KEYS)})"
            )
    phantoms = content.get("phantoms")
    if phantoms is not None:
        if not isinstance(phantoms, dict):
            raise BookBuildError(
                f"{where('phantoms')}: 'phantoms' must be a mapping like "
                f"{{n: 120, size: 256, seed: 0}}, got {kind(phantoms)}"
            )
        for key, value in phantoms.items():
            if key not in PHANTOM_KEYS:
                raise BookBuildError(
                    f"{where('phantoms', str(key))}: unknown key phantoms.{key} (known keys: "
                    f"{', '.join(PHANTOM_KEYS)})"
                )
            low = PHANTOM_KEYS[key]
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise BookBuildError(
                    f"{where('phantoms', key)}: phantoms.{key} must be an integer >= {low}, "
                    f"got {value!r}"
                )
    notebooks = content.get("notebooks")
    if notebooks is None:
        return
    if not isinstance(notebooks, dict):
        raise BookBuildError(
            f"{where('notebooks')}: 'notebooks' must be a mapping from notebook name to its "
            f"parameters (e.g. 01_data_exploration: {{image_size: 128}}), got {kind(notebooks)}"
        )
    for name, values in notebooks.items():
        if values is not None and not isinstance(values, dict):
            raise BookBuildError(
                f"{where('notebooks', str(name))}: notebooks.{name} must be a mapping of "
                f"parameter names to values (e.g. {{image_size: 128}}), got {kind(values)}"
            )


def load_profile(root: Path, profile: str) -> dict[str, Any]:
    """Read ``book/params/<profile>.yml`` under ``root`` and check its structure.

    A profile is a mapping with the keys :data:`PROFILE_KEYS`: ``phantoms`` (a mapping of
    :data:`PHANTOM_KEYS` to integers) and ``notebooks`` (a mapping of notebook names to
    mappings of parameters). :func:`validate_profile` then checks the parameter names
    against the notebooks.

    Raises
    ------
    BookBuildError
        When the profile file is missing (the message lists the available ones), is not
        valid YAML, is not a mapping, or a key holds the wrong kind of value; the message
        names the file, the line and the key.
    """
    import yaml

    folder = root / "book" / "params"
    path = folder / f"{profile}.yml"
    if not path.is_file():
        known = sorted(p.stem for p in folder.glob("*.yml"))
        raise BookBuildError(f"unknown profile {profile!r}: no {path}; known profiles: {known}")
    try:
        text = path.read_text(encoding="utf-8")
        content = yaml.safe_load(text) or {}
        lines = _key_lines(yaml.compose(text))
    except (OSError, UnicodeDecodeError) as error:
        raise BookBuildError(f"{path}: cannot read the profile ({error})") from error
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        at = f", line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise BookBuildError(f"{path}{at}: not valid YAML ({problem})") from None
    if not isinstance(content, dict):
        raise BookBuildError(f"{path}: a profile must be a mapping, got {type(content).__name__}")
    _check_profile(path, content, lines)
    return content
