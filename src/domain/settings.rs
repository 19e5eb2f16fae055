//! The admin's URL settings: publish server, template and allowed hosts, validated together.
//! (Where purges go is the provider's business: see `cdn`.)

use super::url_list::HostPolicy;
use super::{InvalidationTemplate, PublishServer};

/// The settings as the admin typed them (and as they are stored).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SettingsInput {
    pub publish_server: String,
    pub template: String,
    pub allowed_hosts: String,
}

/// An error tied to one settings field (and a line of it, when the field has lines).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: &'static str,
    pub message: String,
}

/// Validated settings.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    pub publish_server: Option<PublishServer>,
    pub template: InvalidationTemplate,
    /// Template text normalised: trimmed, blank lines dropped.
    pub template_text: String,
    pub allowed_hosts: Vec<String>,
}

/// Lines of a multi-line setting, trimmed, blank ones dropped, with their 1-based numbers.
pub fn non_blank_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim()))
        .filter(|(_, l)| !l.is_empty())
}

fn parse_host(line: &str) -> Result<String, String> {
    match url::Host::parse(line) {
        Ok(host) if !line.contains(['/', ':', ' ']) || line.starts_with('[') => {
            Ok(host.to_string().to_ascii_lowercase())
        }
        _ => Err(format!(
            "\"{line}\" is not a host name (give only the host, e.g. images.example.com)."
        )),
    }
}

impl Settings {
    /// Validates everything; nothing is usable unless every field is right.
    pub fn parse(input: &SettingsInput) -> Result<Self, Vec<FieldError>> {
        let mut errors = Vec::new();
        let publish_server = if input.publish_server.trim().is_empty() {
            None
        } else {
            match PublishServer::parse(&input.publish_server) {
                Ok(s) => Some(s),
                Err(message) => {
                    errors.push(FieldError {
                        field: "publish_server",
                        message,
                    });
                    None
                }
            }
        };
        let template = if publish_server.is_none() && !input.publish_server.trim().is_empty() {
            // The server name is wrong; do not report every relative line as well.
            InvalidationTemplate::parse(
                &input.template,
                Some(&PublishServer::parse("example.invalid").expect("valid")),
            )
            .map(|_| InvalidationTemplate::default())
        } else {
            InvalidationTemplate::parse(&input.template, publish_server.as_ref())
        };
        let template = template.unwrap_or_else(|line_errors| {
            errors.extend(line_errors.into_iter().map(|e| FieldError {
                field: "template",
                message: e.to_string(),
            }));
            InvalidationTemplate::default()
        });
        let mut allowed_hosts: Vec<String> = Vec::new();
        for (number, line) in non_blank_lines(&input.allowed_hosts) {
            match parse_host(line) {
                Ok(host) if !allowed_hosts.contains(&host) => allowed_hosts.push(host),
                Ok(_) => {}
                Err(reason) => errors.push(FieldError {
                    field: "allowed_hosts",
                    message: format!("Line {number}: {reason}"),
                }),
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let template_text = non_blank_lines(&input.template)
            .map(|(_, l)| l)
            .collect::<Vec<_>>()
            .join("\n");
        Ok(Self {
            publish_server,
            template,
            template_text,
            allowed_hosts,
        })
    }

    /// The normalised form, as stored and as shown back in the settings form.
    pub fn to_input(&self) -> SettingsInput {
        SettingsInput {
            publish_server: self
                .publish_server
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default(),
            template: self.template_text.clone(),
            allowed_hosts: self.allowed_hosts.join("\n"),
        }
    }

    /// Hosts users may invalidate: the publish server's plus the allowed ones.
    pub fn host_policy(&self) -> HostPolicy {
        HostPolicy::new(
            self.publish_server.as_ref().map(|p| (p.host(), p.port())),
            self.allowed_hosts.iter().map(String::as_str),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(publish: &str, template: &str, hosts: &str) -> SettingsInput {
        SettingsInput {
            publish_server: publish.into(),
            template: template.into(),
            allowed_hosts: hosts.into(),
        }
    }

    #[test]
    fn valid_settings_are_normalised() {
        let s = Settings::parse(&input(
            "Server.com",
            "  <ID>\n\n https://cdn.x.com/<ID>?$p$ ",
            "CDN.x.com\n",
        ))
        .unwrap();
        let normal = s.to_input();
        assert_eq!(normal.publish_server, "https://server.com");
        assert_eq!(normal.template, "<ID>\nhttps://cdn.x.com/<ID>?$p$");
        assert_eq!(normal.allowed_hosts, "cdn.x.com");
        let allows = |u: &str| s.host_policy().allows(&url::Url::parse(u).unwrap());
        assert!(allows("https://server.com/x"));
        assert!(allows("http://cdn.x.com/x"));
        assert!(!allows("https://other.com/x"));
        assert!(!allows("https://server.com:8080/x"));
        // Round trip: the stored form parses to the same thing.
        assert_eq!(Settings::parse(&normal).unwrap().to_input(), normal);
    }

    #[test]
    fn every_field_reports_its_errors() {
        let errors = Settings::parse(&input(
            "ftp://x",
            "no placeholder",
            "bad host/x\nok.com\n:x",
        ))
        .unwrap_err();
        let fields: Vec<&str> = errors.iter().map(|e| e.field).collect();
        assert_eq!(
            fields,
            [
                "publish_server",
                "template",
                "allowed_hosts",
                "allowed_hosts"
            ]
        );
        assert!(errors[1].message.starts_with("Line 1:"));
        assert!(errors[3].message.starts_with("Line 3:"));
    }

    #[test]
    fn relative_template_needs_a_publish_server() {
        let errors = Settings::parse(&input("", "<ID>", "")).unwrap_err();
        assert!(errors[0].message.contains("Publish Server Name"));
    }
}
