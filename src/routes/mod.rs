//! One module per page. Handlers are thin: parse → domain → store → template.

pub mod api;
mod assets;
pub(crate) mod auth;
mod invalidate;
mod invalidations;
mod settings;
mod static_files;
mod tokens;
mod users;
mod variants;

use crate::error::AppError;
use crate::session::{Access, CurrentUser, guard};
use actix_web::http::StatusCode;
use actix_web::middleware::from_fn;
use actix_web::{HttpResponse, web};
use askama::Template;

/// Declares every route once with who may use it: `configure` registers each behind its
/// access guard and `ROUTES` lists them, so the security test's table can be checked against
/// the real set (a new route fails it until its rule is written down there).
macro_rules! routes {
    ($(($method:ident, $path:literal, $handler:path, $access:ident)),+ $(,)?) => {
        /// Every (method, path, access) the app serves.
        pub const ROUTES: &[(&str, &str, Access)] = &[$((stringify!($method), $path, Access::$access)),+];

        /// Registers every route behind its access guard.
        pub fn configure(cfg: &mut web::ServiceConfig) {
            $(cfg.service(
                web::resource($path)
                    .guard(method_guard(stringify!($method)))
                    .route(web::route().to($handler))
                    .wrap(from_fn(|req, next| guard(Access::$access, req, next))),
            );)+
            cfg.default_service(web::to(not_found));
        }
    };
}

fn method_guard(method: &str) -> impl actix_web::guard::Guard + use<> {
    let method = actix_web::http::Method::from_bytes(method.to_ascii_uppercase().as_bytes())
        .expect("HTTP method");
    actix_web::guard::Method(method)
}

routes![
    (get, "/healthz", auth::healthz, Public),
    (get, "/static/{file}", static_files::serve, Public),
    (get, "/", auth::home, Public),
    (get, "/setup", auth::setup_form, Public),
    (post, "/setup", auth::setup, Public),
    (get, "/login", auth::login_form, Public),
    (post, "/login", auth::login, Public),
    (post, "/logout", auth::logout, User),
    (get, "/settings", settings::show, Admin),
    (post, "/settings", settings::save, Admin),
    (get, "/settings/preview", settings::preview, Admin),
    (post, "/settings/test", settings::test_connection, Admin),
    (get, "/settings/variants", variants::show, Admin),
    (post, "/settings/variants", variants::save, Admin),
    (
        post,
        "/settings/purge-everything",
        variants::purge_everything,
        Admin
    ),
    (get, "/tokens", tokens::list, User),
    (post, "/tokens", tokens::change, User),
    (get, "/users", users::list, Admin),
    (post, "/users", users::change, Admin),
    (get, "/assets", assets::list, User),
    (post, "/assets/import", assets::import, Admin),
    (get, "/invalidate", invalidate::blank, User),
    (post, "/invalidate", invalidate::from_assets, User),
    (post, "/invalidations", invalidate::submit, User),
    (get, "/invalidations", invalidations::history, User),
    (get, "/invalidations.csv", invalidations::export_csv, User),
    (get, "/invalidations/{id}", invalidations::show, User),
    (
        post,
        "/invalidations/{id}/retry",
        invalidations::retry,
        User
    ),
    (
        post,
        "/invalidations/{id}/check",
        invalidations::check,
        User
    ),
    (
        post,
        "/invalidations/{id}/again",
        invalidations::again,
        User
    ),
    (get, "/api/v1/openapi.json", api::openapi, Public),
    (post, "/api/v1/invalidations", api::create, Token),
    (get, "/api/v1/invalidations", api::list, Token),
    (get, "/api/v1/invalidations/{id}", api::show, Token),
    (post, "/api/v1/invalidations/{id}/retry", api::retry, Token),
    (get, "/api/v1/assets", api::assets, Token),
    (put, "/api/v1/assets", api::put_assets, AdminToken),
];

async fn not_found() -> Result<HttpResponse, AppError> {
    Err(AppError::NotFound(
        "There is no page at this address.".into(),
    ))
}

/// What every page's header needs.
pub struct Nav {
    pub username: String,
    pub is_admin: bool,
    pub csrf: String,
}

impl From<&CurrentUser> for Nav {
    fn from(current: &CurrentUser) -> Self {
        Self {
            username: current.user.username.clone(),
            is_admin: current.is_admin(),
            csrf: current.csrf.clone(),
        }
    }
}

/// Renders a template with a status other than 200 (422 forms, 403 pages).
pub fn render<T: Template>(status: StatusCode, page: &T) -> Result<HttpResponse, AppError> {
    // Askama's size hint counts a loop's body once; a list page is tens of KB, and growing
    // the buffer to that by doubling copies it several times.
    let mut body = String::with_capacity(T::SIZE_HINT.max(PAGE_BYTES));
    page.render_into(&mut body)
        .map_err(|e| AppError::Internal(e.into()))?;
    Ok(HttpResponse::build(status)
        .content_type("text/html; charset=utf-8")
        .body(body))
}

