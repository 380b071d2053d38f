#!/usr/bin/env bash
# Entry point behind the npm scripts. Works straight after `git clone` with the machine's own npm:
# it first runs the bootstrap (packages, Node LTS, npm deps, native addon), then the command.
set -euo pipefail
cmd=${1:?usage: tpfleet.sh test|demo|demo-netns|cluster|bench|gen|typecheck|format|lint|node [args]}; shift
# shellcheck source=bootstrap.sh
source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh"
cd "$REPO_ROOT"
TSX=(--import tsx)

case "$cmd" in
  test)
    # One runner for the whole repo (docs/adr/0001-test-runner.md). Files run one at a time:
    # the privileged tiers build network namespaces and a real API server, and 2 cores are
    # better spent inside each test than across them. With no arguments, scripts/suite.ts runs
    # every file the same way, the tiers with slow cold builds last while those build at idle
    # priority in the background.
    if [ $# -eq 0 ]; then exec "$NODE" "${TSX[@]}" scripts/suite.ts; fi
    exec "$NODE" "${TSX[@]}" --test --test-concurrency=1 --test-reporter=spec "$@"
    ;;
  # The product on its default: the local-real cluster (started if needed, left running).
  demo) exec "$NODE" "${TSX[@]}" e2e/cluster/demo.ts "$@" ;;
  demo-netns) exec "$NODE" "${TSX[@]}" e2e/demo.ts "$@" ;;
  cluster) exec "$NODE" "${TSX[@]}" e2e/cluster/up.ts "$@" ;;
  bench) exec "$NODE" "${TSX[@]}" e2e/bench/dataplane.ts "$@" ;;
  gen) exec "$NODE" "${TSX[@]}" operator/gen/main.ts "$@" ;;
  typecheck) exec "$NODE" node_modules/typescript/bin/tsc --noEmit -p . ;;
  # Biome (biome.json): `format` rewrites the repo in place, `lint` checks formatting and lint rules
  # without writing (what scripts/lint.test.ts runs). Two passes: Biome lays out some long member
  # chains differently once they are broken, so the first pass over unformatted code is not yet
  # final; the second pass is (a third changes nothing).
  format)
    "$NODE" node_modules/@biomejs/biome/bin/biome format --write . >/dev/null
    exec "$NODE" node_modules/@biomejs/biome/bin/biome format --write . ;;
  lint) exec "$NODE" node_modules/@biomejs/biome/bin/biome ci . ;;
  node) exec "$NODE" "${TSX[@]}" "$@" ;;
  *) echo "unknown command: $cmd" >&2; exit 2 ;;
esac
