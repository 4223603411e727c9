#!/usr/bin/env bash
# make run: serves couponsvc on :8080 with the demo coupons. PostgreSQL and Redis are used where
# the configuration points (DATABASE_URL, REDIS_ADDRS); any that is not reachable there is
# started locally under .data/ (binaries installed with apt when missing and running as root).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
data=$root/.data
mkdir -p "$data"

db_from_user=${DATABASE_URL:+yes}
export DATABASE_URL=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/coupon?sslmode=disable}
export REDIS_ADDRS=${REDIS_ADDRS:-127.0.0.1:6379}

scripts/deps.sh

# --- PostgreSQL --------------------------------------------------------------------------------
# host, port and database from the DSN (URL form).
parse_dsn() {
  rest=${DATABASE_URL#*://}; rest=${rest#*@}
  hostport=${rest%%/*}; dbname=${rest#*/}; dbname=${dbname%%\?*}
  pghost=${hostport%:*}; pgport=${hostport##*:}; [ "$pgport" = "$hostport" ] && pgport=5432
  admin_url=${DATABASE_URL/\/$dbname/\/postgres}
}
parse_dsn

export PGCONNECT_TIMEOUT=${PGCONNECT_TIMEOUT:-3} # a port that accepts but never answers must not hang us
pg_usable() { psql "$admin_url" -Atqc "select 1" >/dev/null 2>&1; }

if ! pg_usable && [ -z "$db_from_user" ] && (echo >/dev/tcp/127.0.0.1/"$pgport") 2>/dev/null; then
  # A PostgreSQL that wants a password (as Debian's freshly installed cluster does on TCP) holds
  # the default port: leave it alone and use a project-local one beside it.
  echo "run: the PostgreSQL on port $pgport does not accept postgres without a password;" >&2
  echo "     using a project-local PostgreSQL on port 55432 instead (set DATABASE_URL to choose)" >&2
  export DATABASE_URL=postgres://postgres@127.0.0.1:55432/coupon?sslmode=disable
  parse_dsn
fi

if ! pg_usable; then
  case "$pghost" in 127.0.0.1|localhost|::1) ;; *)
    echo "run: PostgreSQL at $pghost:$pgport is not reachable; fix DATABASE_URL or unset it" >&2; exit 1;;
  esac
  if (echo >/dev/tcp/127.0.0.1/"$pgport") 2>/dev/null; then
    echo "run: something listens on port $pgport but does not accept $admin_url;" >&2
    echo "     set DATABASE_URL to a PostgreSQL you can use, or free the port" >&2
    exit 1
  fi
  bindir=$(for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k4 -n -r); do echo "$d"; break; done)
  [ -n "$bindir" ] || bindir=$(dirname "$(command -v postgres)")
  as_pg=()
  if [ "$(id -u)" -eq 0 ]; then as_pg=(runuser -u postgres --); fi
  pgdata=$data/postgres
  if [ ! -s "$pgdata/PG_VERSION" ]; then
    echo "run: creating a local PostgreSQL in $pgdata" >&2
    mkdir -p "$pgdata"
    [ "$(id -u)" -eq 0 ] && chown -R postgres:postgres "$data/postgres" && chmod 755 "$data"
    "${as_pg[@]}" "$bindir/initdb" -D "$pgdata" -U postgres --auth=trust -E UTF8 --locale=C >/dev/null
  fi
  echo "run: starting the local PostgreSQL on 127.0.0.1:$pgport (log: $data/postgres.log)" >&2
  touch "$data/postgres.log"; [ "$(id -u)" -eq 0 ] && chown postgres "$data/postgres.log"
  "${as_pg[@]}" "$bindir/pg_ctl" -D "$pgdata" -l "$data/postgres.log" -w \
    -o "-p $pgport -c listen_addresses=127.0.0.1 -c unix_socket_directories=" start >/dev/null
  pg_usable || { echo "run: the local PostgreSQL does not answer; see $data/postgres.log" >&2; exit 1; }
fi
if [ "$(psql "$admin_url" -Atqc "select 1 from pg_database where datname = '$dbname'")" != 1 ]; then
  echo "run: creating database $dbname" >&2
  psql "$admin_url" -qc "CREATE DATABASE \"$dbname\"" >/dev/null
fi

# --- Redis ---------------------------------------------------------------------------------------
IFS=, read -r -a nodes <<<"$REDIS_ADDRS"
for node in "${nodes[@]}"; do
  node=${node// /}; host=${node%:*}; port=${node##*:}
  if [ "$(redis-cli -h "$host" -p "$port" ${REDIS_PASSWORD:+-a "$REDIS_PASSWORD"} ping 2>/dev/null)" = PONG ]; then
    continue
  fi
  case "$host" in 127.0.0.1|localhost|::1) ;; *)
    echo "run: Redis at $node is not reachable; fix REDIS_ADDRS or unset it" >&2; exit 1;;
  esac
  mkdir -p "$data/redis-$port"
  echo "run: starting a local Redis on 127.0.0.1:$port (log: $data/redis-$port.log)" >&2
  redis-server --port "$port" --bind 127.0.0.1 --daemonize yes --save "" --appendonly no \
    --dir "$data/redis-$port" --logfile "$data/redis-$port.log" ${REDIS_PASSWORD:+--requirepass "$REDIS_PASSWORD"}
  for _ in $(seq 50); do
    [ "$(redis-cli -h "$host" -p "$port" ${REDIS_PASSWORD:+-a "$REDIS_PASSWORD"} ping 2>/dev/null)" = PONG ] && break
    sleep 0.1
  done
done

# --- the service -------------------------------------------------------------------------------
go build -o couponsvc .
addr=${HTTP_ADDR:-:8080}
echo "run: couponsvc on $addr — Swagger UI: http://localhost:${addr##*:}/swagger/index.html" >&2
exec ./couponsvc serve "$@"
