#!/usr/bin/env bash
# Run once by the postgres image on an empty data directory (mounted into
# /docker-entrypoint-initdb.d by docker-compose.yml): one role and one
# database per service, each owned by its role.
#
# DEVELOPMENT ONLY: every password is "<name>-dev-only", known to anyone who
# reads this file. The server is reachable only inside the compose network;
# never use these credentials anywhere else.
set -euo pipefail

for name in auth files index bpm; do
  psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
    -v name="$name" -v pw="$name-dev-only" <<'SQL'
SELECT format('CREATE ROLE %I LOGIN PASSWORD %L', :'name', :'pw')
  WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'name') \gexec
SELECT format('CREATE DATABASE %I OWNER %I', :'name', :'name')
  WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'name') \gexec
SQL
done
