#!/usr/bin/env bash
# Creates the `airflow` and `mlflow` databases, each owned by a role of the same name.
# The postgres image runs this once, on an empty data volume; reruns are harmless (IF NOT EXISTS).
set -euo pipefail

: "${AIRFLOW_DB_PASSWORD:?set AIRFLOW_DB_PASSWORD in .env (see deploy/.env.example)}"
: "${MLFLOW_DB_PASSWORD:?set MLFLOW_DB_PASSWORD in .env (see deploy/.env.example)}"

create_database() {
  local name="$1" password="$2"
  # Values travel as psql variables and are quoted by format(%I, %L), so a password may hold any character.
  psql --no-psqlrc -v ON_ERROR_STOP=1 --username "${POSTGRES_USER:-postgres}" --dbname postgres \
       -v name="$name" -v password="$password" <<'SQL'
SELECT format('CREATE ROLE %I LOGIN PASSWORD %L', :'name', :'password')
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'name') \gexec
SELECT format('CREATE DATABASE %I OWNER %I', :'name', :'name')
 WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'name') \gexec
SQL
  echo "portrait: database '$name' ready"
}

create_database airflow "$AIRFLOW_DB_PASSWORD"
create_database mlflow "$MLFLOW_DB_PASSWORD"
