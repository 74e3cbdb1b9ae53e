DROP TABLE IF EXISTS crm_connections;
DROP TABLE IF EXISTS crm_fetch_cache;
DROP INDEX IF EXISTS conversions_enrichment;
