"""Links cut on purpose (the partition drill's switch on a region): the peers it neither reaches nor hears.

A region's fault switch (`{"cut": [...]}`, bookstore.region.faults) sets the peers. Every request between
regions passes the signer on the way out and the verifier on the way in (bookstore.kernel.auth), which
read them: a request to a cut peer fails as a connection that cannot be opened fails, one from it is
answered 503, and an answer streaming to it ends at its next chunk.
"""

from __future__ import annotations

import httpx


class CutLinks:
    """The peer regions one region is cut off from (none at first); read on every request to a peer."""

    def __init__(self) -> None:
        self.peers: frozenset[str] = frozenset()

    def refuse(self, request: httpx.Request, destination: str) -> None:
        """Raises httpx.ConnectError, as an unreachable peer would, when the link to `destination` is cut."""
        if destination in self.peers:
            raise httpx.ConnectError(f"the link to {destination} is cut (fault switch)", request=request)
