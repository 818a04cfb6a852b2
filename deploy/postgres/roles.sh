#!/bin/sh
# First start of the compose Postgres only (docker-entrypoint-initdb.d): create the two
# application roles with passwords. `browser-sessions migrate` (run as the schema owner)
# grants them what they may do; it keeps roles that already exist.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
    -v worker_password="$WORKER_DB_PASSWORD" \
    -v orchestrator_password="$ORCHESTRATOR_DB_PASSWORD" <<'SQL'
CREATE ROLE browser_sessions_worker LOGIN PASSWORD :'worker_password';
CREATE ROLE browser_sessions_orchestrator LOGIN PASSWORD :'orchestrator_password';
SQL
