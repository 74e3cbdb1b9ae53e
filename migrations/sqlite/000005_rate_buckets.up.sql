-- One token bucket per destination, shared by every worker on this database, so a
-- platform quota (per Google Cloud project, per Meta app) holds cluster-wide instead of
-- being multiplied by the number of instances.
CREATE TABLE rate_buckets (
    destination text PRIMARY KEY,
    tokens      REAL NOT NULL,
    updated_us  INTEGER NOT NULL -- microseconds since the Unix epoch, UTC
);
