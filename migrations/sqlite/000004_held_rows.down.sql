DROP INDEX IF EXISTS conversions_held;
