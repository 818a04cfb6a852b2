-- Live-view access: no working token is stored anywhere. The producer mints a ticket for the
-- capture's owner and keeps only its SHA-256 here, with an HMAC (key file liveview.key) over
-- the capture, the hash and the expiry; the capture worker checks a presented token against
-- these rows. The orchestrator role may add tickets but never read them, and a row added
-- without the key opens nothing. The plain-text token column of captures is gone.
ALTER TABLE captures DROP COLUMN IF EXISTS liveview_token;

CREATE TABLE IF NOT EXISTS liveview_tickets (
    token_hash  bytea PRIMARY KEY CHECK (octet_length(token_hash) = 32),
    capture_id  text NOT NULL REFERENCES captures (id) ON DELETE CASCADE,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    mac         bytea NOT NULL CHECK (octet_length(mac) = 32)
);
CREATE INDEX IF NOT EXISTS liveview_tickets_capture_idx ON liveview_tickets (capture_id);

GRANT INSERT ON liveview_tickets TO browser_sessions_orchestrator;
GRANT SELECT, DELETE ON liveview_tickets TO browser_sessions_worker;
