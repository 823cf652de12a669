"""What the rendering tests share: the hostile values every rendered format must carry, and
how to render a profile with them."""

from __future__ import annotations

from mlflow_stack.profile import Profile, load_profile
from mlflow_stack.render import render_profile

# Every character that has broken a setup script: % for INI, $ for compose, @ : / # ? & for
# URLs, quotes and backslashes for shells and YAML, and characters beyond ASCII.
HOSTILE_PASSWORDS = [
    "p%a$s@w:o/r#d'\"; ü ${X}",
    "$$dollar$ and %(percent)s and %%",
    "at@sign/slash?query#frag&amp=1+plus",
    "quote'single\"double`back\\slash",
    "${MLFLOW_STACK_DB_PASSWORD:-x} $HOME %",
    "unicode ü漢字🙂 [brackets] {braces} ; semicolon = equals",
]


def compose_literal(canonical: str) -> str:
    """The value a container gets: `config` prints the canonical form, every '$' as '$$'."""
    return canonical.replace("$$", "$")


def render_with(stack_home, monkeypatch, profile_name: str = "ci", **environ: str) -> Profile:
    for key, value in environ.items():
        monkeypatch.setenv(key, value)
    profile = load_profile(profile_name)
    render_profile(profile)
    return profile


def service_argv(service: dict) -> str:
    """A compose service's command, entrypoint and healthcheck, as one string to search."""
    argv: list[str] = []
    for key in ("command", "entrypoint"):
        value = service.get(key) or []
        argv += [value] if isinstance(value, str) else list(value)
    argv += list((service.get("healthcheck") or {}).get("test") or [])
    return "\0".join(argv)
