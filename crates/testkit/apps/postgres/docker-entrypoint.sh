#!/bin/bash
# The entrypoint of Atoll's test PostgreSQL image: what the official image's
# docker-entrypoint.sh does, in miniature. As root it creates PGDATA and the socket
# directory Debian's server expects (/run/postgresql), hands both to postgres and runs itself
# again as postgres; as postgres it initialises an empty PGDATA (POSTGRES_USER,
# POSTGRES_PASSWORD, POSTGRES_DB, POSTGRES_HOST_AUTH_METHOD, POSTGRES_INITDB_ARGS and the
# scripts in /docker-entrypoint-initdb.d) and then runs the command.
set -Eeo pipefail

# `docker run IMG -c shared_buffers=256MB` means the server with those options.
if [ "${1:0:1}" = '-' ]; then
	set -- postgres "$@"
fi

if [ "$1" = postgres ]; then
	mkdir -p "$PGDATA"
	if [ "$(id -u)" = 0 ]; then
		chmod 00700 "$PGDATA" || :
		mkdir -p /run/postgresql
		chmod 03775 /run/postgresql || :
		find "$PGDATA" /run/postgresql \! -user postgres -exec chown postgres:postgres '{}' +
		exec setpriv --reuid=postgres --regid=postgres --init-groups "$BASH_SOURCE" "$@"
	fi

	if [ ! -s "$PGDATA/PG_VERSION" ]; then
		: "${POSTGRES_USER:=postgres}"
		: "${POSTGRES_DB:=$POSTGRES_USER}"
		: "${POSTGRES_HOST_AUTH_METHOD:=scram-sha-256}"
		if [ -z "$POSTGRES_PASSWORD" ] && [ "$POSTGRES_HOST_AUTH_METHOD" != trust ]; then
			cat >&2 <<-'EOE'
				Error: Database is uninitialized and superuser password is not specified.
				       You must specify POSTGRES_PASSWORD to a non-empty value for the
				       superuser. For example, "-e POSTGRES_PASSWORD=password" on "docker run".

				       You may also use "POSTGRES_HOST_AUTH_METHOD=trust" to allow all
				       connections without a password. This is *not* recommended.
			EOE
			exit 1
		fi
		# shellcheck disable=SC2086 # POSTGRES_INITDB_ARGS is a list of options
		initdb --username="$POSTGRES_USER" --pwfile=<(printf '%s\n' "$POSTGRES_PASSWORD") $POSTGRES_INITDB_ARGS
		printf '\nhost all all all %s\n' "$POSTGRES_HOST_AUTH_METHOD" >> "$PGDATA/pg_hba.conf"

		# A server on the socket only, so nothing connects before the set-up is done.
		pg_ctl -D "$PGDATA" -o "-c listen_addresses='' -p ${PGPORT:-5432}" -w start
		export PGPASSWORD="$POSTGRES_PASSWORD"
		psql=(psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --no-password --no-psqlrc)
		if [ "$POSTGRES_DB" != postgres ]; then
			"${psql[@]}" --dbname postgres --set db="$POSTGRES_DB" <<<'CREATE DATABASE :"db" ;'
		fi
		for f in /docker-entrypoint-initdb.d/*; do
			case "$f" in
				*.sh) echo "$0: running $f"; . "$f" ;;
				*.sql) echo "$0: running $f"; "${psql[@]}" --dbname "$POSTGRES_DB" -f "$f" ;;
				*) [ -e "$f" ] && echo "$0: ignoring $f" ;;
			esac
		done
		unset PGPASSWORD
		pg_ctl -D "$PGDATA" -m fast -w stop
		echo 'PostgreSQL init process complete; ready for start up.'
	else
		echo 'PostgreSQL Database directory appears to contain a database; Skipping initialization'
	fi
fi

exec "$@"
