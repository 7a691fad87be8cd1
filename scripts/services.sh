#!/usr/bin/env bash
# Install and start every system service the tests need; safe to run again.
# System packages come from ONE apt-get call over APT_PACKAGES (only the missing
# ones; nothing when all are there). PostgreSQL: the machine's own server on
# 127.0.0.1:5432 when it takes trust logins, else a private cluster of ours on
# 127.0.0.1:5433. Storage servers for the movers (XRootD, and moto, fake-gcs-server,
# wsgidav from the venv) are started per test session by tests/storage/conftest.py.
# Writes .services/env, which `make test` sources.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .services
PY=.venv/bin/python

# Debian packages the tests need; extend this list (one apt-get install for all).
APT_PACKAGES=(
  xrootd-server xrootd-client   # movers: the XRootD server (run as user xrootd) and xrdcp
  slurmctld slurmd slurm-client munge  # the pilot factory's Slurm backend (services_slurm.sh)
  chromium                      # monitor: the headless browser Playwright drives
)
SYSTEM_URL="postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
PRIVATE_URL="postgresql+psycopg://postgres@127.0.0.1:5433/postgres"

pg_ok() {
  "$PY" - "$1" <<'PYEOF' >/dev/null 2>&1
import sys, sqlalchemy as sa
sa.create_engine(sys.argv[1], connect_args={"connect_timeout": 3}).connect().close()
PYEOF
}

as_postgres() { if [ "$(id -u)" = 0 ]; then su postgres -s /bin/sh -c "$*"; else sh -c "$*"; fi; }

# PostgreSQL only when neither the machine's server answers nor a server is installed.
if ! pg_ok "$SYSTEM_URL" && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 \
    && ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
  APT_PACKAGES+=(postgresql)
fi
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" \
    || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "services: installing ${missing[*]} (apt)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
command -v xrootd >/dev/null && id xrootd >/dev/null 2>&1 \
  || { echo "services: xrootd-server is not usable (no xrootd binary or user)" >&2; exit 1; }

url=""
if pg_ok "$SYSTEM_URL"; then
  url="$SYSTEM_URL"
else
  if command -v pg_ctlcluster >/dev/null 2>&1 && ls /etc/postgresql/*/main >/dev/null 2>&1; then
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -1)" main start \
      >/dev/null 2>&1 || true
    sleep 1
    pg_ok "$SYSTEM_URL" && url="$SYSTEM_URL"
  fi
fi
if [ -z "$url" ]; then
  PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
  DATA="$PWD/.services/pg"
  if [ ! -f "$DATA/PG_VERSION" ]; then
    mkdir -p "$DATA"
    [ "$(id -u)" = 0 ] && chown postgres "$DATA"
    as_postgres "$PGBIN/initdb -D '$DATA' --auth=trust -U postgres >/dev/null"
  fi
  if ! pg_ok "$PRIVATE_URL"; then
    as_postgres "$PGBIN/pg_ctl -D '$DATA' -l '$DATA/server.log' -w -o \"-p 5433 -k /tmp -c listen_addresses=127.0.0.1 -c fsync=off\" start >/dev/null"
  fi
  pg_ok "$PRIVATE_URL" || { echo "services: PostgreSQL did not start; see $DATA/server.log" >&2; exit 1; }
  url="$PRIVATE_URL"
fi
echo "export DAWMS_TEST_PG_URL='$url'" > .services/env
echo "services: PostgreSQL at $url"

# ---- Rucio (DDM bridge tests): the server, its database, RabbitMQ's STOMP plugin
scripts/services_rucio.sh

# ---- Slurm (pilot factory tests, marker slurm): a one-node cluster
scripts/services_slurm.sh
