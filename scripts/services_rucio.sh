#!/usr/bin/env bash
# The Rucio 41 server the DDM bridge's tests run against (notes/services.md, verified
# here): its own venv, role + database `rucio` in the PostgreSQL that runs, rucio.cfg
# and alembic.ini, the schema with the base VO and the root account, the server under
# gunicorn on 127.0.0.1:18480, and RabbitMQ's STOMP plugin on 127.0.0.1:61613 for
# hermes. Safe to run again: every step checks first; a stamp file skips the slow ones.
# Called by scripts/services.sh; appends the Rucio settings to .services/env.
set -euo pipefail
cd "$(dirname "$0")/.."
RUCIO_VERSION=41.5.1
DIR="$PWD/.services/rucio"
VENV="$DIR/venv"
PORT=18480
PG_HOST=127.0.0.1
PG_PORT=5432
DB_URL="postgresql+psycopg://rucio:secret@$PG_HOST:$PG_PORT/rucio"
STAMP="$DIR/.ready-$RUCIO_VERSION"
mkdir -p "$DIR"

psql_admin() { psql -h "$PG_HOST" -p "$PG_PORT" -U postgres -X -q -tA "$@"; }

# 1. the server's own venv (never the project's: rucio pins its own SQLAlchemy, Flask...)
if ! "$VENV/bin/python" -c "import rucio, gunicorn, psycopg, stomp" >/dev/null 2>&1 || \
   [ "$("$VENV/bin/python" -c 'import rucio.vcsversion as v; print(v.VERSION)' 2>/dev/null)" != "$RUCIO_VERSION" ]; then
  echo "services: installing the Rucio $RUCIO_VERSION server into $VENV (a minute or two)"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q "rucio==$RUCIO_VERSION" "rucio-clients==$RUCIO_VERSION" \
    'psycopg[binary]' gunicorn stomp-py > "$DIR/pip.log" 2>&1 || { cat "$DIR/pip.log"; exit 1; }
  rm -f "$STAMP"
fi
SITE=$("$VENV/bin/python" -c 'import rucio, os; print(os.path.dirname(os.path.dirname(rucio.__file__)))')

# 2. rucio.cfg (server, daemons and clients) and alembic.ini (with logging sections:
#    without them build_database dies with KeyError: 'formatters')
cat > "$DIR/rucio.cfg.new" <<EOF
[common]
loglevel = INFO
[database]
default = $DB_URL
schema = dev
pool_size = 10
max_overflow = 20
[alembic]
cfg = $DIR/alembic.ini
[bootstrap]
userpass_identity = ddmlab
userpass_pwd = secret
userpass_email = ddmlab@localhost
[client]
rucio_host = http://127.0.0.1:$PORT
auth_host = http://127.0.0.1:$PORT
auth_type = userpass
username = ddmlab
password = secret
account = root
request_retries = 2
[policy]
permission = generic
schema = generic
lfn2pfn_algorithm_default = hash
support = dawms tests
support_rucio = https://github.com/rucio/rucio/issues/
[conveyor]
scheme = file,mock
transfertool = mock
use_preparer = False
[hermes]
services_list = elastic,activemq
elastic_endpoint = http://127.0.0.1:9/_bulk
[messaging-hermes]
brokers = 127.0.0.1
use_ssl = False
port = 61613
nonssl_port = 61613
username = guest
password = guest
destination = /topic/rucio.events
broker_virtual_host = /
voname = dawms
EOF
cat > "$DIR/alembic.ini.new" <<EOF
[alembic]
script_location = $SITE/rucio/db/sqla/migrate_repo/
sqlalchemy.url = $DB_URL
version_table_schema = dev
[loggers]
keys = root
[handlers]
keys = console
[formatters]
keys = generic
[logger_root]
level = WARN
handlers = console
[handler_console]
class = StreamHandler
args = (sys.stderr,)
level = NOTSET
formatter = generic
[formatter_generic]
format = %(levelname)-5.5s [%(name)s] %(message)s
EOF
for f in rucio.cfg alembic.ini; do
  if ! cmp -s "$DIR/$f.new" "$DIR/$f"; then mv "$DIR/$f.new" "$DIR/$f"; rm -f "$STAMP"; else rm "$DIR/$f.new"; fi
done
export RUCIO_CONFIG="$DIR/rucio.cfg"

# 3. role and database (each in its own call: CREATE DATABASE cannot run in a block)
if [ "$(psql_admin -c "SELECT 1 FROM pg_roles WHERE rolname = 'rucio'")" != 1 ]; then
  psql_admin -c "CREATE ROLE rucio LOGIN PASSWORD 'secret'"
  rm -f "$STAMP"
fi
if [ "$(psql_admin -c "SELECT 1 FROM pg_database WHERE datname = 'rucio'")" != 1 ]; then
  psql_admin -c "CREATE DATABASE rucio OWNER rucio"
  rm -f "$STAMP"
fi

# 4. schema, base VO, root account: once (the stamp), or again if the schema is gone
schema_ok() {
  [ "$(psql_admin -d rucio -c "SELECT 1 FROM dev.accounts WHERE account = 'root'" 2>/dev/null)" = 1 ]
}
if [ ! -f "$STAMP" ] || ! schema_ok; then
  if ! schema_ok; then
    echo "services: building the Rucio database"
    "$VENV/bin/python" -c 'from rucio.db.sqla.util import build_database, create_base_vo, create_root_account
build_database(); create_base_vo(); create_root_account()' > "$DIR/build.log" 2>&1 \
      || { cat "$DIR/build.log"; exit 1; }
  fi
  touch "$STAMP"
fi

