-- Restatements and retractions find the conversion they adjust (and the latest value sent
-- for it) through retracts_key; only adjustment rows carry one.
CREATE INDEX conversions_adjusts ON conversions (retracts_key) WHERE retracts_key <> '';
