# The checks of tests/systemd/run, one function per scenario; each runs on the host while
# run-unit's container is up, with the unit already active (lib.sh has the helpers).

CONF=/etc/wsrelay/wsrelay.toml

check_service() {
    [ "$(prop wsrelay ActiveState)/$(prop wsrelay SubState)" = active/running ] ||
        die "not active/running"
    # run-unit waited for `active`, which Type=notify reaches on READY=1; no retry here: the
    # port must answer at once, or READY=1 came before the listener.
    [ "$(http_get /healthz)" = "200 ok" ] || die "/healthz did not answer when systemd saw READY=1"
    ok "active (running) on READY=1, and /healthz answers at that moment"
    [ "$(prop wsrelay StatusText)" = serving ] || die "StatusText is '$(prop wsrelay StatusText)'"
    ok "StatusText=serving"

    local pid status
    pid=$(prop wsrelay MainPID)
    status=$(in_c cat "/proc/$pid/status")
    field() { printf '%s\n' "$status" | awk -v f="$1:" '$1 == f { $1 = ""; print substr($0, 2) }'; }
    [ "$(field NoNewPrivs)" = 1 ] || die "NoNewPrivs: $(field NoNewPrivs)"
    [ "$(field CapEff)" = 0000000000000000 ] || die "CapEff: $(field CapEff)"
    [ "$(field Seccomp)" = 2 ] || die "Seccomp: $(field Seccomp)"
    local uids
    uids=$(field Uid)
    for u in $uids; do [ "$u" != 0 ] || die "runs with uid 0 (Uid: $uids)"; done
    ok "/proc/$pid/status: NoNewPrivs 1, CapEff 0, Seccomp 2 (filter), Uid $uids"
    for dir in /etc /usr; do
        # Root of the container, in the daemon's own mount namespace: only a read-only mount
        # stops it.
        local err
        err=$(in_c nsenter -t "$pid" -m touch "$dir/wsrelay-write-test" 2>&1) &&
            die "$dir is writable in the daemon's mount namespace"
        case $err in *"Read-only file system"*) ;; *) die "writing $dir: $err" ;; esac
    done
    ok "/etc and /usr are read-only file systems in the daemon's mount namespace"

    client_connect a /chat
    client a send before reload
    client a expect before reload
    [ "$(refused_status /news)" = 404 ] || die "/news is not 404 before the reload"
    { in_c cat "$CONF"; printf '\n[[room]]\n# Added by the test.\npath = "/news"\n'; } >"$SCRATCH/new.toml"
    in_c sh -c "cat > $CONF" <"$SCRATCH/new.toml"
    in_c systemctl reload wsrelay
    wait_for 10 "room /news after the reload" sh -c "[ -z \"\$(refused_status /news)\" ]"
    client a send after reload
    client a expect after reload
    wait_for 5 "reloads ok = 1" metric_is 'wsrelay_config_reloads_total{result="ok"}' 1
    ok "systemctl reload: the new room /news is served; a client connected before still relays"

    printf '[server]\nmax_connections = "lots"\n' | in_c sh -c "cat > $CONF"
    in_c systemctl reload wsrelay
    wait_for 10 "a 'reload failed' line" journal_has wsrelay "reload failed"
    local line
    line=$(journal wsrelay | grep "reload failed")
    case $line in "4	"*"$CONF:2:"*) ;; *) die "the refused reload was logged as: $line" ;; esac
    [ "$(prop wsrelay ActiveState)" = active ] || die "not active after a broken reload"
    client a send still here
    client a expect still here
    [ -z "$(refused_status /news)" ] || die "/news gone: the broken file was applied"
    metric_is wsrelay_config_last_reload_successful 0 ||
        die "wsrelay_config_last_reload_successful is $(metric wsrelay_config_last_reload_successful)"
    ok "broken file on reload: still active, old config in force, <4> '${line#4	}'"

    local warnings
    warnings=$(journal wsrelay -p warning)
    printf '%s\n' "$warnings" | grep -q "reload failed" || die "journalctl -p warning lacks the warning"
    printf '%s\n' "$warnings" | awk -F'\t' '$1 > 4 { bad = 1 } END { exit bad }' ||
        die "journalctl -p warning shows lower priorities: $warnings"
    local all
    all=$(journal wsrelay)
    [ "$(printf '%s\n' "$all" | grep -c 'listening on 127.0.0.1:8080')" = 1 ] ||
        die "'listening on' is not logged exactly once: $(printf '%s\n' "$all" | grep 'listening on')"
    printf '%s\n' "$all" | grep -q $'^6\tconfig reloaded from' || die "no info-level 'config reloaded'"
    ! printf '%s\n' "$all" | cut -f2 | grep -q '^<[0-7]>' || die "a <N> prefix reached the journal"
    ok "journalctl -p warning: $(printf '%s\n' "$warnings" | wc -l) entries, all warning or worse;" \
        "'listening on' logged once, at info"

    client_connect b /news
    # The clients wait for the close frame, as a browser does, so the drain is not held up by
    # a client that never answers it.
    client_ask a expect-close 1001
    client_ask b expect-close 1001
    in_c systemctl stop wsrelay
    client_ok a expect-close 1001
    client_ok b expect-close 1001
    client_done a
    client_done b
    [ "$(last_exit)" = "success exited 0" ] || die "after stop: $(last_exit)"
    ok "systemctl stop: both clients got 1001; Result=success, exited with status 0"

    # The broken file is still in place: ExecStartPre= must refuse it.
    in_c systemctl start wsrelay && die "systemctl start succeeded with a broken config"
    [ "$(prop wsrelay Result)" = exit-code ] || die "Result=$(prop wsrelay Result) after a refused start"
    # No main process ran, so systemd has no exit code or status to pass on.
    [ "$(last_exit)" = "exit-code  " ] || die "after the refused start: '$(last_exit)'"
    line=$(journal wsrelay -p err | grep "$CONF:2:" | tail -1)
    [ -n "$line" ] || die "no error-level file:line:col from ExecStartPre="
    [ "$(journal wsrelay | grep -c 'listening on')" = 1 ] || die "the daemon started anyway"
    ok "ExecStartPre= refuses the broken file: Result=exit-code, <3> '${line#3	}'"
}

