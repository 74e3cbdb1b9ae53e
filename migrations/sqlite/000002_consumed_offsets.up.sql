-- How far the stage-change consumer has written each Kafka partition: every message before
-- next_offset is in the store. It moves in the same transaction as the batch it covers, so a
-- message redelivered after a crash between that write and the Kafka offset commit is
-- recognised and its stage changes are not counted again. updated_at is microseconds since
-- the Unix epoch, as every time column.
CREATE TABLE consumed_offsets (
    topic           TEXT NOT NULL,
    kafka_partition INTEGER NOT NULL,
    next_offset     INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    PRIMARY KEY (topic, kafka_partition)
);
