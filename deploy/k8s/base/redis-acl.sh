#!/bin/sh
# Writes Redis's ACL file from one password file per user, for compose (the `credentials` service) and
# Kubernetes (the Redis pod's init container):
#   redis-acl.sh PASSWORD_DIR ACL_FILE
# PASSWORD_DIR holds a file per user named after it (gateway, asr, llm, tts, keda, exporter). The ACL
# file stores SHA-256 hashes, never a password. The default user is off: every client authenticates.
set -eu
dir=$1
out=$2

# The services: every voxmesh key and channel (vm:*), no admin or dangerous command (CONFIG, FLUSHALL,
# KEYS, DEBUG, ACL, ...). One user each, so `CLIENT LIST` and `ACL LOG` say which service did what
# and one service's password can be changed alone.
SERVICE_RULES='resetkeys ~vm:* resetchannels &vm:* +@all -@admin -@dangerous'
# KEDA's redis-streams scaler: read the work queues' pending and lag counts, nothing else.
KEDA_RULES='resetkeys ~vm:* resetchannels -@all +@connection -@admin -@dangerous +xinfo +xpending +xlen'
# redis_exporter: server INFO and the work queues' stream and group info, read-only.
EXPORTER_RULES='resetkeys ~vm:* resetchannels -@all +@connection -@admin -@dangerous +info +xinfo +xlen +type'

# Check every password first: an `exit` inside $(...) below would leave only the subshell.
for user in gateway asr llm tts keda exporter; do
    if [ ! -s "$dir/$user" ]; then
        echo "redis-acl: no password for Redis user '$user' in $dir/$user" >&2
        exit 1
    fi
    value=$(cat "$dir/$user")
    if [ "${#value}" -lt 16 ]; then
        echo "redis-acl: the password of Redis user '$user' is shorter than 16 characters" >&2
        exit 1
    fi
done

password_hash() {
    printf '%s' "$(cat "$dir/$1")" | sha256sum | cut -d ' ' -f 1
}

{
    echo "user default off resetkeys resetchannels -@all"
    for user in gateway asr llm tts; do
        echo "user $user on #$(password_hash "$user") $SERVICE_RULES"
    done
    echo "user keda on #$(password_hash keda) $KEDA_RULES"
    echo "user exporter on #$(password_hash exporter) $EXPORTER_RULES"
} > "$out.tmp"
chmod 0400 "$out.tmp"
mv "$out.tmp" "$out"
echo "redis-acl: wrote $out (users: gateway asr llm tts keda exporter; default off)"
