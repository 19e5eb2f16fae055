//! The provider part of the settings form: which provider, its values, its new credentials.

use super::{FieldError, ProviderKind, Values, default_kind, kind};
use std::collections::BTreeMap;

/// A submitted settings form merged with what is stored.
pub struct ProviderUpdate {
    pub kind: &'static dyn ProviderKind,
    /// Every provider's non-secret values: switching providers back and forth loses nothing.
    pub values: Values,
    /// Credentials to store: only those typed in (or produced by `prepare`); empty keeps the old.
    pub new_secrets: Values,
    pub errors: Vec<FieldError>,
    /// What `prepare` filled in from a paste (an `.edgerc` section), in the page's words: the
    /// field's label, with the value when it is not a secret.
    pub filled: Vec<String>,
}

/// Applies `form` (all fields of the settings page) to the stored provider choice, values and
/// secrets: takes every provider's plain fields and the chosen provider's new credentials, then
/// runs the chosen provider's `prepare` and `validate` with the credentials it will use.
pub fn apply_form(
    form: &BTreeMap<String, String>,
    stored_provider: &str,
    stored_values: &Values,
    stored_secrets: &Values,
) -> ProviderUpdate {
    let mut errors = Vec::new();
    let fallback = kind(stored_provider).unwrap_or_else(default_kind);
    let chosen = match form.get("provider") {
        None => fallback,
        Some(name) => kind(name).unwrap_or_else(|| {
            errors.push(FieldError {
                field: "provider",
                message: format!("\"{name}\" is not a provider."),
            });
            fallback
        }),
    };
    let mut values = stored_values.clone();
    let mut new_secrets = Values::new();
    for provider in super::PROVIDERS {
        for field in provider.fields() {
            let Some(value) = form.get(field.name) else {
                continue;
            };
            if !field.kind.is_secret() {
                values.insert(field.name.to_string(), value.clone());
            } else if provider.name() == chosen.name() && !value.trim().is_empty() {
                // Only the chosen provider's `prepare` runs, so only its credentials are taken:
                // another's raw paste (e.g. an `.edgerc`) would otherwise be stored as it is.
                new_secrets.insert(field.name.to_string(), value.trim().to_string());
            }
        }
    }
    let mut check = stored_secrets.clone();
    check.extend(values.clone());
    check.extend(new_secrets.clone());
    let before = check.clone();
    errors.extend(chosen.prepare(&mut check));
    errors.extend(chosen.validate(&check));
    // Only a paste (a field that is never kept) fills others; prepare's other changes are
    // normalisation of what was typed.
    let pasted = chosen.fields().iter().any(|f| {
        matches!(f.kind, super::FieldKind::SecretText)
            && before.get(f.name).is_some_and(|v| !v.trim().is_empty())
    });
    let filled = if pasted {
        chosen
            .fields()
            .iter()
            .filter(|f| {
                let now = check.get(f.name).filter(|v| !v.is_empty());
                now.is_some() && now != before.get(f.name)
            })
            .map(|f| match f.kind.is_secret() {
                true => f.label.to_string(),
                false => format!("{} {}", f.label, check[f.name]),
            })
            .collect()
    } else {
        Vec::new()
    };
    // `prepare` may have filled or consumed fields: split them back into values and secrets.
    for field in chosen.fields() {
        match (field.kind.is_secret(), check.get(field.name)) {
            (true, Some(v)) if !v.is_empty() => {
                if stored_secrets.get(field.name) != Some(v) {
                    new_secrets.insert(field.name.to_string(), v.clone());
                }
            }
            (true, _) => {
                new_secrets.remove(field.name);
            }
            (_, Some(v)) => {
                values.insert(field.name.to_string(), v.clone());
            }
            (_, None) => {}
        }
    }
    ProviderUpdate {
        kind: chosen,
        values,
        new_secrets,
        errors,
        filled,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn an_empty_credential_keeps_the_stored_one_and_others_are_not_taken() {
        let stored: Values = [("cloudflare_api_token".to_string(), "old".to_string())].into();
        let f = form(&[
            ("provider", "cloudflare"),
            ("cloudflare_zone_id", "0123456789abcdef0123456789abcdef"),
            ("cloudflare_api_token", ""),
            ("fastly_api_token", "typed-for-another-provider"),
            ("purge_nodes", "http://127.0.0.1:6081"),
        ]);
        let update = apply_form(&f, "http_purge", &Values::new(), &stored);
        assert_eq!(update.kind.name(), "cloudflare");
        assert!(update.errors.is_empty(), "{:?}", update.errors);
        assert!(update.new_secrets.is_empty(), "{:?}", update.new_secrets);
        assert_eq!(
            update.values["purge_nodes"], "http://127.0.0.1:6081",
            "other providers' values are kept"
        );
        assert!(
            !update.values.contains_key("cloudflare_api_token"),
            "a secret never lands in plain values"
        );
    }

    #[test]
    fn a_new_credential_is_taken_and_an_unknown_provider_is_an_error() {
        let f = form(&[
            ("provider", "cloudflare"),
            ("cloudflare_api_token", " new "),
        ]);
        let update = apply_form(&f, "", &Values::new(), &Values::new());
        assert_eq!(update.new_secrets["cloudflare_api_token"], "new");
        let update = apply_form(
            &form(&[("provider", "nope")]),
            "",
            &Values::new(),
            &Values::new(),
        );
        assert_eq!(update.errors[0].field, "provider");
        assert_eq!(update.kind.name(), "http_purge");
    }
}
