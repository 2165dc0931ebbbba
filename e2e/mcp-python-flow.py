#!/usr/bin/env python3
"""The official MCP Python SDK (mcp==2.3.0) logging in through the gateway and calling a tool.

    python e2e/mcp-python-flow.py MCP_URL

Run with the interpreter of the venv that scripts/e2e-deps makes (e2e/.tools/python-mcp-2.3.0).
`mcp.client.auth.OAuthClientProvider` does what a Python MCP client does on a 401: RFC 9728 and
RFC 8414 discovery, RFC 7591 registration, PKCE S256 with `resource`; its redirect_handler gets
the authorization URL, and its callback_handler drives the browser step with
e2e/browser-login-cli.mjs (Node: E2E_NODE, default `node`), returning code, state and iss
(which the SDK checks, RFC 9207). Then tools/list and tools/call (echo).

Prints ONE JSON line on stdout ({"ok": true, ...} or {"ok": false, "error": ...}); exit status 0
only when every step ran. Bounded: E2E_TIMEOUT_S (default 60) seconds overall.
"""

import asyncio
import json
import os
import sys
import traceback
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import httpx2
from mcp.client import Client
from mcp.client.auth import AuthorizationCodeResult, OAuthClientProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import OAuthClientInformationFull, OAuthClientMetadata, OAuthToken

HERE = Path(__file__).resolve().parent
REDIRECT_URI = "http://127.0.0.1:33418/oauth/callback"  # never listened on: the browser stops at it
out: dict = {"ok": False, "steps": [], "sdk": "mcp==2.3.0"}


def step(name: str, **extra) -> None:
    out["steps"].append(name)
    print(f"[python-flow] {name} {json.dumps(extra) if extra else ''}", file=sys.stderr)


class MemoryStorage:
    """TokenStorage kept in memory, as a short-lived client would."""

    def __init__(self) -> None:
        self.tokens: OAuthToken | None = None
        self.client_info: OAuthClientInformationFull | None = None

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens = tokens

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client_info

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client_info = client_info


class Browser:
    """The user's browser: handed the authorization URL, returns what reached the redirect URI."""

    def __init__(self) -> None:
        self.url: str | None = None

    async def redirect_handler(self, url: str) -> None:
        self.url = url
        q = parse_qs(urlparse(url).query)
        out["authorization_request"] = {
            k: (q.get(k) or [None])[0]
            for k in ("response_type", "code_challenge_method", "resource", "scope", "redirect_uri", "client_id")
        }
        step("authorization_url", **out["authorization_request"])

    async def callback_handler(self) -> AuthorizationCodeResult:
        if not self.url:
            raise RuntimeError("callback_handler called before redirect_handler")
        proc = await asyncio.create_subprocess_exec(
            os.environ.get("E2E_NODE", "node"),
            str(HERE / "browser-login-cli.mjs"),
            self.url,
            REDIRECT_URI,
            cwd=str(HERE),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        stdout, stderr = await asyncio.wait_for(proc.communicate(), timeout=30)
        lines = [line for line in stdout.decode().splitlines() if line.strip()]
        result = json.loads(lines[-1]) if lines else {"ok": False, "error": stderr.decode()[-2000:]}
        out["browser_steps"] = [s.get("status") for s in result.get("steps") or []]
        if not result.get("ok"):
            raise RuntimeError(f"browser step failed: {result.get('error')} {json.dumps(result.get('details'))[:2000]}")
        out["callback_iss"] = result.get("iss")
        step("browser_login", hops=len(out["browser_steps"]))
        return AuthorizationCodeResult(code=result["code"], state=result.get("state"), iss=result.get("iss"))


async def main(mcp_url: str, client_metadata_url: str | None) -> None:
    storage = MemoryStorage()
    browser = Browser()
    provider = OAuthClientProvider(
        client_metadata_url=client_metadata_url,
        server_url=mcp_url,
        client_metadata=OAuthClientMetadata(
            client_name="mcp-gateway e2e (MCP Python SDK)",
            redirect_uris=[REDIRECT_URI],
            grant_types=["authorization_code", "refresh_token"],
            response_types=["code"],
            token_endpoint_auth_method="none",
        ),
        storage=storage,
        redirect_handler=browser.redirect_handler,
        callback_handler=browser.callback_handler,
    )
    async with httpx2.AsyncClient(auth=provider, timeout=15.0) as http:
        async with Client(streamable_http_client(mcp_url, http_client=http)) as client:
            step("connected")
            tools = await client.list_tools()
            out["tools"] = [t.name for t in tools.tools]
            result = await client.call_tool("echo", {"message": "hi (python)"})
            out["tool_result"] = "\n".join(c.text for c in result.content if getattr(c, "type", None) == "text")
            out["tool_is_error"] = bool(result.is_error) if hasattr(result, "is_error") else bool(getattr(result, "isError", False))
            step("tool_call", result=out["tool_result"])
    out["client_registered"] = storage.client_info is not None and bool(storage.client_info.client_id)
    out["client_id"] = storage.client_info.client_id if storage.client_info else None
    tokens = storage.tokens
    out["token"] = {
        "token_type": tokens.token_type if tokens else None,
        "scope": tokens.scope if tokens else None,
        "has_refresh_token": bool(tokens and tokens.refresh_token),
    }
    out["ok"] = True


if __name__ == "__main__":
    if len(sys.argv) < 2:
        print(json.dumps({"ok": False, "error": "usage: mcp-python-flow.py MCP_URL"}))
        sys.exit(2)
    out["mcp_url"] = sys.argv[1]
    code = 0
    try:
        asyncio.run(asyncio.wait_for(main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else None), timeout=float(os.environ.get("E2E_TIMEOUT_S", "60"))))
    except BaseException as e:  # noqa: BLE001 - report everything, including timeouts and groups
        code = 1
        out["ok"] = False
        out["error"] = f"{type(e).__name__}: {e}"
        out["traceback"] = traceback.format_exc()[-4000:]
    print(json.dumps(out), flush=True)
    sys.exit(code)
