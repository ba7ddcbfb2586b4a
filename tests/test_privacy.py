"""Issue 13, finding 1: the dashboard is private by default.

- it binds 127.0.0.1 (``.streamlit/config.toml``);
- with a login configured (``[auth]``, Streamlit's OIDC ``st.login``) nothing renders before login,
  on any page, a page opened by its URL included; an allow-list narrows who gets in;
- without a login, a server bound to another address says on every page that it is open;
- the paths a browser user types are confined to the allowed roots (``accelvit.paths.check_allowed``).
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from accelvit.errors import InputError
from accelvit.paths import DATA_ROOTS_ENV, allowed_roots, check_allowed
from accelvit.ui import auth, forms

ROOT = Path(__file__).resolve().parents[1]
AUTH = {"redirect_uri": "http://localhost:8501/oauth2callback", "cookie_secret": "0123456789abcdef" * 2,
        "client_id": "accelvit-test", "client_secret": "not-a-secret",
        "server_metadata_url": "https://idp.invalid/.well-known/openid-configuration"}


# ----------------------------------------------------------------------------- bind address
def test_the_server_binds_loopback_by_default():
    cfg = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert cfg["server"]["address"] == "127.0.0.1"
    assert auth.is_local_address(cfg["server"]["address"])


@pytest.mark.parametrize("address, local", [
    ("127.0.0.1", True), ("127.0.1.1", True), ("localhost", True), ("::1", True), ("[::1]", True),
    (None, False), ("", False), ("0.0.0.0", False), ("::", False), ("192.0.2.2", False), ("myhost", False)])
def test_local_addresses(address, local):
    assert auth.is_local_address(address) is local


# ----------------------------------------------------------------------------- allowed roots
@pytest.fixture
def roots(tmp_path, monkeypatch):
    """home/ and data/ under tmp_path are the allowed roots; outside/ is not."""
    home, data, outside = tmp_path / "home", tmp_path / "data", tmp_path / "outside"
    for d in (home, data, outside):
        d.mkdir()
    monkeypatch.setenv("ACCELVIT_HOME", str(home))
    monkeypatch.setenv(DATA_ROOTS_ENV, f"{data}{os.pathsep}{os.pathsep} ")
    monkeypatch.chdir(tmp_path / "outside")  # ./data (the default data folder) is outside/data
    return home, data, outside


def test_allowed_roots_are_home_default_data_and_the_configured_ones(roots):
    home, data, outside = roots
    assert allowed_roots() == [home.resolve(), (outside / "data").resolve(), data.resolve()]


def test_a_path_inside_is_returned_resolved(roots):
    home, data, _ = roots
    (data / "cifar").mkdir()
    assert check_allowed(data / "cifar") == (data / "cifar").resolve()
    assert check_allowed(f"  {data}/x/../cifar ") == (data / "cifar").resolve()  # '..' inside stays inside
    assert check_allowed(home / "artifacts" / "not-yet") == (home / "artifacts" / "not-yet").resolve()
    assert check_allowed(data) == data.resolve()  # the root itself
    inner = data / "link-to-home"
    inner.symlink_to(home, target_is_directory=True)
    assert check_allowed(inner) == home.resolve()  # a link from one root into another


def test_a_path_outside_is_refused_naming_the_allowed_roots(roots):
    home, data, outside = roots
    for bad in (outside, "/etc", "/", Path(str(data) + "-sibling"), f"{data}/../outside", f"{data}/a/../../outside",
                "~"):
        with pytest.raises(InputError) as e:
            check_allowed(bad, "data folder")
        msg = str(e.value)
        assert "outside the folders this dashboard may read" in msg
        assert str(home.resolve()) in msg and str(data.resolve()) in msg and DATA_ROOTS_ENV in msg
        assert "not exist" not in msg and "not found" not in msg  # says nothing about the path itself


def test_a_link_out_of_a_root_is_refused(roots):
    _, data, outside = roots
    (outside / "secret.png").write_bytes(b"x")
    (data / "escape").symlink_to(outside, target_is_directory=True)
    (data / "file-link.safetensors").symlink_to(outside / "secret.png")
    for bad in (data / "escape", data / "escape" / "secret.png", data / "file-link.safetensors"):
        with pytest.raises(InputError, match="outside the folders"):
            check_allowed(bad)
    (data / "loop").symlink_to(data / "loop")
    with pytest.raises(InputError):
        check_allowed(data / "loop")
    for junk in ("", "   ", "a\x00b"):
        with pytest.raises(InputError):
            check_allowed(junk)


# ----------------------------------------------------------------------------- the Experiment form
def test_the_form_refuses_data_folders_outside_the_roots(roots):
    _, data, outside = roots
    (outside / "cat").mkdir()  # a perfectly good image folder tree, but outside
    res = forms.validate_form({"data.dataset": "folder", "data.root": str(outside)})
    assert not res.ok and "outside the folders" in res.errors["data.root"]
    for dataset in ("cifar10", "caltech101"):  # nothing is looked up outside: no "not found" with its path
        msg = forms.validate_form({"data.dataset": dataset, "data.root": "/etc"}).errors["data.root"]
        assert "outside the folders" in msg and "not found" not in msg
    esc = forms.validate_form({"data.dataset": "folder", "data.root": f"{data}/../outside"})
    assert "outside the folders" in esc.errors["data.root"]
    (data / "cat").mkdir()
    ok = forms.validate_form({"data.dataset": "folder", "data.root": f"{data}/./"})
    assert ok.ok, ok.errors
    assert ok.config.data.root == str(data.resolve())  # the run reads what was checked
    digits = forms.validate_form({})  # the default data set names no folder
    assert digits.ok and digits.config.data.root is None


def test_the_form_refuses_model_folders_and_weights_outside_the_roots(roots):
    home, _, outside = roots
    (outside / "w.safetensors").write_bytes(b"x")
    ck = forms.validate_form({"model_source": "checkpoint", "baseline_checkpoint": str(outside)})
    assert "outside the folders" in ck.errors["baseline_checkpoint"]
    w = forms.validate_form({"model_source": "timm", "timm_weights": "path",
                             "timm_weights_path": str(outside / "w.safetensors"), "data.img_size": 224})
    assert "outside the folders" in w.errors["weights_path"]
    (home / "w.safetensors").write_bytes(b"x")
    inside = forms.validate_form({"model_source": "timm", "timm_weights": "path",
                                  "timm_weights_path": str(home / "w.safetensors"), "data.img_size": 224})
    assert inside.ok, inside.errors
    assert all(forms.slot_of(f) == f for f in forms.PATH_FIELDS)
    assert str(home.resolve()) in forms.roots_help()


# ----------------------------------------------------------------------------- login: pure pieces
def test_allow_list_parsing_and_matching():
    allowed = auth.parse_users(" Ann@Example.org, bob@x.io;@team.example  ")
    assert allowed == {"ann@example.org", "bob@x.io", "@team.example"}
    assert auth.parse_users(["A@b.c", " "]) == {"a@b.c"}
    assert auth.user_allowed({"email": "ANN@example.org"}, allowed)
    assert auth.user_allowed({"email": "carol@team.example", "email_verified": True}, allowed)
    assert not auth.user_allowed({"email": "carol@team.example", "email_verified": False}, allowed)
    assert not auth.user_allowed({"email": "eve@evil.example"}, allowed)
    assert not auth.user_allowed({"email": "eve@sub.team.example"}, allowed)
    assert not auth.user_allowed({"name": "no e-mail"}, allowed)
    assert auth.user_allowed({"email": "anyone@x.org"}, set())  # no list: the provider decides


def test_providers_of_an_auth_section():
    assert auth.providers(AUTH) == [None]
    named = {"redirect_uri": "x", "cookie_secret": "y", "google": {"client_id": "a"}, "okta": {"client_id": "b"}}
    assert auth.providers(named) == ["google", "okta"]
    assert auth.providers({"redirect_uri": "x"}) == []


# ----------------------------------------------------------------------------- login: the app
def app(user: dict | None = None, secrets: dict | None = None) -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    if secrets:
        for k, v in secrets.items():
            at.secrets[k] = v
    if user is not None:
        at.user = user
    return at


def texts(elements) -> str:
    return "\n".join(str(e.value) for e in elements)


def test_with_a_login_configured_nothing_renders_before_login(app_home):
    at = app({"is_logged_in": False}, {"auth": AUTH}).run()
    assert not at.exception
    assert [t.value for t in at.title] == ["accelvit"]
    assert "private" in texts(at.markdown) and "Log in" in [b.label for b in at.button]
    assert "Quick demo" not in texts(at.subheader) and not at.dataframe and not at.sidebar.button
    assert not app_home.exists()  # no job manager, no run store: nothing was read
    # Streamlit's default AppTest user has no is_logged_in at all: still the login page
    assert [b.label for b in app(secrets={"auth": AUTH}).run().button] == ["Log in"]


def test_a_page_opened_by_its_url_shows_the_login_too(app_home):
    at = app({"is_logged_in": True, "email": "ann@example.org"}, {"auth": AUTH}).run()
    assert "Quick demo" in texts(at.subheader)
    assert "Signed in as ann" in texts(at.sidebar.caption)
    at.switch_page("pages/1_Experiment.py").run()
    assert [t.value for t in at.title] == ["Experiment"]
    # The next run asks for /Experiment as a logged-out browser would. AppTest starts every run in
    # Streamlit's pages/-folder mode, which runs the page script without app.py (so does a server
    # until app.py's st.navigation has run once): the page must be turned back through app.py.
    at.user = {"is_logged_in": False}
    at.run()
    assert not at.exception
    assert [t.value for t in at.title] == ["accelvit"] and [b.label for b in at.button] == ["Log in"]
    assert not at.text_input and not at.number_input


def test_the_allow_list_refuses_other_accounts(app_home, monkeypatch):
    monkeypatch.setenv(auth.ALLOWED_USERS_ENV, "ann@example.org")
    at = app({"is_logged_in": True, "email": "eve@evil.example"}, {"auth": AUTH}).run()
    assert not at.exception
    assert "eve@evil" in texts(at.error) and "not allowed" in texts(at.error)
    assert [b.label for b in at.button] == ["Log out"] and "Quick demo" not in texts(at.subheader)
    at.button(key="logout").click().run()  # a browser follows the logout redirect and loads again:
    assert at.user == {"is_logged_in": False}
    assert [b.label for b in at.run().button] == ["Log in"]
    # the secrets file's [accelvit] allowed_users counts too; @domain entries admit a domain
    monkeypatch.delenv(auth.ALLOWED_USERS_ENV)
    ok = app({"is_logged_in": True, "email": "bob@team.example"},
             {"auth": AUTH, "accelvit": {"allowed_users": ["@team.example"]}}).run()
    assert not ok.exception and "Quick demo" in texts(ok.subheader)
    no = app({"is_logged_in": True, "email": "bob@other.example"},
             {"auth": AUTH, "accelvit": {"allowed_users": ["@team.example"]}}).run()
    assert "not allowed" in texts(no.error)


def test_an_allow_list_without_a_login_fails_closed(app_home, monkeypatch):
    monkeypatch.setenv(auth.ALLOWED_USERS_ENV, "ann@example.org")
    at = app().run()
    assert "no login is configured" in texts(at.error) and "Quick demo" not in texts(at.subheader)
    assert not app_home.exists()


def test_an_unreadable_secrets_file_fails_closed(app_home, monkeypatch, tmp_path):
    broken = tmp_path / "secrets.toml"
    broken.write_text("[auth\nclient_id = ")
    monkeypatch.setattr(auth, "_secrets_files", lambda: [broken])
    at = app().run()
    assert str(broken) in texts(at.error) and "cannot be read" in texts(at.error)
    assert "Quick demo" not in texts(at.subheader) and not app_home.exists()


def test_login_needs_authlib_and_says_how_to_install_it(app_home, monkeypatch):
    monkeypatch.setattr(auth, "authlib_missing", lambda: True)
    at = app({"is_logged_in": False}, {"auth": AUTH}).run()
    assert "pip install 'streamlit[auth]'" in texts(at.error) and at.button(key="login:default").disabled
    monkeypatch.setattr(auth, "authlib_missing", lambda: False)
    at = app({"is_logged_in": False}, {"auth": {k: v for k, v in AUTH.items() if k != "client_id"},
                                        }).run()
    assert not at.exception  # an [auth] without a complete provider still shows only the login page
    assert "Quick demo" not in texts(at.subheader)


def test_an_open_server_without_login_says_so_on_every_page(app_home, monkeypatch):
    monkeypatch.setattr(auth, "server_address", lambda: "0.0.0.0")
    at = app().run()
    assert not at.exception and "Quick demo" in texts(at.subheader)
    warning = texts(at.warning)
    assert "open to the network without a login" in warning and "0.0.0.0" in warning
    at.switch_page("pages/4_Compare.py").run()
    assert "open to the network without a login" in texts(at.warning)
    monkeypatch.setattr(auth, "server_address", lambda: None)  # every interface
    assert "every network interface" in texts(app().run().warning)
    monkeypatch.setattr(auth, "server_address", lambda: "127.0.0.1")
    assert "open to the network" not in texts(app().run().warning)


# ----------------------------------------------------------------------------- a real server
@pytest.mark.browser
@pytest.mark.slow
def test_a_fresh_server_with_a_login_shows_only_the_login_page_at_any_url(tmp_path):
    """``streamlit run app.py`` with ``[auth]``, a fresh run store, and /Experiment as the very first
    request (the one that used to run the page without app.py): the login page, no run store opened."""
    pytest.importorskip("playwright")
    from playwright.sync_api import expect, sync_playwright

    from bench.live_watch import CHROMIUM_ARGS, start_server

    chromium = next((c for c in (os.environ.get("ACCELVIT_CHROMIUM"), "/usr/bin/chromium") if c and
                     os.access(c, os.X_OK)), None)
    if chromium is None:
        pytest.skip("no Chromium binary (apt-get install chromium)")
    secrets = tmp_path / "secrets.toml"
    secrets.write_text("[auth]\n" + "".join(f'{k} = "{v}"\n' for k, v in AUTH.items()))
    home = tmp_path / "home"
    proc, url = start_server(home, tmp_path / "streamlit.log", env={"STREAMLIT_SECRETS_FILES": str(secrets)})
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
            page = browser.new_page()
            for path in ("/Experiment", "/Results", "/"):
                page.goto(url + path, wait_until="domcontentloaded")
                expect(page.get_by_text("This dashboard is private. Log in to continue.")).to_be_visible(
                    timeout=60_000)
                expect(page.get_by_role("button", name="Log in")).to_be_visible()
                assert page.get_by_text("Launch").count() == 0 and page.get_by_text("Page not found").count() == 0
            browser.close()
        assert not home.exists()  # no job manager, no run store: nothing of the server was read
    finally:
        proc.terminate()
        proc.wait(30)
