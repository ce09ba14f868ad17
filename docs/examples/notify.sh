#!/bin/sh
# notify.sh: send one notice to dispatcher from a cron job, a backup script or any other service, with curl only.
#
#   notify.sh TYPE SUBJECT [FILE]      the notice's text from FILE, or from standard input when FILE is -
#
#   /usr/local/sbin/backup-home 2>&1 | notify.sh Backup/Failure "Nightly backup of /home failed" -
#   notify.sh Custom/DiskCheck "Disk check found errors" /var/log/diskcheck.log
#   notify.sh Custom/Deploy "Release 4.2 deployed"
#
# It posts what WHM's own Post to URL would post to dispatcher's cPanel bridge (POST /api/v1/ingest/cpanel): the
# message is SUBJECT and the text, in dispatcher's layout. TYPE (App/Event) decides the importance and who gets
# it, as for any event (docs/events.md; a type outside the catalog is low). Form fields, so no JSON to quote.
# The token is read from its file by curl and sent in the form: never on a command line, where `ps` shows it,
# nor in the URL, where a proxy's access log would keep it. See docs/cpanel-bridge.md.
#
# Environment:
#   DISPATCHER_URL         where dispatcher listens (default http://127.0.0.1:8470; https://… through a proxy)
#   DISPATCHER_TOKEN_FILE  the API token (default /etc/dispatcher/api.token; the file must be readable)
#   DISPATCHER_ACCOUNT     the cPanel account the notice is about, if any (its own contacts may get it too)
#
# Prints the event's id ({"id": "…"}); exits non-zero when dispatcher did not accept it (curl's 22 for an
# HTTP error: 400 for a bad TYPE, 401 for a wrong token).
set -eu

usage() {
    echo "usage: $0 TYPE SUBJECT [FILE|-]   (TYPE is App/Event, e.g. Backup/Failure)" >&2
    exit 2
}

[ $# -ge 2 ] && [ $# -le 3 ] || usage
type=$1
subject=$2
file=${3:-}
case $type in
    */*) ;;
    *) usage ;;
esac

url=${DISPATCHER_URL:-http://127.0.0.1:8470}
token_file=${DISPATCHER_TOKEN_FILE:-/etc/dispatcher/api.token}
[ -r "$token_file" ] || { echo "$0: cannot read the token file $token_file" >&2; exit 1; }

# curl reads a field's value from a file with NAME@FILE (`-` is standard input); an empty text when none is given.
if [ -n "$file" ]; then
    body="body@$file"
else
    body="body="
fi

# --retry: a timeout or a 5xx (the store could not record it) is tried again, up to 3 times (a timeout after
# dispatcher stored it makes a second event); --retry-connrefused: also while the daemon restarts.
exec curl -fsS --max-time 30 --retry 3 --retry-connrefused \
    --data-urlencode "token@$token_file" \
    --data-urlencode "application=${type%%/*}" \
    --data-urlencode "event_name=${type#*/}" \
    --data-urlencode "hostname=$(hostname -f 2>/dev/null || hostname)" \
    --data-urlencode "account=${DISPATCHER_ACCOUNT:-}" \
    --data-urlencode "subject=$subject" \
    --data-urlencode "$body" \
    "$url/api/v1/ingest/cpanel"
