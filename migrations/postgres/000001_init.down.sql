DROP TABLE IF EXISTS stage_counts;
DROP TABLE IF EXISTS conversion_subjects;
DROP TABLE IF EXISTS conversions;
DROP TABLE IF EXISTS clicks;
DROP TABLE IF EXISTS identities;
