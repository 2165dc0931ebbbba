#!/bin/sh
# The client under test of the MCP conformance suite's client auth scenarios:
# `mcp-gateway login`, run the way the suite runs a client (it appends the MCP server URL).
# MCP_CONFORMANCE_CONTEXT may carry a pre-registered client ({client_id, client_secret});
# MCP_CONFORMANCE_PROTOCOL_VERSION the MCP revision to speak. The suite's authorization servers
# approve at once, so the browser step follows the redirects (--follow-authorization), and the
# client offers the suite's Client ID Metadata Document URL (used only where supported).
# Env: MCP_GATEWAY_BIN (the mcp-gateway binary), E2E_NODE (a node to read the context with).
set -eu
server_url=$(eval "echo \${$#}")
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
context=${MCP_CONFORMANCE_CONTEXT:-}
field() {
  [ -n "$context" ] || return 0
  CTX=$context "${E2E_NODE:-node}" -e 'const v = JSON.parse(process.env.CTX)[process.argv[1]]; if (typeof v === "string") process.stdout.write(v)' "$1"
}
client_id=$(field client_id)
client_secret=$(field client_secret)
set -- --env-file "$dir/.env" login --follow-authorization --timeout 20 \
  --client-metadata-url https://conformance-test.local/client-metadata.json --call-tool test-tool
[ -n "$client_id" ] && set -- "$@" --client-id "$client_id"
[ -n "$client_secret" ] && set -- "$@" --client-secret "$client_secret"
case "${MCP_CONFORMANCE_PROTOCOL_VERSION:-}" in
  2026-07-28) set -- "$@" --protocol-version 2026-07-28 ;;
esac
exec env -u MCP_CLIENT_ID -u MCP_CLIENT_SECRET "$MCP_GATEWAY_BIN" "$@" "$server_url"
