#!/bin/sh
# The entrypoint of Atoll's test Redis image, as the official image's: options alone mean
# redis-server with them; as root it hands the working directory (/data) to redis and runs
# itself again as redis; protected mode is off unless a config file says otherwise.
set -e

if [ "${1#-}" != "$1" ] || [ "${1%.conf}" != "$1" ]; then
	set -- redis-server "$@"
fi

if [ "$1" = redis-server ] && [ "$(id -u)" = 0 ]; then
	find . \! -user redis -exec chown redis '{}' +
	exec setpriv --reuid=redis --regid=redis --init-groups "$0" "$@"
fi

if [ "$1" = redis-server ]; then
	protected=1
	config=
	if [ -f "$2" ]; then
		config="$2"
		if grep -q '^protected-mode' "$config"; then
			protected=
		fi
	fi
	if [ "$protected" ]; then
		shift
		if [ "$config" ]; then
			shift
		fi
		set -- --protected-mode no "$@"
		if [ "$config" ]; then
			set -- "$config" "$@"
		fi
		set -- redis-server "$@"
	fi
fi

if [ "$(umask)" = 0022 ]; then
	umask 0077
fi
exec "$@"
