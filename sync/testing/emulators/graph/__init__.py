"""The Microsoft emulator: Graph calendar (:mod:`.calendar`, :mod:`.batch`) on the identity platform (:mod:`.identity`).

Mailbox limits are in :mod:`.throttling`, event bodies in :mod:`.schema`.
"""

from .calendar import GraphEmulator, GraphUser
from .identity import DEFAULT_SCOPES, GRAPH_RESOURCE

__all__ = ["DEFAULT_SCOPES", "GRAPH_RESOURCE", "GraphEmulator", "GraphUser"]
