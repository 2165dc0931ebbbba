//! A stand-in for GitHub with GitHub's quirks: the token endpoint answers form-encoded unless
//! asked for JSON, reports a bad code inside a 200 body, the API refuses requests without a
//! User-Agent, and the user's e-mail is private (the primary verified one is in /user/emails,
//! not first).

use std::collections::HashMap;
use std::net::TcpListener;
use std::sync::Mutex;

use actix_web::{HttpRequest, HttpResponse, web};

pub const CLIENT_ID: &str = "gh-client-id";
pub const CLIENT_SECRET: &str = "gh-client-secret";

#[derive(Default)]
pub struct Seen {
    pub token_accept_headers: Vec<String>,
    pub user_agents: Vec<String>,
    pub authorize_redirect_uris: Vec<String>,
}

pub struct FakeState {
    /// The GitHub login the next authorization signs in as.
    pub login: Mutex<String>,
    /// The account id `/user` reports instead of the one derived from the login (a renamed
    /// login re-registered by someone else).
    pub id_override: Mutex<Option<u64>>,
    codes: Mutex<HashMap<String, String>>,
    tokens: Mutex<HashMap<String, String>>,
    pub seen: Mutex<Seen>,
}

pub struct FakeGithub {
    pub base: String,
    pub state: web::Data<FakeState>,
}

impl FakeGithub {
    pub fn start() -> Self {
        let state = web::Data::new(FakeState {
            login: Mutex::new("alice".into()),
            id_override: Mutex::new(None),
            codes: Mutex::new(HashMap::new()),
            tokens: Mutex::new(HashMap::new()),
            seen: Mutex::new(Seen::default()),
        });
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        super::serve(listener, state.clone(), |routes| {
            routes
                .route("/login/oauth/authorize", web::get().to(authorize))
                .route("/login/oauth/access_token", web::post().to(access_token))
                .route("/user", web::get().to(user))
                .route("/user/emails", web::get().to(emails));
        });
        Self { base, state }
    }

    pub fn sign_in_as(&self, login: &str) {
        *self.state.login.lock().unwrap() = login.into();
    }

    /// Every access token the token endpoint has issued.
    pub fn issued_tokens(&self) -> Vec<String> {
        self.state.tokens.lock().unwrap().keys().cloned().collect()
    }

    /// From now on `/user` reports this account id for whoever signs in.
    pub fn report_account_id(&self, id: u64) {
        *self.state.id_override.lock().unwrap() = Some(id);
    }

    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("GITHUB_CLIENT_ID", CLIENT_ID.into()),
            ("GITHUB_CLIENT_SECRET", CLIENT_SECRET.into()),
            (
                "GITHUB_AUTHORIZE_URL",
                format!("{}/login/oauth/authorize", self.base),
            ),
            (
                "GITHUB_TOKEN_URL",
                format!("{}/login/oauth/access_token", self.base),
            ),
            ("GITHUB_API_URL", self.base.clone()),
        ]
    }
}

fn random() -> String {
    mcp_oauth_gateway::token::random_token()
}

async fn authorize(
    query: web::Query<HashMap<String, String>>,
    state: web::Data<FakeState>,
) -> HttpResponse {
    if query.get("client_id").map(String::as_str) != Some(CLIENT_ID) {
        return HttpResponse::NotFound().body("unknown OAuth app");
    }
    let redirect = query.get("redirect_uri").cloned().unwrap_or_default();
    state
        .seen
        .lock()
        .unwrap()
        .authorize_redirect_uris
        .push(redirect.clone());
    let code = random();
    let login = state.login.lock().unwrap().clone();
    state.codes.lock().unwrap().insert(code.clone(), login);
    let mut url = url::Url::parse(&redirect).unwrap();
    url.query_pairs_mut()
        .append_pair("code", &code)
        .append_pair(
            "state",
            query.get("state").map(String::as_str).unwrap_or(""),
        );
    HttpResponse::Found()
        .insert_header(("Location", url.to_string()))
        .finish()
}

