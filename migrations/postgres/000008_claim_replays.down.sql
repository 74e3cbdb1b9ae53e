DROP INDEX IF EXISTS conversions_claim_replays;
