"""The tools tier: the real tool binaries the project ships or pins (Compose's `config`,
compose-lint, hadolint) run on rendered files; no engine and no server."""
