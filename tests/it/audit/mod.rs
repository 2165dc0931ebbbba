//! The audit trail (docs/audit.md) as operators and attackers meet it: every event from the
//! real flow that causes it, the trail's integrity, webhooks, and the operator's commands.

mod e2e;
mod events;
mod integrity;
mod operator;
mod webhooks;
