# Sourced by the scripts that run facegan: `bin=$(facegan_bin)` is $BIN when set, else the
# release binary of this checkout, built first (cargo's target folder, wherever it is).
facegan_bin() {
    if [ -n "${BIN:-}" ]; then
        echo "$BIN"
        return
    fi
    cargo build --release --quiet >&2
    echo "$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')/release/facegan"
}
