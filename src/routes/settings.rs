//! Admin settings: publish server, template (with live preview), purge nodes, allowed hosts.

use super::{Nav, render, see_other};
use crate::cdn::ProviderSettings;
use crate::domain::settings::{FieldError, Settings, SettingsInput};
use crate::error::AppError;
use crate::session::{AdminUser, CsrfForm};
use crate::startup::AppState;
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use askama::Template;
use serde::Deserialize;

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
                let policy = settings.host_policy();
                let warnings = urls
                    .iter()
                    .filter_map(|u| url::Url::parse(u).ok())
                    .filter_map(|u| u.host_str().map(str::to_string))
                    .filter(|h| !policy.allows(h))
                    .map(|h| format!("Users cannot submit URLs on {h}: add it to the allowed hosts or make it the publish server."))
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

#[derive(Template)]
#[template(path = "settings.html")]
pub struct SettingsPage {
    nav: Nav,
    form: SettingsInput,
    errors: Vec<FieldError>,
    saved: bool,
    provider: String,
    preview: Preview,
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

#[derive(Deserialize)]
pub struct ShowQuery {
    #[serde(default)]
    saved: Option<String>,
}

fn describe_provider(input: &SettingsInput) -> String {
    Settings::parse(input)
        .map(|s| ProviderSettings::from_settings(&s).describe())
        .unwrap_or_default()
}

pub async fn show(
    AdminUser(admin): AdminUser,
    state: web::Data<AppState>,
    query: web::Query<ShowQuery>,
) -> Result<HttpResponse, AppError> {
    let form = state.store.load_settings().await?;
    let page = SettingsPage {
        nav: Nav::from(&admin),
        preview: Preview::build(&state, &form).await?,
        provider: describe_provider(&form),
        form,
        errors: Vec::new(),
        saved: query.saved.is_some(),
    };
    render(StatusCode::OK, &page)
}

#[derive(Deserialize)]
pub struct SettingsForm {
    #[serde(default)]
    publish_server: String,
    #[serde(default)]
    template: String,
    #[serde(default)]
    purge_nodes: String,
    #[serde(default)]
    allowed_hosts: String,
    /// `preview` re-renders without saving (the no-JavaScript preview).
    #[serde(default)]
    action: String,
}

impl SettingsForm {
    fn input(self) -> SettingsInput {
        SettingsInput {
            publish_server: self.publish_server,
            template: self.template,
            purge_nodes: self.purge_nodes,
            allowed_hosts: self.allowed_hosts,
        }
    }
}

pub async fn save(
    AdminUser(admin): AdminUser,
    state: web::Data<AppState>,
    CsrfForm(form): CsrfForm<SettingsForm>,
) -> Result<HttpResponse, AppError> {
    let preview_only = form.action == "preview";
    let input = form.input();
    let parsed = Settings::parse(&input);
    match parsed {
        Ok(settings) if !preview_only => {
            state.store.save_settings(&settings.to_input()).await?;
            tracing::info!(admin = %admin.user.username, "settings saved");
            Ok(see_other("/settings?saved=1"))
        }
        result => {
            let (status, errors) = match result {
                Err(errors) => (StatusCode::UNPROCESSABLE_ENTITY, errors),
                Ok(_) => (StatusCode::OK, Vec::new()),
            };
            let page = SettingsPage {
                nav: Nav::from(&admin),
                preview: Preview::build(&state, &input).await?,
                provider: describe_provider(&input),
                form: input,
                errors,
                saved: false,
            };
            render(status, &page)
        }
    }
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
        purge_nodes: String::new(),
        allowed_hosts: query.allowed_hosts,
    };
    render(
        StatusCode::OK,
        &PreviewPartial {
            preview: Preview::build(&state, &input).await?,
        },
    )
}
