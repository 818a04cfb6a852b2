-- The chain head carries an HMAC of (last_id, last_hash), so rolling the head back to an
-- earlier row after truncating the log's tail is detected without the audit key.
ALTER TABLE audit_head ADD COLUMN head_mac bytea;