# 5. the server under gunicorn. Ready = a real login and whoami, not /ping alone: /ping
#    answers without the database, so a server whose pooled connections went stale
#    (PostgreSQL restarted under it) pings fine and fails every call. Such a server, if
#    it is ours (pid file), is restarted; one that is not ours is reported.
ping_ok() { "$VENV/bin/python" - "$PORT" <<'PYEOF' >/dev/null 2>&1
import sys, urllib.request
urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/ping", timeout=3).read()
PYEOF
}
whoami_ok() { "$VENV/bin/python" - "$PORT" <<'PYEOF' 2>>"$DIR/readiness.log"
import json, sys, urllib.request
base = f"http://127.0.0.1:{sys.argv[1]}"
login = urllib.request.Request(f"{base}/auth/userpass", headers={
    "X-Rucio-Account": "root", "X-Rucio-Username": "ddmlab", "X-Rucio-Password": "secret"})
with urllib.request.urlopen(login, timeout=10) as resp:
    token = resp.headers["X-Rucio-Auth-Token"]
assert token, "no token"
who = urllib.request.Request(f"{base}/accounts/whoami", headers={"X-Rucio-Auth-Token": token})
with urllib.request.urlopen(who, timeout=10) as resp:
    assert json.loads(resp.read())["account"] == "root"
PYEOF
}
our_pid() { [ -f "$DIR/gunicorn.pid" ] && kill -0 "$(cat "$DIR/gunicorn.pid")" 2>/dev/null; }
start_server() {
  rm -f "$DIR/gunicorn.pid"
  "$VENV/bin/gunicorn" -D --no-control-socket -p "$DIR/gunicorn.pid" \
    --error-logfile "$DIR/gunicorn.log" -b "127.0.0.1:$PORT" -w 2 --threads 4 \
    --chdir "$DIR" rucio.web.rest.flaskapi.v1.main:application
}
# a server that pings logs in at once; a few tries cover a worker still starting
wait_ready() { for _ in $(seq 1 "${1:-6}"); do ping_ok && whoami_ok && return 0; sleep 0.5; done; return 1; }
if ! ping_ok; then
  if our_pid; then
    echo "services: waiting for the Rucio server (pid $(cat "$DIR/gunicorn.pid"))"
  else
    start_server
  fi
  for _ in $(seq 1 120); do ping_ok && break; sleep 0.5; done
  ping_ok || { echo "services: the Rucio server did not answer; see $DIR/gunicorn.log" >&2; exit 1; }
fi
if ! wait_ready; then
  if our_pid; then
    pid=$(cat "$DIR/gunicorn.pid")
    echo "services: the Rucio server (pid $pid) pings but cannot log in (stale database connections?); restarting it"
    kill -TERM "$pid"
    # the old master deletes its pid file on exit; a new one on the port before that fails
    for _ in $(seq 1 120); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    if kill -0 "$pid" 2>/dev/null; then
      echo "services: the Rucio server (pid $pid) did not stop" >&2; exit 1
    fi
    start_server
    wait_ready 120 || { echo "services: the restarted Rucio server cannot log in; see $DIR/gunicorn.log and $DIR/readiness.log" >&2; exit 1; }
  else
    echo "services: a Rucio server on 127.0.0.1:$PORT pings but login/whoami fails, and it is not ours (no live $DIR/gunicorn.pid): restart it; see $DIR/readiness.log" >&2
    exit 1
  fi
fi

# 6. RabbitMQ's STOMP plugin on 127.0.0.1:61613 only (hermes -> STOMP consumer); the
#    machine's RabbitMQ is started if it is not running (after a restart the plugin would
#    listen on every interface: it is re-enabled with the loopback listener)
stomp_ok() { (exec 3<>/dev/tcp/127.0.0.1/61613) 2>/dev/null; }
stomp_loopback_only() {
  ss -ltn 'sport = :61613' 2>/dev/null | grep -q '127.0.0.1:61613' && \
    ! ss -ltn 'sport = :61613' 2>/dev/null | grep -qE '(\*|0\.0\.0\.0|\[::\]):61613'
}
if command -v rabbitmqctl >/dev/null 2>&1; then
  if ! rabbitmqctl -q status >/dev/null 2>&1; then
    echo "services: starting RabbitMQ"
    if [ -x /etc/init.d/rabbitmq-server ]; then /etc/init.d/rabbitmq-server start >/dev/null
    else rabbitmq-server -detached; fi
    for _ in $(seq 1 60); do rabbitmqctl -q status >/dev/null 2>&1 && break; sleep 1; done
  fi
  if ! stomp_ok || ! stomp_loopback_only; then
    echo "services: enabling RabbitMQ's STOMP plugin on 127.0.0.1:61613"
    rabbitmq-plugins -q disable rabbitmq_stomp >/dev/null 2>&1 || true
    rabbitmqctl -q eval 'application:load(rabbitmq_stomp), application:set_env(rabbitmq_stomp, tcp_listeners, [{"127.0.0.1", 61613}]).' >/dev/null
    rabbitmq-plugins -q enable rabbitmq_stomp >/dev/null
    for _ in $(seq 1 60); do stomp_ok && break; sleep 0.5; done
  fi
fi
stomp_ok || echo "services: no STOMP broker on 127.0.0.1:61613 (the STOMP tests will fail)" >&2

{
  echo "export DAWMS_RUCIO_SERVER_DIR='$DIR'"
  echo "export DAWMS_TEST_STOMP='127.0.0.1:61613'"
} >> .services/env
echo "services: Rucio $RUCIO_VERSION at http://127.0.0.1:$PORT ($DIR)"
