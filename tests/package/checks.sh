# The check of tests/package/run: runs on the host while run-unit's container is up (lib.sh has
# the helpers); dpkg, systemctl and journalctl run inside the container.

dpkg_in() {
    in_c env DEBIAN_FRONTEND=noninteractive dpkg "$@" >"$SCRATCH/dpkg.log" 2>&1 ||
        die "dpkg $*: $(cat "$SCRATCH/dpkg.log")"
}

check_package() {
    # This machine's image stops maintainer scripts from starting services; a Debian host has
    # no such file. Removed in the container's overlay only.
    in_c rm -f /usr/sbin/policy-rc.d
    ! in_c dpkg-query -W wsrelay >/dev/null 2>&1 || die "wsrelay is installed before the test"

    dpkg_in -i /root/packages/wsrelay.deb
    # postinst's `systemctl start` returns once the relay said READY=1: no waiting here.
    [ "$(in_c systemctl is-active wsrelay)" = active ] || die "not active after dpkg -i"
    [ "$(in_c systemctl is-enabled wsrelay)" = enabled ] || die "wsrelay.service is not enabled"
    [ "$(in_c systemctl is-enabled wsrelay.socket)" = disabled ] || die "wsrelay.socket is enabled"
    [ "$(prop wsrelay FragmentPath)" = /lib/systemd/system/wsrelay.service ] ||
        die "the unit runs from $(prop wsrelay FragmentPath)"
    ok "dpkg -i $DEB_VERSION: wsrelay.service enabled and active (wsrelay.socket installed, not enabled)"

    local pid cmdline conffiles
    pid=$(prop wsrelay MainPID)
    cmdline=$(in_c sh -c "tr '\\0' ' ' </proc/$pid/cmdline")
    [ "$cmdline" = "/usr/bin/wsrelay --config /etc/wsrelay/wsrelay.toml " ] || die "MainPID runs: $cmdline"
    conffiles=$(in_c dpkg-query -W -f='${Conffiles}' wsrelay)
    printf '%s\n' "$conffiles" | grep -q "^ /etc/wsrelay/wsrelay.toml $(md5sum <"$ROOT/config/wsrelay.toml" | cut -d' ' -f1)\$" ||
        die "conffiles: $conffiles"
    # Compared by digest: the checkout may sit under a path the container does not see (its /tmp).
    [ "$(in_c md5sum /etc/wsrelay/wsrelay.toml | cut -d' ' -f1)" = \
      "$(md5sum <"$ROOT/config/wsrelay.toml" | cut -d' ' -f1)" ] ||
        die "the installed config is not the shipped one"
    ok "runs /usr/bin/wsrelay --config /etc/wsrelay/wsrelay.toml, a conffile identical to config/wsrelay.toml"

    client_connect a /chat
    client_connect b /chat
    client a send hello from a
    client a expect hello from a
    client b expect hello from a
    ok "two clients in /chat: b receives what a sends (and a its echo)"

    # With the package's pages in /usr/share/man, their cross-references resolve; makewhatis
    # (in the overlay) gives mandoc the index Debian's man-db does not keep.
    in_c makewhatis /usr/share/man
    local lint
    for page in man1/wsrelay.1.gz man5/wsrelay.toml.5.gz; do
        lint=$(in_c sh -c "zcat /usr/share/man/$page | mandoc -T lint" 2>&1) ||
            die "mandoc -T lint on the installed $page: $lint"
        [ -z "$lint" ] || die "mandoc -T lint on the installed $page: $lint"
    done
    ok "mandoc -T lint on the installed wsrelay(1) and wsrelay.toml(5): nothing to say"

    # An operator's edit: a room of their own. An upgrade must keep it.
    in_c sh -c 'printf "\n[[room]]\n# Added by the operator.\npath = \"/ops\"\nmax_members = 10\n" >> /etc/wsrelay/wsrelay.toml'
    in_c systemctl reload wsrelay
    wait_for 10 "the operator's room /ops" sh -c "[ -z \"\$(refused_status /ops)\" ]"
    client_ask a expect-close 1001
    client_ask b expect-close 1001
    local t0 t1
    t0=$(date +%s%N)
    dpkg_in -i /root/packages/wsrelay-upgrade.deb
    t1=$(date +%s%N)
    client_ok a expect-close 1001
    client_ok b expect-close 1001
    client_done a
    client_done b
    [ "$(in_c dpkg-query -W -f='${Version}' wsrelay)" = "$DEB_UPGRADE_VERSION" ] || die "the upgrade did not install"
    [ "$(in_c systemctl is-active wsrelay)" = active ] || die "not active after the upgrade"
    [ "$(prop wsrelay MainPID)" != "$pid" ] || die "the relay was not restarted by the upgrade"
    in_c grep -q '^path = "/ops"$' /etc/wsrelay/wsrelay.toml || die "the upgrade lost the local edit"
    client_connect c /ops
    client c send after the upgrade
    client c expect after the upgrade
    client_done c
    ok "upgrade to $DEB_UPGRADE_VERSION ($(((t1 - t0) / 1000000)) ms of dpkg): connected clients got 1001," \
        "the relay restarted, the local edit of the conffile was kept and serves"

    dpkg_in --purge wsrelay
    ! in_c dpkg-query -W wsrelay >/dev/null 2>&1 || die "still known to dpkg after purge"
    in_c systemctl is-active wsrelay >/dev/null && die "still active after purge"
    ! in_c pgrep -x wsrelay >/dev/null || die "a wsrelay process survived the purge"
    local left=()
    for f in /usr/bin/wsrelay /etc/wsrelay /lib/systemd/system/wsrelay.service \
        /lib/systemd/system/wsrelay.socket /usr/share/doc/wsrelay \
        /usr/share/man/man1/wsrelay.1.gz /usr/share/man/man5/wsrelay.toml.5.gz \
        /etc/systemd/system/multi-user.target.wants/wsrelay.service \
        /var/lib/systemd/deb-systemd-helper-enabled/wsrelay.service.dsh-also \
        /var/lib/systemd/deb-systemd-helper-masked/wsrelay.service; do
        in_c test -e "$f" && left+=("$f")
    done
    [ ${#left[@]} = 0 ] || die "left after purge: ${left[*]}"
    [ "$(in_c systemctl show -P LoadState wsrelay)" = not-found ] || die "systemd still has the unit"
    ok "dpkg --purge: stopped; binary, units, config, docs, man pages and enablement gone; unit not-found"
}
