"""The subscription root: live balances and alert events over WebSocket (graphql-transport-ws).

Named ``SubscriptionRoot`` because ``Subscription`` is the billing type; the exported SDL says
so in its ``schema { ... }`` block.
"""

from __future__ import annotations

import strawberry

from resolvers import live


@strawberry.type(
    description="Live updates over WebSocket at /graphql (protocol graphql-transport-ws). The"
    ' credential goes in connection_init\'s payload: {"Authorization": "Bearer ..."}; access'
    " follows the queries' rules."
)
class SubscriptionRoot:
    usage_balance = strawberry.subscription(
        resolver=live.usage_balance,
        description="The balance now, then again after every change to it: usage recorded on"
        " any gateway process, grants, reservations, voids, and the start of a new billing"
        " period. Another customer's, an unknown meter or subscription: one NOT_FOUND error."
        " Ends (UNAUTHENTICATED) when the credential expires or is revoked.",
    )
    usage_alerts = strawberry.subscription(
        resolver=live.usage_alerts,
        description="Alert events as they fire: a customer token gets its own; a secret key"
        " every customer's, or the named customer's.",
    )
