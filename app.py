"""accelvit dashboard: home page (placeholder until the dashboard issue lands)."""

import streamlit as st

from accelvit.utils import device_description

st.set_page_config(page_title="accelvit", layout="wide")
st.title("accelvit")
st.write("Prune Swin vision transformers (attention heads, SVD low rank, IHT sparsity) and measure "
         "honestly what it costs in accuracy, FLOPs, size and latency.")
st.caption(f"Device: {device_description('auto')}")
