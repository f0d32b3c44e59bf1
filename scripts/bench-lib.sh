# Shared by the bench-*.sh scripts (sourced): start and stop one server.
# The caller sets `bin` (the voxloop binary) and `out` (the output folder).
server=""
trap '[ -n "$server" ] && kill "$server" 2>/dev/null || true' EXIT

# Start `voxloop serve ARGS` on PORT and wait for /healthz. Variables set
# on the call (`VOXLOOP_X=1 serve ...`) reach the server.
serve() {
    local port=$1; shift
    VOXLOOP_LOG=warn "$bin" serve --bind "127.0.0.1:$port" "$@" >"$out/serve-$port.log" 2>&1 &
    server=$!
    for _ in $(seq 120); do
        curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && return 0
        sleep 1
    done
    echo "server on $port did not come up" >&2
    return 1
}

stop() {
    kill "$server" 2>/dev/null || true
    wait "$server" 2>/dev/null || true
    server=""
}
