//! The typed session, the logged-in user extractors and CSRF checks.

use crate::error::AppError;
use crate::state::AppState;
use crate::store::{Role, User};
use actix_session::{Session, SessionExt};
use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpRequest, web};
use argon2::password_hash::rand_core::{OsRng, RngCore};
use serde::de::DeserializeOwned;
use std::future::Future;
use std::pin::Pin;

const USER_ID: &str = "user_id";
const EPOCH: &str = "epoch";
const CSRF: &str = "csrf";
const ISSUED: &str = "issued_at";

/// Name of the hidden field every POST form carries.
pub const CSRF_FIELD: &str = "csrf_token";

/// A random token as hex.
pub fn random_token(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    OsRng.fill_bytes(&mut buf);
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// The session with typed accessors.
pub struct TypedSession(Session);

impl TypedSession {
    /// The CSRF token of this session, created on first use.
    pub fn csrf_token(&self) -> Result<String, AppError> {
        if let Some(token) = self.0.get::<String>(CSRF)? {
            return Ok(token);
        }
        let token = random_token(32);
        self.0.insert(CSRF, &token)?;
        Ok(token)
    }

    /// True when `submitted` is this session's CSRF token (compared in constant time).
    pub fn csrf_matches(&self, submitted: &str) -> bool {
        match self.0.get::<String>(CSRF) {
            Ok(Some(token)) => {
                token.len() == submitted.len()
                    && token
                        .bytes()
                        .zip(submitted.bytes())
                        .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                        == 0
            }
            _ => false,
        }
    }

    /// Fails with 403 unless `submitted` is this session's CSRF token.
    pub fn check_csrf(&self, submitted: &str) -> Result<(), AppError> {
        if self.csrf_matches(submitted) {
            Ok(())
        } else {
            Err(AppError::Forbidden(
                "The form has expired or did not come from this site (missing or wrong CSRF token). Reload the page and try again."
                    .into(),
            ))
        }
    }

    /// Starts a fresh session for `user` (new id, new CSRF token).
    pub fn log_in(&self, user: &User) -> Result<(), AppError> {
        self.0.renew();
        self.0.clear();
        self.0.insert(USER_ID, user.id)?;
        self.0.insert(EPOCH, user.session_epoch)?;
        self.0.insert(ISSUED, crate::store::now_millis())?;
        self.0.insert(CSRF, random_token(32))?;
        Ok(())
    }

    /// Remembers a one-time notice for the next page (post/redirect/get).
    pub fn flash(&self, name: &str) -> Result<(), AppError> {
        Ok(self.0.insert(name, true)?)
    }

    /// True once after [`TypedSession::flash`] with the same name.
    pub fn take_flash(&self, name: &str) -> bool {
        self.0.remove(name).is_some()
    }

    /// Keeps `text` for the next request that takes it (a notice shown once).
    pub fn flash_text(&self, name: &str, text: &str) -> Result<(), AppError> {
        Ok(self.0.insert(name, text)?)
    }

    /// The text of [`TypedSession::flash_text`], once.
    pub fn take_flash_text(&self, name: &str) -> Option<String> {
        let text = self.0.get::<String>(name).ok().flatten();
        self.0.remove(name);
        text
    }

    pub fn log_out(&self) {
        self.0.purge();
    }

    /// (user id, session epoch, issued at) of a logged-in session.
    fn user_ref(&self) -> Option<(i64, i64, i64)> {
        let id = self.0.get::<i64>(USER_ID).ok()??;
        let epoch = self.0.get::<i64>(EPOCH).ok()??;
        let issued = self.0.get::<i64>(ISSUED).ok()??;
        Some((id, epoch, issued))
    }
}

impl FromRequest for TypedSession {
    type Error = actix_web::Error;
    type Future = std::future::Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        std::future::ready(Ok(Self(req.get_session())))
    }
}

/// True when the client asked for JSON.
pub fn wants_json(req: &HttpRequest) -> bool {
    req.headers()
        .get(actix_web::http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/json"))
}

/// The logged-in, enabled user whose session is current; otherwise login is required.
pub struct CurrentUser {
    pub user: User,
    pub csrf: String,
    pub session: TypedSession,
}

impl CurrentUser {
    pub fn is_admin(&self) -> bool {
        self.user.role == Role::Admin
    }
}

/// Who may use a route. Checked by middleware before any handler extractor runs, so a
/// refused request never reaches body parsing (whose errors would otherwise race it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Public,
    User,
    Admin,
    /// The JSON API: a bearer token of any user (never a login cookie).
    Token,
    /// The JSON API: a bearer token of an admin.
    AdminToken,
}

