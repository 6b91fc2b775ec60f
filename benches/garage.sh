#!/usr/bin/env bash
# Starts a single-node Garage S3 server on loopback for `chute-bench`, creates a
# bucket and a key, and writes the environment to use it to $DIR/env:
#
#   bash benches/garage.sh start [DIR]   # default DIR=/tmp/chute-garage
#   . /tmp/chute-garage/env
#   target/release/chute-bench prepare --bucket chute-bench
#   bash benches/garage.sh stop [DIR]
#
# Its metrics (request counters, read by `chute-bench shuffle`) are at
# http://127.0.0.1:3903/metrics.
#
# Garage itself: `cargo install garage --locked --root /opt/garage` (about 15
# minutes on 2 cores), or set GARAGE=/path/to/garage.
set -euo pipefail
cmd=${1:-start}
dir=${2:-/tmp/chute-garage}
garage=${GARAGE:-$(command -v garage || echo /opt/garage/bin/garage)}
cfg="$dir/garage.toml"
key_id=GK0123456789abcdef01234567
secret=0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef

g() { "$garage" -c "$cfg" "$@"; }

case "$cmd" in
start)
    [ -x "$garage" ] || { echo "garage not found (install: cargo install garage --locked --root /opt/garage)" >&2; exit 1; }
    mkdir -p "$dir/meta" "$dir/data"
    cat > "$cfg" <<TOML
metadata_dir = "$dir/meta"
data_dir = "$dir/data"
db_engine = "lmdb"
replication_factor = 1
rpc_bind_addr = "127.0.0.1:3901"
rpc_public_addr = "127.0.0.1:3901"
rpc_secret = "$(printf '%064d' 7)"

[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:3900"
root_domain = ".s3.garage.localhost"

[admin]
api_bind_addr = "127.0.0.1:3903"
admin_token = "chute-bench-admin"
TOML
    if ! { [ -f "$dir/pid" ] && kill -0 "$(cat "$dir/pid")" 2>/dev/null; }; then
        nohup "$garage" -c "$cfg" server > "$dir/server.log" 2>&1 &
        echo $! > "$dir/pid"
    fi
    for _ in $(seq 50); do g status > /dev/null 2>&1 && break; sleep 0.2; done
    node=$(g status 2>/dev/null | grep -Eo '^[0-9a-f]{16}' | head -n 1)
    [ -n "$node" ] || { echo "garage did not start; see $dir/server.log" >&2; exit 1; }
    # A restarted node may answer `status` before `layout show`: wait for it,
    # so an existing layout is never applied a second time.
    layout=""
    for _ in $(seq 50); do layout=$(g layout show 2>/dev/null) && break; sleep 0.2; done
    if ! grep -q "dc1" <<< "$layout"; then
        version=$(grep -Eo 'Current cluster layout version: [0-9]+' <<< "$layout" | grep -Eo '[0-9]+$' || echo 0)
        g layout assign -z dc1 -c 20G "$node" > /dev/null
        g layout apply --version $((version + 1)) > /dev/null
    fi
    g key import --yes "$key_id" "$secret" -n chute-bench > /dev/null 2>&1 || true
    g bucket create chute-bench > /dev/null 2>&1 || true
    g bucket allow --read --write --owner chute-bench --key "$key_id" > /dev/null
    cat > "$dir/env" <<ENV
export AWS_ENDPOINT_URL=http://127.0.0.1:3900
export AWS_REGION=garage
export AWS_ACCESS_KEY_ID=$key_id
export AWS_SECRET_ACCESS_KEY=$secret
export AWS_EC2_METADATA_DISABLED=true
unset AWS_CA_BUNDLE
ENV
    echo "garage is serving http://127.0.0.1:3900 (bucket chute-bench); . $dir/env"
    ;;
stop)
    if [ -f "$dir/pid" ]; then kill "$(cat "$dir/pid")" 2>/dev/null || true; rm -f "$dir/pid"; fi
    ;;
*)
    echo "usage: $0 start|stop [DIR]" >&2; exit 2 ;;
esac
