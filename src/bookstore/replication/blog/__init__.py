"""Blog replication: replicas follow the primary's row-change log over signed HTTP; epochs fence promotions.

One region is the primary; every other region is a read-only replica. Each region keeps, in its own
database, the epoch it knows, the primary of that epoch and the history of epochs (`blog_epochs`: who
became primary at which epoch, and the lsn its log forked from). Every region holds a streaming long-poll
to every peer (`POST /replication/blog/follow`): the request carries the caller's epoch and history, every
line of the answer the callee's, so a region that meets a higher epoch adopts it at once, whichever side it
is on. A replica's stream to its primary also carries the primary's log after the replica's position; the
replica applies it in lsn order (rows, log records and position in one transaction).

Promotion raises the epoch (max known + 1) and records the fork lsn (the promoted replica's position).
Epochs are totally ordered by `(epoch, primary region)`: two promotions that computed the same number (both
sides of a partition, a retry sent to another region) are ordered by the region's id, so every region
picks the same winner and the history keeps one lineage. A promotion must reach a majority of the
electorate (the deployment's regions and every region the epoch history names) unless forced. A
former primary that meets the higher epoch becomes read-only in the same transaction that copies its
records past the fork into `blog_diverged` (kept and listed, never dropped); it rejoins by itself,
re-syncing from a snapshot of the new primary as soon as a stream from it says it is the writable
primary of the epoch adopted (the operator's `bookstore blog rejoin` does the same on demand,
idempotent). A primary that (re)starts takes no write until every region of the electorate has answered
with its epoch, or CONFIRM_TIMEOUT_S has passed (a region down or behind a cut link never answers; a
stream that fails is not an answer), so a deposed primary coming back never accepts a write it could
have known to refuse.
A planned switchover fences the primary (read-only), waits for the target to apply everything, then
promotes it: nothing is lost.

The package, by idea: `state` (epochs, a region's state, diverged writes), `wire` (the JSON of records,
histories and requests), `store` (the state in the region's own database), `peers` (reaching a peer),
`metrics`, `node` (one region's replication: follow, serve, promote, re-sync, rejoin by itself),
`routes` (its HTTP endpoints, for either node), `operator` (the operator's signed client and the
cross-region overview), `terminal` (the operator's tables); on MariaDB (`[storage] blog = "mysql"`),
`mariadb` (the GTID replication's operations) and `mariadb_node` (the region's node running them).
"""
