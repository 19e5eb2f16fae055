-- The worker asks on every turn when the next provider promise (Akamai's estimatedSeconds) is
-- due: an index of the pending requests only keeps that from reading every request ever sent.
CREATE INDEX purge_batches_pending ON purge_batches (created_at) WHERE status = 'pending';
