# Helpers for checks that run against a unit inside run-unit's container (sourced by
# tests/systemd/run and tests/package/run, in their --check mode). run-unit gives the check
# CONTAINER_PID; the container has its own network namespace (run-unit -n), so clients run on
# this host's files but inside that namespace (nsenter -n). Every wait polls with a deadline.

HERE_LIB=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
WSCLIENT="$HERE_LIB/wsclient.py"
: "${CHECKS_FILE:=/dev/stderr}"
: "${SCRATCH:?}"

T0=$(date +%s%N)
since() { printf '%5.1fs' "$(($(date +%s%N) - T0))e-9"; }
# A passed check, for the report, with the time since the check began.
ok() { printf '  ok   %s  %s\n' "$(since)" "$*" >>"$CHECKS_FILE"; }
# A failed check: reported, and the check command exits 1 (run-unit then prints the journal).
die() {
    printf '  FAIL %s  %s\n' "$(since)" "$*" >>"$CHECKS_FILE"
    printf 'FAIL %s\n' "$*" >&2
    exit 1
}

in_c() { nsenter -t "$CONTAINER_PID" -a "$@"; }
net() { nsenter -t "$CONTAINER_PID" -n "$@"; }
prop() { in_c systemctl show -P "$2" "$1"; }

# wait_for SECONDS WHAT CMD...: run CMD until it succeeds; die after SECONDS.
wait_for() {
    local secs=$1 what=$2 deadline
    shift 2
    deadline=$(($(date +%s%N) + secs * 1000000000))
    until "$@" >/dev/null 2>&1; do
        [ "$(date +%s%N)" -lt "$deadline" ] || die "no $what within ${secs}s"
        sleep 0.05
    done
}

# GET PATH on the relay at 127.0.0.1:PORT (default 8080) inside the container: prints
# "STATUS BODY". Uses no proxy, follows nothing.
http_get() {
    net python3 - "$1" "${2:-8080}" <<'PY'
import http.client, sys
c = http.client.HTTPConnection("127.0.0.1", int(sys.argv[2]), timeout=5)
c.request("GET", sys.argv[1])
r = c.getresponse()
print(r.status, r.read().decode(errors="replace"))
PY
}

# The value of one sample of GET /metrics, e.g. metric 'wsrelay_config_reloads_total{result="ok"}'.
metric() {
    http_get /metrics "${2:-8080}" | awk -v name="$1" '$1 == name { print $2 }'
}
metric_is() { [ "$(metric "$1" "${3:-8080}")" = "$2" ]; }

# Journal entries of a unit as "PRIORITY<TAB>MESSAGE" lines; extra arguments go to journalctl.
journal() {
    local unit=$1
    shift
    in_c journalctl -u "$unit" -o json --no-pager "$@" | python3 -c '
import json, sys
for line in sys.stdin:
    e = json.loads(line)
    m = e.get("MESSAGE")
    if isinstance(m, list):
        m = bytes(m).decode(errors="replace")
    print(e.get("PRIORITY", "?") + "\t" + m)'
}
journal_has() { journal "$1" | grep -- "$2" >/dev/null; }

# --- WebSocket clients, driven line by line (see wsclient.py) ---------------------------------
declare -A CLIENT_IN CLIENT_OUT CLIENT_PID

# client_start NAME PATH [wsclient options]: connect in the background; client_open waits for it.
client_start() {
    local name=$1 path=$2
    shift 2
    mkfifo "$SCRATCH/$name.in" "$SCRATCH/$name.out"
    net python3 "$WSCLIENT" "$@" "ws://127.0.0.1:8080$path" \
        <"$SCRATCH/$name.in" >"$SCRATCH/$name.out" 2>"$SCRATCH/$name.err" &
    CLIENT_PID[$name]=$!
    local fd
    exec {fd}>"$SCRATCH/$name.in"
    CLIENT_IN[$name]=$fd
    exec {fd}<"$SCRATCH/$name.out"
    CLIENT_OUT[$name]=$fd
}

# client_line NAME SECONDS: the client's next output line (die on a FAIL line or silence).
client_line() {
    local line
    if ! read -r -t "$2" -u "${CLIENT_OUT[$1]}" line; then
        die "client $1 said nothing within $2 s ($(cat "$SCRATCH/$1.err" 2>/dev/null))"
    fi
    case $line in FAIL*) die "client $1: $line" ;; esac
    printf '%s\n' "$line"
}

client_open() { [ "$(client_line "$1" "${2:-10}")" = open ] || die "client $1 did not open"; }
client_connect() {
    client_start "$1" "$2"
    client_open "$1"
}

# client NAME COMMAND...: run one wsclient command and wait for its "ok". client_ask and
# client_ok are its halves, for a client that must be waiting (on a close, say) while the
# script does something else.
client() {
    client_ask "$@"
    client_ok "$@"
}
client_ask() {
    local name=$1
    shift
    printf '%s\n' "$*" >&"${CLIENT_IN[$name]}"
}
client_ok() {
    local name=$1 line
    shift
    line=$(client_line "$name" 15)
    [ "$line" = "ok $*" ] || die "client $name answered '$line' to '$*'"
}

# client_done NAME: end of input; the client closes and exits.
client_done() {
    local in=${CLIENT_IN[$1]} out=${CLIENT_OUT[$1]}
    exec {in}>&-
    wait "${CLIENT_PID[$1]}" || die "client $1 exited with $?"
    exec {out}<&-
}

# A client that is refused: prints the HTTP status wsclient saw.
refused_status() {
    net python3 "$WSCLIENT" "ws://127.0.0.1:${2:-8080}$1" </dev/null | sed -n 's/^FAIL refused \([0-9]*\).*/\1/p'
}
