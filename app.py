"""accelvit dashboard. ``streamlit run app.py``; runs live in ``$ACCELVIT_HOME`` (default ``./runs``).

The navigation (Home, and the pages in ``pages/``) is sent before anything heavy is
imported: with a ``pages/`` folder Streamlit first shows its auto-discovered page list, and it
is replaced as soon as ``st.navigation`` runs. Home is ``accelvit/ui/home.py``. Pages stay
thin: they submit configs to the job manager and render what the run store says. The page
icon is a local file (a Material icon as favicon would be fetched from Google's font server).

Who may see it is decided first (``accelvit/ui/auth.py``): the server binds 127.0.0.1 by default
(``.streamlit/config.toml``); a login configured in ``.streamlit/secrets.toml`` (``[auth]``,
Streamlit's OIDC ``st.login``) is enforced here, before any page, for every URL.
"""

from pathlib import Path

import streamlit as st

from accelvit.ui.auth import gate

PAGE_ICON = str(Path(__file__).resolve().parent / "accelvit" / "ui" / "icon.png")  # = accelvit.ui.state.PAGE_ICON


def home() -> None:
    from accelvit.ui.home import render

    render()


#: The pages: (script or function, title, icon, URL path; None for Home, the default).
PAGES = [
    (home, "Home", ":material/home:", None),
    ("pages/1_Experiment.py", "Experiment", ":material/science:", "Experiment"),
    ("pages/2_Results.py", "Results", ":material/monitoring:", "Results"),
    ("pages/3_Inference.py", "Inference", ":material/image_search:", "Inference"),
    ("pages/4_Compare.py", "Compare", ":material/compare:", "Compare"),
]

st.set_page_config(page_title="accelvit", page_icon=PAGE_ICON, layout="wide")
# Private by default: with a login configured nobody gets past it, on any page (a page opened by its
# URL runs this script first); without one, a server open to the network says so on every page.
blocked = gate()
if blocked is not None:  # every URL shows the login (or refusal) page and nothing else is sent
    st.navigation([st.Page(blocked, title="Log in", icon=":material/login:", default=url is None, url_path=url)
                   for _, _, _, url in PAGES], position="hidden").run()
    st.stop()
st.navigation([st.Page(target, title=title, icon=icon, default=url is None, url_path=url)
               for target, title, icon, url in PAGES]).run()
