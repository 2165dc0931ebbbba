# Operator recipes of the MCP OAuth gateway. Each is a thin wrapper over one `mcp-gateway`
# command (docs/operations.md); settings come from the environment and `.env`.
# Get `just` with `cargo install just`. Point MCP_GATEWAY at an installed binary to skip cargo.

cli := env_var_or_default("MCP_GATEWAY", "cargo run --quiet --release --")

# List the recipes.
default:
    @just --list

# Print a new 64-character GATEWAY_JWT_SECRET (HS256).
generate-jwt-secret:
    {{cli}} generate-jwt-secret

# Generate an RS256 signing key into .env (JWT_ALGORITHM, JWT_PRIVATE_KEY_B64).
generate-rsa-keys:
    {{cli}} --env-file .env keys generate --alg RS256

# New signing key in .env; the previous one stays valid for verification.
rotate-keys:
    {{cli}} --env-file .env keys rotate

# Obtain the gateway's own GATEWAY_OAUTH_* tokens and client through its login flow.
generate-github-token *flags:
    {{cli}} github-token {{flags}}

# Log in to an MCP server (URL, or MCP_SERVER_URL); saves MCP_CLIENT_* to .env.
mcp-client-token *args:
    {{cli}} login {{args}}

# Refresh the saved tokens that expire within a day (rotating their refresh tokens).
refresh-tokens *flags:
    {{cli}} refresh {{flags}}

# Who the saved tokens belong to and when they expire.
check-token-expiry:
    {{cli}} tokens check-expiry

# Check the saved tokens against keys, allow-list and Redis (and a live /verify with --verify-url URL).
validate-tokens *flags:
    {{cli}} tokens validate {{flags}}

# Remove expired index entries and orphans.
oauth-purge-expired:
    {{cli}} tokens purge-expired

# Back up every oauth:* key with its TTL.
oauth-backup file="backups/oauth-backup.json":
    mkdir -p "$(dirname {{file}})"
    {{cli}} backup --out {{file}}

# Restore a backup (idempotent, TTLs kept); add --dry-run to only look.
oauth-restore file="backups/oauth-backup.json" *flags:
    {{cli}} restore {{flags}} {{file}}

# Revoke one access token by jti.
oauth-delete-token jti:
    {{cli}} tokens revoke {{jti}}

# Delete a client registration (its tokens run out on their own).
oauth-delete-registration client_id:
    {{cli}} clients delete {{client_id}}

# Delete a client and everything issued to it (tokens, refresh grants, codes, consents).
oauth-delete-client-complete client_id:
    {{cli}} clients delete --complete {{client_id}}

# List live tokens (--user U, --client C, --expired, --json).
oauth-list-tokens *flags:
    {{cli}} tokens list {{flags}}

# List registered clients.
oauth-list-registrations *flags:
    {{cli}} clients list {{flags}}

# Clients, live tokens, refresh families, per client and per user.
oauth-stats *flags:
    {{cli}} stats {{flags}}

# Follow the logs of the compose services (or one of them).
logs service="":
    docker compose logs -f {{service}}

# Run a command in a compose service, e.g. `just exec verify mcp-gateway stats`.
exec service +cmd:
    docker compose exec {{service}} {{cmd}}

# Start the gateway with docker compose.
up:
    docker compose up -d

# Stop it.
down:
    docker compose down

# The whole gateway in one process on an embedded store (development login).
dev:
    {{cli}} dev

# Every test (installs what they need).
test:
    ./scripts/test

# The verify benchmark (bench/RESULTS.md).
bench:
    bash bench/verify.sh
