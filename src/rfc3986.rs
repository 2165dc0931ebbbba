//! The two steps of RFC 3986 normalisation that the request path ([`crate::forwarded`]) and
//! resource URIs ([`crate::policy::normalize_resource_uri`]) both take: percent-escapes of
//! unreserved characters decoded and the rest upper-cased (§6.2.2.1, §6.2.2.2), and dot
//! segments removed (§5.2.4), with empty segments collapsed as servers that open files do.

/// `text` with percent-escapes of unreserved characters decoded and the others upper-cased.
/// With `separators`, `%2F`, `%5C` and `\` become `/` (servers that decode a path before
/// opening the file read them so); with `lower`, ASCII letters are lower-cased, the escapes
/// left excepted. `None` for a broken escape.
pub fn decode_unreserved(text: &str, separators: bool, lower: bool) -> Option<String> {
    let case = |b: u8| if lower { b.to_ascii_lowercase() } else { b } as char;
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3)?;
            let value = u8::from_str_radix(hex, 16).ok()?;
            if value.is_ascii_alphanumeric() || matches!(value, b'-' | b'.' | b'_' | b'~') {
                out.push(case(value));
            } else if separators && matches!(value, b'/' | b'\\') {
                out.push('/');
            } else {
                // Other reserved or special characters stay encoded, in one spelling.
                out.push('%');
                out.push_str(&hex.to_ascii_uppercase());
            }
            i += 3;
        } else {
            out.push(match bytes[i] {
                b'\\' if separators => '/',
                b => case(b),
            });
            i += 1;
        }
    }
    Some(out)
}

/// The segments of `path` (split at `/`) with empty and `.` segments dropped and each `..`
/// taking the segment before it away; with `params`, each segment cut at `;` first (path
/// parameters, which routers strip before matching). Also whether the path names a directory:
/// its last segment was empty, `.` or `..`.
pub fn dot_segments(path: &str, params: bool) -> (Vec<&str>, bool) {
    let mut segments: Vec<&str> = Vec::new();
    let mut trailing = false;
    for segment in path.split('/') {
        let segment = if params {
            segment.split(';').next().unwrap_or("")
        } else {
            segment
        };
        trailing = matches!(segment, "" | "." | "..");
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    (segments, trailing)
}