/// The user a guard middleware authenticated, kept in the request's extensions.
#[derive(Clone)]
struct Authenticated(User);

/// Loads the session's user: enabled, and with the current session epoch.
async fn authenticate(req: &HttpRequest) -> Result<User, AppError> {
    let json = wants_json(req);
    let state = req
        .app_data::<web::Data<AppState>>()
        .expect("AppState registered")
        .clone();
    let session = TypedSession(req.get_session());
    let Some((id, epoch, issued)) = session.user_ref() else {
        return Err(AppError::LoginRequired { json });
    };
    // Sessions live in the cookie, so logging out cannot recall a copied one: a maximum age
    // bounds how long such a copy works (a disabled user or a new password ends it at once).
    let age = crate::store::now_millis() - issued;
    if age < 0 || age > state.config.session_max_age.as_millis() as i64 {
        session.log_out();
        return Err(AppError::LoginRequired { json });
    }
    match state.store.session_user(id).await? {
        Some(user) if !user.disabled && user.session_epoch == epoch => Ok(user),
        _ => {
            session.log_out();
            Err(AppError::LoginRequired { json })
        }
    }
}

/// Middleware body: refuses the request unless its session satisfies `access`.
pub async fn guard(
    access: Access,
    req: actix_web::dev::ServiceRequest,
    next: actix_web::middleware::Next<impl actix_web::body::MessageBody + 'static>,
) -> Result<actix_web::dev::ServiceResponse<actix_web::body::BoxBody>, actix_web::Error> {
    use actix_web::HttpMessage;
    if matches!(access, Access::Token | Access::AdminToken) {
        return crate::routes::api::guard(access == Access::AdminToken, req, next).await;
    }
    if access != Access::Public {
        let user = authenticate(req.request()).await?;
        if access == Access::Admin && user.role != Role::Admin {
            return Err(AppError::Forbidden("This page is for admins only.".into()).into());
        }
        req.extensions_mut().insert(Authenticated(user));
    }
    Ok(next.call(req).await?.map_into_boxed_body())
}

impl FromRequest for CurrentUser {
    type Error = AppError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, AppError>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        use actix_web::HttpMessage;
        let req = req.clone();
        let checked = req.extensions().get::<Authenticated>().cloned();
        Box::pin(async move {
            // Guarded routes were authenticated by the middleware; others check here.
            let user = match checked {
                Some(Authenticated(user)) => user,
                None => authenticate(&req).await?,
            };
            let session = TypedSession(req.get_session());
            let csrf = session.csrf_token()?;
            Ok(Self {
                user,
                csrf,
                session,
            })
        })
    }
}

/// A logged-in admin; a plain user gets 403.
pub struct AdminUser(pub CurrentUser);

impl FromRequest for AdminUser {
    type Error = AppError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, AppError>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let current = CurrentUser::from_request(req, payload);
        Box::pin(async move {
            let current = current.await?;
            if current.is_admin() {
                Ok(Self(current))
            } else {
                Err(AppError::Forbidden("This page is for admins only.".into()))
            }
        })
    }
}

/// A form that carries nothing but its CSRF token (logout, retry, test connection).
#[derive(serde::Deserialize)]
pub struct NoFields {}

/// A urlencoded form whose `csrf_token` matched the session (else 403). Repeated fields
/// (`asset_id=a&asset_id=b`) deserialize into `Vec`s.
pub struct CsrfForm<T>(pub T);

#[derive(serde::Deserialize)]
struct CsrfOnly {
    #[serde(default)]
    csrf_token: String,
}

impl<T: DeserializeOwned + 'static> FromRequest for CsrfForm<T> {
    type Error = AppError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, AppError>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let body = web::Bytes::from_request(req, payload);
        let session = TypedSession(req.get_session());
        Box::pin(async move {
            let body = body.await.map_err(|e| {
                if e.as_response_error().status_code()
                    == actix_web::http::StatusCode::PAYLOAD_TOO_LARGE
                {
                    AppError::PayloadTooLarge("The form is larger than this server accepts.".into())
                } else {
                    AppError::BadRequest(format!("The form could not be read: {e}"))
                }
            })?;
            let token: CsrfOnly = serde_html_form::from_bytes(&body).unwrap_or(CsrfOnly {
                csrf_token: String::new(),
            });
            session.check_csrf(&token.csrf_token)?;
            serde_html_form::from_bytes(&body)
                .map(CsrfForm)
                .map_err(|e| AppError::BadRequest(format!("The form is incomplete: {e}")))
        })
    }
}