fn user_agent(req: &HttpRequest) -> Option<String> {
    req.headers()
        .get("user-agent")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

async fn access_token(
    req: HttpRequest,
    form: web::Form<HashMap<String, String>>,
    state: web::Data<FakeState>,
) -> HttpResponse {
    let Some(ua) = user_agent(&req) else {
        return HttpResponse::Forbidden().body("Request forbidden by administrative rules. Please make sure your request has a User-Agent header");
    };
    let accept = req
        .headers()
        .get("accept")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    {
        let mut seen = state.seen.lock().unwrap();
        seen.token_accept_headers.push(accept.clone());
        seen.user_agents.push(ua);
    }
    let json = accept.contains("application/json");
    let reply = |pairs: &[(&str, &str)]| {
        if json {
            let map: serde_json::Map<String, serde_json::Value> = pairs
                .iter()
                .map(|(k, v)| (k.to_string(), (*v).into()))
                .collect();
            HttpResponse::Ok()
                .content_type("application/json")
                .body(serde_json::Value::Object(map).to_string())
        } else {
            HttpResponse::Ok()
                .content_type("application/x-www-form-urlencoded")
                .body(serde_urlencoded::to_string(pairs).unwrap())
        }
    };
    if form.get("client_id").map(String::as_str) != Some(CLIENT_ID)
        || form.get("client_secret").map(String::as_str) != Some(CLIENT_SECRET)
    {
        return reply(&[
            ("error", "incorrect_client_credentials"),
            (
                "error_description",
                "The client_id and/or client_secret passed are incorrect.",
            ),
        ]);
    }
    let code = form.get("code").cloned().unwrap_or_default();
    // Codes are single use at GitHub too; errors come back with HTTP 200.
    let Some(login) = state.codes.lock().unwrap().remove(&code) else {
        return reply(&[
            ("error", "bad_verification_code"),
            (
                "error_description",
                "The code passed is incorrect or expired.",
            ),
        ]);
    };
    let token = format!("gho_{}", random());
    state.tokens.lock().unwrap().insert(token.clone(), login);
    reply(&[
        ("access_token", &token),
        ("scope", "read:user,user:email"),
        ("token_type", "bearer"),
    ])
}

fn token_user(req: &HttpRequest, state: &FakeState) -> Result<String, Box<HttpResponse>> {
    if user_agent(req).is_none() {
        return Err(Box::new(
            HttpResponse::Forbidden().body("Request forbidden by administrative rules."),
        ));
    }
    let auth = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let token = auth
        .strip_prefix("Bearer ")
        .or_else(|| auth.strip_prefix("token "))
        .unwrap_or("");
    state
        .tokens
        .lock()
        .unwrap()
        .get(token)
        .cloned()
        .ok_or_else(|| {
            Box::new(
                HttpResponse::Unauthorized()
                    .json(serde_json::json!({"message": "Bad credentials"})),
            )
        })
}

async fn user(req: HttpRequest, state: web::Data<FakeState>) -> HttpResponse {
    match token_user(&req, &state) {
        Ok(login) => HttpResponse::Ok().json(serde_json::json!({
            "id": state.id_override.lock().unwrap().unwrap_or(1000 + login.len() as u64),
            "login": login,
            "name": format!("{login} Example"),
            "email": null,
        })),
        Err(resp) => *resp,
    }
}

async fn emails(req: HttpRequest, state: web::Data<FakeState>) -> HttpResponse {
    match token_user(&req, &state) {
        Ok(login) => HttpResponse::Ok().json(serde_json::json!([
            {"email": format!("{login}@old.example"), "primary": false, "verified": true},
            {"email": format!("{login}@unverified.example"), "primary": false, "verified": false},
            {"email": format!("{login}@example.com"), "primary": true, "verified": true},
        ])),
        Err(resp) => *resp,
    }
}
