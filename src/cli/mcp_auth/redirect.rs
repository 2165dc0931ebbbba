//! The browser part of a login: the authorization URL printed (and maybe opened), the
//! loopback listener that the redirect comes back to, answered with a page the user can close.

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::Browser;
use crate::cli::{CliError, CliResult};

/// The browser part: print (and maybe open) the URL, wait for the loopback redirect to
/// `/callback`; returns the URL it came back with (answered with a page the user can close).
pub async fn wait_for_redirect(
    listener: &tokio::net::TcpListener,
    url: &str,
    browser: &Browser,
) -> CliResult<url::Url> {
    println!("Open this URL in a browser to log in:");
    println!("{url}");
    if browser.open {
        for opener in ["xdg-open", "open"] {
            if std::process::Command::new(opener).arg(url).spawn().is_ok() {
                break;
            }
        }
    }
    let wait = async {
        loop {
            let (mut socket, _) = listener
                .accept()
                .await
                .map_err(|e| CliError::Failed(e.to_string()))?;
            let mut buf = vec![0u8; 16 * 1024];
            let mut len = 0;
            while len < buf.len() {
                let n = socket.read(&mut buf[len..]).await.unwrap_or(0);
                if n == 0 {
                    break;
                }
                len += n;
                if buf[..len].windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
            }
            let request = String::from_utf8_lossy(&buf[..len]).to_string();
            let target = request.split_whitespace().nth(1).unwrap_or("/").to_string();
            let parsed = url::Url::parse(&format!("http://127.0.0.1{target}")).ok();
            let Some(parsed) = parsed.filter(|u| u.path() == "/callback") else {
                let _ = socket
                    .write_all(
                        b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                    )
                    .await;
                continue;
            };
            let failed = parsed.query_pairs().any(|(k, _)| k == "error");
            let body = if failed {
                "Login failed. You can close this window."
            } else {
                "Logged in. You can close this window."
            };
            let response = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = socket.write_all(response.as_bytes()).await;
            return Ok(parsed);
        }
    };
    tokio::time::timeout(browser.timeout, wait)
        .await
        .map_err(|_| CliError::Failed(format!("no login within {} s", browser.timeout.as_secs())))?
}
