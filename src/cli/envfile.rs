//! `.env` files: read `KEY=VALUE` lines, and update keys in place keeping every other line and
//! comment, written atomically with mode 600 (the file holds secrets).

use std::io::{self, Write};
use std::path::Path;

/// The assignments of an env file, in order. `export ` prefixes, quotes and comments are
/// understood as shells and docker compose understand them.
pub fn read(path: &Path) -> io::Result<Vec<(String, String)>> {
    Ok(parse(&std::fs::read_to_string(path)?))
}

pub fn parse(text: &str) -> Vec<(String, String)> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<(String, String)> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let line = line.strip_prefix("export ").unwrap_or(line);
    let (key, value) = line.split_once('=')?;
    let key = key.trim();
    if key.is_empty() || !key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return None;
    }
    let value = value.trim();
    let value = if let Some(inner) = value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
        inner.replace("\\n", "\n").replace("\\\"", "\"")
    } else if let Some(inner) = value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')) {
        inner.to_string()
    } else {
        // Unquoted: a ` #` starts a comment.
        value.split(" #").next().unwrap_or("").trim().to_string()
    };
    Some((key.to_string(), value))
}

/// Sets each key: replaces its line where it is, appends it when new. Creates the file when
/// missing. Mode 600 either way.
pub fn update(path: &Path, updates: &[(&str, &str)]) -> io::Result<()> {
    let existing = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e),
    };
    let mut done = vec![false; updates.len()];
    let mut out = String::with_capacity(existing.len() + 256);
    for line in existing.lines() {
        let replaced = parse_line(line).and_then(|(key, _)| {
            updates.iter().position(|(k, _)| *k == key).map(|i| {
                done[i] = true;
                format!("{}={}", updates[i].0, quote(updates[i].1))
            })
        });
        out.push_str(replaced.as_deref().unwrap_or(line));
        out.push('\n');
    }
    for (i, (key, value)) in updates.iter().enumerate() {
        if !done[i] {
            out.push_str(&format!("{key}={}\n", quote(value)));
        }
    }
    write_private(path, out.as_bytes())
}

fn quote(value: &str) -> String {
    let plain = value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-_./:+=@,".contains(&b));
    if plain {
        value.to_string()
    } else {
        format!("\"{}\"", value.replace('"', "\\\"").replace('\n', "\\n"))
    }
}

/// Writes through a temporary file in the same folder, created with mode 600, then renames.
fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "env file path has no name"))?;
    let tmp = dir.join(format!(
        ".{}.tmp{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
    }
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_shell_and_compose_forms() {
        let pairs = parse("# c\nA=1\nexport B=\"two words\"\nC='x#y'\nD=v # note\nbad line\n");
        assert_eq!(
            pairs,
            vec![
                ("A".into(), "1".into()),
                ("B".into(), "two words".into()),
                ("C".into(), "x#y".into()),
                ("D".into(), "v".into()),
            ]
        );
    }

    #[test]
    fn update_keeps_other_lines_and_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".env");
        std::fs::write(&path, "# header\nKEEP=me\nJWT_ALGORITHM=HS256\n").unwrap();
        update(&path, &[("JWT_ALGORITHM", "RS256"), ("NEW", "a b")]).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            text,
            "# header\nKEEP=me\nJWT_ALGORITHM=RS256\nNEW=\"a b\"\n"
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
