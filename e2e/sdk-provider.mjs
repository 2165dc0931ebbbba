// The OAuthClientProvider the e2e scripts give the MCP TypeScript SDK: everything in memory, as a
// desktop MCP client keeps it. No dependencies.

import crypto from "node:crypto";

/** In-memory OAuthClientProvider, as a desktop MCP client keeps it. */
export class MemoryProvider {
  /** `authMethod`: token_endpoint_auth_method to register; `grantTypes`: the grants to ask for;
   *  `clientMetadataUrl`: a Client ID Metadata Document the SDK uses instead of registering
   *  when the server supports it. */
  constructor(redirectUrl, { authMethod = "none", grantTypes = ["authorization_code", "refresh_token"], clientMetadataUrl } = {}) {
    this._redirectUrl = redirectUrl;
    this.clientMetadataUrl = clientMetadataUrl || undefined;
    this._authMethod = authMethod;
    this._grantTypes = grantTypes;
    this._client = undefined;
    this._tokens = undefined;
    this._verifier = undefined;
    this._discovery = undefined;
    this.lastAuthorizationUrl = undefined;
    this.lastState = undefined;
    this.savedTokens = [];
  }
  get redirectUrl() {
    return this._redirectUrl;
  }
  get clientMetadata() {
    return {
      client_name: "mcp-gateway e2e (MCP TypeScript SDK)",
      redirect_uris: [this._redirectUrl],
      grant_types: this._grantTypes,
      response_types: ["code"],
      token_endpoint_auth_method: this._authMethod,
    };
  }
  state() {
    this.lastState = crypto.randomBytes(16).toString("base64url");
    return this.lastState;
  }
  // The SDK's storage hooks: plain fields.
  clientInformation() { return this._client; }
  saveClientInformation(info) { this._client = info; }
  tokens() { return this._tokens; }
  saveTokens(tokens) {
    this._tokens = tokens;
    this.savedTokens.push(tokens);
  }
  redirectToAuthorization(url) { this.lastAuthorizationUrl = new URL(url); }
  saveCodeVerifier(v) { this._verifier = v; }
  codeVerifier() {
    if (!this._verifier) throw new Error("no code verifier saved");
    return this._verifier;
  }
  saveDiscoveryState(s) { this._discovery = s; }
  discoveryState() { return this._discovery; }
  invalidateCredentials(scope) {
    console.error(`[flow] SDK invalidated credentials: ${scope}`);
    if (scope === "all" || scope === "client") this._client = undefined;
    if (scope === "all" || scope === "tokens") this._tokens = undefined;
    if (scope === "all" || scope === "verifier") this._verifier = undefined;
    if (scope === "all" || scope === "discovery") this._discovery = undefined;
  }
}
