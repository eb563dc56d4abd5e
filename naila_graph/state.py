"""The graph state, re-exported from the nodes' layer where it lives (``nodes/state.py``)."""

from __future__ import annotations

from nodes.state import TURN_DEFAULTS, NailaState, ResponseSource

__all__ = ["TURN_DEFAULTS", "NailaState", "ResponseSource"]
