//! The scanner against serde_json as the oracle: the same messages accepted and refused,
//! the same members read.

use super::super::trim_ascii;
use super::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The serde_json reading this module replaces, kept as the reference it must agree with.
mod oracle {
    use super::super::super::{Message, Params};
    use super::super::folds_to;
    use serde::Deserialize;
    use serde::de::{self, IgnoredAny, MapAccess, SeqAccess, Visitor};
    use std::borrow::Cow;
    use std::fmt;

    pub fn messages(body: &[u8]) -> Result<Vec<Message<'_>>, serde_json::Error> {
        if body.first() == Some(&b'[') {
            serde_json::from_slice::<Vec<Message>>(body)
        } else {
            serde_json::from_slice::<Message>(body).map(|m| vec![m])
        }
    }

    /// A string borrowed from the input when it has no escapes, decoded otherwise.
    struct Text<'a>(Cow<'a, str>);

    impl<'de> Deserialize<'de> for Text<'de> {
        fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = Text<'de>;
                fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                    f.write_str("a string")
                }
                fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Text<'de>, E> {
                    Ok(Text(Cow::Borrowed(v)))
                }
                fn visit_str<E>(self, v: &str) -> Result<Text<'de>, E> {
                    Ok(Text(Cow::Owned(v.to_string())))
                }
                fn visit_string<E>(self, v: String) -> Result<Text<'de>, E> {
                    Ok(Text(Cow::Owned(v)))
                }
            }
            d.deserialize_str(V)
        }
    }

    impl<'de> Deserialize<'de> for Message<'de> {
        fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = Message<'de>;
                fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                    f.write_str("a JSON-RPC message object")
                }
                fn visit_map<A: MapAccess<'de>>(
                    self,
                    mut map: A,
                ) -> Result<Message<'de>, A::Error> {
                    let (mut method, mut params) = (None, None);
                    while let Some(Text(key)) = map.next_key::<Text<'de>>()? {
                        match key.as_ref() {
                            "method" => {
                                if method.is_some() {
                                    return Err(de::Error::duplicate_field("method"));
                                }
                                method = Some(map.next_value::<Text<'de>>()?.0);
                            }
                            "params" => {
                                if params.is_some() {
                                    return Err(de::Error::duplicate_field("params"));
                                }
                                params = Some(map.next_value::<Params<'de>>()?);
                            }
                            other if folds_to(other, &["method", "params"]) => {
                                return Err(de::Error::custom(
                                    "a member that case-folds to method or params",
                                ));
                            }
                            _ => {
                                map.next_value::<IgnoredAny>()?;
                            }
                        }
                    }
                    Ok(Message { method, params })
                }
            }
            d.deserialize_map(V)
        }
    }

    impl<'de> Deserialize<'de> for Params<'de> {
        fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = Params<'de>;
                fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                    f.write_str("JSON-RPC params")
                }
                fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Params<'de>, A::Error> {
                    let mut params = Params::default();
                    while let Some(Text(key)) = map.next_key::<Text<'de>>()? {
                        let slot = match key.as_ref() {
                            "name" => &mut params.name,
                            "uri" => &mut params.uri,
                            other if folds_to(other, &["name", "uri"]) => {
                                return Err(de::Error::custom(
                                    "a member that case-folds to name or uri",
                                ));
                            }
                            _ => {
                                map.next_value::<IgnoredAny>()?;
                                continue;
                            }
                        };
                        if slot.is_some() {
                            return Err(de::Error::custom("duplicate name or uri"));
                        }
                        // A non-string name is no name we can match: an error, never "no name".
                        *slot = Some(map.next_value::<Text<'de>>()?.0);
                    }
                    Ok(params)
                }
                // Positional params name nothing.
                fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Params<'de>, A::Error> {
                    while seq.next_element::<IgnoredAny>()?.is_some() {}
                    Ok(Params::default())
                }
                fn visit_unit<E>(self) -> Result<Params<'de>, E> {
                    Ok(Params::default())
                }
            }
            d.deserialize_any(V)
        }
    }
}

