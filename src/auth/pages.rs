//! HTML pages: one layout, escaped by the template engine (never by hand), served with a
//! strict Content-Security-Policy and `frame-ancestors 'none'` against clickjacking.

use actix_web::http::StatusCode;
use actix_web::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use actix_web::{HttpResponse, web};
use minijinja::Environment;
use serde::{Deserialize, Serialize};

use super::AuthState;

pub struct Pages {
    env: Environment<'static>,
}

impl Default for Pages {
    fn default() -> Self {
        Self::new()
    }
}

impl Pages {
    /// Every page renders from these; a test renders each one.
    pub const TEMPLATES: [&'static str; 9] = [
        "layout.html",
        "choose.html",
        "consent.html",
        "error.html",
        "success.html",
        "dev_login.html",
        "mfa_enrol.html",
        "mfa_verify.html",
        "mfa_recovery.html",
    ];

    pub fn new() -> Self {
        let mut env = Environment::new();
        // Auto-escaping is on for `.html` names: every value inserted is HTML-escaped.
        for (name, source) in [
            ("layout.html", include_str!("../../templates/layout.html")),
            ("consent.html", include_str!("../../templates/consent.html")),
            ("error.html", include_str!("../../templates/error.html")),
            ("choose.html", include_str!("../../templates/choose.html")),
            ("success.html", include_str!("../../templates/success.html")),
            (
                "mfa_enrol.html",
                include_str!("../../templates/mfa_enrol.html"),
            ),
            (
                "mfa_verify.html",
                include_str!("../../templates/mfa_verify.html"),
            ),
            (
                "mfa_recovery.html",
                include_str!("../../templates/mfa_recovery.html"),
            ),
            (
                "dev_login.html",
                include_str!("../../templates/dev_login.html"),
            ),
        ] {
            env.add_template(name, source)
                .expect("bundled templates are valid");
        }
        Self { env }
    }

    pub fn render<S: Serialize>(&self, name: &str, context: S) -> String {
        match self.env.get_template(name).and_then(|t| t.render(context)) {
            Ok(html) => html,
            Err(e) => {
                tracing::error!(error = %e, template = name, "template failed to render");
                "<!doctype html><title>Error</title><p>Internal error.</p>".into()
            }
        }
    }

    /// A page response. `form_targets` are the origins our forms may submit or redirect to.
    pub fn respond(
        &self,
        status: StatusCode,
        html: String,
        form_targets: &[String],
    ) -> HttpResponse {
        let mut form_action = String::from("'self'");
        for target in form_targets {
            form_action.push(' ');
            form_action.push_str(target);
        }
        HttpResponse::build(status)
            .insert_header((CONTENT_TYPE, "text/html; charset=utf-8"))
            .insert_header((CACHE_CONTROL, "no-store"))
            .insert_header((
                "Content-Security-Policy",
                format!(
                    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; \
                     form-action {form_action}; frame-ancestors 'none'; base-uri 'none'"
                ),
            ))
            .insert_header(("X-Frame-Options", "DENY"))
            .insert_header(("X-Content-Type-Options", "nosniff"))
            .insert_header(("Referrer-Policy", "no-referrer"))
            .body(html)
    }

    /// The error page for `e`: the one way handlers show an error to a person (machines get
    /// the same error as JSON).
    pub fn error(&self, e: &super::OAuthError) -> HttpResponse {
        self.error_page(e.status, e.code, &e.description)
    }

    /// A refusal the person should read (the allow-list said no), with a link that tells the
    /// client (`back`: its redirect with the error).
    pub fn refusal(&self, e: &super::OAuthError, back: &str) -> HttpResponse {
        let html = self.render(
            "error.html",
            minijinja::context! { error => e.code, description => e.description, back => back },
        );
        self.respond(e.status, html, &[])
    }

    /// The page itself, for any code (the `/error` page shows what a client was sent).
    fn error_page(&self, status: StatusCode, error: &str, description: &str) -> HttpResponse {
        let html = self.render(
            "error.html",
            minijinja::context! { error => error, description => description },
        );
        self.respond(status, html, &[])
    }
}

/// The origin (`scheme://host[:port]`) of a URL, or `scheme:` for private-use schemes, for
/// CSP `form-action`.
pub fn csp_origin(url: &str) -> Option<String> {
    let parsed = url::Url::parse(url).ok()?;
    match parsed.origin() {
        url::Origin::Tuple(..) => Some(parsed.origin().ascii_serialization()),
        url::Origin::Opaque(_) => Some(format!("{}:", parsed.scheme())),
    }
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/error", web::get().to(error))
        .route("/success", web::get().to(success));
}

#[derive(Deserialize)]
struct ErrorQuery {
    error: Option<String>,
    error_description: Option<String>,
}

/// The error page the original gateway redirected to (`/error?error=…`): every parameter is
/// shown escaped.
async fn error(query: web::Query<ErrorQuery>, state: web::Data<AuthState>) -> HttpResponse {
    let error = query.error.as_deref().unwrap_or("unknown_error");
    let description = query.error_description.as_deref().unwrap_or("");
    state
        .pages
        .error_page(StatusCode::BAD_REQUEST, error, description)
}

#[derive(Deserialize)]
struct SuccessQuery {
    code: Option<String>,
    state: Option<String>,
}

/// Out-of-band completion (`urn:ietf:wg:oauth:2.0:oob`): the user copies the code.
async fn success(query: web::Query<SuccessQuery>, state: web::Data<AuthState>) -> HttpResponse {
    let Some(code) = query.code.as_deref() else {
        return state.pages.error_page(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "no authorization code in this link",
        );
    };
    let html = state.pages.render(
        "success.html",
        minijinja::context! { code => code, state => query.state.as_deref() },
    );
    state.pages.respond(StatusCode::OK, html, &[])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_is_registered_and_escapes() {
        let pages = Pages::new();
        for name in Pages::TEMPLATES.iter().filter(|n| **n != "layout.html") {
            let html = pages.render(
                name,
                minijinja::context! { error => "<script>x</script>", user => "<b>u</b>", codes => ["a"], client_name => "<i>c</i>" },
            );
            assert!(
                html.contains("<!doctype html>"),
                "{name} did not render: {html}"
            );
            assert!(
                !html.contains("<script>x")
                    && !html.contains("<b>u</b>")
                    && !html.contains("<i>c</i>"),
                "{name} escapes"
            );
        }
    }
}
