#!/usr/bin/env bash
# Make sure Postgres and RabbitMQ answer at the configured URLs: start the local servers,
# install them first when root on Debian, else say how to run them with compose.
set -euo pipefail
DB_URL=${BROWSER_SESSIONS_DATABASE_URL:-postgresql://postgres@127.0.0.1:5432/browser_sessions}
AMQP_URL=${BROWSER_SESSIONS_AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2F}

hostport() {  # URL default-port -> "host port"
  python3 - "$1" "$2" <<'PY'
import sys
from urllib.parse import urlsplit
u = urlsplit(sys.argv[1]); print(u.hostname or "127.0.0.1", u.port or int(sys.argv[2]))
PY
}
up() { timeout 2 bash -c "exec 3<>/dev/tcp/$1/$2" 2>/dev/null; }
wait_up() { for _ in $(seq 1 60); do up "$1" "$2" && return 0; sleep 1; done; return 1; }
root_debian() { [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; }
compose_hint() {
  echo "$1 is not reachable at $2:$3 and cannot be started here." >&2
  echo "Start it with: docker compose -f deploy/compose.yaml up -d postgres rabbitmq" >&2
  echo "and point at it: export BROWSER_SESSIONS_DATABASE_URL=postgresql://postgres:browser-sessions@127.0.0.1:5432/browser_sessions" \
       "BROWSER_SESSIONS_AMQP_URL=amqp://browser-sessions:browser-sessions@127.0.0.1:5672/%2F" >&2
  exit 1
}

read -r PG_HOST PG_PORT < <(hostport "$DB_URL" 5432)
if up "$PG_HOST" "$PG_PORT"; then
  echo "postgres: up at $PG_HOST:$PG_PORT"
else
  if ! ls /etc/postgresql/*/main >/dev/null 2>&1 && root_debian; then
    echo "postgres: installing Debian's postgresql"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  fi
  if command -v pg_ctlcluster >/dev/null && ls /etc/postgresql/*/main >/dev/null 2>&1; then
    echo "postgres: starting the local cluster"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
    wait_up "$PG_HOST" "$PG_PORT" || compose_hint Postgres "$PG_HOST" "$PG_PORT"
    echo "postgres: up at $PG_HOST:$PG_PORT"
  else
    compose_hint Postgres "$PG_HOST" "$PG_PORT"
  fi
fi

read -r MQ_HOST MQ_PORT < <(hostport "$AMQP_URL" 5672)
if up "$MQ_HOST" "$MQ_PORT"; then
  echo "rabbitmq: up at $MQ_HOST:$MQ_PORT"
else
  if ! command -v rabbitmq-server >/dev/null && root_debian; then
    echo "rabbitmq: installing Debian's rabbitmq-server"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rabbitmq-server >/dev/null
  fi
  if command -v rabbitmq-server >/dev/null; then
    echo "rabbitmq: starting the local server"
    rabbitmq-server -detached >/dev/null 2>&1 || true
    wait_up "$MQ_HOST" "$MQ_PORT" || compose_hint RabbitMQ "$MQ_HOST" "$MQ_PORT"
    echo "rabbitmq: up at $MQ_HOST:$MQ_PORT"
  else
    compose_hint RabbitMQ "$MQ_HOST" "$MQ_PORT"
  fi
fi
