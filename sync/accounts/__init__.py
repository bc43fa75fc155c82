"""People's calendar accounts: connect, import, disconnect, list, and the secret keys behind them.

Every change here changes a person's channel, so each one records, in its own
transaction, that every session of theirs owes a re-plan; the planner then
withdraws the old copy (a CANCEL, or an event delete) and places the new one.
"""

from sync.accounts.connect import complete_connect, connect_url
from sync.accounts.disconnect import Disconnected, disconnect
from sync.accounts.imports import ImportedIntegration, ImportResult, import_integrations
from sync.accounts.keys import Rotation, rotate_keys
from sync.accounts.listing import IntegrationInfo, list_integrations

__all__ = ["Disconnected", "ImportResult", "ImportedIntegration", "IntegrationInfo", "Rotation", "complete_connect",
           "connect_url", "disconnect", "import_integrations", "list_integrations", "rotate_keys"]
