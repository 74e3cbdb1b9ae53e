DROP TABLE IF EXISTS consumed_offsets;
