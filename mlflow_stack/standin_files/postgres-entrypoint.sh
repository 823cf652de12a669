#!/usr/bin/env bash
# Entrypoint of the local PostgreSQL stand-in that mlflow_stack/standins.py builds when the
# official postgres:18 image cannot be pulled. It keeps the official docker-entrypoint.sh
# contract that the compose file relies on:
#   POSTGRES_USER (default postgres), POSTGRES_PASSWORD, POSTGRES_DB (default the user),
#   POSTGRES_INITDB_ARGS, POSTGRES_HOST_AUTH_METHOD (default scram-sha-256), their *_FILE
#   variants, /docker-entrypoint-initdb.d/*.sql|*.sql.gz|*.sh run once at first init,
#   PGDATA=/var/lib/postgresql/18/docker, and the server as uid 999 `postgres`.
# The password is only ever read from the environment (or its file) and written to a 0600 file
# under /tmp for initdb: it is never printed nor placed on a command line.
set -Eeuo pipefail

INITDB_DIR=/docker-entrypoint-initdb.d
SOCKET_DIR=/var/run/postgresql

# VAR, or the contents of the file VAR_FILE names (Docker secrets); never both.
file_env() {
	local var="$1" default="${2:-}"
	local file_var="${var}_FILE"
	if [ -n "${!var:-}" ] && [ -n "${!file_var:-}" ]; then
		echo >&2 "error: both $var and $file_var are set; they are exclusive"
		exit 1
	fi
	local value="$default"
	if [ -n "${!var:-}" ]; then
		value="${!var}"
	elif [ -n "${!file_var:-}" ]; then
		value="$(<"${!file_var}")"
	fi
	export "$var"="$value"
	unset "$file_var"
}

setup_env() {
	file_env POSTGRES_PASSWORD
	file_env POSTGRES_USER postgres
	file_env POSTGRES_DB "$POSTGRES_USER"
	file_env POSTGRES_INITDB_ARGS
	: "${POSTGRES_HOST_AUTH_METHOD:=scram-sha-256}"
}

# As root: the folders exist and belong to postgres, also on a fresh named volume.
create_directories() {
	mkdir -p "$PGDATA" "$SOCKET_DIR"
	chmod 00700 "$PGDATA"
	chmod 03775 "$SOCKET_DIR"
	if [ "$(id -u)" = 0 ]; then
		find "$PGDATA" "$SOCKET_DIR" \! -user postgres -exec chown postgres:postgres '{}' +
	fi
}

verify_minimum_env() {
	if [ -z "$POSTGRES_PASSWORD" ] && [ "$POSTGRES_HOST_AUTH_METHOD" != trust ]; then
		echo >&2 "error: the database is uninitialized and POSTGRES_PASSWORD is not set" \
			"(or set POSTGRES_HOST_AUTH_METHOD=trust to allow connections without one)"
		exit 1
	fi
}

init_database_dir() {
	# A global, so the EXIT trap still finds it when initdb fails.
	PWFILE=""
	if [ -n "$POSTGRES_PASSWORD" ]; then
		PWFILE="$(mktemp /tmp/initdb-pwfile.XXXXXX)"
		trap 'rm -f "$PWFILE"' EXIT
		printf '%s\n' "$POSTGRES_PASSWORD" >"$PWFILE"
	fi
	# eval, like the official image, so quoted words in POSTGRES_INITDB_ARGS stay whole.
	eval 'initdb --username="$POSTGRES_USER" ${PWFILE:+--pwfile="$PWFILE"} '"$POSTGRES_INITDB_ARGS"
	if [ -n "$PWFILE" ]; then
		rm -f "$PWFILE"
		trap - EXIT
	fi
	printf '\nhost all all all %s\n' "$POSTGRES_HOST_AUTH_METHOD" >>"$PGDATA/pg_hba.conf"
	# The official image's socket folder (the image's PGHOST); these binaries' built-in one is
	# /tmp, and initdb writes that default over anything the sample file says.
	printf "\nunix_socket_directories = '%s'\n" "$SOCKET_DIR" >>"$PGDATA/postgresql.conf"
}

psql_init() {
	psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --no-password --no-psqlrc "$@"
}

# The init steps talk to a server that listens on the socket only.
temp_server_start() {
	export PGPASSWORD="${PGPASSWORD:-$POSTGRES_PASSWORD}"
	PGUSER="${PGUSER:-$POSTGRES_USER}" pg_ctl -D "$PGDATA" \
		-o "-c listen_addresses='' -p ${PGPORT:-5432}" -w start
}

temp_server_stop() {
	PGUSER="${PGUSER:-$POSTGRES_USER}" pg_ctl -D "$PGDATA" -m fast -w stop
	unset PGPASSWORD
}

create_database() {
	if [ "$POSTGRES_DB" = postgres ]; then
		return
	fi
	psql_init --dbname postgres --set db="$POSTGRES_DB" <<-'EOSQL'
		CREATE DATABASE :"db";
	EOSQL
}

process_init_files() {
	local file
	for file in "$INITDB_DIR"/*; do
		[ -e "$file" ] || continue
		case "$file" in
			*.sh)
				if [ -x "$file" ]; then
					echo "$0: running $file"
					"$file"
				else
					echo "$0: sourcing $file"
					# shellcheck disable=SC1090  # the scripts are the user's
					. "$file"
				fi
				;;
			*.sql)
				echo "$0: running $file"
				psql_init --dbname "$POSTGRES_DB" -f "$file"
				;;
			*.sql.gz)
				echo "$0: running $file"
				gunzip -c "$file" | psql_init --dbname "$POSTGRES_DB"
				;;
			*) echo "$0: ignoring $file" ;;
		esac
	done
}

# `postgres --version` and friends print and exit: no init, no password needed.
wants_help() {
	local arg
	for arg; do
		case "$arg" in
			'-?' | --help | --describe-config | -C | -V | --version) return 0 ;;
		esac
	done
	return 1
}

main() {
	if [ "${1:0:1}" = '-' ]; then
		set -- postgres "$@"
	fi
	if [ "$1" != postgres ] || wants_help "$@"; then
		exec "$@"
	fi
	setup_env
	create_directories
	if [ "$(id -u)" = 0 ]; then
		# setpriv (util-linux) instead of gosu: the server must not run as root.
		exec setpriv --reuid=postgres --regid=postgres --init-groups "${BASH_SOURCE[0]}" "$@"
	fi
	if [ ! -s "$PGDATA/PG_VERSION" ]; then
		verify_minimum_env
		init_database_dir
		temp_server_start
		create_database
		process_init_files
		temp_server_stop
		echo "$0: PostgreSQL init process complete; ready for start up."
	else
		echo "$0: PostgreSQL database directory appears to contain a database; skipping init"
	fi
	# exec: the server is PID 1 and receives the stop signal itself.
	exec "$@"
}

main "$@"
