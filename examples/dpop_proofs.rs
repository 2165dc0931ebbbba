//! DPoP proofs for bench/verify.sh's run (d), and the floor they are measured against.
//!
//! `dpop_proofs key ALG KEYFILE`: a new ES256 or EdDSA key in KEYFILE (PKCS#8); prints its
//! RFC 7638 thumbprint (what `tokens mint --bind-dpop-jkt` takes).
//!
//! `dpop_proofs proofs ALG KEYFILE TOKEN HTU COUNT OUT`: COUNT proofs for `POST HTU` with the
//! access token TOKEN (`ath`), each with its own `jti`, one per line in OUT; then times, over
//! those proofs, one bare signature verification with the key parsed once (`sig_us`, the floor),
//! the same parsing the key each time (`sig_parse_us`), and one whole proof check as verify
//! runs it, keys kept (`check_us`).
//!
//! `cargo run --release --example dpop_proofs -- …`

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use aws_lc_rs::signature::{self, KeyPair};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use mcp_oauth_gateway::token::dpop::{Expected, ProofKeys, access_token_hash, check_with};
use mcp_oauth_gateway::token::{b64url, sha256_b64url};
use serde_json::{Value, json};

/// The key's signer and public JWK.
fn load(alg: &str, pkcs8: &[u8]) -> (Algorithm, EncodingKey, Value) {
    match alg {
        "ES256" => {
            let pair = signature::EcdsaKeyPair::from_pkcs8(
                &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                pkcs8,
            )
            .expect("an ES256 PKCS#8 key");
            let point = pair.public_key().as_ref();
            let jwk = json!({"kty": "EC", "crv": "P-256",
                "x": b64url(&point[1..33]), "y": b64url(&point[33..65])});
            (Algorithm::ES256, EncodingKey::from_ec_der(pkcs8), jwk)
        }
        "EdDSA" => {
            let pair = signature::Ed25519KeyPair::from_pkcs8(pkcs8).expect("an Ed25519 key");
            let jwk =
                json!({"kty": "OKP", "crv": "Ed25519", "x": b64url(pair.public_key().as_ref())});
            (Algorithm::EdDSA, EncodingKey::from_ed_der(pkcs8), jwk)
        }
        other => panic!("ALG must be ES256 or EdDSA, not {other}"),
    }
}

fn thumbprint(jwk: &Value) -> String {
    let members: &[&str] = if jwk["kty"] == "EC" {
        &["crv", "kty", "x", "y"]
    } else {
        &["crv", "kty", "x"]
    };
    let body: Vec<String> = members
        .iter()
        .map(|m| format!("{}:{}", json!(m), jwk[*m]))
        .collect();
    sha256_b64url(format!("{{{}}}", body.join(",")).as_bytes())
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["key", alg, file] => {
            let rng = aws_lc_rs::rand::SystemRandom::new();
            let pkcs8 = match alg {
                "ES256" => signature::EcdsaKeyPair::generate_pkcs8(
                    &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                    &rng,
                )
                .unwrap()
                .as_ref()
                .to_vec(),
                _ => signature::Ed25519KeyPair::generate_pkcs8(&rng)
                    .unwrap()
                    .as_ref()
                    .to_vec(),
            };
            std::fs::write(file, &pkcs8).unwrap();
            let (_, _, jwk) = load(alg, &pkcs8);
            println!("{}", thumbprint(&jwk));
        }
        ["proofs", alg, file, token, htu, count, out] => {
            let pkcs8 = std::fs::read(file).unwrap();
            let (algorithm, key, jwk) = load(alg, &pkcs8);
            let count: usize = count.parse().unwrap();
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_secs() as i64;
            // jtis unique across invocations too (several files for one token).
            let run: u64 = rand::random();
            let ath = access_token_hash(token);
            let mut header = Header::new(algorithm);
            header.typ = Some("dpop+jwt".into());
            header.jwk = Some(serde_json::from_value(jwk.clone()).unwrap());
            let mut proofs = Vec::with_capacity(count);
            let mut writer = std::io::BufWriter::new(std::fs::File::create(out).unwrap());
            for i in 0..count {
                let claims = json!({"jti": format!("{run:016x}-{i}"), "htm": "POST", "htu": htu,
                    "iat": now, "ath": ath});
                let proof = jsonwebtoken::encode(&header, &claims, &key).unwrap();
                writeln!(writer, "{proof}").unwrap();
                if proofs.len() < 20_000 {
                    proofs.push(proof);
                }
            }
            writer.flush().unwrap();

            // The floor: the signature alone (what no cache can save) …
            let (algorithm_id, point): (&'static dyn signature::VerificationAlgorithm, Vec<u8>) =
                match algorithm {
                    Algorithm::ES256 => {
                        let pair = signature::EcdsaKeyPair::from_pkcs8(
                            &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                            &pkcs8,
                        )
                        .unwrap();
                        (
                            &signature::ECDSA_P256_SHA256_FIXED,
                            pair.public_key().as_ref().to_vec(),
                        )
                    }
                    _ => {
                        let pair = signature::Ed25519KeyPair::from_pkcs8(&pkcs8).unwrap();
                        (&signature::ED25519, pair.public_key().as_ref().to_vec())
                    }
                };
            let split: Vec<(Vec<u8>, Vec<u8>)> = proofs
                .iter()
                .map(|p| {
                    let (input, sig) = p.rsplit_once('.').unwrap();
                    let sig = base64::Engine::decode(
                        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
                        sig,
                    )
                    .unwrap();
                    (input.as_bytes().to_vec(), sig)
                })
                .collect();
            let per = |started: Instant| started.elapsed().as_secs_f64() * 1e6 / split.len() as f64;
            let parsed = signature::ParsedPublicKey::new(algorithm_id, &point).unwrap();
            let started = Instant::now();
            for (input, sig) in &split {
                parsed.verify_sig(input, sig).unwrap();
            }
            let sig_us = per(started);
            let started = Instant::now();
            for (input, sig) in &split {
                signature::UnparsedPublicKey::new(algorithm_id, &point)
                    .verify(input, sig)
                    .unwrap();
            }
            let sig_parse_us = per(started);
            // … and the whole proof check verify runs (parse, key, signature, claims).
            let expected = Expected {
                method: "POST",
                url: htu,
                now,
                window: 300,
                access_token: Some(token),
            };
            let keys = ProofKeys::new(16);
            let started = Instant::now();
            for proof in &proofs {
                check_with(proof, &expected, Some(&keys)).unwrap();
            }
            let check_us = started.elapsed().as_secs_f64() * 1e6 / proofs.len() as f64;
            println!("jkt={}", thumbprint(&jwk));
            println!("sig_us={sig_us:.2}");
            println!("sig_parse_us={sig_parse_us:.2}");
            println!("check_us={check_us:.2}");
        }
        _ => {
            eprintln!(
                "usage: dpop_proofs key ALG KEYFILE | proofs ALG KEYFILE TOKEN HTU COUNT OUT"
            );
            std::process::exit(2);
        }
    }
}
