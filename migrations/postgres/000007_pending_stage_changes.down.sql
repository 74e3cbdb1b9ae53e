DROP TABLE IF EXISTS pending_stage_changes;
