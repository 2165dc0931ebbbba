#!/bin/sh
# The client under test of the MCP conformance suite's client auth scenarios: exactly
# `mcp-gateway login`, which reads what the suite hands its clients (MCP_CONFORMANCE_SCENARIO,
# MCP_CONFORMANCE_CONTEXT, MCP_CONFORMANCE_PROTOCOL_VERSION) itself; the suite appends the MCP
# server URL. Env: MCP_GATEWAY_BIN (the mcp-gateway binary).
exec "$MCP_GATEWAY_BIN" login "$@"