# "SERVICE_RESULT EXIT_CODE EXIT_STATUS" of the service's last run (the exits.conf drop-in).
last_exit() { in_c tail -n1 /run/wsrelay-test-exits; }

# Waits until systemd has heard WATCHDOG=1 twice more (the timestamp moves on each ping).
watchdog_pings() {
    local t0 t1
    t0=$(prop wsrelay WatchdogTimestampMonotonic)
    wait_for 10 "a watchdog ping" sh -c "[ \"\$(nsenter -t $CONTAINER_PID -a systemctl show -P WatchdogTimestampMonotonic wsrelay)\" != $t0 ]"
    t1=$(prop wsrelay WatchdogTimestampMonotonic)
    wait_for 10 "a second watchdog ping" sh -c "[ \"\$(nsenter -t $CONTAINER_PID -a systemctl show -P WatchdogTimestampMonotonic wsrelay)\" != $t1 ]"
}

# After something wedged the daemon (pid $1): systemd's watchdog kills it and restarts it.
expect_watchdog_restart() {
    local old=$1
    wait_for 20 "systemd's 'Failed with result watchdog'" \
        journal_has wsrelay "wsrelay.service: Failed with result 'watchdog'"
    wait_for 20 "a restarted wsrelay" sh -c \
        "[ \"\$(nsenter -t $CONTAINER_PID -a systemctl show -P MainPID wsrelay)\" != $old ] &&
         [ \"\$(nsenter -t $CONTAINER_PID -a systemctl is-active wsrelay)\" = active ]"
    [ "$(prop wsrelay NRestarts)" = 1 ] || die "NRestarts=$(prop wsrelay NRestarts)"
    case $(last_exit) in "watchdog "*) ;; *) die "the killed run ended with: $(last_exit)" ;; esac
    [ "$(http_get /healthz)" = "200 ok" ] || die "the restarted daemon does not serve"
    ok "systemd: $(journal wsrelay | grep -o 'Watchdog timeout.*' | head -1);" \
        "ended with: $(last_exit); restarted as pid $(prop wsrelay MainPID) (NRestarts=1), serving"
}

