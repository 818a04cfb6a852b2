-- Which root key version new user keys are wrapped under, decided in one place for every
-- host: two-phase rotation prepares a version (its key material is distributed to every
-- worker host first), then activates it. Key material never enters the database.

CREATE TABLE root_keys (
    key_id        text PRIMARY KEY,
    state         text NOT NULL CHECK (state IN ('prepared', 'active', 'inactive', 'retired')),
    prepared_at   timestamptz NOT NULL DEFAULT now(),
    activated_at  timestamptz,
    retired_at    timestamptz
);
CREATE UNIQUE INDEX root_keys_one_active ON root_keys ((true)) WHERE state = 'active';

GRANT SELECT, INSERT, UPDATE ON root_keys TO browser_sessions_worker;
