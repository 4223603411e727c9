#!/bin/sh
# The database roles of couponsvc, made once when PostgreSQL initialises an empty volume (the
# image runs /docker-entrypoint-initdb.d/*.sh then, as POSTGRES_USER, the superuser):
#
#   COUPON_MIGRATOR_USER  owns the schema: `couponsvc migrate` (the API pods' init container)
#                         creates and alters the tables as it. Not a superuser.
#   COUPON_RUNTIME_USER   serves (`couponsvc serve`, MIGRATE_ON_START=false): SELECT, INSERT and
#                         UPDATE on the tables the migration role makes, nothing else: no DDL,
#                         no DELETE, not an owner, not a superuser.
#
# The passwords come from the Secrets coupon-db-migrator and coupon-db-runtime. On a volume
# initialised before this script existed, run it once by hand (k8s/README.md, "Database roles").
# make test runs this very file against a real PostgreSQL (roles_test.go).
set -eu
psql -v ON_ERROR_STOP=1 --no-psqlrc --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  -v db="$POSTGRES_DB" \
  -v migrator="$COUPON_MIGRATOR_USER" -v migrator_password="$COUPON_MIGRATOR_PASSWORD" \
  -v runtime="$COUPON_RUNTIME_USER" -v runtime_password="$COUPON_RUNTIME_PASSWORD" <<'SQL'
CREATE ROLE :"migrator" LOGIN PASSWORD :'migrator_password' NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT;
CREATE ROLE :"runtime" LOGIN PASSWORD :'runtime_password' NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT;

-- Only these two connect; nobody else creates anything in the schema.
REVOKE ALL ON DATABASE :"db" FROM PUBLIC;
GRANT CONNECT ON DATABASE :"db" TO :"migrator", :"runtime";
ALTER SCHEMA public OWNER TO :"migrator";
REVOKE ALL ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO :"runtime";

-- Every table the migration role creates, now or in a later migration, can be read and
-- written by the runtime role, and no more.
ALTER DEFAULT PRIVILEGES FOR ROLE :"migrator" IN SCHEMA public
    GRANT SELECT, INSERT, UPDATE ON TABLES TO :"runtime";
ALTER DEFAULT PRIVILEGES FOR ROLE :"migrator" IN SCHEMA public
    GRANT USAGE, SELECT ON SEQUENCES TO :"runtime";
SQL
