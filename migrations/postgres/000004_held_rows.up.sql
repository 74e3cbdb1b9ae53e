-- Held rows (the platform refused their conversion action) are released to ready by their hold probe.
CREATE INDEX conversions_held ON conversions (next_attempt_at) WHERE state = 'held';
