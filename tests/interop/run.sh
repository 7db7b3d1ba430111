#!/usr/bin/env bash
# Interop tests: third-party SIP and TLS clients (SIPp, stunnel, openssl s_client, SIPVicious)
# against the real sip-oauth-registrar binary, on a copy of the lab cluster moved to a free port
# range.
#
#   bash tests/interop/run.sh
#
# Environment:
#   BIN=path          use this binary instead of building one
#   INTEROP_RELEASE=1 build with --release (default: the debug build `cargo test` shares)
#   INTEROP_KEEP=1    keep the temporary directory (logs, SIPp traces, certificates)
#
# Ends with a line "N passed, M failed" and exits non-zero when anything failed.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)

say() { printf '%s\n' "$*"; }
die() {
  say "interop: setup failed: $*" >&2
  exit 2
}

# ---------------------------------------------------------------------------------------------
# 1. Tools: SIPp is Debian's sip-tester (built without TLS, hence stunnel in front of TLS).
# ---------------------------------------------------------------------------------------------
missing=()
command -v sipp >/dev/null 2>&1 || missing+=(sip-tester)
command -v stunnel4 >/dev/null 2>&1 || command -v stunnel >/dev/null 2>&1 || missing+=(stunnel4)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v python3 >/dev/null 2>&1 || missing+=(python3)
if ((${#missing[@]})); then
  say "interop: installing ${missing[*]}"
  sudo=()
  if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null 2>&1 || die "need root or sudo to install ${missing[*]}"
    sudo=(sudo)
  fi
  export DEBIAN_FRONTEND=noninteractive
  timeout 300 "${sudo[@]}" apt-get update -qq || die "apt-get update"
  timeout 600 "${sudo[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null || die "apt-get install ${missing[*]}"
fi
STUNNEL=$(command -v stunnel4 || command -v stunnel)

# ---------------------------------------------------------------------------------------------
# 2. Binary, temporary state, test cluster, daemon.
# ---------------------------------------------------------------------------------------------
if [ -z "${BIN:-}" ]; then
  profile=debug
  build=(cargo build --quiet)
  if [ "${INTEROP_RELEASE:-0}" = 1 ]; then
    profile=release
    build+=(--release)
  fi
  say "interop: ${build[*]}"
  (cd "$ROOT" && "${build[@]}") || die "cargo build failed"
  target=${CARGO_TARGET_DIR:-target}
  case $target in /*) ;; *) target=$ROOT/$target ;; esac
  BIN=$target/$profile/sip-oauth-registrar
fi
case $BIN in */*) ;; *) BIN=$(command -v "$BIN") || die "no $BIN in PATH" ;; esac
[ -x "$BIN" ] || die "no executable at $BIN"
BIN=$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")

WORK=$(mktemp -d "${TMPDIR:-/tmp}/sip-oauth-interop.XXXXXX")
STATE=$WORK/state
CERTS=$STATE/certs
CFG=$WORK/cluster.toml
DAEMON_LOG=$WORK/daemon.log
STUNNEL_LOG=$WORK/stunnel.log
DAEMON_PID=
STUNNEL_PID=
FAILED_SETUP=1
passed=0
failed=0

stop() { # pid: TERM, wait up to 5 s, then KILL
  local pid=$1 i
  [ -n "$pid" ] || return 0
  kill -TERM "$pid" 2>/dev/null || return 0
  for ((i = 0; i < 50; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

strip_ansi() { sed 's/\x1b\[[0-9;]*m//g'; }

cleanup() {
  local rc=$?
  stop "$STUNNEL_PID"
  stop "$DAEMON_PID"
  if ((failed > 0 || FAILED_SETUP)); then
    if [ -s "$DAEMON_LOG" ]; then
      say "----- registrar log (last 150 lines) -----"
      tail -n 150 "$DAEMON_LOG" | strip_ansi
    fi
    if [ -s "$STUNNEL_LOG" ]; then
      say "----- stunnel log (last 40 lines) -----"
      tail -n 40 "$STUNNEL_LOG"
    fi
  fi
  if [ "${INTEROP_KEEP:-0}" = 1 ]; then
    say "interop: kept $WORK"
  else
    rm -rf "$WORK"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Is anything bound to this TCP or UDP port (any address)? Reads /proc: sends nothing.
port_in_use() {
  local hex
  hex=$(printf ':%04X ' "$1")
  grep -qi -- "$hex" /proc/net/tcp /proc/net/tcp6 /proc/net/udp /proc/net/udp6 2>/dev/null
}

# Ports: a block of 100 below Linux's ephemeral range. BASE+0.. for the cluster's ports (each
# distinct port number in lab.toml gets the next one), BASE+50.. for stunnel and SIPp, BASE+70..
# for the SIPVicious bridge and scanners.
pick_base() {
  local try p ok
  for ((try = 0; try < 50; try++)); do
    BASE=$(((100 + RANDOM % 220) * 100))
    ok=1
    for ((p = BASE; p < BASE + 75; p++)); do
      if port_in_use "$p"; then
        ok=0
        break
      fi
    done
    ((ok)) && return 0
  done
  die "no free block of 100 ports found"
}

# The lab cluster with every `*port = N` moved into the block: the test never touches a
# registrar that may already run on 5060.
write_config() {
  awk -v base="$BASE" '
    /^[[:space:]]*[A-Za-z_]*port[[:space:]]*=[[:space:]]*[0-9]+[[:space:]]*(#.*)?$/ {
      key = $0; sub(/[[:space:]]*=.*/, "", key)
      val = $0; sub(/^[^=]*=[[:space:]]*/, "", val); sub(/[^0-9].*$/, "", val)
      if (!(val in map)) map[val] = base + n++
      print key " = " map[val]
      next
    }
    { print }
  ' "$ROOT/config/lab.toml" >"$CFG"
}

# First value of `key = ...` in the test config (node 1 comes first), quotes removed.
cfg() {
  awk -v k="$1" '$1 == k && $2 == "=" { v = $3; gsub(/"/, "", v); print v; exit }' "$CFG"
}

# Is a TCP socket listening on this local port? (/proc, no connection made.)
tcp_listening() {
  local hex
  hex=$(printf '%04X' "$1")
  awk -v h=":$hex" 'toupper(substr($2, length($2) - 4)) == h && $4 == "0A" { f = 1 } END { exit !f }' \
    /proc/net/tcp /proc/net/tcp6 2>/dev/null
}

tcp_accepts() { # host port
  timeout 2 bash -c 'exec 3<>"/dev/tcp/$0/$1"' "$1" "$2" 2>/dev/null
}

start_daemon() {
  "$BIN" --state-dir "$STATE" --config "$CFG" serve --log "info,sip_oauth_registrar=debug" \
    >"$DAEMON_LOG" 2>&1 &
  DAEMON_PID=$!
  local i
  for ((i = 0; i < 200; i++)); do # 20 s
    if ! kill -0 "$DAEMON_PID" 2>/dev/null; then
      wait "$DAEMON_PID" 2>/dev/null || true
      DAEMON_PID=
      return 1
    fi
    if grep -q '^Token signing key hash' "$DAEMON_LOG" &&
      tcp_accepts "$N1_ADDR" "$SIP_PORT" &&
      tcp_accepts "$N1_ADDR" "$OAUTH_PORT" &&
      tcp_accepts "$N1_ADDR" "$MRA_PORT" &&
      tcp_accepts "$N2_ADDR" "$SIP_PORT"; then
      return 0
    fi
    sleep 0.1
  done
  die "registrar did not accept on its ports within 20 s"
}

T0=$SECONDS
for attempt in 1 2 3 4 5; do
  pick_base
  write_config
  N1_NAME=$(awk '/^\[\[nodes\]\]/ { n = 1 } n && $1 == "name" { v = $3; gsub(/"/, "", v); print v; exit }' "$CFG")
  N1_ADDR=$(awk '/^\[\[nodes\]\]/ { n++ } n == 1 && $1 == "address" { v = $3; gsub(/"/, "", v); print v; exit }' "$CFG")
  N2_ADDR=$(awk '/^\[\[nodes\]\]/ { n++ } n == 2 && $1 == "address" { v = $3; gsub(/"/, "", v); print v; exit }' "$CFG")
  SIP_PORT=$(cfg sip_port)
  OAUTH_PORT=$(cfg sip_oauth_port)
  MRA_PORT=$(cfg sip_mra_oauth_port)
  HTTPS_PORT=$(cfg https_port)
  TFTP_HTTP_PORT=$(cfg tftp_http_port)
  TFTP_HTTPS_PORT=$(cfg tftp_https_port)
  TFTP_PORT=$(cfg tftp_port)
  [ -n "$N1_ADDR" ] && [ -n "$N2_ADDR" ] && [ -n "$SIP_PORT" ] && [ -n "$OAUTH_PORT" ] &&
    [ -n "$MRA_PORT" ] || die "cannot read node addresses and ports from $CFG"
  if start_daemon; then
    break
  fi
  if grep -q 'cannot bind' "$DAEMON_LOG" && ((attempt < 5)); then
    say "interop: port clash at base $BASE, trying another range"
    rm -rf "$STATE"
    continue
  fi
  die "registrar exited at start: $(strip_ansi <"$DAEMON_LOG" | tail -n 5)"
done
[ -n "$DAEMON_PID" ] || die "registrar did not start"

# Every listener must be in our block: a port the rewrite missed (a key defaulted rather than
# set in lab.toml) would otherwise be bound on its production number.
while read -r port; do
  if ((port < BASE || port >= BASE + 50)); then
    die "registrar listens on port $port, outside the test range $BASE..$((BASE + 49))"
  fi
done < <(strip_ansi <"$DAEMON_LOG" | sed -n 's/.* listening .*addr=[^ ]*:\([0-9][0-9]*\).*/\1/p')

STUNNEL_OAUTH=$((BASE + 50))
STUNNEL_MRA=$((BASE + 51))
SIPP_PORT=$((BASE + 55)) # SIPp's own local port, +1 per case

token() { # user device
  timeout 20 "$BIN" --state-dir "$STATE" --config "$CFG" token issue --user "$1" --device "$2" \
    2>>"$WORK/token.err"
}

# stunnel in client mode, one service per TLS port, verifying the registrar against the lab CA.
cat >"$WORK/stunnel.conf" <<EOF
foreground = yes
pid =
debug = info

[oauth]
client = yes
accept = 127.0.0.1:$STUNNEL_OAUTH
connect = $N1_ADDR:$OAUTH_PORT
sni = $N1_NAME
CAfile = $CERTS/lab-ca.pem
verifyChain = yes
checkIP = $N1_ADDR

[mra]
; mutual TLS: present the lab Expressway-C certificate, as Expressway-C does on 5091
client = yes
accept = 127.0.0.1:$STUNNEL_MRA
connect = $N1_ADDR:$MRA_PORT
sni = $N1_NAME
CAfile = $CERTS/lab-ca.pem
verifyChain = yes
checkIP = $N1_ADDR
cert = $CERTS/expressway-c.pem
key = $CERTS/expressway-c-key.pem
EOF
"$STUNNEL" "$WORK/stunnel.conf" >"$STUNNEL_LOG" 2>&1 &
STUNNEL_PID=$!
for ((i = 0; i < 100; i++)); do # 10 s
  kill -0 "$STUNNEL_PID" 2>/dev/null || die "stunnel exited: $(tail -n 5 "$STUNNEL_LOG")"
  if tcp_listening "$STUNNEL_OAUTH" && tcp_listening "$STUNNEL_MRA"; then
    break
  fi
  sleep 0.1
done
tcp_listening "$STUNNEL_OAUTH" && tcp_listening "$STUNNEL_MRA" ||
  die "stunnel did not listen within 10 s"

FAILED_SETUP=0
say "interop: registrar $BIN up in $((SECONDS - T0)) s; node 1 $N1_NAME $N1_ADDR:" \
  "sip $SIP_PORT, oauth $OAUTH_PORT, mra $MRA_PORT; node 2 $N2_ADDR"

# ---------------------------------------------------------------------------------------------
# Helpers for the cases.
# ---------------------------------------------------------------------------------------------
sipp_port_next=$SIPP_PORT

# sipp_run NAME TARGET TRANSPORT SCENARIO [sipp args...]: one call, bounded; logs in $WORK/NAME.*
sipp_run() {
  local name=$1 target=$2 transport=$3 scenario=$4 rc=0
  shift 4
  local port=$((sipp_port_next++))
  (cd "$WORK" && timeout 30 sipp "$target" -sf "$HERE/$scenario" -t "$transport" \
    -i 127.0.0.1 -p "$port" -m 1 -l 1 -nostdin -timeout 15 -timeout_error \
    -recv_timeout 10000 \
    -trace_msg -message_file "$WORK/$name.msg" \
    -trace_err -error_file "$WORK/$name.err" \
    -trace_logs -log_file "$WORK/$name.log" \
    "$@" >"$WORK/$name.screen" 2>&1) || rc=$?
  if [ -s "$WORK/$name.log" ]; then
    sed 's/^/    /' "$WORK/$name.log"
  fi
  if ((rc != 0)); then
    say "    sipp exited $rc"
    for f in err msg screen; do
      if [ -s "$WORK/$name.$f" ]; then
        say "    --- $name.$f"
        { tail -n 60 "$WORK/$name.$f"; echo; } | sed 's/^/    /'
      fi
    done
    return 1
  fi
}

SIP_OPTIONS=$(printf '%s\r\n' \
  "OPTIONS sip:$N1_ADDR SIP/2.0" \
  "Via: SIP/2.0/TLS 127.0.0.1:5555;branch=z9hG4bK-interop-options" \
  "From: <sip:interop@127.0.0.1>;tag=interop1" \
  "To: <sip:$N1_ADDR>" \
  "Call-ID: interop-options@127.0.0.1" \
  "CSeq: 1 OPTIONS" \
  "Max-Forwards: 70" \
  "Content-Length: 0" \
  "")
SIP_OPTIONS+=$'\n' # $(...) ate the final LF of the blank line that ends the header section

# s_client VERSION OUT [cert args...]: one connection to node 1's MRA port with the lab CA
# trusted; sends an OPTIONS and keeps reading (-ign_eof) until the server closes. With TLS 1.3
# the server's verdict on our certificate comes after our Finished, so only reading shows it.
s_client() {
  local version=$1 out=$2 rc=0
  shift 2
  printf '%s' "$SIP_OPTIONS" |
    timeout 10 openssl s_client "$version" -connect "$N1_ADDR:$MRA_PORT" -servername "$N1_NAME" \
      -CAfile "$CERTS/lab-ca.pem" -verify_return_error -ign_eof "$@" >"$out" 2>&1 || rc=$?
  return "$rc"
}

# expect_rejected NAME ALERT-REGEX [cert args...]: over TLS 1.2 and 1.3 the handshake must fail
# with the server's alert, and no SIP answer may come back.
expect_rejected() {
  local name=$1 alert=$2 v rc out ok=0
  shift 2
  for v in -tls1_2 -tls1_3; do
    out=$WORK/$name$v.out
    rc=0
    s_client "$v" "$out" "$@" || rc=$?
    if ((rc == 0 || rc == 124)); then
      say "    $v: openssl s_client exited $rc: the connection was not refused"
      ok=1
    elif grep -q 'SIP/2.0' "$out"; then
      say "    $v: got a SIP answer through a connection that should have been refused"
      ok=1
    elif ! grep -Eq "$alert" "$out"; then
      say "    $v: no /$alert/ in the output"
      ok=1
    else
      say "    $v: $(grep -Eo 'alert [a-z ]+|alert number [0-9]+' "$out" | sort -u | paste -sd ';' -)"
      continue
    fi
    sed 's/^/      /' "$out" | tail -n 30
  done
  return "$ok"
}

run_case() { # NAME FUNCTION: PASS/FAIL line, counts
  local name=$1 fn=$2 t=$SECONDS
  say "--- $name"
  if "$fn"; then
    passed=$((passed + 1))
    say "PASS $name ($((SECONDS - t)) s)"
  else
    failed=$((failed + 1))
    say "FAIL $name ($((SECONDS - t)) s)"
  fi
}

# ---------------------------------------------------------------------------------------------
# 3. Cases.
# ---------------------------------------------------------------------------------------------

# a. Jabber on the OAuth port over TLS (stunnel verifies the server against the lab CA):
#    407 Bearer realm="ccmsipline", then 200 with the token (Expires 120, ;x-cisco-newreg),
#    then a refresh without ;x-cisco-newreg.
case_a() {
  local tok
  tok=$(token rado CSFrado) && [ -n "$tok" ] || {
    say "    token issue failed: $(tail -n 3 "$WORK/token.err")"
    return 1
  }
  sipp_run a-oauth "127.0.0.1:$STUNNEL_OAUTH" t1 oauth-register.xml -key token "$tok" \
    -key device CSFrado -key dn 1010 -key line a8ae9f92-4b07-a0d7-d701-29320aed1e2e
}

# f. A scripted client that knows only the user, its password and the lab CA: curl gets tokens
#    from the token service on HTTPS (password grant), SIPp registers with the access token
#    (407, 200), curl refreshes it and goes through the code flow's login form; after
#    revocation (HTTP Basic admin:lab) the refresh grant answers invalid_grant and the access
#    token is re-challenged (407); after `cli -c "set key regen authz signing"` so is a token
#    issued before it.
case_f() {
  local url="https://$N1_ADDR:$HTTPS_PORT" client tok refresh answer location code
  local bob=(-key device SEP001122334455 -key dn 2002 -key line 5c1d9e0a-7b3f-4c2e-9a8d-6e5f4a3b2c02)
  client=C$(printf '%064d' 42)
  curl_https() { timeout 20 curl -sS --cacert "$CERTS/lab-ca.pem" "$@" 2>>"$WORK/curl.err"; }
  json() { python3 -c "import json,sys; print(json.load(sys.stdin).get('$1', ''))"; }
  answer=$(curl_https "$url/ssosp/oauth/token" -d grant_type=password -d username=bob \
    -d password=lab -d client_id="$client" -d scope=UnifiedCommunications:readwrite) || {
    say "    curl failed: $(tail -n 3 "$WORK/curl.err")"
    return 1
  }
  tok=$(json access_token <<<"$answer")
  refresh=$(json refresh_token <<<"$answer")
  [ -n "$tok" ] && [ -n "$refresh" ] || {
    say "    password grant: $answer"
    return 1
  }
  say "    password grant: access token ${#tok} B, refresh token ${#refresh} B"
  # bob's 8861 with the OAuth profile (the lab's other OAuth devices are cases a and d's)
  sipp_run f-oauth "127.0.0.1:$STUNNEL_OAUTH" t1 oauth-register.xml -key token "$tok" "${bob[@]}" ||
    return 1
  answer=$(curl_https "$url/ssosp/oauth/token" -d grant_type=refresh_token \
    -d refresh_token="$refresh" -d client_id="$client")
  [ -n "$(json access_token <<<"$answer")" ] || {
    say "    refresh grant: $answer"
    return 1
  }
  say "    refresh grant: new access token"

  # The code flow, as a browser would post the login form.
  location=$(curl_https -o /dev/null -w '%{redirect_url}' "$url/ssosp/oauth/authorize" \
    -d response_type=code -d client_id="$client" -d redirect_uri=http://127.0.0.1:9/cb \
    -d state=s1 -d username=bob -d password=lab)
  code=$(python3 -c 'import sys, urllib.parse as u; q = u.parse_qs(u.urlsplit(sys.argv[1]).query); print(q["code"][0] if q.get("state") == ["s1"] else "")' "$location")
  [ -n "$code" ] || {
    say "    login form: redirect $location"
    return 1
  }
  answer=$(curl_https "$url/ssosp/oauth/token" -d grant_type=authorization_code -d code="$code" \
    -d redirect_uri=http://127.0.0.1:9/cb -d client_id="$client")
  [ -n "$(json access_token <<<"$answer")" ] || {
    say "    code exchange: $answer"
    return 1
  }
  say "    code flow: login form, 302 with code and state, exchanged for tokens"

  answer=$(curl_https -u admin:lab "$url/ssosp/token/revoke?user_id=bob")
  [ "$(json user_id <<<"$answer")" = bob ] || {
    say "    revoke: $answer"
    return 1
  }
  say "    revoke: $answer"
  answer=$(curl_https "$url/ssosp/oauth/token" -d grant_type=refresh_token \
    -d refresh_token="$refresh" -d client_id="$client")
  [ "$(json error <<<"$answer")" = invalid_grant ] || {
    say "    refresh after revocation: $answer"
    return 1
  }
  say "    refresh after revocation: invalid_grant"
  sipp_run f-revoked "127.0.0.1:$STUNNEL_OAUTH" t1 oauth-refused.xml -key token "$tok" "${bob[@]}" ||
    return 1

  # A token issued after the revocation, then the signing key regenerated under it.
  sleep 1 # revocation covers its whole second
  tok=$(json access_token <<<"$(curl_https "$url/ssosp/oauth/token" -d grant_type=password \
    -d username=bob -d password=lab -d client_id="$client")")
  answer=$(timeout 20 "$BIN" --state-dir "$STATE" cli -c "set key regen authz signing" 2>&1) || {
    say "    cli: $answer"
    return 1
  }
  say "    cli: $(tr '\n' ' ' <<<"$answer")"
  sipp_run f-regen "127.0.0.1:$STUNNEL_OAUTH" t1 oauth-refused.xml -key token "$tok" "${bob[@]}"
}

# g. Config files as the issue's "done when" fetches them: the legacy device's over HTTP 6970
#    and TFTP (curl tftp://), the OAuth device's over HTTPS 6971 with its owner's token; each
#    well-formed (expat, no namespace processing: UCM's root uses undeclared prefixes) and
#    naming the ports the daemon listens on.
case_g() {
  local tok file
  file_ports() { # FILE -> "sipPort sipOAuthPort" of the first member
    python3 - "$1" <<'PY'
import sys, xml.parsers.expat
text, stack, found = {}, [], {}
p = xml.parsers.expat.ParserCreate()
def start(name, attrs): stack.append(name); text[len(stack)] = ""
def data(d): text[len(stack)] = text.get(len(stack), "") + d
def end(name):
    if name in ("sipPort", "sipOAuthPort") and name not in found: found[name] = text[len(stack)].strip()
    stack.pop()
p.StartElementHandler, p.CharacterDataHandler, p.EndElementHandler = start, data, end
p.Parse(open(sys.argv[1], "rb").read(), True)
print(found["sipPort"], found["sipOAuthPort"])
PY
  }
  timeout 20 curl -sSf "http://$N1_ADDR:$TFTP_HTTP_PORT/SIPlegacy1.cnf.xml" -o "$WORK/g-http.xml" \
    2>>"$WORK/curl.err" || { say "    6970: $(tail -n 1 "$WORK/curl.err")"; return 1; }
  timeout 20 curl -sSf "tftp://$N1_ADDR:$TFTP_PORT/SIPlegacy1.cnf.xml" -o "$WORK/g-tftp.xml" \
    2>>"$WORK/curl.err" || { say "    tftp: $(tail -n 1 "$WORK/curl.err")"; return 1; }
  cmp -s "$WORK/g-http.xml" "$WORK/g-tftp.xml" || { say "    TFTP and HTTP files differ"; return 1; }
  [ "$(file_ports "$WORK/g-http.xml")" = "$SIP_PORT $OAUTH_PORT" ] || {
    say "    legacy file ports $(file_ports "$WORK/g-http.xml"), listening $SIP_PORT $OAUTH_PORT"
    return 1
  }
  say "    SIPlegacy1.cnf.xml over 6970 and TFTP: identical, sipPort $SIP_PORT, sipOAuthPort $OAUTH_PORT"
  tok=$(timeout 20 curl -sS --cacert "$CERTS/lab-ca.pem" "https://$N1_ADDR:$HTTPS_PORT/ssosp/oauth/token" \
    -d grant_type=password -d username=rado -d password=lab -d client_id="C$(printf '%064d' 7)" \
    2>>"$WORK/curl.err" | python3 -c 'import json,sys; print(json.load(sys.stdin).get("access_token", ""))')
  [ "$(timeout 20 curl -s -o /dev/null -w '%{http_code}' --cacert "$CERTS/lab-ca.pem" \
    "https://$N1_ADDR:$TFTP_HTTPS_PORT/CSFrado.cnf.xml")" = 401 ] || {
    say "    6971 without a token is not 401"
    return 1
  }
  timeout 20 curl -sSf --cacert "$CERTS/lab-ca.pem" -H "Authorization: Bearer $tok" \
    "https://$N1_ADDR:$TFTP_HTTPS_PORT/CSFrado.cnf.xml" -o "$WORK/g-https.xml" 2>>"$WORK/curl.err" || {
    say "    6971: $(tail -n 1 "$WORK/curl.err")"
    return 1
  }
  [ "$(file_ports "$WORK/g-https.xml")" = "$SIP_PORT $OAUTH_PORT" ] || {
    say "    CSFrado file ports $(file_ports "$WORK/g-https.xml")"
    return 1
  }
  say "    CSFrado.cnf.xml over 6971: 401 without a token, 200 with rado's; the same ports"
}

# b. The same Jabber device on the legacy SIP port (UDP): 403 port mismatch.
case_b() {
  sipp_run b-mismatch "$N1_ADDR:$SIP_PORT" u1 legacy-port-mismatch.xml
}

# c. A non-secure, non-OAuth device on the legacy SIP port (UDP, node 2): 200, no credentials.
case_c() {
  sipp_run c-legacy "$N2_ADDR:$SIP_PORT" u1 legacy-register.xml
}

# d. Mutual TLS on the MRA port with the lab Expressway-C certificate: SIPp through stunnel
#    gets 407 then 200; and openssl s_client with the same certificate gets an answer to
#    OPTIONS (the control for e: the same command as e's, only the certificate differs).
case_d() {
  local tok out=$WORK/d-openssl.out
  tok=$(token alice CSFalice) && [ -n "$tok" ] || {
    say "    token issue failed: $(tail -n 3 "$WORK/token.err")"
    return 1
  }
  sipp_run d-mra "127.0.0.1:$STUNNEL_MRA" t1 mra-register.xml -key token "$tok" || return 1
  # No -ign_eof here: s_client closes 2 s after sending, long after the answer came.
  { printf '%s' "$SIP_OPTIONS"; sleep 2; } |
    timeout 10 openssl s_client -connect "$N1_ADDR:$MRA_PORT" -servername "$N1_NAME" \
      -CAfile "$CERTS/lab-ca.pem" -verify_return_error \
      -cert "$CERTS/expressway-c.pem" -key "$CERTS/expressway-c-key.pem" >"$out" 2>&1 || true
  if grep -q '^SIP/2.0 200 OK' "$out"; then
    say "    openssl s_client with the Expressway-C certificate: SIP/2.0 200 OK to OPTIONS"
  else
    say "    openssl s_client with the Expressway-C certificate got no 200 to OPTIONS:"
    tail -n 30 "$out" | sed 's/^/      /'
    return 1
  fi
}

# e. Mutual TLS rejections on the MRA port.
ossl() { timeout 20 openssl "$@"; }
make_certs() {
  local d=$WORK/pki
  mkdir -p "$d"
  # An unrelated CA, and a leaf from it that names the Expressway-C entry: only the chain is
  # wrong.
  ossl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj "/CN=unrelated interop CA" -keyout "$d/other-ca-key.pem" -out "$d/other-ca.pem" || return 1
  ossl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -subj "/CN=exp-c.domain-1.com" -keyout "$d/other-key.pem" -out "$d/other.csr" || return 1
  printf '%s\n' "subjectAltName=DNS:exp-c.domain-1.com" \
    "extendedKeyUsage=clientAuth,serverAuth" >"$d/other.ext"
  ossl x509 -req -in "$d/other.csr" -CA "$d/other-ca.pem" -CAkey "$d/other-ca-key.pem" \
    -set_serial "0x$(openssl rand -hex 8)" -days 2 -extfile "$d/other.ext" -out "$d/other.pem" || return 1
  # A leaf from the lab CA whose CN/SAN is no Expressway-C entry: only the name is wrong.
  ossl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -subj "/CN=stranger.interop.invalid" -keyout "$d/stranger-key.pem" -out "$d/stranger.csr" || return 1
  printf '%s\n' "subjectAltName=DNS:stranger.interop.invalid" \
    "extendedKeyUsage=clientAuth,serverAuth" >"$d/stranger.ext"
  ossl x509 -req -in "$d/stranger.csr" -CA "$CERTS/lab-ca.pem" -CAkey "$CERTS/lab-ca-key.pem" \
    -set_serial "0x$(openssl rand -hex 8)" -days 2 -extfile "$d/stranger.ext" \
    -out "$d/stranger.pem" || return 1
  ossl verify -CAfile "$CERTS/lab-ca.pem" "$d/stranger.pem" || return 1
}

case_e1() {
  expect_rejected e1-other-ca 'alert unknown ca|alert number 48' \
    -cert "$WORK/pki/other.pem" -key "$WORK/pki/other-key.pem"
}

case_e2() {
  expect_rejected e2-not-expressway 'alert unknown ca|alert number 48' \
    -cert "$WORK/pki/stranger.pem" -key "$WORK/pki/stranger-key.pem"
}

case_e3() {
  # rustls answers a missing certificate with certificate_required (116).
  expect_rejected e3-no-client-cert 'alert [a-z ]+|alert number [0-9]+'
}

# h. SIPVicious (svmap, svwar) against 5060/UDP and, through a UDP-to-TLS bridge (SIPVicious
#    OSS speaks UDP only), the OAuth port: both answer OPTIONS with the documented Server header
#    and nothing more; svwar enumerates the legacy port's lines (unauthenticated by design, as
#    on UCM) but cannot tell an existing line from a missing one on the OAuth port, where the
#    registrar challenges before looking the line up. Then the daemon still registers a device.
SV_DIR=$ROOT/target/interop-tools/sipvicious
install_sipvicious() {
  [ -x "$SV_DIR/bin/sipvicious_svwar" ] && return 0
  timeout 300 python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
    --target "$SV_DIR" sipvicious==0.3.8 >"$WORK/pip-sipvicious.log" 2>&1
}
sv() { # TOOL ARGS...: one bounded SIPVicious run, loopback only
  local tool=$1
  shift
  PYTHONPATH=$SV_DIR timeout 90 python3 "$SV_DIR/bin/sipvicious_$tool" "$@"
}
sv_extensions() { # svwar output -> the extensions it reports, one a line
  sed -n 's/^| *\([0-9][0-9]*\) *|.*/\1/p' "$1" | sort -n | paste -sd ' ' -
}
sv_agent() { # svmap output -> the User Agent column of its one row
  awk -F'|' 'NF >= 4 && $2 ~ /[0-9]:[0-9]/ { gsub(/^ +| +$/, "", $3); print $3 }' "$1"
}
case_h() {
  local server bridge_pid=0 ok=0 found agent
  server="Cisco-CUCM$(awk '$1 == "server_version" { v = $3; gsub(/"/, "", v); print v; exit }' "$CFG")"
  [ "$server" != Cisco-CUCM ] || server=Cisco-CUCM12.5
  install_sipvicious || {
    say "    pip install sipvicious failed: $(tail -n 3 "$WORK/pip-sipvicious.log")"
    return 1
  }
  local bridge=$((BASE + 70))
  python3 "$HERE/udp_tls_bridge.py" "$bridge" "$N1_ADDR" "$OAUTH_PORT" "$N1_NAME" \
    "$CERTS/lab-ca.pem" >"$WORK/h-bridge.log" 2>&1 &
  bridge_pid=$!
  for ((i = 0; i < 50; i++)); do
    grep -qs '^ready' "$WORK/h-bridge.log" && break
    sleep 0.1
  done
  grep -q '^ready' "$WORK/h-bridge.log" || {
    say "    the UDP-to-TLS bridge did not start: $(tail -n 3 "$WORK/h-bridge.log")"
    stop "$bridge_pid"
    return 1
  }

  # svmap: OPTIONS; what a scanner learns is the Server header every answer carries.
  sv svmap -b 127.0.0.1 -P $((BASE + 71)) -p "$SIP_PORT" "$N1_ADDR" >"$WORK/h-svmap-5060.out" 2>&1 || true
  sv svmap -b 127.0.0.1 -P $((BASE + 72)) -p "$bridge" 127.0.0.1 >"$WORK/h-svmap-5090.out" 2>&1 || true
  for port in 5060 5090; do
    agent=$(sv_agent "$WORK/h-svmap-$port.out")
    if [ "$agent" = "$server" ]; then
      say "    svmap $port: one SIP device, User Agent \"$agent\""
    else
      say "    svmap $port: expected User Agent \"$server\", got \"$agent\":"
      sed 's/^/      /' "$WORK/h-svmap-$port.out" | tail -n 20
      ok=1
    fi
  done

  # svwar on the legacy port: 3001 (SIPlegacy1, no credentials) exists, 3000 and 3002-3010 not.
  sv svwar -b 127.0.0.1 -P $((BASE + 73)) -e3000-3010 --maximumtime 10 \
    "udp://$N1_ADDR:$SIP_PORT" >"$WORK/h-svwar-5060.out" 2>&1 || true
  found=$(sv_extensions "$WORK/h-svwar-5060.out")
  if [ "$found" = 3001 ]; then
    say "    svwar 5060 -e3000-3010: finds 3001 only (the legacy port is unauthenticated by design)"
  else
    say "    svwar 5060 -e3000-3010: expected 3001, got \"$found\":"
    sed 's/^/      /' "$WORK/h-svwar-5060.out" | tail -n 20
    ok=1
  fi
  # svwar on the OAuth port, over DNs that exist there (1010, 2001, 2002), exist elsewhere
  # (2003, 3001), belong to an inactive user (2099), or do not exist: it must report none.
  # --force: without it svwar stops at its first check when a made-up extension is challenged
  # too; forced, it asks for every extension and compares the answers. -v prints that it did.
  sv svwar -v --force -b 127.0.0.1 -P $((BASE + 74)) -e1009-1011,2000-2003,2099,3000-3001 \
    --maximumtime 10 "udp://127.0.0.1:$bridge" >"$WORK/h-svwar-5090.out" 2>&1 || true
  found=$(sv_extensions "$WORK/h-svwar-5090.out")
  if ! grep -q 'Ok SIP device found' "$WORK/h-svwar-5090.out"; then
    say "    svwar 5090: did not get through the bridge:"
    sed 's/^/      /' "$WORK/h-svwar-5090.out" | tail -n 20
    ok=1
  elif [ -n "$found" ]; then
    say "    svwar 5090: told \"$found\" apart from missing extensions on the OAuth port:"
    sed 's/^/      /' "$WORK/h-svwar-5090.out" | tail -n 20
    ok=1
  else
    say "    svwar 5090 (forced, 12 extensions): every answer alike, no extension found"
  fi
  stop "$bridge_pid"

  # Still serving, on both ports. (Not by registering 3001 again: svwar's REGISTER holds its
  # binding now, and a second client gets 403 "Registration is active for another client".)
  local answer
  answer=$(python3 - "$N1_ADDR" "$SIP_PORT" "$SIP_OPTIONS" <<'PY'
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(5)
s.sendto(sys.argv[3].encode(), (sys.argv[1], int(sys.argv[2])))
print(s.recv(65536).decode(errors="replace").split("\r\n")[0])
PY
  ) || answer="no answer"
  if [ "$answer" = "SIP/2.0 200 OK" ]; then
    say "    after the scans: OPTIONS on 5060/UDP answered $answer"
  else
    say "    after the scans: OPTIONS on 5060/UDP answered \"$answer\""
    ok=1
  fi
  { printf '%s' "$SIP_OPTIONS"; sleep 2; } |
    timeout 10 openssl s_client -connect "$N1_ADDR:$OAUTH_PORT" -servername "$N1_NAME" \
      -CAfile "$CERTS/lab-ca.pem" -verify_return_error >"$WORK/h-after.out" 2>&1 || true
  if grep -q '^SIP/2.0 200 OK' "$WORK/h-after.out"; then
    say "    after the scans: OPTIONS on 5090 over TLS answered SIP/2.0 200 OK"
  else
    say "    after the scans: no 200 to OPTIONS on 5090 over TLS:"
    tail -n 20 "$WORK/h-after.out" | sed 's/^/      /'
    ok=1
  fi
  kill -0 "$DAEMON_PID" 2>/dev/null || { say "    the registrar died"; ok=1; }
  return "$ok"
}

run_case "a: OAuth port 5090 over TLS (SIPp+stunnel): 407 Bearer, 200 with token, refresh" case_a
run_case "f: curl token service on 8443 (password, refresh, code flow), SIPp on 5090, revoke, key regen" case_f
run_case "g: config files over 6970, TFTP and 6971 (with a token), well-formed, naming the bound ports" case_g
run_case "b: OAuth device on legacy port 5060/UDP: 403 SIP OAuth Registration port Mismatch" case_b
run_case "c: non-secure legacy device on port 5060/UDP, node 2: 200 without credentials" case_c
run_case "d: MRA port 5091 mutual TLS with Expressway-C certificate: 407, 200 with token" case_d
if (cd "$WORK" && make_certs) >"$WORK/pki.log" 2>&1; then
  run_case "e1: MRA port rejects a certificate from an unrelated CA: alert unknown_ca" case_e1
  run_case "e2: MRA port rejects a lab certificate naming no Expressway-C: alert unknown_ca" case_e2
  run_case "e3: MRA port rejects a handshake without a client certificate" case_e3
else
  say "    making the test certificates failed:"
  sed 's/^/    /' "$WORK/pki.log"
  for n in e1 e2 e3; do
    failed=$((failed + 1))
    say "FAIL $n: test certificates could not be made"
  done
fi

run_case "h: sipvicious svmap/svwar on 5060/UDP and 5090 (bridged): no line told apart on 5090; still serving" case_h

kill -0 "$DAEMON_PID" 2>/dev/null || {
  say "FAIL registrar: the daemon died during the run"
  failed=$((failed + 1))
}

say "interop: $((SECONDS - T0)) s after the build"
say "$passed passed, $failed failed"
((failed == 0))
