//! `mcp-gateway stats`: what the gateway holds right now.

use std::collections::BTreeMap;

use super::admin::print_table;
use super::{Cli, CliResult};
use crate::clock::{Clock, SystemClock};
use crate::store::keys;

pub async fn run(cli: &Cli) -> CliResult {
    let settings = cli.settings()?;
    let mut admin = cli.admin(&settings).await?;
    let now = SystemClock.now_unix();
    let clients = super::clients::all_clients(&mut admin).await?;
    let tokens = super::tokens::live_tokens(&mut admin, None).await?;
    let families = admin
        .scan(&format!("{}*", keys::FAMILY_PREFIX))
        .await?
        .len();
    let mut per_client: BTreeMap<String, usize> = BTreeMap::new();
    let mut per_user: BTreeMap<String, usize> = BTreeMap::new();
    for t in &tokens {
        *per_client.entry(t.client_id.clone()).or_default() += 1;
        *per_user.entry(t.username.to_ascii_lowercase()).or_default() += 1;
    }
    let expiring = tokens
        .iter()
        .filter(|t| t.expires_at - now < 86_400)
        .count();
    if cli.json {
        let v = serde_json::json!({
            "clients": clients.len(),
            "live_tokens": tokens.len(),
            "refresh_families": families,
            "expiring_within_a_day": expiring,
            "tokens_per_client": per_client,
            "tokens_per_user": per_user,
        });
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        return Ok(());
    }
    println!("clients                 {}", clients.len());
    println!("live access tokens      {}", tokens.len());
    println!("refresh families        {families}");
    println!("expiring within a day   {expiring}");
    println!();
    let rows: Vec<Vec<String>> = per_client
        .iter()
        .map(|(c, n)| vec![c.clone(), n.to_string()])
        .collect();
    print_table(
        false,
        &serde_json::Value::Null,
        &["CLIENT", "TOKENS"],
        &rows,
    );
    println!();
    let rows: Vec<Vec<String>> = per_user
        .iter()
        .map(|(u, n)| vec![u.clone(), n.to_string()])
        .collect();
    print_table(false, &serde_json::Value::Null, &["USER", "TOKENS"], &rows);
    Ok(())
}
