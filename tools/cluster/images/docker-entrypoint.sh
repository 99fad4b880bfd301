#!/bin/sh
# Entrypoint of the Envoy base stand-in (envoy-base.Containerfile), written for the same
# contract as the real image's: arguments that start with "-" are Envoy's; `loglevel`
# adds --log-level; started as root with ENVOY_UID not 0, it drops to the `envoy` user
# (ENVOY_UID/ENVOY_GID renumber it) after giving it the container's stdout/stderr.
# The real image drops privileges with su-exec, this one with util-linux's setpriv.
set -e
if [ "${1#-}" != "$1" ]; then
  set -- envoy "$@"
fi
if [ "$1" = envoy ] && [ -n "${loglevel:-}" ]; then
  set -- "$@" --log-level "$loglevel"
fi
if [ "${ENVOY_UID:-}" != 0 ] && [ "$(id -u)" = 0 ]; then
  [ -z "${ENVOY_UID:-}" ] || usermod -u "$ENVOY_UID" envoy
  [ -z "${ENVOY_GID:-}" ] || groupmod -g "$ENVOY_GID" envoy
  chown envoy:envoy /dev/stdout /dev/stderr
  exec setpriv --reuid envoy --regid envoy --init-groups "$@"
fi
exec "$@"
