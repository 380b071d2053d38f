#!/bin/sh
# with-users.sh PASSWD SHADOW CMD [ARG...]: runs CMD with PASSWD and SHADOW bind-mounted over /etc/passwd
# and /etc/shadow. Run it under `unshare -m --propagation private`: the mounts stay in that private mount
# namespace and the host's files are never touched (upstream.test.ts: dante's RFC 1929 test user).
set -eu
passwd=$1
shadow=$2
shift 2
mount --bind "$passwd" /etc/passwd
mount --bind "$shadow" /etc/shadow
exec "$@"
