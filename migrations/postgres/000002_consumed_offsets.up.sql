-- How far the stage-change consumer has written each Kafka partition: every message before
-- next_offset is in the store. It moves in the same transaction as the batch it covers, so a
-- message redelivered after a crash between that write and the Kafka offset commit is
-- recognised and its stage changes are not counted again.
CREATE TABLE consumed_offsets (
    topic           text NOT NULL,
    kafka_partition integer NOT NULL,
    next_offset     bigint NOT NULL,
    updated_at      timestamptz NOT NULL,
    PRIMARY KEY (topic, kafka_partition)
);
