-- Estimates from provider models: what the model said (history learns how far off it was) and
-- the estimate shown (the model corrected by history), in milliseconds. NULL before models.
ALTER TABLE invalidations ADD COLUMN model_ms BIGINT;
ALTER TABLE invalidations ADD COLUMN estimated_ms BIGINT;
-- History per provider, newest first.
CREATE INDEX invalidations_provider_finished ON invalidations (provider, id) WHERE finished_at IS NOT NULL;