fn agree(body: &[u8]) {
    let body = trim_ascii(body);
    let mut read = Vec::new();
    let ours = messages(body, |m| read.push(m)).map(|n| {
        assert_eq!(n, read.len());
        read
    });
    let reference = oracle::messages(body);
    match (&ours, &reference) {
        (Ok(a), Ok(b)) => assert_eq!(a, b, "{}", String::from_utf8_lossy(body)),
        (Err(_), Err(_)) => {}
        _ => panic!(
            "scan {:?} but serde_json {:?} for {:?}",
            ours,
            reference.map_err(|e| e.to_string()),
            String::from_utf8_lossy(body)
        ),
    }
}

#[test]
fn agrees_with_serde_json_on_the_edge_cases() {
    for body in [
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"a":[1,2.5e-3,-0,true,false,null,{"b":"\\\"\/\b\f\n\r\t\u00e9"}]}}}"#,
        r#"{"method":"tools/call","params":{"name":"\u0064elete_all"}}"#,
        r#"{"method":"tools/call","params":{"name":"\ud83d\ude00"}}"#,
        r#"{"method":"tools/call","params":{"name":"\ud83d"}}"#,
        r#"{"method":"tools/call","params":{"name":"\ude00"}}"#,
        r#"{"method":"tools/call","params":{"name":"\ud83d\u0041"}}"#,
        r#"{"method":"tools/call","params":{"name":"\ud83dx"}}"#,
        r#"{"method":"tools/call","params":{"x":"\ud83d"}}"#,
        r#"{"method":"tools/call","params":{"name":"\u00"}}"#,
        r#"{"method":"tools/call","params":{"name":"\q"}}"#,
        r#"{"method":"tools/call","params":["a",{"name":"x"}]}"#,
        r#"{"method":"tools/call","params":null}"#,
        r#"{"method":"tools/call","params":nul}"#,
        r#"{"method":"tools/call","params":5}"#,
        r#"{"method":"tools/call","params":"x"}"#,
        r#"{"method":5}"#,
        r#"{"method":null}"#,
        r#"{"method":"a","method":"a"}"#,
        r#"{"params":{},"params":{}}"#,
        r#"{"params":{"uri":"a","uri":"a"}}"#,
        r#"{"Method":"a"}"#,
        r#"{"params":{"URI":"a"}}"#,
        r#"{"params":{"nam\u0065":"a"}}"#,
        r#"{"\u006dethod":"tools/call"}"#,
        r#"{"method":"tools/call","param\u017f":{"name":"x"}}"#,
        r#"{"method":"tools/call","params":{"\u212Aey":1,"na\u006De":"x"}}"#,
        r#"{"a":01}"#,
        r#"{"a":1.}"#,
        r#"{"a":.5}"#,
        r#"{"a":1e}"#,
        r#"{"a":1e+}"#,
        r#"{"a":-}"#,
        r#"{"a":+1}"#,
        r#"{"a":1.5E+10}"#,
        r#"{"a":[1,]}"#,
        r#"{"a":{"b":1,}}"#,
        r#"{"a":1,}"#,
        r#"{,"a":1}"#,
        r#"{"a" 1}"#,
        r#"{"a":[[[[[[{"b":[]}]]]]]]}"#,
        &format!(r#"{{"a":{}1{}}}"#, "[{\"b\":".repeat(100), "}]".repeat(100)),
        &format!(r#"{{"a":{}1{}}}"#, "[{\"b\":".repeat(100), "]}".repeat(100)),
        &format!(r#"{{"a":{}1{}}}"#, "[".repeat(70), "]".repeat(69)),
        &format!(r#"{{"a":{}{}}}"#, "{\"b\":[".repeat(40), "]}".repeat(40)),
        r#"{"a":[[[[[[{"b":[]}]]]]]}"#,
        r#"{"a":[}"#,
        r#"{"a":[1}}"#,
        r#"{"a":[[1]}}"#,
        r#"{"a":{"b":1]}"#,
        r#"{"a":{"b":{}]}"#,
        r#"{"a":{]}"#,
        r#"{"a":tru}"#,
        r#"{"a":truex}"#,
        r#"{"a":1}x"#,
        r#"{"a":1}{"b":2}"#,
        r#"{}"#,
        r#"{ }"#,
        r#"[]"#,
        r#"[ ]"#,
        r#"[{}]"#,
        r#"[{},]"#,
        r#"[{} {}]"#,
        r#"[{"method":"a"},{"method":"b","params":{"name":"c"}}]"#,
        r#"[1]"#,
        r#"[null]"#,
        r#"[[{}]]"#,
        r#"null"#,
        r#""x""#,
        r#"{"a":"b"#,
        r#"{"a":"b\"#,
        r#"{"a"#,
        r#"{"#,
        r#"["#,
        "",
        "{\"method\":\"tools/call\",\"param\u{17F}\":{}}",
        "{\"params\":{\"\u{212A}\":1}}",
        "{\"method\":\"a\tb\"}",
        "{\"x\":\"a\nb\"}",
        "{\"x\":\"a\u{7f}b\"}",
        "{\t\"method\"\r\n:\n\"a\" }",
        "{\"method\":\"a\"}\u{c}",
    ] {
        let body: &str = body;
        agree(body.as_bytes());
    }
    // Bytes that are not UTF-8: refused in a string that is built, skipped in one that
    // is not (as serde_json does).
    agree(b"{\"method\":\"a\xff\"}");
    agree(b"{\"x\":\"a\xff\"}");
    agree(b"{\"x\xff\":1}");
    agree(b"{\"method\":\"\\u00e9\xc3\"}");
    // Within a member name's first 32 bytes and past them.
    agree(b"{\"xxxxxxxx\xffxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\":1}");
    agree(b"{\"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\xffxxxxxxxxxxxx\":1}");
    agree("{\"method\":\"a\",\"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxé\":1}".as_bytes());
}

/// A random JSON-RPC-like body: the members the policy reads, their case-folded and
/// escaped look-alikes, and arguments of every JSON shape.
fn body(rng: &mut StdRng, depth: u32) -> String {
    const KEYS: &[&str] = &[
        "method",
        "params",
        "name",
        "uri",
        "id",
        "jsonrpc",
        "arguments",
        "Method",
        "NAME",
        "nam\\u0065",
        "\\u006dethod",
        "uri\\u0000",
        "",
    ];
    const STRINGS: &[&str] = &[
        "tools/call",
        "delete_all",
        "x",
        "",
        "\\u0064elete",
        "\\ud83d\\ude00",
        "\\ud83d",
        "a\\nb",
        "\\\"",
        "\\/",
        "é",
        "\\u00e9",
        "\\q",
        "\\u12",
    ];
    let pick = |rng: &mut StdRng, xs: &[&str]| xs[rng.random_range(0..xs.len())].to_string();
    let ws = |rng: &mut StdRng| [" ", "", "", "\n", "\t", "\r"][rng.random_range(0..6)].to_string();
    match if depth == 0 {
        rng.random_range(0..6)
    } else {
        rng.random_range(0..8)
    } {
        0 => format!("\"{}\"", pick(rng, STRINGS)),
        1 => ["0", "-1", "2.5", "1e9", "-0.0E-2", "12"][rng.random_range(0..6)].to_string(),
        2 => ["true", "false", "null"][rng.random_range(0..3)].to_string(),
        3..=5 => {
            let n = rng.random_range(0..4);
            let members: Vec<String> = (0..n)
                .map(|_| {
                    let key = pick(rng, KEYS);
                    let value = if depth == 0 {
                        format!("\"{}\"", pick(rng, STRINGS))
                    } else {
                        body(rng, depth - 1)
                    };
                    format!("{}\"{key}\"{}:{}{value}", ws(rng), ws(rng), ws(rng))
                })
                .collect();
            format!("{{{}{}}}", members.join(","), ws(rng))
        }
        _ => {
            let n = rng.random_range(0..4);
            let items: Vec<String> = (0..n).map(|_| body(rng, depth - 1)).collect();
            format!("[{}{}]", items.join(","), ws(rng))
        }
    }
}

#[test]
fn agrees_with_serde_json_on_generated_and_mutated_bodies() {
    let mut rng = StdRng::seed_from_u64(13);
    const NOISE: &[u8] = b"{}[]:,\"\\ u0e-+.1nt\x00\x1f\x7f\xff\xc3";
    for _ in 0..20_000 {
        let mut b = body(&mut rng, 4).into_bytes();
        agree(&b);
        // A few bytes changed, inserted or removed.
        for _ in 0..rng.random_range(1..4) {
            if b.is_empty() {
                break;
            }
            let at = rng.random_range(0..b.len());
            let noise = NOISE[rng.random_range(0..NOISE.len())];
            match rng.random_range(0..3) {
                0 => b[at] = noise,
                1 => b.insert(at, noise),
                _ => {
                    b.remove(at);
                }
            }
        }
        agree(&b);
    }
}
