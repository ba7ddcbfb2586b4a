"""Shared test setup: no network, fast failure of hub look-ups, small thread counts."""

from __future__ import annotations

import os

# Must be set before huggingface_hub is imported (by timm): hub look-ups then fail at once
# instead of retrying for a minute. Tests never need the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