check_watchdog() {
    [ "$(prop wsrelay WatchdogUSec)" = 2s ] || die "WatchdogUSec=$(prop wsrelay WatchdogUSec)"
    watchdog_pings
    ok "WATCHDOG=1 pings reach systemd (WatchdogSec=2s from a drop-in)"
    local pid
    pid=$(prop wsrelay MainPID)
    in_c kill -STOP "$pid"
    expect_watchdog_restart "$pid"
}

check_wedge() {
    watchdog_pings
    ok "the test-faults build pings the watchdog while every worker turns"
    local pid
    pid=$(prop wsrelay MainPID)
    client_connect a /chat
    client a send wsrelay-test-fault
    expect_watchdog_restart "$pid"
}

check_panic() {
    local pid
    pid=$(prop wsrelay MainPID)
    client_connect a /chat
    client_ask a send wsrelay-test-fault
    wait_for 10 "the panicked run's end" sh -c \
        "nsenter -t $CONTAINER_PID -a tail -n1 /run/wsrelay-test-exits | grep -qx 'exit-code exited 70'"
    local line
    line=$(journal wsrelay -p err | grep "panicked at .*; exiting with status 70" | head -1)
    [ -n "$line" ] || die "no error-level line about the dead thread"
    ok "a worker panics: the daemon exits with status 70 at once, Result=exit-code; <3> '${line#3	}'"
    wait_for 10 "a restarted wsrelay" sh -c \
        "[ \"\$(nsenter -t $CONTAINER_PID -a systemctl show -P MainPID wsrelay)\" != $pid ] &&
         [ \"\$(nsenter -t $CONTAINER_PID -a systemctl is-active wsrelay)\" = active ]"
    [ "$(prop wsrelay NRestarts)" = 1 ] || die "NRestarts=$(prop wsrelay NRestarts)"
    [ "$(http_get /healthz)" = "200 ok" ] || die "the restarted daemon does not serve"
    ok "Restart=on-failure: restarted as pid $(prop wsrelay MainPID) after RestartSec=, serving"
}

check_socket() {
    [ "$(prop wsrelay.socket ActiveState)" = active ] || die "wsrelay.socket is not active"
    [ "$(prop wsrelay.service ActiveState)" = inactive ] || die "the service started before any client"
    client_connect a /chat
    client a send first
    client a expect first
    [ "$(prop wsrelay.service ActiveState)" = active ] || die "the service is not active"
    journal_has wsrelay.service "socket-activated" || die "the daemon did not use the passed socket"
    ok "the first client starts wsrelay.service on the passed socket, and is served"

    local old
    old=$(prop wsrelay.service MainPID)
    in_c touch /run/wsrelay-test-hold
    client_ask a expect-close 1001
    in_c systemctl restart --no-block wsrelay.service
    client_ok a expect-close 1001
    client_done a
    wait_for 20 "the restart held in ExecStartPre=" sh -c \
        "[ \"\$(nsenter -t $CONTAINER_PID -a systemctl show -P SubState wsrelay.service)\" = start-pre ]"
    # No relay process now; the socket is systemd's. A client connects anyway...
    client_start b /chat --timeout 30
    wait_for 10 "client b's TCP connection in the backlog" sh -c \
        "nsenter -t $CONTAINER_PID -n ss -Htn state established '( dport = :8080 )' | grep -q ."
    [ "$(prop wsrelay.service SubState)" = start-pre ] || die "the restart was not held"
    ok "while the service restarts (held in ExecStartPre=), a client's connection is accepted by the kernel"
    in_c rm /run/wsrelay-test-hold
    client_open b 30
    client b send after restart
    client b expect after restart
    client_done b
    [ "$(prop wsrelay.service MainPID)" != "$old" ] || die "the service did not restart"
    ok "...and served by the new process once it is up (not refused)"
}
