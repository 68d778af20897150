# aigentflow persistence: the recipes CI runs, verbatim.

set shell := ["bash", "-euo", "pipefail", "-c"]

# List the recipes.
default:
    @just --list

# The CP0 checkpoint validation: format, lint, every test, then the checklist mapped to its tests.
test-cp0: fmt lint
    scripts/cp0-checklist.sh

# Check formatting.
fmt:
    cargo fmt --all --check

# Lint every crate and target; warnings are errors.
lint:
    cargo clippy --workspace --all-targets -- -D warnings

# Run every test.
test:
    cargo test --workspace

# Run the BENCHMARKS.md workloads in release mode (pass e.g. --quick, --only W1 or --db postgres://…).
bench *ARGS:
    cargo run --release -p aigentflow-bench -- {{ARGS}}

# Drive a demo orchestration through the real crates on the default database.
demo:
    cargo run --quiet -p aigentflow-cli -- demo
