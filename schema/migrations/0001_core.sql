-- Core tables: sessions, captures, results, the orchestrator's minimal tasks, comments.

CREATE TABLE browser_sessions (
    id                  text PRIMARY KEY,
    owner_id            text NOT NULL CHECK (length(owner_id) BETWEEN 1 AND 200),
    label               text NOT NULL CHECK (length(label) BETWEEN 1 AND 200),
    start_url           text NOT NULL,
    site                text NOT NULL,
    logged_in_selector  text,
    login_url_pattern   text,
    extra_origins       text[] NOT NULL DEFAULT '{}',
    status              text NOT NULL DEFAULT 'pending'
                        CHECK (status IN ('pending', 'active', 'expired', 'revoked')),
    version             integer NOT NULL DEFAULT 0 CHECK (version >= 0),
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    saved_at            timestamptz,
    last_used_at        timestamptz,
    expired_at          timestamptz,
    revoked_at          timestamptz,
    -- Encrypted payload (envelope): never readable by the orchestrator role.
    enc_format          smallint,
    enc_key_version     integer,
    enc_wrapped_key     bytea,
    enc_nonce           bytea,
    enc_ciphertext      bytea,
    CHECK ((enc_ciphertext IS NULL) = (enc_nonce IS NULL)),
    CHECK (status <> 'active' OR enc_ciphertext IS NOT NULL)
);
CREATE INDEX browser_sessions_owner_idx ON browser_sessions (owner_id, created_at);

CREATE TABLE captures (
    id              text PRIMARY KEY,
    session_id      text NOT NULL REFERENCES browser_sessions (id) ON DELETE CASCADE,
    owner_id        text NOT NULL,
    kind            text NOT NULL DEFAULT 'live' CHECK (kind IN ('live', 'import')),
    state           text NOT NULL DEFAULT 'queued'
                    CHECK (state IN ('queued', 'open', 'saving', 'saved', 'not_logged_in',
                                     'cancelled', 'timed_out', 'interrupted', 'failed')),
    signal          text CHECK (signal IN ('save', 'cancel')),
    signal_at       timestamptz,
    reason          text,
    error_code      text,
    liveview_url    text,
    liveview_token  text,
    worker_id       text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    opened_at       timestamptz,
    finished_at     timestamptz,
    expires_at      timestamptz
);
CREATE INDEX captures_session_idx ON captures (session_id, created_at);
CREATE INDEX captures_open_idx ON captures (state) WHERE state IN ('queued', 'open', 'saving', 'not_logged_in');

CREATE TABLE tasks (
    id          text PRIMARY KEY,
    owner_id    text NOT NULL,
    status      text NOT NULL DEFAULT 'pending'
                CHECK (status IN ('pending', 'running', 'succeeded', 'failed')),
    error_code  text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX tasks_owner_idx ON tasks (owner_id);

CREATE TABLE task_comments (
    id          bigserial PRIMARY KEY,
    task_id     text NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    body        text NOT NULL,
    author      text NOT NULL DEFAULT 'browser-sessions',
    dedupe_key  text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (task_id, dedupe_key)
);

CREATE TABLE browse_results (
    job_id          text PRIMARY KEY,
    task_id         text NOT NULL,
    owner_id        text NOT NULL,
    session_id      text,
    outcome         text NOT NULL CHECK (outcome IN ('ok', 'error')),
    error_code      text,
    error_message   text,
    final_url       text,
    http_status     integer,
    title           text,
    text            text,
    html            text,
    screenshot      bytea,
    attempts        integer NOT NULL DEFAULT 1,
    duration_ms     integer,
    created_at      timestamptz NOT NULL DEFAULT now(),
    CHECK ((outcome = 'ok') = (error_code IS NULL))
);
CREATE INDEX browse_results_task_idx ON browse_results (task_id);
