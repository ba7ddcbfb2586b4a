"""Who may use the dashboard: Streamlit's built-in OIDC login when it is configured, a warning when not.

The dashboard starts jobs and reads files of the server, so it is private by default:

- ``.streamlit/config.toml`` binds it to 127.0.0.1 (only this machine reaches it);
- when ``.streamlit/secrets.toml`` has an ``[auth]`` section (Streamlit's ``st.login``: one OIDC
  provider in ``[auth]`` itself, or named ones in ``[auth.<name>]``), :func:`gate` lets nobody past
  the login page, on every page (``app.py``'s navigation is the one entry: a page opened by its
  URL runs ``app.py`` first);
- an optional allow-list narrows who may log in: ``$ACCELVIT_ALLOWED_USERS`` and/or
  ``allowed_users`` in the ``[accelvit]`` section of ``secrets.toml``, e-mail addresses or
  ``@domain`` entries. A provider open to anyone with an account (Google, say) needs one;
- with no login configured and the server bound to a non-loopback address, every page carries a
  warning that anyone on the network can start jobs and read files.

Failures close the door: a secrets file that exists but cannot be read, or an allow-list without
a login to check it against, shows what to fix and nothing else.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import streamlit as st
from streamlit.errors import StreamlitAPIException

ALLOWED_USERS_ENV = "ACCELVIT_ALLOWED_USERS"
#: The secrets.toml section holding accelvit's own settings (``allowed_users``).
SECRETS_SECTION = "accelvit"
#: The keys of a provider (``[auth]`` itself or ``[auth.<name>]``) that make it usable.
PROVIDER_KEYS = ("client_id", "client_secret", "server_metadata_url")

OPEN_WARNING = (
    "**This dashboard is open to the network without a login.** The server listens on {address}: anyone who "
    "can reach it can start jobs and read files under the allowed folders. Configure a login (`[auth]` in "
    "`.streamlit/secrets.toml`), put it behind a reverse proxy that asks for one, or bind it to 127.0.0.1 "
    "(`server.address` in `.streamlit/config.toml`).")


# ----------------------------------------------------------------------------- pure pieces
def md_escape(text: str) -> str:
    """``text`` shown literally in Markdown (claims come from the identity provider)."""
    return re.sub(r"([\\`*_{}\[\]()#+\-.!|<>~])", r"\\\1", str(text))


def is_local_address(address: str | None) -> bool:
    """True when a server bound to ``address`` is reachable only from this machine (a loopback
    address or ``localhost``). Empty / None means every interface (Streamlit's default): not local."""
    a = (address or "").strip().strip("[]")
    if not a:
        return False
    if a.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(a).is_loopback
    except ValueError:  # a host name: whatever it resolves to may be public
        return False


def parse_users(value: Any) -> set[str]:
    """An allow-list from ``"a@x.org, b@y.org"`` (commas, semicolons or spaces) or a list: lower-case
    e-mail addresses and ``@domain`` entries."""
    items: Iterable[Any] = re.split(r"[,;\s]+", value) if isinstance(value, str) else (value or [])
    return {str(i).strip().lower() for i in items if str(i).strip()}


def user_allowed(user: Mapping[str, Any], allowed: set[str]) -> bool:
    """Whether a logged-in ``user`` (``st.user``'s claims) is on the allow-list ``allowed``.

    An empty list allows every logged-in user. An address the provider marks unverified
    (``email_verified`` false) is never allowed by a list.
    """
    if not allowed:
        return True
    email = str(user.get("email") or "").strip().lower()
    if not email or user.get("email_verified") is False:
        return False
    domain = "@" + email.rsplit("@", 1)[-1] if "@" in email else None
    return email in allowed or (domain is not None and domain in allowed)


def providers(auth: Mapping[str, Any]) -> list[str | None]:
    """The login providers an ``[auth]`` section defines: None for the one in ``[auth]`` itself
    (``st.login()``), else the names of its ``[auth.<name>]`` sub-sections (``st.login(name)``)."""
    out: list[str | None] = [None] if any(k in auth for k in PROVIDER_KEYS) else []
    out += sorted(k for k, v in auth.items() if isinstance(v, Mapping))
    return out


# ----------------------------------------------------------------------------- configuration
def _secrets_files() -> list[Path]:
    try:
        return [Path(p) for p in (st.get_option("secrets.files") or [])]
    except Exception:  # an option missing in this Streamlit version
        return []


def auth_config() -> tuple[dict[str, Any] | None, str | None]:
    """``(auth section or None, problem or None)`` from Streamlit's secrets.

    A secrets file that exists but cannot be parsed is a problem (the login it may configure
    cannot be enforced), not "no login".
    """
    secrets = st.secrets
    try:
        loaded = secrets.load_if_toml_exists()
    except Exception as exc:  # noqa: BLE001 - any failure to read secrets is reported, not ignored
        loaded, err = False, exc
    else:
        err = None
    if not loaded:
        present = [p for p in _secrets_files() if p.exists()]
        if present or err is not None:
            where = ", ".join(str(p) for p in present) or "secrets.toml"
            return None, (f"The secrets file {where} cannot be read{f' ({err})' if err else ''}, so the login it "
                          f"may configure cannot be checked. Fix the file (valid TOML), then reload this page.")
        return None, None
    try:
        section = secrets.get("auth")
    except Exception as exc:  # noqa: BLE001
        return None, f"The [auth] section of the secrets file cannot be read ({exc})."
    if not section:
        return None, None
    return dict(section), None


def allowed_users() -> set[str]:
    """The allow-list: ``$ACCELVIT_ALLOWED_USERS`` plus ``[accelvit] allowed_users`` of secrets.toml."""
    users = parse_users(os.environ.get(ALLOWED_USERS_ENV, ""))
    try:
        if st.secrets.load_if_toml_exists():
            section = st.secrets.get(SECRETS_SECTION) or {}
            users |= parse_users(section.get("allowed_users"))
    except Exception:  # noqa: BLE001 - an unreadable file is reported by auth_config
        pass
    return users


def server_address() -> str | None:
    """The address the server was told to bind (``server.address``; None: every interface)."""
    return st.get_option("server.address")


def authlib_missing() -> bool:
    """Streamlit's login needs Authlib (``pip install 'streamlit[auth]'``)."""
    try:
        from streamlit.auth_util import is_authlib_installed
    except ImportError:  # pragma: no cover - another Streamlit layout
        import importlib.util

        return importlib.util.find_spec("authlib") is None
    return not is_authlib_installed()


# ----------------------------------------------------------------------------- pages
def _login_page(names: list[str | None], problem: str | None = None) -> Callable[[], None]:
    def login() -> None:
        st.title("accelvit")
        st.markdown("This dashboard is private. Log in to continue.")
        if problem:
            st.error(problem)
            return
        if not names:
            st.error("`[auth]` in the secrets file names no login provider: give `client_id`, `client_secret` "
                     "and `server_metadata_url` in `[auth]` (or in an `[auth.<name>]` section).")
            return
        missing = authlib_missing()
        if missing:
            st.error("A login is configured but Authlib is not installed on the server: "
                     "`pip install 'streamlit[auth]'` (Authlib >= 1.3.2), then restart the dashboard.")
        for name in names:
            label = "Log in" if name is None else f"Log in with {name}"
            if st.button(label, type="primary", icon=":material/login:", disabled=missing,
                         key=f"login:{name or 'default'}"):
                try:
                    st.login(name) if name is not None else st.login()
                except StreamlitAPIException as exc:  # an incomplete [auth] section, say
                    st.error(f"The login cannot start: {exc}")
    return login


def _refused_page(message: str, logout: bool) -> Callable[[], None]:
    def refused() -> None:
        st.title("accelvit")
        st.error(message)
        if logout and st.button("Log out", icon=":material/logout:", key="logout"):
            st.logout()
    return refused


def require_app_entry() -> None:
    """Rerun through ``app.py`` when a page script runs without it.

    With a ``pages/`` folder beside ``app.py``, Streamlit runs a page's script directly (its old
    multipage mode) until ``st.navigation`` has been called once in the server process: right
    after a start, opening ``/Experiment`` first would skip ``app.py`` and its login. Every page
    reaches the run store through :func:`accelvit.ui.state.manager`, which calls this first: such a
    run stops here and is rerun, this time through ``app.py`` (same URL, same page) and :func:`gate`.
    """
    try:
        from streamlit.runtime.pages_manager import PagesManager
        from streamlit.runtime.scriptrunner import get_script_run_ctx
    except ImportError:  # pragma: no cover - another Streamlit layout (tests/test_privacy.py checks it)
        return
    ctx = get_script_run_ctx()
    # Only a page's script body can be such a run. A widget callback (before the body) or a fragment
    # rerun belongs to a page already drawn through app.py; a rerun there would drop its action.
    if ctx is None or not ctx.has_script_started or ctx.fragment_ids_this_run:
        return
    if PagesManager.uses_pages_directory:
        PagesManager.uses_pages_directory = False  # what st.navigation in app.py sets
        st.rerun()


def gate() -> Callable[[], None] | None:
    """Call in ``app.py`` before the navigation. None: this session may use the dashboard (a
    warning banner or the signed-in user and a logout button are drawn). Otherwise the page to show
    instead of every page (login, refusal): render it as the only page, and nothing else."""
    auth, problem = auth_config()
    allowed = allowed_users()
    if problem:
        return _login_page([], problem)
    if auth is None:
        if allowed:
            return _refused_page(
                f"{ALLOWED_USERS_ENV} (or allowed_users in secrets.toml) is set, but no login is configured to "
                f"check it against: add an [auth] section to .streamlit/secrets.toml (Streamlit's OIDC login), "
                f"or remove the allow-list.", logout=False)
        address = server_address()
        if not is_local_address(address):
            st.warning(OPEN_WARNING.format(address=f"`{address}`" if address else "every network interface"),
                       icon=":material/warning:")
        return None
    user = st.user
    if not user.get("is_logged_in"):
        return _login_page(providers(auth))
    if not user_allowed(user, allowed):
        who = md_escape(user.get("email") or "this account")
        return _refused_page(f"{who} is not allowed to use this dashboard. Ask its administrator to add you to "
                             f"{ALLOWED_USERS_ENV}, or log in with another account.", logout=True)
    with st.sidebar:
        st.caption(f"Signed in as {md_escape(user.get('email') or user.get('name') or 'you')}")
        if st.button("Log out", icon=":material/logout:", key="logout"):
            st.logout()
    return None
