//! Admin settings: publish server, template (with live preview), allowed hosts, and where
//! purges go (the provider and its settings; credentials are write-only).

use super::{Nav, render, see_other};
use crate::cdn::{self, FieldKind, ProviderSnapshot, Values};
use crate::domain::settings::{FieldError, Settings, SettingsInput};
use crate::error::AppError;
use crate::session::{AdminUser, CsrfForm, CurrentUser, NoFields};
use crate::state::AppState;
use crate::store::ProviderChoice;
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use askama::Template;
use serde::Deserialize;
use std::collections::BTreeMap;

/// The preview: the template expanded for a sample asset.
pub struct Preview {
    pub asset_id: String,
    pub urls: Vec<String>,
    pub errors: Vec<String>,
    pub warnings: Vec<String>,
}

impl Preview {
    async fn build(state: &AppState, input: &SettingsInput) -> Result<Self, AppError> {
        let asset_id = state
            .store
            .sample_asset_id()
            .await?
            .unwrap_or_else(|| "Backpack_B".into());
        Ok(match Settings::parse(input) {
            Ok(settings) => {
                let urls = settings.template.expand(&asset_id);
                let policy = crate::invalidations::host_policy(&state.store, &settings).await?;
                let warnings = urls
                    .iter()
                    .filter_map(|u| url::Url::parse(u).ok())
                    .filter(|u| !policy.allows(u))
                    .map(|u| {
                        let host = &u[url::Position::BeforeHost..url::Position::BeforePath];
                        format!("Users cannot submit URLs on {host}: add the host to the allowed hosts or make it the publish server (allowed hosts use the default ports).")
                    })
                    .collect::<std::collections::BTreeSet<_>>()
                    .into_iter()
                    .collect();
                Self {
                    asset_id,
                    urls,
                    errors: Vec::new(),
                    warnings,
                }
            }
            Err(errors) => Self {
                asset_id,
                urls: Vec::new(),
                errors: errors.into_iter().map(|e| e.message).collect(),
                warnings: Vec::new(),
            },
        })
    }
}

/// One provider's fieldset on the settings page.
pub struct ProviderView {
    name: &'static str,
    label: &'static str,
    selected: bool,
    fields: Vec<FieldView>,
}

/// One field; a secret's value is never rendered, only whether it is set.
pub struct FieldView {
    name: &'static str,
    label: &'static str,
    help: &'static str,
    /// The provider's documentation of the field ("" none).
    docs: &'static str,
    kind: &'static str,
    value: String,
    is_set: bool,
    options: Vec<(&'static str, &'static str, bool)>,
    errors: Vec<String>,
}

#[derive(Template)]
#[template(path = "settings.html")]
pub struct SettingsPage {
    nav: Nav,
    form: SettingsInput,
    errors: Vec<FieldError>,
    saved: bool,
    /// What the last save filled in from a paste, shown once with the notice.
    filled: Option<String>,
    active: String,
    providers: Vec<ProviderView>,
    preview: Preview,
    test_result: Option<Result<String, String>>,
}

impl SettingsPage {
    fn errors_for(&self, field: &str) -> Vec<&str> {
        self.errors
            .iter()
            .filter(|e| e.field == field)
            .map(|e| e.message.as_str())
            .collect()
    }
}

#[derive(Template)]
#[template(path = "settings_preview_partial.html")]
pub struct PreviewPartial {
    preview: Preview,
}

pub use crate::invalidations::{active_kind, active_snapshot};

fn provider_views(
    selected: &str,
    values: &Values,
    secrets: &Values,
    errors: &[FieldError],
) -> Vec<ProviderView> {
    cdn::PROVIDERS
        .iter()
        .map(|kind| ProviderView {
            name: kind.name(),
            label: kind.label(),
            selected: kind.name() == selected,
            fields: kind
                .fields()
                .iter()
                .map(|f| {
                    let value = cdn::value(*kind, values, f.name).to_string();
                    FieldView {
                        name: f.name,
                        label: f.label,
                        help: f.help,
                        docs: f.docs,
                        kind: match f.kind {
                            FieldKind::Text => "text",
                            FieldKind::Lines => "lines",
                            FieldKind::Secret => "secret",
                            FieldKind::SecretText => "secret_text",
                            FieldKind::Choice(_) => "choice",
                        },
                        is_set: f.kind.is_secret()
                            && secrets.get(f.name).is_some_and(|s| !s.is_empty()),
                        options: match f.kind {
                            FieldKind::Choice(options) => {
                                options.iter().map(|(v, l)| (*v, *l, *v == value)).collect()
                            }
                            _ => Vec::new(),
                        },
                        value: if f.kind.is_secret() {
                            String::new()
                        } else {
                            value
                        },
                        errors: errors
                            .iter()
                            .filter(|e| e.field == f.name)
                            .map(|e| e.message.clone())
                            .collect(),
                    }
                })
                .collect(),
        })
        .collect()
}

struct PageParts {
    form: SettingsInput,
    errors: Vec<FieldError>,
    active: String,
    values: Values,
    test_result: Option<Result<String, String>>,
}

async fn page(
    state: &AppState,
    admin: &CurrentUser,
    parts: PageParts,
    saved: bool,
) -> Result<SettingsPage, AppError> {
    let secrets = state.store.load_secrets().await?;
    let describe = cdn::kind(&parts.active)
        .map(|k| ProviderSnapshot::new(k, &parts.values).describe())
        .unwrap_or_default();
    Ok(SettingsPage {
        nav: Nav::from(admin),
        preview: Preview::build(state, &parts.form).await?,
        providers: provider_views(&parts.active, &parts.values, &secrets, &parts.errors),
        active: describe,
        form: parts.form,
        errors: parts.errors,
        saved,
        filled: None,
        test_result: parts.test_result,
    })
}

