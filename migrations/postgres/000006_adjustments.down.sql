DROP INDEX IF EXISTS conversions_adjusts;