/// What a page is rendered into at first: a list page of 50 rows fits.
const PAGE_BYTES: usize = 32 * 1024;

/// 303 See Other to `location`.
pub fn see_other(location: &str) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header(("Location", location))
        .finish()
}

/// A stored time for people: "2026-11-24 22:09:05 UTC".
pub fn fmt_time(millis: i64) -> String {
    StoredTime(millis).to_string()
}

/// A stored time (milliseconds since the epoch) written as [`fmt_time`] writes it, straight
/// into a page: lists show one per row, and `time`'s formatting machinery costs more than
/// the digits.
#[derive(Debug, Clone, Copy)]
pub struct StoredTime(pub i64);

impl std::fmt::Display for StoredTime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Ok(t) = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(self.0) * 1_000_000)
        else {
            return Ok(());
        };
        let (year, month, day) = t.to_calendar_date();
        let (hour, minute, second) = t.to_hms();
        if !(0..=9999).contains(&year) {
            // Before year 0: `time`'s own format, signed.
            let format = time::macros::format_description!(
                "[year]-[month]-[day] [hour]:[minute]:[second] UTC"
            );
            return f.write_str(&t.format(&format).map_err(|_| std::fmt::Error)?);
        }
        let year = year as u32;
        let two = |n: u8| [b'0' + n / 10, b'0' + n % 10];
        let mut out = *b"0000-00-00 00:00:00 UTC";
        out[..4].copy_from_slice(&[
            b'0' + (year / 1000) as u8,
            b'0' + (year / 100 % 10) as u8,
            b'0' + (year / 10 % 10) as u8,
            b'0' + (year % 10) as u8,
        ]);
        out[5..7].copy_from_slice(&two(u8::from(month)));
        out[8..10].copy_from_slice(&two(day));
        out[11..13].copy_from_slice(&two(hour));
        out[14..16].copy_from_slice(&two(minute));
        out[17..19].copy_from_slice(&two(second));
        f.write_str(std::str::from_utf8(&out).map_err(|_| std::fmt::Error)?)
    }
}

/// Page links: numbers 1..=pages with the query string for each.
pub struct Pager {
    pub page: i64,
    pub pages: i64,
    pub total: i64,
    pub links: Vec<(i64, String)>,
}

impl Pager {
    pub const PER_PAGE: i64 = 50;

    /// `href(page)` builds the link for a page number.
    pub fn new(page: i64, total: i64, href: impl Fn(i64) -> String) -> Self {
        let pages = ((total + Self::PER_PAGE - 1) / Self::PER_PAGE).max(1);
        let page = page.clamp(1, pages);
        // Show the first, last and a window around the current page.
        let links = (1..=pages)
            .filter(|p| *p == 1 || *p == pages || (p - page).abs() <= 3)
            .map(|p| (p, href(p)))
            .collect();
        Self {
            page,
            pages,
            total,
            links,
        }
    }

    pub fn offset(&self) -> i64 {
        (self.page - 1) * Self::PER_PAGE
    }
}

/// Percent-encodes a query-string value.
pub fn q(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

/// `url` as HTML text that may wrap after each `/` (a `<wbr>`): on a narrow screen a long URL
/// breaks between its parts, not in the middle of a word. Everything else is escaped.
pub fn breakable_url(url: &str) -> String {
    let mut out = String::with_capacity(url.len() + url.len() / 4);
    for c in url.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            '/' => out.push_str("/<wbr>"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod breakable_url_tests {
    use super::breakable_url;

    #[test]
    fn urls_may_break_after_each_slash_and_nothing_else_is_markup() {
        assert_eq!(
            breakable_url("https://s.com/is/image/A?x=1&y=2"),
            "https:/<wbr>/<wbr>s.com/<wbr>is/<wbr>image/<wbr>A?x=1&amp;y=2"
        );
        assert_eq!(
            breakable_url("https://s.com/<script>\"'"),
            "https:/<wbr>/<wbr>s.com/<wbr>&lt;script&gt;&quot;&#39;"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn by_time_crate(millis: i64) -> String {
        let format =
            time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second] UTC");
        time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(millis) * 1_000_000)
            .ok()
            .and_then(|t| t.format(&format).ok())
            .unwrap_or_default()
    }

    #[test]
    fn stored_times_read_as_utc_to_the_second() {
        assert_eq!(fmt_time(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(fmt_time(1_764_021_545_999), "2025-11-24 21:59:05 UTC");
        assert_eq!(fmt_time(-1), "1969-12-31 23:59:59 UTC");
        assert_eq!(fmt_time(i64::MAX), "");
    }

    proptest! {
        #[test]
        fn stored_times_read_as_the_time_crate_writes_them(millis in -300_000_000_000_000i64..300_000_000_000_000) {
            prop_assert_eq!(fmt_time(millis), by_time_crate(millis));
        }
    }
}