async fn stored_parts(state: &AppState) -> Result<PageParts, AppError> {
    let choice = state.store.load_provider().await?;
    Ok(PageParts {
        form: state.store.load_settings().await?,
        errors: Vec::new(),
        active: active_kind(&choice).name().to_string(),
        values: choice.values,
        test_result: None,
    })
}

/// Flash message set by a successful save and shown once by the next `GET /settings`.
const SAVED: &str = "settings_saved";
/// With it, what a paste filled in (see [`cdn::ProviderUpdate::filled`]).
const FILLED: &str = "settings_filled";

pub async fn show(
    AdminUser(admin): AdminUser,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AppError> {
    let parts = stored_parts(&state).await?;
    let saved = admin.session.take_flash(SAVED);
    let filled = admin.session.take_flash_text(FILLED);
    let mut page = page(&state, &admin, parts, saved).await?;
    page.filled = filled;
    render(StatusCode::OK, &page)
}

/// `POST /settings`: every field of the page; `action=preview` re-renders without saving.
pub async fn save(
    AdminUser(admin): AdminUser,
    state: web::Data<AppState>,
    CsrfForm(fields): CsrfForm<Vec<(String, String)>>,
) -> Result<HttpResponse, AppError> {
    let form: BTreeMap<String, String> = fields.into_iter().collect();
    let get = |name: &str| form.get(name).cloned().unwrap_or_default();
    let input = SettingsInput {
        publish_server: get("publish_server"),
        template: get("template"),
        allowed_hosts: get("allowed_hosts"),
    };
    let stored = state.store.load_provider().await?;
    let secrets = state.store.load_secrets().await?;
    let cdn::ProviderUpdate {
        kind,
        values,
        new_secrets,
        mut errors,
        filled,
    } = cdn::apply_form(&form, &stored.provider, &stored.values, &secrets);
    let settings = Settings::parse(&input);
    if let Err(settings_errors) = &settings {
        errors.splice(0..0, settings_errors.iter().cloned());
    }
    let preview_only = get("action") == "preview";
    if get("action") == "test" {
        // Test the values in the form, saving nothing: the page comes back with them.
        let test_result = if errors
            .iter()
            .any(|e| kind.fields().iter().any(|f| f.name == e.field))
        {
            Err(format!(
                "Not tested: the {} values in the form have errors (marked below). Nothing was saved.",
                kind.label()
            ))
        } else {
            let mut all = secrets.clone();
            all.extend(values.clone());
            all.extend(new_secrets.clone());
            let snapshot = ProviderSnapshot::new(kind, &all);
            crate::invalidations::test_connection(
                &state.store,
                &state.config.purge,
                &snapshot,
                &all,
                "the values in the form (not saved)",
            )
            .await?
        };
        let parts = PageParts {
            form: input,
            errors,
            active: kind.name().to_string(),
            values,
            test_result: Some(test_result),
        };
        return render(StatusCode::OK, &page(&state, &admin, parts, false).await?);
    }
    if let (Ok(settings), true, false) = (&settings, errors.is_empty(), preview_only) {
        let choice = ProviderChoice {
            provider: kind.name().to_string(),
            values,
        };
        state
            .store
            .save_settings(&settings.to_input(), &choice, &new_secrets)
            .await?;
        tracing::info!(admin = %admin.user.username, provider = kind.name(), "settings saved");
        admin.session.flash(SAVED)?;
        if !filled.is_empty() {
            admin.session.flash_text(
                FILLED,
                &format!("Filled in from the paste: {}.", filled.join(", ")),
            )?;
        }
        return Ok(see_other("/settings"));
    }
    let status = if errors.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    let parts = PageParts {
        form: input,
        errors,
        active: kind.name().to_string(),
        values,
        test_result: None,
    };
    render(status, &page(&state, &admin, parts, false).await?)
}

/// `POST /settings/test`: the saved provider's cheapest harmless authenticated call.
pub async fn test_connection(
    AdminUser(admin): AdminUser,
    state: web::Data<AppState>,
    CsrfForm(_): CsrfForm<NoFields>,
) -> Result<HttpResponse, AppError> {
    let mut parts = stored_parts(&state).await?;
    let choice = state.store.load_provider().await?;
    let secrets = state.store.load_secrets().await?;
    let result = crate::invalidations::test_connection(
        &state.store,
        &state.config.purge,
        &active_snapshot(&choice),
        &secrets,
        "the saved settings",
    )
    .await?;
    tracing::info!(admin = %admin.user.username, ok = result.is_ok(), "provider connection tested");
    parts.test_result = Some(result);
    render(StatusCode::OK, &page(&state, &admin, parts, false).await?)
}

#[derive(Deserialize)]
pub struct PreviewQuery {
    #[serde(default)]
    publish_server: String,
    #[serde(default)]
    template: String,
    #[serde(default)]
    allowed_hosts: String,
}

/// The preview fragment the settings page's script swaps in as the admin types.
pub async fn preview(
    AdminUser(_): AdminUser,
    state: web::Data<AppState>,
    query: web::Query<PreviewQuery>,
) -> Result<HttpResponse, AppError> {
    let query = query.into_inner();
    let input = SettingsInput {
        publish_server: query.publish_server,
        template: query.template,
        allowed_hosts: query.allowed_hosts,
    };
    render(
        StatusCode::OK,
        &PreviewPartial {
            preview: Preview::build(&state, &input).await?,
        },
    )
}
