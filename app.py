"""accelvit dashboard. ``streamlit run app.py``; runs live in ``$ACCELVIT_HOME`` (default ``./runs``).

The navigation (Home, and the pages in ``pages/``) is sent before anything heavy is
imported: with a ``pages/`` folder Streamlit first shows its auto-discovered page list, and it
is replaced as soon as ``st.navigation`` runs. Home is ``accelvit/ui/home.py``. Pages stay
thin: they submit configs to the job manager and render what the run store says. The page
icon is a local file (a Material icon as favicon would be fetched from Google's font server).
"""

from pathlib import Path

import streamlit as st

PAGE_ICON = str(Path(__file__).resolve().parent / "accelvit" / "ui" / "icon.png")  # = accelvit.ui.state.PAGE_ICON


def home() -> None:
    from accelvit.ui.home import render

    render()


st.set_page_config(page_title="accelvit", page_icon=PAGE_ICON, layout="wide")
st.navigation([
    st.Page(home, title="Home", icon=":material/home:", default=True),
    st.Page("pages/1_Experiment.py", title="Experiment", icon=":material/science:", url_path="Experiment"),
    st.Page("pages/2_Results.py", title="Results", icon=":material/monitoring:", url_path="Results"),
    st.Page("pages/3_Inference.py", title="Inference", icon=":material/image_search:", url_path="Inference"),
    st.Page("pages/4_Compare.py", title="Compare", icon=":material/compare:", url_path="Compare"),
]).run()
