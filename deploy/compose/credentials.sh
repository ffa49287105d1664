#!/bin/sh
# The compose stack's credentials, created on the first `docker compose up` and kept in the
# `credentials` volume (mounted at /run/voxmesh): nothing to set up by hand, nothing in the
# environment or the compose file. Runs as root in the redis image, before everything else; an
# existing value is never replaced (`docker compose down -v` drops the volume, and with it every one).
#   redis-users/<user>       the Redis passwords: gateway asr llm tts keda exporter (uid 10001)
#   redis/users.acl          Redis's ACL file, hashes only (deploy/k8s/base/redis-acl.sh; uid 999)
#   gateway/token-secret     the session-token signing secret (VOXMESH_TOKEN_SECRET_FILE; uid 10001)
#   exporter/password.json   the exporter's Redis password, in redis_exporter's format (uid 59000)
#   grafana/admin-password   Grafana's admin password (uid 472)
set -eu
# Overridable for the tests only.
root=${VOXMESH_CREDENTIALS_DIR:-/run/voxmesh}
acl_script=${VOXMESH_REDIS_ACL_SCRIPT:-/opt/voxmesh/redis-acl.sh}
umask 077

new_secret() {
    if [ ! -s "$1" ]; then
        # 64 random hex digits (256 bits): URL-safe, so it can sit in a redis:// URL as it is.
        tr -dc 'a-f0-9' < /dev/urandom | head -c 64 > "$1"
        echo "credentials: created $1"
    fi
}

mkdir -p "$root/redis-users" "$root/redis" "$root/gateway" "$root/exporter" "$root/grafana"
for user in gateway asr llm tts keda exporter; do
    new_secret "$root/redis-users/$user"
done
new_secret "$root/gateway/token-secret"
new_secret "$root/grafana/admin-password"
sh "$acl_script" "$root/redis-users" "$root/redis/users.acl"
printf '{"redis://redis:6379": "%s"}\n' "$(cat "$root/redis-users/exporter")" > "$root/exporter/password.json"

# Each file is readable by the one uid that needs it: voxmesh 10001, redis 999, redis_exporter
# 59000, grafana 472.
chown -R 10001:10001 "$root/redis-users" "$root/gateway"
chown -R 999:1000 "$root/redis"
chown -R 59000:59000 "$root/exporter"
chown -R 472:0 "$root/grafana"
chmod 0755 "$root"
chmod 0500 "$root/redis-users" "$root/redis" "$root/gateway" "$root/exporter" "$root/grafana"
find "$root" -type f -exec chmod 0400 {} +
echo "credentials: ready"
