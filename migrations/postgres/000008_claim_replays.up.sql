-- ClaimDue picks fresh rows and replayed rows as two lists. Replayed rows are few, but
-- without an index of their own the replay list walked every ready row of the
-- destination (conversions_destination_state) to find them: hundreds of milliseconds a
-- claim behind a catch-up's backlog of a few hundred thousand rows, for every batch
-- uploaded. Only replayed rows are in this index, so other writes never touch it.
CREATE INDEX conversions_claim_replays ON conversions (destination, next_attempt_at, key) WHERE state = 'ready' AND replay;
