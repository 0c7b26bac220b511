# Sourced by the scripts that compare engines side by side (constant-rate.sh,
# handshake-rate.sh, idle-memory.sh). Each engine serves on one core, core 0:
#   io-uring, tokio-uring, epoll  this build's ringecho, --threads 1 (it pins
#                                 its one worker to core 0 itself)
#   io-uring-before               $OLD_ENGINE, a ringecho binary built from an
#                                 earlier commit, its io-uring backend
#   monoio                        fastwebsockets on monoio (peers/monoio),
#                                 under taskset -c 0
#   fastwebsockets, tokio-tungstenite, bun, node-ws
#                                 the other peers of scripts/peers.sh, under
#                                 taskset -c 0 (bun and node-ws need
#                                 peers/node_modules: npm install in peers/)
# start_engine NAME sets $addr and $pid; stop_engine stops it by that PID.
# ENGINE_ARGS, if set, is added to this build's ringecho command line.

monoio_peer=target/peers/monoio/release/peer-monoio

# Builds the monoio peer when it is asked for; prints why if it cannot.
build_monoio() {
  cargo build --release --quiet --manifest-path peers/monoio/Cargo.toml \
    --target-dir target/peers/monoio || echo "engines.sh: the monoio peer did not build; it is skipped"
}

# The engines to compare: ENGINES if set, else the defaults given.
engines_or() {
  local list=${ENGINES:-$*}
  if [ -n "${OLD_ENGINE:-}" ] && [[ " $list " != *" io-uring-before "* ]]; then
    list="io-uring-before $list"
  fi
  if [[ " $list " == *" monoio "* ]]; then build_monoio >&2; fi
  if [[ " $list " == *" fastwebsockets "* || " $list " == *" tokio-tungstenite "* ]]; then
    cargo build --release --quiet --example peer_tungstenite --example peer_fastwebsockets >&2
  fi
  if [[ " $list " == *" bun "* || " $list " == *" node-ws "* ]] && [ ! -d peers/node_modules/ws ]; then
    (cd peers && npm install --no-audit --no-fund --silent) >&2 || echo "engines.sh: npm install failed; bun and node-ws are skipped" >&2
  fi
  echo "$list"
}

# An empty DIR for this run's files, the release build made, and the
# engine stopped whenever the script exits.
prepare_run() {
  mkdir -p "$1"
  rm -f "$1"/*.json
  cargo build --release --quiet --workspace --bins
  trap stop_engine EXIT
}

engine_port=19300
start_engine() {
  local name=$1 log
  log=$(mktemp)
  case $name in
    io-uring|tokio-uring|epoll)
      # shellcheck disable=SC2086
      target/release/ringecho --listen 127.0.0.1:0 --backend "$name" --threads 1 \
        --startup-line json ${ENGINE_ARGS:-} >"$log" 2>&1 & ;;
    io-uring-before)
      "$OLD_ENGINE" --listen 127.0.0.1:0 --backend io-uring --threads 1 >"$log" 2>&1 & ;;
    monoio|fastwebsockets|tokio-tungstenite|bun|node-ws)
      local command
      case $name in
        monoio) command=$monoio_peer ;;
        fastwebsockets) command=target/release/examples/peer_fastwebsockets ;;
        tokio-tungstenite) command=target/release/examples/peer_tungstenite ;;
        bun) command="peers/node_modules/.bin/bun peers/bun-echo.js" ;;
        node-ws) command="node peers/ws-echo.js" ;;
      esac
      [ -e "${command%% *}" ] || [ "$name" = node-ws ] || { rm -f "$log"; return 1; }
      [ "$name" != node-ws ] || [ -d peers/node_modules/ws ] || { rm -f "$log"; return 1; }
      engine_port=$((engine_port + 1))
      # shellcheck disable=SC2086
      taskset -c 0 $command "127.0.0.1:$engine_port" >"$log" 2>&1 & ;;
    *) echo "engines.sh: unknown engine $name" >&2; rm -f "$log"; return 1 ;;
  esac
  pid=$!
  for _ in $(seq 100); do grep -qi '^{\|listening on' "$log" && break; sleep 0.05; done
  if grep -q '^{' "$log"; then
    # This build's ringecho: its start-up line as JSON.
    addr=$(python3 -c 'import json, sys; print(json.loads(sys.stdin.readline())["listen"])' <"$log")
  else
    # The peers (and an older ringecho) say "listening on ADDR" their own way.
    addr=$(sed -n 's/.*[Ll]istening on:\{0,1\} \([^ ]*\).*/\1/p' "$log" | head -n 1)
  fi
  rm -f "$log"
  [ -n "$addr" ] || { echo "engines.sh: $name did not start" >&2; stop_engine; return 1; }
}

stop_engine() {
  [ -n "${pid:-}" ] || return 0
  kill -TERM "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  pid=
}
