"""The forensix certificate authority: CA, host certificates, revocation, seal keys.

``forensix pki init`` creates the CA, the log host's server certificate and its
checkpoint signing key; ``forensix pki issue HOST`` creates a host's client certificate
*and its initial forward-secure seal key* (enrollment); ``forensix pki revoke HOST``
adds every certificate of the host to the CRL; a running server closes its open connections.
"""

from forensix.pki.authority import (
    SERVER_NAME,
    Authority,
    HostBundle,
    PKIError,
)
from forensix.pki.tls import client_context, peer_identity, server_context

__all__ = [
    "SERVER_NAME",
    "Authority",
    "HostBundle",
    "PKIError",
    "client_context",
    "peer_identity",
    "server_context",
]
