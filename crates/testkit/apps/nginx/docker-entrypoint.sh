#!/bin/sh
# The entrypoint of Atoll's test nginx image, as the official image's: before nginx starts,
# the executable scripts in /docker-entrypoint.d run in order.
set -e

if [ "$1" = nginx ] || [ "$1" = nginx-debug ]; then
	for f in /docker-entrypoint.d/*.sh; do
		if [ -x "$f" ]; then
			echo "$0: running $f"
			"$f"
		fi
	done
fi
exec "$@"
