#!/usr/bin/env bash
# Install (if needed) and start PostgreSQL from Debian's packages for the store tests, as root.
# Safe to run again: it skips what is already done and keeps the role's password in step.
#
# Progress goes to stderr; stdout gets exactly one line, so CI can do:
#     eval "$(bash .ci/start-postgres.sh)"
# The same line is written to $PG_ENV_FILE (default /tmp/imaginebot-test-db.env) for `source`, and
# TEST_DATABASE_URL is appended to $GITHUB_ENV when that is set.
set -euo pipefail

ROLE="${PG_TEST_ROLE:-imaginebot_test}"
PASSWORD="${PG_TEST_PASSWORD:-imaginebot_test}"
DATABASE="${PG_TEST_DATABASE:-imaginebot_test}"
ENV_FILE="${PG_ENV_FILE:-/tmp/imaginebot-test-db.env}"

say() { echo "start-postgres: $*" >&2; }

if [ "$(id -u)" -ne 0 ]; then
    say "run me as root (I install packages and start the cluster)"
    exit 1
fi

if ! command -v pg_ctlcluster >/dev/null 2>&1 || ! compgen -G "/usr/lib/postgresql/*/bin/postgres" >/dev/null; then
    say "installing postgresql"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update >&2
    apt-get install -y postgresql >&2
fi

VERSION="$(find /usr/lib/postgresql -mindepth 1 -maxdepth 1 -type d -printf '%f\n' | sort -V | tail -n 1)"
if [ -z "$VERSION" ]; then
    say "no PostgreSQL server found under /usr/lib/postgresql"
    exit 1
fi

# The package creates the "main" cluster, unless the image told it not to.
if ! pg_lsclusters --no-header | awk -v v="$VERSION" '$1 == v && $2 == "main" { found = 1 } END { exit !found }'; then
    say "creating cluster $VERSION/main"
    pg_createcluster "$VERSION" main >&2
fi

cluster_field() { pg_lsclusters --no-header | awk -v v="$VERSION" -v col="$1" '$1 == v && $2 == "main" { print $col }'; }

if [ "$(cluster_field 4)" != "online" ]; then
    say "starting cluster $VERSION/main"
    pg_ctlcluster "$VERSION" main start >&2
fi
PORT="$(cluster_field 3)"

for _ in $(seq 1 60); do
    if pg_isready -q -h 127.0.0.1 -p "$PORT"; then
        break
    fi
    sleep 0.5
done
if ! pg_isready -q -h 127.0.0.1 -p "$PORT"; then
    say "PostgreSQL $VERSION is not accepting connections on 127.0.0.1:$PORT"
    exit 1
fi

psql_admin() { (cd / && runuser -u postgres -- psql -X -q -v ON_ERROR_STOP=1 -p "$PORT" "$@"); }

# The role owns the test database, so tests can create and drop a schema each.
if [ "$(psql_admin -tAc "SELECT 1 FROM pg_roles WHERE rolname = '$ROLE'")" != "1" ]; then
    say "creating role $ROLE"
    psql_admin -c "CREATE ROLE \"$ROLE\" LOGIN"
fi
psql_admin -c "ALTER ROLE \"$ROLE\" LOGIN PASSWORD '$PASSWORD'"
if [ "$(psql_admin -tAc "SELECT 1 FROM pg_database WHERE datname = '$DATABASE'")" != "1" ]; then
    say "creating database $DATABASE"
    psql_admin -c "CREATE DATABASE \"$DATABASE\" OWNER \"$ROLE\""
fi

URL="postgresql://$ROLE:$PASSWORD@127.0.0.1:$PORT/$DATABASE"
echo "export TEST_DATABASE_URL=$URL" >"$ENV_FILE"
if [ -n "${GITHUB_ENV:-}" ]; then
    echo "TEST_DATABASE_URL=$URL" >>"$GITHUB_ENV"
fi
say "PostgreSQL $VERSION ready on 127.0.0.1:$PORT (database $DATABASE, role $ROLE)"
echo "export TEST_DATABASE_URL=$URL"
